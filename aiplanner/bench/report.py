"""Results of a bench run on disk: ``results.json``, ``results.md`` and one PNG per plot.

Plots are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global
state); without matplotlib (the ``bench`` extra) the JSON and Markdown are still written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from aiplanner.bench.options import Plot

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["markdown", "write_json", "write_plots"]


def _grouped_bars(ax: Axes, plot: Plot) -> None:
    """One group of bars per category (the series' ``x``), one bar per series in each group."""
    categories: list[str] = []
    for series in plot["series"].values():
        categories += [str(x) for x in series["x"] if str(x) not in categories]
    width = 0.8 / max(1, len(plot["series"]))
    for i, (label, series) in enumerate(plot["series"].items()):
        where = [
            categories.index(str(x)) + (i - (len(plot["series"]) - 1) / 2) * width
            for x in series["x"]
        ]
        ax.bar(where, series["y"], width=width, label=label)
    ax.set_xticks(range(len(categories)), categories)


def write_json(doc: Mapping[str, object], path: Path) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown(doc: Mapping[str, object]) -> str:
    """One table per suite: metric, median, min, max, unit, repetitions."""
    meta = doc.get("meta")
    lines = ["# aiplanner bench", ""]
    if isinstance(meta, Mapping):
        opts = meta.get("options", {})
        load = meta.get("load_before")
        lines.append(f"Options: `{orjson.dumps(opts).decode()}`; load average before: {load}")
        lines.append("")
    suites = doc.get("suites")
    assert isinstance(suites, Mapping)
    for name, result in suites.items():
        assert isinstance(result, Mapping)
        lines.append(f"## {name}")
        lines.append("")
        if "error" in result or "skipped" in result:
            why = result.get("error") or result.get("skipped")
            lines.append(f"{'Failed' if 'error' in result else 'Skipped'}: {why}")
            lines.append("")
            continue
        lines.append("| metric | median | min | max | unit | n |")
        lines.append("| --- | ---: | ---: | ---: | --- | ---: |")
        metrics = result.get("metrics", {})
        assert isinstance(metrics, Mapping)
        for label, m in metrics.items():
            lines.append(
                f"| {label} | {_fmt(m['median'])} | {_fmt(m['min'])} | {_fmt(m['max'])} "
                f"| {m['unit']} | {len(m['values'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_plots(plots: list[Plot], folder: Path) -> list[Path]:
    """Draw each plot to ``folder/<name>.png``; returns the files. Raises ImportError without
    matplotlib."""
    from matplotlib.figure import Figure

    written: list[Path] = []
    for plot in plots:
        fig = Figure(figsize=(7, 4.2), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        if plot["kind"] == "bar":
            _grouped_bars(ax, plot)
        for label, series in plot["series"].items():
            if plot["kind"] == "hist":
                ax.hist(series["y"], bins=30, alpha=0.55, label=label)
            elif plot["kind"] == "line":
                ax.plot(series["x"], series["y"], marker="o", label=label)
        ax.set_title(plot["title"])
        ax.set_xlabel(plot["xlabel"])
        ax.set_ylabel(plot["ylabel"])
        ax.grid(alpha=0.3)
        if len(plot["series"]) > 1:
            ax.legend()
        if not plot["name"].isidentifier():  # it becomes a file name
            raise ValueError(f"plot name must be an identifier, got {plot['name']!r}")
        path = folder / f"{plot['name']}.png"
        fig.savefig(path)
        written.append(path)
    return written
