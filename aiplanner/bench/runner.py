"""Run the chosen suites one after another and write what they measured.

A suite that fails is recorded with its error and the others still run; the exit status of
``bench`` then says so. The results file keeps the options, the machine and its load average
before and after: figures from a shared machine mean little without them.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiplanner.bench.options import BenchOptions, Plot
from aiplanner.bench.progress import Progress
from aiplanner.bench.registry import suites
from aiplanner.bench.report import markdown, write_json, write_plots
from aiplanner.errors import ConfigError

__all__ = ["FORMAT", "run_suites"]

FORMAT = 1


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        return []


def _meta(opts: BenchOptions) -> dict[str, object]:
    try:
        ours = version("aiplanner")
    except PackageNotFoundError:
        ours = "unknown"
    return {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "aiplanner": ours,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "options": asdict(opts),
        "load_before": _load(),
    }


def run_suites(
    opts: BenchOptions, names: Sequence[str] | None, out_dir: Path, progress: Progress
) -> dict[str, object]:
    """Run the suites called ``names`` (all when None) and write ``results.json``,
    ``results.md`` and the plots into ``out_dir``. Returns the results document.

    Raises ConfigError for an unknown suite name.
    """
    known = {s.name: s for s in suites()}
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise ConfigError(f"unknown suite(s) {unknown}; known: {', '.join(known)}")
    chosen = [s for s in known.values() if names is None or s.name in names]
    out_dir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {"format": FORMAT, "meta": _meta(opts)}
    results: dict[str, dict[str, object]] = {}
    plots: list[Plot] = []
    for suite in chosen:
        progress.note(f"== {suite.name}: {suite.summary}")
        started = time.perf_counter()
        try:
            result = dict(suite.run(opts, progress))
        except Exception as exc:  # one failing suite must not hide the others' figures
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.perf_counter() - started, 2)
        why = result.get("error") or result.get("skipped")
        progress.note(f"   {suite.name}: {why or 'done'} ({result['seconds']} s)")
        plots.extend(result.get("plots", []))  # type: ignore[arg-type]
        results[suite.name] = result
    meta = doc["meta"]
    assert isinstance(meta, dict)
    meta["load_after"] = _load()
    doc["suites"] = results
    write_json(doc, out_dir / "results.json")
    (out_dir / "results.md").write_text(markdown(doc))
    try:
        written = write_plots(plots, out_dir)
    except ImportError:
        progress.note("matplotlib is not installed: no plots (pip install 'aiplanner[bench]')")
    else:
        progress.note(f"plots: {', '.join(p.name for p in written)}")
    return doc
