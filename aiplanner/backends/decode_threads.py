"""How many threads each ``llama_decode`` of the batched engine gets: one, or the configured
count when that is measured faster.

llama.cpp's threads meet at a barrier after every operation of the graph, hundreds per decode.
When other processes want the same cores (the game, a second engine, a compiler), one thread is
often descheduled and the other waits at each barrier for a scheduler slice. Measured on two
cores at load 7 to 10: a 10-row generation step took 1.3 to 6 s with two threads and 0.2 s with
one, an 89-row chunk 26 s with two and a 128-row chunk 7.6 s with one; 10-agent free-mode
rounds ran past their 60 s deadline; even a 16-row decode took 30 s on two threads at load 10.
On a quiet machine two threads are faster. So :class:`ThreadGovernor` looks and measures:

* It starts on the configured count (on one thread while the look below says the cores are
  taken). Starting on one thread, as it once did, kept a fresh engine there through its first
  bursts: see "Probes of two equal halves" below.
* It looks whether other threads are ready to run on the machine (Linux: ``procs_running`` in
  ``/proc/stat``, at most every 50 ms): if they would take the cores a decode's threads need,
  decodes run on one thread. The engine has it look right after each decode, before handing
  anything over: its hand-overs wake the caller's threads for a moment (an event loop taking a
  token), and those are its own doing, not a crowd. No thread of this process counts: not
  llama.cpp's workers, which spin for a while after a decode (looking whenever a decode was
  planned instead, measured on a quiet machine in a 10-agent free-mode round: every other
  decode saw one of those and ran on one thread), and not the game's own threads either: the
  engine's threads yield to them (:func:`lower_priority`), so a frame that wants a core holds a
  two-thread decode up for its few milliseconds, where one thread costs ~40% of the whole
  decode (in the live 10v10 demo 128-row chunks ran at ~350 rows/s on one thread against ~600
  on two). Measured there against counting the game's thread (seeds 1-4 alternated, one
  sitting): 17-22 against 20-34 of ~290 decodes on one thread, 544-556 against 524-568 rows/s
  inside decodes: inside the noise of the demo, which the game's thread seldom makes busy.
  A game whose own threads do keep the cores busy is still caught by the probes below.
  Without the signal (other systems) it only measures.
* Now and then it runs a *probe*: two small decodes back to back (at most ``probe_rows`` rows,
  the engine cuts the batch), one with each count, and keeps the faster count until the next
  probe; the probe of the configured count is skipped while the machine looks busy. A probe
  holds up to 64 rows: on a 2-core AVX-512 Xeon a 16-row decode in the engine's context took as
  long on two threads as on one (70-84 against 62-88 ms), while the 128-row chunks a pass is
  made of took 0.24 s on two against 0.38 on one, so 16-row probes kept the engine on one
  thread (a 10-agent round 1.6x its prefill limit); 64-row probes measure 0.14-0.15 against
  0.17-0.20 s and choose two.
* Two probes of unequal sizes (a pass's last few rows as one of them) decide nothing: a
  decode's fixed cost weighs more per row in the smaller one. So a probe begins only where the
  engine has rows for both halves (``plan(ready)``: at least two probes' rows); until then it
  stays due and the decodes run on the count in use. *Probes of two equal halves*, measured by
  replaying a recorded 10v10 demo's requests into the engine alone at their recorded times
  (3 December, two cores; its first passes are small): starting on one thread, with probes
  wherever due, the engine stayed on one thread for its first ~10 s, through the opening
  requests and the first fight (its first probe pairs were 64 rows against 47 and 51, which
  decided nothing and put the next 2 s off, then 64 against 60 rows lost to two threads'
  noise), 19-23 of ~83 decodes on one thread against 3-6, latency p50 1.39-1.64 against
  0.66-1.10 s and p99 5.19-5.99 against 2.11-2.96 s (three alternated pairs). In the live demo,
  whose agents all ask at the start (a pass with rows for both halves), no change.
* After a probe the next one waits ``probe_s``, doubled after every probe that changes nothing
  (up to ``max_probe_s``), and at least ten times the seconds the losing count lost in it: probes
  take about a tenth of the time at most, however slow the losing count is.
* While it runs the configured count, its own decodes can show that count still well ahead: a
  decode of at least twice ``probe_rows`` (a pass's full chunk) on it, at most 0.8 times one
  thread's time a row (the lower median of the last three probes' one-thread decodes: a
  stalled probe does not loosen it, and the first probe, taken in a nearly empty context, does
  not hold it down for long). A probe that comes due within ``max_probe_s`` of decoding after
  such a decode, with no decode of that size since that fell short, is skipped: the lead is
  already measured, and the probe would only cost its one-thread half. Smaller decodes say
  nothing either way (a decode's fixed cost weighs more a row in them). Idle time does not age
  the lead: a crowd of other programs is what the look sees, and the game's own threads
  crowding the cores slow the next full chunk, which then falls short. Measured in the engine
  benchmark's 10-agent round on a quiet machine, which met a due probe every time (the engine
  idles 15-35 s between rounds there, as a game's engine may between bursts): the probe's 64
  rows took 0.24-0.25 s on one thread against 0.13 on two, and cut the round's last rows into
  one decode more.

Pure Python and single-threaded (the engine's thread): it only decides and keeps time.

The engine's thread also yields the cores to the game (:func:`lower_priority`): it raises its own
niceness at start, and the threads llama.cpp starts from it inherit that, so when the game's
frame and a decode want the same core the frame gets it. Measured in the live demo at 32v32
(``benchmarks/demo_share.py``'s run with the engine's thread at nice 10 and at 0, alternated
twice, seed 5): frame p99 12.3 / 10.6 ms against 15.4 / 16.9 ms, the model's plans 165 / 170
against 160 / 161 (the slowest frames had been drawing while the engine's threads took both
cores: 25-32 ms of other threads' CPU inside 18-22 ms frames).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from statistics import median_low

__all__ = ["DEFAULT_NICE", "ThreadGovernor", "cores_taken", "lower_priority", "runnable_elsewhere"]

DEFAULT_NICE = 10
"""Niceness the engine's threads add to their own (Linux; see :func:`lower_priority`)."""

