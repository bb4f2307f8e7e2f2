"""How many threads each ``llama_decode`` of the batched engine gets: the configured count, or one
when one is measured faster.

llama.cpp's threads meet at a barrier after every operation of the graph, hundreds per decode.
When another process wants the same cores (the game, a second engine, a compiler), one of them
is often descheduled and the other waits at each barrier for a scheduler slice: measured on two
busy cores, a 10-row generation step took 1.3 to 4 s with two threads and 0.2 s with one, and a
10-agent free-mode round stalled past its 60 s deadline. On a quiet machine two threads are
faster. Neither is right everywhere, so :class:`ThreadGovernor` measures: it keeps, per size of
decode (rows, in powers of two), the recent seconds per row with each thread count, uses the
faster one, and now and then tries the other, so it follows the load as it comes and goes. One
thread is measured first (at worst about twice as slow on a quiet machine); a try that loses
makes the next one wait twice as long (``probe_s`` up to ``max_probe_s``) and at least ten times
the seconds it lost, so tries cost about a tenth of the time however slow the losing count is.

Pure Python and single-threaded (the engine's thread): it only decides and keeps counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["ThreadGovernor"]

_SMOOTHING = 0.5  # weight of the newest measurement in the running estimate
_MAX_BUCKET = 12  # decodes of 2048 rows and more share one estimate
_TRY_SHARE = 10.0  # a losing try's extra seconds, times this, pass before the next try


class ThreadGovernor:
    """Chooses 1 or ``most`` threads per decode (see the module docstring). ``clock`` is
    injectable for tests. Raises ValueError for ``most`` < 1 or non-positive probe times.

    Estimates are kept per size of decode, the schedule of tries for all sizes (the load is the
    same for all); a size not measured yet starts with the latest winner.
    """

    def __init__(
        self,
        most: int,
        *,
        probe_s: float = 2.0,
        max_probe_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if most < 1:
            raise ValueError(f"most must be at least 1, got {most}")
        if not 0.0 < probe_s <= max_probe_s:
            raise ValueError("need 0 < probe_s <= max_probe_s")
        self._most = most
        self._probe_s = probe_s
        self._max_probe_s = max_probe_s
        self._clock = clock
        self._per_row: dict[int, dict[int, float]] = {}  # bucket -> threads -> seconds per row
        self._preferred = most  # the winner of the latest comparison (any size)
        self._wait = {1: probe_s, most: probe_s}  # threads -> last wait between tries
        self._next_try = {1: -math.inf, most: -math.inf}  # threads -> earliest next try

    def _best(self, known: dict[int, float]) -> int:
        if len(known) < 2:
            return self._preferred
        return min(known, key=known.__getitem__)

    def choose(self, rows: int) -> int:
        """The thread count for a decode of ``rows`` rows."""
        if self._most == 1:
            return 1
        best = self._best(self._per_row.get(_bucket_of(rows), {}))
        other = 1 if best == self._most else self._most
        return other if self._clock() >= self._next_try[other] else best

    def record(self, rows: int, threads: int, seconds: float) -> None:
        """What a decode of ``rows`` rows with ``threads`` threads took."""
        if rows < 1 or self._most == 1:
            return
        known = self._per_row.setdefault(_bucket_of(rows), {})
        best_before = self._best(known)
        value = seconds / rows
        old = known.get(threads)
        known[threads] = value if old is None else old + _SMOOTHING * (value - old)
        now = self._clock()
        if len(known) < 2:  # this size's first estimate: nothing to compare it with yet
            if threads != best_before:
                self._next_try[threads] = now + self._wait[threads]
            return
        winner = min(known, key=known.__getitem__)
        loser = 1 if winner == self._most else self._most
        self._preferred = winner
        if threads == loser:  # a try that lost, or the winner of old has slowed down
            if threads != best_before:
                self._wait[threads] = min(2.0 * self._wait[threads], self._max_probe_s)
            extra = seconds - rows * known[winner]
            self._next_try[threads] = now + max(self._wait[threads], _TRY_SHARE * extra)
        elif winner != best_before:  # a try that won: the other count is the one to try now
            self._wait[loser] = self._probe_s
            self._next_try[loser] = now + self._probe_s

    def estimate(self, rows: int, threads: int) -> float | None:
        """Seconds per row measured for this size with ``threads`` threads (None if never)."""
        return self._per_row.get(_bucket_of(rows), {}).get(threads)


def _bucket_of(rows: int) -> int:
    return min(max(rows, 1).bit_length(), _MAX_BUCKET)
