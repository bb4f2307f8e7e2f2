"""Suite ``frame``: the demo's frame time while the planner works (when pygame is installed).

Runs the demo headless (SDL dummy driver: drawing and flip still happen) in a child process for
each squad size, ``repeat`` runs each (one with ``--quick``: 240 frames, 60 for a backend that
answers at once), and records the whole-frame time (input + ``esper.process`` + draw + flip; the
frame-rate cap's sleep excluded). A child process, because ``aiplanner`` never imports the demo
or pygame, and so that each run starts with a fresh pygame, esper and engine.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import orjson

from aiplanner.bench.errors import BenchError
from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.stats import Metric, metric, percentile

__all__ = ["demo_frames", "run"]

_WARMUP_FRAMES = 10
_CHILD = """
import sys
import orjson
from aiplanner import EngineSettings
from demo_game.app import Options, run
options = orjson.loads(sys.argv[1])
pairs = options.pop("engine_settings", None)
if pairs:
    options["engine_settings"] = EngineSettings.parse(pairs)
result = run(Options(**options), log=False)
print()
stats = {**result.stats, "run_seconds": result.seconds}
print(orjson.dumps({"frame_ms": result.frame_ms, "stats": stats}).decode())
"""


def demo_frames(
    options: dict[str, object], timeout_s: float = 600.0
) -> tuple[list[float], dict[str, object]]:
    """Run the demo headless with ``options`` (fields of ``demo_game.app.Options``; the batched
    engine's settings as ``key=value`` strings under ``engine_settings``).

    Returns the frame times (ms) and the planner's stats at the end, with ``run_seconds``, the
    frame loop's wall time. Raises BenchError.
    """
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, orjson.dumps(options).decode()],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BenchError(
            f"demo exited with {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
        )
    doc = orjson.loads(lines[-1])
    return [float(v) for v in doc["frame_ms"]], dict(doc["stats"])


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    if importlib.util.find_spec("pygame") is None or importlib.util.find_spec("demo_game") is None:
        return {"skipped": "pygame or the demo is not installed (pip install 'aiplanner[demo]')"}
    squads = (5,) if opts.quick else (5, 10)
    frames = 300 if not opts.quick else 60 if opts.instant else 240
    repeat = 1 if opts.quick else opts.repeat
    jobs = [(s, i) for s in squads for i in range(repeat)]
    per: dict[int, dict[str, list[float]]] = {s: {} for s in squads}
    all_ms: dict[str, Series] = {}
    plans: list[float] = []
    for squad, i in progress.track(jobs, "demo frames", len(jobs)):
        options: dict[str, object] = {
            "backend": opts.backend,
            "model": opts.model,
            "base_url": opts.base_url,
            "squad_size": squad,
            "seed": opts.seed + i,
            "headless": True,
            "frames": frames,
        }
        if opts.threads is not None:
            options["threads"] = opts.threads
        ms, stats = demo_frames(options)
        ms = ms[_WARMUP_FRAMES:] or ms  # the first frames pay pygame's and the planner's warm-up
        row = per[squad]
        for label, value in (
            ("p50", percentile(ms, 50)),
            ("p95", percentile(ms, 95)),
            ("p99", percentile(ms, 99)),
            ("max", max(ms)),
        ):
            row.setdefault(label, []).append(value)
        row.setdefault("over_33ms", []).append(float(sum(1 for m in ms if m > 1000.0 / 30.0)))
        plans.append(float(stats.get("plans") or 0))  # type: ignore[arg-type]
        all_ms.setdefault(f"{squad}v{squad}", Series(x=[], y=[]))["y"].extend(ms)
    metrics: dict[str, Metric] = {}
    for squad, row in per.items():
        for label, values in row.items():
            unit = "frames" if label == "over_33ms" else "ms"
            metrics[f"frame {label}, {squad}v{squad}"] = metric(values, unit)
    plot = Plot(
        name="frame_time",
        kind="hist",
        title=f"Demo frame time while planning ({opts.backend})",
        xlabel="ms per frame (process + draw + flip)",
        ylabel="frames",
        series=all_ms,
    )
    return {
        "metrics": metrics,
        "plots": [plot],
        "info": {"frames_per_run": frames, "plans_per_run": plans},
    }