PROBE_ROWS = 64
_LOOK_EVERY_S = 0.05
_STALE_S = 0.5  # a look this old (the engine was idle) is renewed when a decode is planned
_COMPARABLE = 1.25  # probes of more unequal sizes than this are not compared
_PROBE_SHARE = 10.0  # the seconds a probe's loser lost, times this, pass before the next probe
# A decode on the configured count at most this share of one thread's time a row shows that
# count still well ahead (here 128-row chunks on two threads ran at 0.53-0.84 of the first
# probe's 64 rows on one, taken in a nearly empty context, and at 0.57-0.62 of later probes').
_AHEAD = 0.8
_ONE_THREAD_PROBES = 3  # one-thread probes whose lower median time a row is the reference


class ThreadGovernor:
    """Chooses 1 or ``most`` threads per decode (see the module docstring). ``busy`` says
    whether other threads want the cores now (default :func:`cores_taken`); it and ``clock`` are
    injectable for tests. Raises ValueError for ``most`` < 1, ``probe_rows`` < 1 or probe times
    that are not ``0 < probe_s <= max_probe_s``."""

    def __init__(
        self,
        most: int,
        *,
        probe_rows: int = PROBE_ROWS,
        probe_s: float = 2.0,
        max_probe_s: float = 30.0,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if most < 1 or probe_rows < 1:
            raise ValueError(f"most and probe_rows must be at least 1, got {most}, {probe_rows}")
        if not 0.0 < probe_s <= max_probe_s:
            raise ValueError("need 0 < probe_s <= max_probe_s")
        self._most = most
        self._probe_rows = probe_rows
        self._probe_s = probe_s
        self._max_probe_s = max_probe_s
        self._clock = clock
        self._threads = most
        self._wait = probe_s
        self._next_probe = -math.inf if most > 1 else math.inf
        self._probe: dict[int, tuple[int, float]] = {}  # threads -> (rows, seconds) this probe
        self._one_per_row: deque[float] = deque(maxlen=_ONE_THREAD_PROBES)
        self._decoding_s = 0.0  # seconds spent in the decodes recorded so far
        self._lead_at = -math.inf  # _decoding_s when a decode last showed the count well ahead
        self._busy = busy if busy is not None else cores_taken(most)
        self._looked_at = -math.inf
        self._looked = False

    @property
    def threads(self) -> int:
        """The count in use between probes."""
        return self._threads

    def plan(self, ready: int | None = None) -> tuple[int, int | None]:
        """The thread count for the next decode, and the most rows it may hold (None: no limit;
        a number: it is a probe, keep it small). ``ready``: the rows the caller has for it (None:
        as many as it may hold); a probe does not begin on fewer than its two halves need."""
        now = self._clock()
        if now - self._looked_at >= _STALE_S:
            self.look()
        steady = (1 if self._threads > 1 and self._looked else self._threads), None
        if now < self._next_probe:
            return steady
        if not self._probe and ready is not None and ready < 2 * self._probe_rows:
            return steady  # (still due: the next decode with rows for both halves takes it)
        if not self._probe and self._decoding_s - self._lead_at <= self._max_probe_s:
            self._next_probe = now + self._wait  # the lead is measured: no probe needed
            return steady
        pending = [t for t in (1, self._most) if t not in self._probe]
        if pending[0] > 1 and self._looked:  # the probe would only measure the crowd
            self._probe.clear()
            self._next_probe = now + self._wait
            return 1, None
        return pending[0], self._probe_rows

    def look(self) -> None:
        """Look (at most every 50 ms) whether other threads want the cores; :meth:`plan` goes
        by the last look (renewed there only when older than half a second). Call it where
        nothing of the caller's own is running: right after a decode, before its results are
        handed over."""
        now = self._clock()
        if now - self._looked_at >= _LOOK_EVERY_S:
            self._looked = self._busy()
            self._looked_at = now

    def record(self, rows: int, threads: int, seconds: float, *, probe: bool) -> None:
        """What a decode of ``rows`` rows with ``threads`` threads took; ``probe``: it was the
        probe :meth:`plan` asked for."""
        if rows < 1:
            return
        self._decoding_s += seconds
        if not probe:
            # A decode on the configured count, in use, of a full chunk (two probes' rows) or
            # more: is that count still well ahead of one thread?
            if (
                threads == self._threads == self._most > 1
                and rows >= 2 * self._probe_rows
                and self._one_per_row
            ):
                ahead = seconds / rows <= _AHEAD * median_low(self._one_per_row)
                self._lead_at = self._decoding_s if ahead else -math.inf
            return
        if threads in self._probe:
            return
        self._probe[threads] = (rows, seconds)
        if len(self._probe) < 2:
            return
        sizes = [r for r, _ in self._probe.values()]
        if max(sizes) > _COMPARABLE * min(sizes):
            # A decode's fixed cost (its barriers) weighs more per row in a small one: a pass's
            # last few rows as the second probe made two threads look slower (in the live demo,
            # 43 rows on two threads at 3.4 ms a row against 64 on one at 2.8, where two run
            # 64 rows at 1.7-2.0). Such a pair decides nothing; the next comes after the wait.
            self._probe.clear()
            self._next_probe = self._clock() + self._wait
            return
        per_row = {t: s / r for t, (r, s) in self._probe.items()}
        self._one_per_row.append(per_row[1])
        winner = min(per_row, key=per_row.__getitem__)
        loser = self._most if winner == 1 else 1
        lost = self._probe[loser][0] * (per_row[loser] - per_row[winner])
        self._probe.clear()
        if winner == self._threads:
            self._wait = min(2.0 * self._wait, self._max_probe_s)
        else:
            self._threads = winner
            self._wait = self._probe_s
            self._lead_at = -math.inf
        self._next_probe = self._clock() + max(self._wait, _PROBE_SHARE * lost)


def runnable_elsewhere(
    stat_path: str = "/proc/stat", own: Callable[[], int] | None = None
) -> int | None:
    """Threads of other processes ready to run on this machine (Linux ``/proc``), or None where
    that is not known.

    This process's own ready threads (the caller's aside) are counted right before and right
    after the machine's count and the larger count is taken off: right after a decode
    llama.cpp's workers spin for a moment and then sleep, and one that fell asleep between the
    two reads was counted by the machine but not by one read of its own state (measured on a
    2-core Xeon: 2 of 40 looks after a decode, and most of the looks between decodes, saw such a
    worker as another program's thread, and the engine ran 5 of a round's 6 decodes on one
    thread)."""
    count = _own_running if own is None else own
    try:
        before = count()
        with open(stat_path, "rb") as f:
            for line in f:
                if line.startswith(b"procs_running "):
                    others = max(0, int(line.split()[1]) - 1)
                    return max(0, others - max(before, count())) if others else 0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_running(tasks_dir: str = "/proc/self/task") -> int:
    """Threads of this process, the caller's aside, that are ready to run: llama.cpp's workers
    and the game's own threads (see the module docstring)."""
    me = threading.get_native_id()
    try:
        tasks = os.listdir(tasks_dir)
    except OSError:
        return 0
    running = 0
    for task in tasks:
        if not task.isdigit() or int(task) == me:
            continue
        try:
            with open(os.path.join(tasks_dir, task, "stat"), "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        running += state == b"R"
    return running


def cores_taken(threads: int) -> Callable[[], bool]:
    """A check: would a decode on ``threads`` threads find its cores taken by other runnable
    threads now? False where that cannot be known."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1

    def busy() -> bool:
        others = runnable_elsewhere()
        return others is not None and others > cores - threads

    return busy


def lower_priority(increment: int) -> int | None:
    """Add ``increment`` (0..19) to the calling thread's niceness, at most 19; the new niceness,
    or None where that cannot be done for one thread.

    Linux keeps a niceness per thread (``setpriority(PRIO_PROCESS, 0, ...)`` changes the calling
    thread only) and threads inherit their creator's, so the threads llama.cpp starts from the
    engine's thread yield with it. Elsewhere the call would change the whole process, the game
    included, so it is not made. Only ever lowers the priority, which needs no privilege.
    """
    if not 0 <= increment <= 19:
        raise ValueError(f"increment must be in 0..19, got {increment}")
    if not sys.platform.startswith("linux"):
        return None
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        target = min(19, current + increment)
        if target != current:
            os.setpriority(os.PRIO_PROCESS, 0, target)
        return target
    except OSError:  # a sandbox that forbids it: run at the priority we have
        return None
