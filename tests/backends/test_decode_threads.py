"""ThreadGovernor on a virtual clock: the configured count until a probe shows one thread faster,
probes kept small, taken only where both halves fit, and spaced so that they cost about a tenth
of the time at most; it follows the load both ways."""

from __future__ import annotations

import itertools
import os
import threading
from pathlib import Path

import pytest

from aiplanner.backends import decode_threads
from aiplanner.backends.decode_threads import (
    ThreadGovernor,
    cores_taken,
    lower_priority,
    runnable_elsewhere,
)


def _never() -> bool:
    return False


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# Seconds per decode: a fixed part (one per barrier: hundreds a decode) plus a part per row.
BUSY = {1: (0.05, 0.06), 2: (1.5, 0.25)}  # others want the cores: two threads wait at barriers
QUIET = {1: (0.01, 0.008), 2: (0.008, 0.005)}
# Two threads ahead, but not by much: a 128-row decode on two at 0.89 of a 64-row probe's time
# a row on one (no decode shows two well ahead, so probes keep their schedule).
CLOSE = {1: (0.002, 0.002), 2: (0.002, 0.0018)}


def _run(
    gov: ThreadGovernor, clock: _Clock, work: int, load: dict[int, tuple[float, float]]
) -> int:
    """One decode of up to ``work`` rows under ``load``; the thread count it used."""
    threads, limit = gov.plan()
    rows = work if limit is None else min(work, limit)
    fixed, per_row = load[threads]
    clock.now += fixed + rows * per_row
    gov.record(rows, threads, fixed + rows * per_row, probe=limit is not None)
    gov.look()  # as the engine does after each decode
    return threads


def _share_of_time_on_two(
    gov: ThreadGovernor, clock: _Clock, load: dict[int, tuple[float, float]], decodes: int
) -> float:
    spent = {1: 0.0, 2: 0.0}
    for _ in range(decodes):
        started = clock.now
        threads = _run(gov, clock, 128, load)
        spent[threads] += clock.now - started
    return spent[2] / (spent[1] + spent[2])


def test_one_configured_thread_is_always_one_and_never_probed() -> None:
    gov = ThreadGovernor(1)
    assert gov.plan() == (1, None)
    gov.record(10, 1, 1.0, probe=False)
    assert gov.plan() == (1, None)


def test_it_starts_on_the_configured_count_with_a_small_probe_of_each_count() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_rows=16, clock=clock)
    assert gov.threads == 2
    assert gov.plan() == (1, 16)
    _run(gov, clock, 128, QUIET)
    assert gov.plan() == (2, 16)
    _run(gov, clock, 128, QUIET)
    assert gov.threads == 2 and gov.plan() == (2, None)  # two are faster here: kept


def test_a_probe_waits_for_a_decode_with_rows_for_both_halves() -> None:
    """A probe's halves are compared a row for a row: it begins only where the next decodes
    have two probes' rows (a pass's last few rows alone would make its second half smaller);
    until then the decodes run on the count in use, and the probe stays due."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_rows=64, clock=clock)
    assert gov.plan(ready=127) == (2, None)
    gov.record(127, 2, 0.3, probe=False)
    assert gov.plan(ready=20) == (2, None)
    assert gov.plan(ready=128) == (1, 64)
    gov.record(64, 1, 0.2, probe=True)
    assert gov.plan(ready=64) == (2, 64)  # the second half, on what is left
    gov.record(64, 2, 0.12, probe=True)
    assert gov.threads == 2 and gov.plan(ready=1000) == (2, None)


def test_it_starts_on_one_thread_while_others_want_the_cores() -> None:
    gov = ThreadGovernor(2, busy=lambda: True, clock=_Clock())
    assert gov.plan(ready=10) == (1, None)


def test_on_a_busy_machine_it_stays_on_one_thread_and_probes_cost_a_tenth() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, clock=clock)
    share = _share_of_time_on_two(gov, clock, BUSY, 5000)
    assert gov.threads == 1
    assert share < 0.12  # about a tenth: the probe, then ten times what it lost


def test_the_default_probe_is_large_enough_to_see_two_threads_pay_off() -> None:
    """Two threads pay a fixed cost per decode (their barriers) and win on rows: as measured on
    a 2-core Xeon, a 16-row decode is no faster on two threads while a 128-row chunk takes 0.24
    s against 0.38 s. The default probe sees the chunks' case."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, clock=clock)
    barriers = {1: (0.0, 0.0039), 2: (0.04, 0.0017)}  # 16 rows: 62 / 67 ms; 128: 0.50 / 0.26 s
    for _ in range(3):
        _run(gov, clock, 128, barriers)
    assert gov.threads == 2


