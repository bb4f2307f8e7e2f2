"""``python -m aiplanner bench``: every figure of the README from one command.

Suites (see :mod:`aiplanner.bench.registry`; ``bench --list``): ``tokens``, ``strategies``,
``decisions``, ``tick``, ``frame`` (with pygame), ``soak``. Each writes figures with their
repetitions (min/median/max) into ``results.json``, a Markdown table into ``results.md`` and PNG
plots (matplotlib, the ``bench`` extra); ``bench compare OLD.json NEW.json`` flags regressions
beyond noise. :mod:`aiplanner.bench.llama_server` builds and runs llama.cpp's server for
comparisons.

A suite is ``run(opts: BenchOptions, progress: Progress) -> SuiteResult``; add one with
:func:`register` (or one entry in the registry's table).
"""

from __future__ import annotations

from aiplanner.bench.errors import BenchError
from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress, QuietProgress
from aiplanner.bench.registry import Suite, register, suites
from aiplanner.bench.runner import run_suites
from aiplanner.bench.stats import Metric, metric

__all__ = [
    "BenchError",
    "BenchOptions",
    "Metric",
    "Plot",
    "Progress",
    "QuietProgress",
    "Series",
    "Suite",
    "SuiteResult",
    "metric",
    "register",
    "run_suites",
    "suites",
]
