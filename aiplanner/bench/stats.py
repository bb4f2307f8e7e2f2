"""Summaries of repeated measurements: every figure is kept with its min, median and max.

A figure measured several times on a shared machine is a distribution, not a number; ``compare``
(see :mod:`aiplanner.bench.compare`) uses the spread to tell a regression from noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal, TypedDict

__all__ = ["Metric", "metric", "percentile"]

Better = Literal["lower", "higher"]


class Metric(TypedDict):
    """One figure: the raw repetitions and their summary. ``better`` says which way is good."""

    values: list[float]
    min: float
    median: float
    max: float
    unit: str
    better: Better


def metric(values: Sequence[float], unit: str, better: Better = "lower") -> Metric:
    """Summarise the repetitions ``values`` (at least one). Raises ValueError when empty."""
    if not values:
        raise ValueError("a metric needs at least one value")
    vals = [round(float(v), 6) for v in values]
    return Metric(
        values=vals,
        min=min(vals),
        median=round(statistics.median(vals), 6),
        max=max(vals),
        unit=unit,
        better=better,
    )


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]
