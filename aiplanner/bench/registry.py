"""The suites of ``python -m aiplanner bench``, by name.

A suite is a function ``run(opts: BenchOptions, progress: Progress) -> SuiteResult`` (see
:mod:`aiplanner.bench.options`). Adding one is one entry in ``_BUILTIN`` (or, from outside the
package, one :func:`register` call): the runner, the JSON file, the Markdown table, the plots and
``compare`` handle every suite alike. Suites run in the order listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiplanner.bench import decisions, frame, soak, strategies, tick, tokens
from aiplanner.bench.options import BenchOptions, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.errors import ConfigError

__all__ = ["Suite", "SuiteFn", "register", "suite_names", "suites"]

SuiteFn = Callable[[BenchOptions, Progress], SuiteResult]


@dataclass(frozen=True, slots=True)
class Suite:
    """A named suite and one line saying what it measures (shown by ``bench --list``)."""

    name: str
    run: SuiteFn
    summary: str


_BUILTIN: tuple[Suite, ...] = (
    Suite("tokens", tokens.run, "prompt and answer sizes in the model's tokens"),
    Suite("strategies", strategies.run, "a planning round per strategy; batch-size sweep"),
    Suite("decisions", decisions.run, "sensible first steps on the scenario suite, per planner"),
    Suite("tick", tick.run, "game-thread cost per tick against agent count"),
    Suite("frame", frame.run, "demo frame time while planning (needs pygame)"),
    Suite("soak", soak.run, "the plugin in a running battle for a minute"),
)
_SUITES: dict[str, Suite] = {s.name: s for s in _BUILTIN}


def register(suite: Suite) -> None:
    """Add ``suite`` (or replace the one of the same name). Raises ConfigError for a bad name."""
    if not suite.name.isidentifier():
        raise ConfigError(f"a suite name must be an identifier, got {suite.name!r}")
    _SUITES[suite.name] = suite


def suites() -> tuple[Suite, ...]:
    """Every registered suite, in running order."""
    return tuple(_SUITES.values())


def suite_names() -> tuple[str, ...]:
    return tuple(_SUITES)