def test_probes_of_unequal_sizes_decide_nothing() -> None:
    """A pass's last 16 rows as the two-thread probe cost more per row than the one-thread
    probe's 64 (the decode's fixed cost), though two threads are faster at equal sizes: no
    switch on that pair; the next, of equal sizes, keeps two."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, clock=clock)
    # 64 rows: 202 / 191 ms; 16 on two: 85 ms; 128 on two at 0.82 of one's time a row (no lead)
    fixed_cost = {1: (0.01, 0.003), 2: (0.05, 0.0022)}
    for _ in range(3):
        _run(gov, clock, 128, fixed_cost)
    assert gov.threads == 2
    clock.now += 100.0  # the next probe is due
    assert _run(gov, clock, 128, fixed_cost) == 1  # the one-thread probe: 64 rows
    assert _run(gov, clock, 16, fixed_cost) == 2  # the pass's last 16 rows, on two
    assert gov.threads == 2
    clock.now += 100.0
    _run(gov, clock, 128, fixed_cost)
    _run(gov, clock, 128, fixed_cost)
    assert gov.threads == 2 and gov.plan() == (2, None)


def test_on_a_quiet_machine_it_runs_the_configured_count() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, clock=clock)
    share = _share_of_time_on_two(gov, clock, QUIET, 5000)
    assert gov.threads == 2
    assert share > 0.95  # the probes of one thread are short and rare


def test_probes_that_change_nothing_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_s=1.0, max_probe_s=8.0, clock=clock)
    probes: list[float] = []
    for _ in range(20_000):
        threads, limit = gov.plan()
        if limit is not None and threads == 1:
            probes.append(clock.now)
        _run(gov, clock, 128, CLOSE)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    # No probe changes the count (two, from the start, stay ahead). A gap is the wait plus the
    # probe (0.25 s) and the decode under way (at most 0.24 s on two threads).
    assert gaps[:5] == pytest.approx([2.0, 4.0, 8.0, 8.0, 8.0], abs=0.5)
    assert max(gaps) < 8.0 + 0.5


def _probe(gov: ThreadGovernor, one: float, two: float, rows: int = 64) -> None:
    """A probe pair, seconds a row on one thread and on two."""
    assert gov.plan() == (1, rows)
    gov.record(rows, 1, rows * one, probe=True)
    assert gov.plan() == (2, rows)
    gov.record(rows, 2, rows * two, probe=True)


def test_a_decode_well_ahead_of_one_thread_makes_the_probe_needless() -> None:
    """Two threads at 0.6 of one thread's time a row need no probe to say they are ahead, even
    after a long idle spell (as between a game's bursts of planning); a comparable decode at 0.9
    brings the probe back when it is due."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_s=1.0, max_probe_s=30.0, clock=clock)
    _probe(gov, 0.002, 0.0012)
    assert gov.threads == 2
    for _ in range(100):  # 50 s, fifty times the wait
        clock.now += 0.5
        assert gov.plan() == (2, None)
        gov.record(128, 2, 128 * 0.0012, probe=False)
    clock.now += 600.0  # idle
    assert gov.plan() == (2, None)
    gov.record(128, 2, 128 * 0.0018, probe=False)  # no longer well ahead
    assert gov.plan() == (2, None)  # the wait (2 s: the probe changed nothing) has not passed
    clock.now += 2.1
    assert gov.plan() == (1, 64)


def test_the_lead_lapses_and_small_decodes_say_nothing_of_it() -> None:
    """Decodes smaller than two probes (a decode's fixed cost weighs more a row on them) neither
    show nor refute the lead; a lead not seen again in ``max_probe_s`` of decoding lapses."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_s=1.0, max_probe_s=30.0, clock=clock)
    _probe(gov, 0.002, 0.0012)
    gov.record(128, 2, 128 * 0.0012, probe=False)  # the lead, measured
    for _ in range(74):  # 29.6 s of decoding since
        clock.now += 0.4
        gov.record(100, 2, 0.4, probe=False)  # slow a row, but small: not counted
        assert gov.plan() == (2, None)
    clock.now += 0.8
    gov.record(100, 2, 0.8, probe=False)  # 30.4 s of decoding since the lead was seen
    _probe(gov, 0.002, 0.0012)  # lapsed: probed (it changes nothing: the next waits 4 s)
    gov.record(100, 2, 100 * 0.0012, probe=False)  # fast a row, but small: no lead either
    clock.now += 4.5
    assert gov.plan() == (1, 64)


def test_a_stalled_one_thread_probe_does_not_excuse_a_slow_configured_count() -> None:
    """The lead is measured against the lower median of the last probes' one-thread decodes: one
    probe whose one-thread decode stalled (25 times slower) does not make two threads at 0.9
    of one thread's usual time look well ahead."""
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, probe_s=1.0, clock=clock)
    _probe(gov, 0.002, 0.0012)
    clock.now += 2.5
    _probe(gov, 0.05, 0.0012)  # the next waits ten times what one thread lost: 31 s
    assert gov.threads == 2
    clock.now += 31.5
    gov.record(128, 2, 128 * 0.0018, probe=False)  # 0.04 of the stalled probe's time a row
    assert gov.plan() == (1, 64)


