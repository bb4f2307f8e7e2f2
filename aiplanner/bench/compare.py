"""``bench compare OLD.json NEW.json``: which figures got worse beyond the noise?

A figure is a regression when its median moved the wrong way by more than the noise, and the two
runs' ranges do not overlap. The noise is the larger of a floor (10 %) and each run's own spread
((max - min) / median), so a figure measured on a noisy machine needs a larger move to count.
A figure whose old median is zero has no ratio and is only listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aiplanner.bench.stats import Metric

__all__ = ["Change", "compare_results", "format_changes"]

NOISE_FLOOR = 0.10

Verdict = Literal["regression", "improvement", "same", "new", "gone", "no ratio"]


@dataclass(frozen=True, slots=True)
class Change:
    """One figure in both runs: ``ratio`` > 1 means worse (whichever way is better)."""

    suite: str
    metric: str
    old: float | None
    new: float | None
    ratio: float | None
    noise: float
    verdict: Verdict


def _spread(m: Metric) -> float:
    return (m["max"] - m["min"]) / abs(m["median"]) if m["median"] else 0.0


def _judge(suite: str, name: str, old: Metric, new: Metric) -> Change:
    noise = max(NOISE_FLOOR, _spread(old), _spread(new))
    if not old["median"] or not new["median"]:
        return Change(suite, name, old["median"], new["median"], None, noise, "no ratio")
    lower_is_better = old["better"] == "lower"
    ratio = new["median"] / old["median"] if lower_is_better else old["median"] / new["median"]
    if lower_is_better:
        apart_worse, apart_better = new["min"] > old["max"], new["max"] < old["min"]
    else:
        apart_worse, apart_better = new["max"] < old["min"], new["min"] > old["max"]
    verdict: Verdict = "same"
    if ratio > 1 + noise and apart_worse:
        verdict = "regression"
    elif ratio < 1 / (1 + noise) and apart_better:
        verdict = "improvement"
    return Change(suite, name, old["median"], new["median"], ratio, noise, verdict)


def _metrics(doc: Mapping[str, object]) -> dict[tuple[str, str], Metric]:
    out: dict[tuple[str, str], Metric] = {}
    suites = doc.get("suites")
    if not isinstance(suites, Mapping):
        raise ValueError("not a bench results file: no 'suites'")
    for suite, result in suites.items():
        metrics = result.get("metrics", {}) if isinstance(result, Mapping) else {}
        for name, m in metrics.items():
            if not isinstance(m, Mapping) or not {"median", "min", "max", "better"} <= set(m):
                raise ValueError(f"suite {suite!r}, metric {name!r}: not a bench metric")
            out[(str(suite), str(name))] = m  # type: ignore[assignment]
    return out


def compare_results(old: Mapping[str, object], new: Mapping[str, object]) -> list[Change]:
    """Every figure of either run, judged. Raises ValueError for a file that is not bench output."""
    before, after = _metrics(old), _metrics(new)
    changes: list[Change] = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key not in after:
            changes.append(Change(*key, before[key]["median"], None, None, 0.0, "gone"))
        elif key not in before:
            changes.append(Change(*key, None, after[key]["median"], None, 0.0, "new"))
        else:
            changes.append(_judge(*key, before[key], after[key]))
    return changes


def format_changes(changes: list[Change], everything: bool = False) -> str:
    """A Markdown table of the regressions and improvements (every figure if ``everything``)."""
    shown = [c for c in changes if everything or c.verdict in ("regression", "improvement")]
    regressions = sum(1 for c in changes if c.verdict == "regression")
    lines = [
        f"{regressions} regression(s), "
        f"{sum(1 for c in changes if c.verdict == 'improvement')} improvement(s) "
        f"in {len(changes)} figures",
    ]
    if shown:
        lines += ["", "| suite | metric | old | new | worse by | noise | verdict |"]
        lines.append("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for c in shown:
            ratio = f"{c.ratio:.2f}x" if c.ratio is not None else "-"
            lines.append(
                f"| {c.suite} | {c.metric} | {c.old} | {c.new} | {ratio} | {c.noise:.0%} "
                f"| {c.verdict} |"
            )
    return "\n".join(lines)
