"""What every suite is given: the user's backend settings, the size of the run, and results types.

A suite is a function ``run(opts, progress) -> SuiteResult`` (see :mod:`aiplanner.bench.registry`).
Its result is plain JSON-ready data: figures as :class:`~aiplanner.bench.stats.Metric` (with their
repetitions), plots as :class:`Plot` descriptions drawn by :mod:`aiplanner.bench.report`, and an
``info`` dict for anything else worth keeping. A suite that cannot run here (an optional package
missing, a backend that does not apply) returns ``{"skipped": "why"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

from aiplanner.backends.base import Backend
from aiplanner.backends.factory import create_backend
from aiplanner.bench.stats import Metric

__all__ = ["BenchOptions", "Plot", "Series", "SuiteResult"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchOptions:
    """The command line of ``bench``, as the suites see it.

    ``backend``/``base_url``/``model``/``threads`` mean what they mean for ``plan`` and the demo;
    ``agents`` is the size of a planning round; ``repeat`` how many times each figure is measured
    (``compare`` needs several); ``quick`` asks every suite for a run of a few minutes at most.
    ``concurrency``: requests in flight for an OpenAI-compatible server (its slots).
    """

    backend: str = "embedded"
    base_url: str | None = None
    model: str | None = None
    threads: int | None = None
    agents: int = 10
    repeat: int = 3
    quick: bool = False
    seed: int = 0
    concurrency: int | None = None

    @property
    def instant(self) -> bool:
        """The backend answers in milliseconds (the scripted double, or rules alone): a quick
        run can be shorter, where a model needs a few plan deadlines to show anything."""
        return self.backend in ("scripted", "heuristic")

    def make_backend(self) -> Backend | None:
        """A new backend as asked (None for ``heuristic``).

        The ``scripted`` test double answers in 10 to 50 ms here: it exercises the whole
        pipeline quickly, and its timings mean nothing anyway.

        Raises ConfigError, ModelNotFoundError.
        """
        if self.backend == "scripted":
            from aiplanner.backends.scripted import ScriptedBackend

            return ScriptedBackend(latency_s=(0.01, 0.05), seed=self.seed)
        if self.backend == "openai" and self.concurrency:
            from aiplanner.backends.openai import OpenAIBackend

            return OpenAIBackend(
                self.base_url,
                model=self.model or "default",
                max_concurrency=self.concurrency,
                read_timeout_s=60.0,
            )
        return create_backend(
            self.backend, model=self.model, base_url=self.base_url, n_threads=self.threads
        )


class Series(TypedDict):
    """One line, bar group or distribution of a plot (``x`` empty for a histogram)."""

    x: list[float | str]
    y: list[float]


class Plot(TypedDict):
    """A picture to draw: ``hist`` (distribution of ``y``), ``line`` (``y`` by ``x``), ``bar``."""

    name: str
    kind: Literal["hist", "line", "bar"]
    title: str
    xlabel: str
    ylabel: str
    series: dict[str, Series]


class SuiteResult(TypedDict, total=False):
    """What a suite returns. Every key may be left out."""

    metrics: dict[str, Metric]
    plots: list[Plot]
    info: dict[str, object]
    skipped: str
