"""ThreadGovernor on a virtual clock: it measures before it trusts, uses the faster count per size
of decode, retries the other after a wait that doubles while it keeps losing, and follows the
load back when the other count wins again."""

from __future__ import annotations

import itertools

import pytest

from aiplanner.backends.decode_threads import ThreadGovernor


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(gov: ThreadGovernor, clock: _Clock, rows: int, per_row: dict[int, float]) -> int:
    """One decode of ``rows`` rows taking ``per_row[threads]`` seconds a row; the count used."""
    threads = gov.choose(rows)
    clock.now += rows * per_row[threads]
    gov.record(rows, threads, rows * per_row[threads])
    return threads


BUSY = {1: 0.02, 2: 0.30}  # another process on the cores: two threads wait at every barrier
MILD = {1: 0.02, 2: 0.025}  # two threads a little slower
QUIET = {1: 0.02, 2: 0.012}


def test_one_configured_thread_is_always_one() -> None:
    gov = ThreadGovernor(1)
    assert gov.choose(10) == 1
    gov.record(10, 1, 1.0)
    assert gov.choose(10) == 1


def test_both_counts_are_measured_before_either_is_trusted() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, clock=clock)
    assert _run(gov, clock, 10, BUSY) == 1  # the cheap one first: at most twice as slow
    assert _run(gov, clock, 10, BUSY) == 2
    assert gov.estimate(10, 1) == pytest.approx(0.02)
    assert gov.estimate(10, 2) == pytest.approx(0.30)
    assert [_run(gov, clock, 10, BUSY) for _ in range(20)] == [1] * 20


def test_on_a_quiet_machine_the_configured_count_is_kept() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, probe_s=1.0, max_probe_s=8.0, clock=clock)
    used = [_run(gov, clock, 10, QUIET) for _ in range(2000)]
    assert used.count(1) < 0.02 * len(used)  # a try of one thread now and then


def test_losing_tries_wait_twice_as_long_each_time_up_to_the_cap() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, probe_s=2.0, max_probe_s=16.0, clock=clock)
    tries: list[float] = []
    for _ in range(6000):
        if _run(gov, clock, 10, MILD) == 2:
            tries.append(clock.now)  # when the try ended: the wait counts from there
    # The gaps between tries (to within a decode or two): 2, 4, 8, 16, 16, ... s.
    waits = [b - a for a, b in itertools.pairwise(tries)]
    assert len(waits) >= 6
    assert waits[:4] == pytest.approx([2.0, 4.0, 8.0, 16.0], abs=0.5)
    assert waits[4:] == pytest.approx([16.0] * len(waits[4:]), abs=0.5)


def test_a_costly_losing_try_waits_ten_times_its_cost_so_tries_take_a_tenth() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, probe_s=2.0, max_probe_s=16.0, clock=clock)
    spent = {1: 0.0, 2: 0.0}
    for _ in range(20_000):
        started = clock.now
        threads = _run(gov, clock, 10, BUSY)
        spent[threads] += clock.now - started
    assert spent[2] / (spent[1] + spent[2]) < 0.12


def test_when_the_load_goes_the_configured_count_wins_again() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, probe_s=1.0, max_probe_s=4.0, clock=clock)
    for _ in range(100):
        _run(gov, clock, 10, BUSY)
    assert gov.choose(10) == 1
    used = [_run(gov, clock, 10, QUIET) for _ in range(1000)]
    assert used[-200:].count(2) > 190  # two threads again, one thread tried now and then


def test_when_the_load_comes_the_slowed_count_is_left_at_once() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, clock=clock)
    for _ in range(100):
        _run(gov, clock, 10, QUIET)
    assert gov.choose(10) == 2
    used = [_run(gov, clock, 10, BUSY) for _ in range(20)]
    assert used == [2] + [1] * 19  # one slow decode and its estimate passes one thread's


def test_a_new_size_starts_with_the_winner_elsewhere_and_waits_for_the_next_try() -> None:
    clock = _Clock()
    gov = ThreadGovernor(2, probe_s=2.0, clock=clock)
    for _ in range(5):
        _run(gov, clock, 10, BUSY)
    assert gov.choose(128) == 1  # never measured at this size: one thread, as at 10 rows
    _run(gov, clock, 128, BUSY)
    assert gov.choose(128) == 1  # the costly try waits: ten times what the last one lost
    clock.now += 10 * (10 * (BUSY[2] - BUSY[1]))
    assert gov.choose(128) == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ThreadGovernor(0)
    with pytest.raises(ValueError):
        ThreadGovernor(2, probe_s=5.0, max_probe_s=1.0)