def test_it_follows_the_load_as_it_comes_and_goes() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, busy=_never, max_probe_s=8.0, clock=clock)
    for _ in range(200):
        _run(gov, clock, 128, QUIET)
    assert gov.threads == 2
    for _ in range(200):
        _run(gov, clock, 128, BUSY)
    assert gov.threads == 1
    for _ in range(2000):
        _run(gov, clock, 128, QUIET)
    assert gov.threads == 2


def test_while_other_threads_want_the_cores_it_runs_on_one_and_skips_probes() -> None:
    clock = _Clock()
    crowded = [False]
    gov = ThreadGovernor(2, busy=lambda: crowded[0], clock=clock)
    for _ in range(50):
        _run(gov, clock, 128, QUIET)
    assert gov.threads == 2
    crowded[0] = True
    clock.now += 1.0  # the last look is stale
    used = [_run(gov, clock, 128, BUSY) for _ in range(500)]
    assert used == [1] * 500  # no decode on two threads, not even a probe
    crowded[0] = False
    clock.now += 1.0
    assert 2 in [_run(gov, clock, 128, QUIET) for _ in range(3)]  # at most a probe of one first


def test_the_busy_check_counts_other_runnable_threads_against_free_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cores = len(decode_threads.os.sched_getaffinity(0))
    for others, busy in ((cores - 2, False), (cores - 1, True), (None, False)):
        monkeypatch.setattr(decode_threads, "runnable_elsewhere", lambda n=others: n)
        assert cores_taken(2)() is busy
    found = runnable_elsewhere()  # this machine is Linux: /proc/stat says
    assert found is not None and found >= 0


def test_no_thread_of_this_process_is_counted_as_a_crowd(tmp_path: Path) -> None:
    # /proc/self/task as it looks right after a decode: this thread, running; llama.cpp's worker
    # spinning (R); the game's own Python thread wanting its core for a frame (R); another
    # thread asleep (S). The two ready ones are this process's: the engine's threads yield to
    # the game's, so a frame is not a crowd that should cost a decode its second thread.
    me = threading.get_native_id()
    release = threading.Event()
    game = threading.Thread(target=release.wait, args=(10.0,))
    game.start()
    try:
        assert game.native_id is not None
        for task, state in ((me, "R"), (999_991, "R"), (game.native_id, "R"), (999_992, "S")):
            (tmp_path / str(task)).mkdir()
            (tmp_path / str(task) / "stat").write_text(f"{task} (we (ir)d) {state} 1 2 3\n")
        (tmp_path / "999993").mkdir()  # a thread that ended before its stat could be read
        (tmp_path / "oddity").mkdir()
        assert decode_threads._own_running(str(tmp_path)) == 2
        assert decode_threads._own_running(str(tmp_path / "gone")) == 0
        # The machine sees those two and the caller: nothing else wants the cores.
        stat = tmp_path / "stat"
        stat.write_text("procs_running 3\n")
        assert (
            runnable_elsewhere(str(stat), lambda: decode_threads._own_running(str(tmp_path))) == 0
        )
    finally:
        release.set()
        game.join()


@pytest.mark.parametrize("own", [[1, 0], [0, 1]], ids=["fell-asleep", "woke-up"])
def test_a_worker_that_changes_state_between_the_reads_is_not_a_crowd(
    tmp_path: Path, own: list[int]
) -> None:
    """The machine counts the caller and one of llama.cpp's workers (2 running); the worker is
    running in one of the process's own two reads and not in the other: it is ours either way,
    and nothing else wants the cores."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 2\nprocs_blocked 0\n")
    reads = iter(own)
    assert runnable_elsewhere(str(stat), lambda: next(reads)) == 0
    # A thread of another program is still seen.
    stat.write_text("procs_running 3\n")
    reads = iter(own)
    assert runnable_elsewhere(str(stat), lambda: next(reads)) == 1
    assert runnable_elsewhere(str(tmp_path / "no-stat"), lambda: 0) is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ThreadGovernor(0)
    with pytest.raises(ValueError):
        ThreadGovernor(2, busy=_never, probe_rows=0)
    with pytest.raises(ValueError):
        ThreadGovernor(2, busy=_never, probe_s=5.0, max_probe_s=1.0)


@pytest.mark.usefixtures("per_thread_niceness")
def test_lower_priority_changes_the_calling_thread_only() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int | None] = {}

    def worker() -> None:
        seen["first"] = lower_priority(3)
        seen["again"] = lower_priority(0)  # adds nothing
        seen["most"] = lower_priority(19)  # capped at 19
        seen["own"] = os.getpriority(os.PRIO_PROCESS, 0)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert seen == {
        "first": min(19, base + 3),
        "again": min(19, base + 3),
        "most": 19,
        "own": 19,
    }
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # this thread kept its own


@pytest.mark.parametrize("increment", [-1, 20])
def test_lower_priority_refuses_an_increment_out_of_range(increment: int) -> None:
    with pytest.raises(ValueError, match="increment"):
        lower_priority(increment)
