"""How busy the embedded batched engine is: the share of wall time it spends inside
``llama_decode`` and the rows it evaluates a second there, over the last few seconds.

An engine that is inside ``llama_decode`` nearly all the time is saturated: the agents' requests
then wait for one another, and plan latency is set by demand (agents asking, rows a request)
against the machine's rate, not by the plugin's batching settings. The plugin's ``stats()``
reports these figures (and the demo's HUD shows them) so that a game can tell the two apart
while it tunes. Read on the game thread; the engine's counters are a frozen snapshot it swaps
whole, so reading them needs no lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiplanner.errors import ConfigError

if TYPE_CHECKING:
    from aiplanner.backends.batched import EngineStats

__all__ = ["EngineLoad", "EngineStatsSource"]


@runtime_checkable
class EngineStatsSource(Protocol):
    """A backend whose engine counts its decodes (the embedded backend; None from its
    ``engine_stats()`` for the serial engine)."""

    def engine_stats(self) -> EngineStats | None: ...


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # the clock's seconds
    decode_s: float  # the engine's seconds inside llama_decode so far
    rows: int  # rows it evaluated so far


class EngineLoad:
    """The engine's load over the last ``window_s`` seconds, from samples of its counters.

    :meth:`sample` reads the counters (``read`` returns None where there is no batched engine);
    :attr:`busy` and :attr:`rows_per_s` compare the newest sample with the oldest one still in
    the window (None until two samples lie at least ``min_span_s`` apart). Raises
    :class:`ConfigError` for a window or span that is not positive, or a span longer than the
    window.
    """

    __slots__ = ("_clock", "_min_span_s", "_read", "_samples", "_window_s")

    def __init__(
        self,
        read: Callable[[], EngineStats | None],
        *,
        window_s: float = 10.0,
        min_span_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or min_span_s <= 0 or min_span_s > window_s:
            raise ConfigError(
                f"need 0 < min_span_s <= window_s, got min_span_s={min_span_s}, window_s={window_s}"
            )
        self._read = read
        self._window_s = window_s
        self._min_span_s = min_span_s
        self._clock = clock
        self._samples: deque[_Sample] = deque()

    def sample(self) -> None:
        """Read the counters now; forget samples the window has left behind (the newest one
        older than the window is kept: the window's start lies after it)."""
        stats = self._read()
        if stats is None:
            self._samples.clear()
            return
        now = self._clock()
        samples = self._samples
        if samples and (stats.decode_s < samples[-1].decode_s or stats.rows < samples[-1].rows):
            samples.clear()  # another engine (a reloaded backend): its counters start afresh
        samples.append(_Sample(now, stats.decode_s, stats.rows))
        while len(samples) > 2 and samples[1].at <= now - self._window_s:
            samples.popleft()

    def _deltas(self) -> tuple[float, float, int] | None:
        """Wall seconds, seconds inside ``llama_decode`` and rows between the oldest sample in
        the window and the newest; None without two samples ``min_span_s`` apart."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        wall = last.at - first.at
        if wall < self._min_span_s:
            return None
        return wall, last.decode_s - first.decode_s, last.rows - first.rows

    @property
    def totals(self) -> tuple[float, int] | None:
        """Seconds inside ``llama_decode`` and rows evaluated since the engine started, as
        last sampled (None before a sample, or where there is no batched engine)."""
        if not self._samples:
            return None
        last = self._samples[-1]
        return last.decode_s, last.rows

    @property
    def busy(self) -> float | None:
        """Share of the span's wall time spent inside ``llama_decode`` (0 to 1)."""
        d = self._deltas()
        return None if d is None else min(1.0, d[1] / d[0])

    @property
    def rows_per_s(self) -> float | None:
        """Rows evaluated a second of ``llama_decode`` over the span (None if it spent none)."""
        d = self._deltas()
        return None if d is None or d[1] <= 0 else d[2] / d[1]
