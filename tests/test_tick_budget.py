"""TickBudget: the whole tick's budget, costs measured per kind of work, one agent regardless."""

from __future__ import annotations

import math

import pytest

from aiplanner.tick_budget import COST_WEIGHT, PLANNING_FLOOR, SPREADS, TickBudget

NONE = -math.inf  # a kind with no waiting work


def test_the_budget_counts_from_the_start_of_the_tick_less_the_rest_of_it() -> None:
    budget = TickBudget(2)
    # A first tick measures the rest (from the end of planning to the end of the tick): 1 ms.
    budget.start(10.0)
    budget.open(10.0, 5.0, [0.0, NONE], tick=1)
    budget.planning_done(10.001)
    budget.end(10.002)
    assert budget.rest_s == pytest.approx(COST_WEIGHT * 0.001)
    # Next tick: snapshots took 1 ms before planning opened; 5 ms in all, less the rest (its
    # mean, and SPREADS mean deviations: one sample 1 ms from a mean of 0 so far).
    assert budget.reserved_s == pytest.approx((1 + SPREADS) * COST_WEIGHT * 0.001)
    budget.start(20.0)
    budget.open(20.001, 5.0, [0.0, NONE], tick=2)
    until = 20.0 + 0.005 - budget.reserved_s
    assert budget.fits(0, until - 1e-9)
    assert not budget.fits(0, until + 1e-9)
    assert not budget.spent(until - 1e-9)
    assert budget.spent(until)


def test_without_a_start_the_tick_counts_from_the_opening_and_none_means_no_limit() -> None:
    budget = TickBudget(1)
    budget.open(5.0, 2.0, [0.0], tick=1)
    assert budget.fits(0, 5.0019)
    assert not budget.fits(0, 5.0021)
    budget.open(5.0, None, [0.0], tick=2)
    assert budget.fits(0, 1e9)
    assert not budget.spent(1e9)


def test_each_kind_learns_its_own_cost_and_admits_only_what_is_expected_to_fit() -> None:
    budget = TickBudget(2)
    budget.open(0.0, 10.0, [0.0, 0.0], tick=1)
    # Kind 0: agents 0.1 ms apart.
    for i in range(30):
        assert budget.fits(0, i * 0.0001)
    cost0 = budget.agent_cost_s[0]
    assert cost0 == pytest.approx(0.0001, rel=0.01)
    assert budget.agent_cost_s[1] == 0.0
    budget.fits(1, 0.004)
    budget.fits(1, 0.0045)  # one sample of 0.5 ms
    assert budget.agent_cost_s[1] == pytest.approx(COST_WEIGHT * 0.0005)
    assert budget.agent_cost_s[0] == cost0  # untouched by kind 1
    # Admission looks ahead by the expected cost: at 9.95 ms a 0.1 ms job does not fit 10 ms.
    budget.open(0.0, 10.0, [0.0, 0.0], tick=2)
    assert not budget.fits(0, 0.00995)


def test_one_agent_regardless_goes_to_the_kind_waiting_longest() -> None:
    budget = TickBudget(3)
    budget.open(0.0, 1.0, [2.0, 5.0, NONE], tick=7)
    assert budget.preferred == 1
    assert not budget.grant_to(0)  # comes before the preferred kind: not its turn
    assert budget.grant_to(1)
    assert not budget.grant_to(1)  # once a tick
    assert not budget.grant_to(2)
    budget.open(0.0, 1.0, [2.0, 5.0, NONE], tick=8)
    assert budget.grant_to(1)  # a new tick, a new grant


def test_a_later_kind_gets_the_grant_the_preferred_one_did_not_take() -> None:
    budget = TickBudget(3)
    budget.open(0.0, 1.0, [0.0, NONE, NONE], tick=1)
    assert budget.preferred == 0
    # Kind 0 had nothing to do after all (it never asked): kind 2 may take it.
    assert budget.grant_to(2)


def test_no_grant_once_the_preferred_kind_had_an_agent_served_this_tick() -> None:
    """The grant is progress for the longest-waiting kind when nothing of it fits: once one of
    its agents went ahead (within the budget, or due regardless), nobody goes past the budget
    by the grant that tick, neither that kind nor a later one; served work of another kind
    does not count."""
    budget = TickBudget(3)
    budget.open(0.0, 1.0, [5.0, 2.0, 1.0], tick=1)
    assert budget.preferred == 0
    budget.served(1)  # not the preferred kind: the grant is still there
    budget.served(0)
    assert not budget.grant_to(0)
    assert not budget.grant_to(2)
    budget.open(0.0, 1.0, [5.0, 2.0, 1.0], tick=2)
    assert budget.grant_to(0)  # a new tick, nothing served yet


def test_ties_take_turns_by_tick() -> None:
    budget = TickBudget(3)
    chosen = []
    for tick in range(4):
        budget.open(0.0, 1.0, [3.0, 3.0, NONE], tick=tick)
        chosen.append(budget.preferred)
    assert chosen == [0, 1, 0, 1]


def test_planning_keeps_a_floor_when_the_tick_is_over_budget_before_it_starts() -> None:
    budget = TickBudget(1)
    budget.start(0.0)
    budget.open(0.010, 2.0, [0.0], tick=1)  # 10 ms of snapshots already: over a 2 ms budget
    floor_end = 0.010 + 0.002 * PLANNING_FLOOR
    assert budget.fits(0, floor_end - 1e-9)
    assert not budget.fits(0, floor_end + 1e-9)


def test_admission_allows_for_how_much_the_cost_varies() -> None:
    budget = TickBudget(1)
    budget.open(0.0, 100.0, [0.0], tick=1)
    now = 0.0
    for i in range(60):  # alternately 0.1 and 0.3 ms: a mean of 0.2, a deviation of 0.1
        now += 0.0001 if i % 2 else 0.0003
        budget.fits(0, now)
    mean = budget.agent_cost_s[0]
    assert mean == pytest.approx(0.0002, rel=0.2)
    budget.open(0.0, 1.0, [0.0], tick=2)  # until 1 ms
    # 0.3 ms left: the mean alone would fit, the mean plus SPREADS deviations does not.
    assert 0.0007 + mean < 0.001
    assert not budget.fits(0, 0.0007)
    budget.open(0.0, 1.0, [0.0], tick=3)  # (two calls in a row would be a sample)
    assert budget.fits(0, 0.001 - mean - SPREADS * 0.00012)


def test_the_idle_time_admits_what_fits_before_its_end_and_nothing_regardless() -> None:
    b = TickBudget(2)
    b.open(0.0, 2.0, [5.0, 1.0], tick=1)
    assert b.fits(0, 0.0)
    assert b.fits(0, 0.001)  # one agent's work of kind 0 measured: 1 ms
    b.open_idle(until=1.0105)  # between frames, 10.5 ms of idle time from t = 1.0
    assert b.fits(0, 1.000)
    assert b.fits(0, 1.001)  # the measured 1 ms (and its spread) fits before the end
    assert not b.fits(0, 1.010)  # ends past it
    assert b.spent(1.0105)
    assert not b.grant_to(0) and not b.grant_to(1)  # nothing goes ahead regardless
    b.open(2.0, 2.0, [5.0, 1.0], tick=2)  # the next tick: its own window and its grant again
    assert not b.spent(2.0)
    assert b.grant_to(0)


def test_planning_after_its_last_agent_counts_against_the_next_ticks_budget() -> None:
    """Planning's own steps after its last per-agent work (sending the batches) are measured
    as its tail, from when that work was expected to end, and the next tick's per-agent work
    stops that much sooner."""
    budget = TickBudget(1)
    budget.start(0.0)
    budget.open(0.0, 10.0, [0.0], tick=1)
    assert budget.fits(0, 0.001)
    assert budget.fits(0, 0.002)  # one sample of kind 0: 1 ms
    cost = budget.agent_cost_s[0]
    budget.served(0)
    budget.planning_done(0.002 + cost + 0.0005)  # 0.5 ms of planning after the last agent
    assert budget.tail_s == pytest.approx(COST_WEIGHT * 0.0005)
    budget.end(0.002 + cost + 0.0005)
    assert budget.rest_s == 0.0
    # A refusal marks its own time: planning after it is tail too.
    budget.start(1.0)
    budget.open(1.0, 10.0, [0.0], tick=2)
    assert budget.reserved_s == pytest.approx((1 + SPREADS) * budget.tail_s)  # one sample
    until = 1.0 + 0.010 - budget.reserved_s
    assert budget.spent(until) and not budget.spent(until - 1e-9)
    assert not budget.fits(0, until - 1e-9)
    tail = budget.tail_s
    budget.planning_done(until - 1e-9 + 0.001)
    assert budget.tail_s == pytest.approx(tail + COST_WEIGHT * (0.001 - tail))
    # A tick with no per-agent work weighed measures no tail.
    tail = budget.tail_s
    budget.open(2.0, 10.0, [0.0], tick=3)
    budget.planning_done(2.005)
    assert budget.tail_s == tail


def test_a_tail_that_varies_is_reserved_with_its_spread_as_work_is() -> None:
    """A tick that sends a batch has a tail several times the usual one: the window for
    per-agent work leaves room for the tail's mean plus SPREADS deviations, not its mean alone
    (which the ticks with a long tail would overrun)."""
    budget = TickBudget(1)
    for tick, tail in enumerate([0.0, 0.0006] * 10):  # every other tick sends a batch
        start = float(tick)
        budget.start(start)
        budget.open(start, 10.0, [0.0], tick=tick)
        assert budget.fits(0, start)
        budget.served(0)
        budget.planning_done(start + budget.agent_cost_s[0] + tail)
        budget.end(start + budget.agent_cost_s[0] + tail)  # no rest: its spread stays 0
    mean = budget.tail_s
    assert 0.0002 < mean < 0.0004
    assert budget.rest_s == 0.0
    budget.start(100.0)
    budget.open(100.0, 10.0, [0.0], tick=100)
    window = 0.010 - mean  # what reserving the mean alone would leave
    # The deviations of a tail alternating 0 and 0.6 ms around its mean are ~0.3 ms.
    assert budget.spent(100.0 + window - SPREADS * 0.0002)
    assert not budget.spent(100.0 + window - SPREADS * 0.0004)
    assert SPREADS * 0.0002 < budget.reserved_s - mean < SPREADS * 0.0004


def test_the_kinds_before_the_longest_waiting_one_leave_room_for_its_agent() -> None:
    budget = TickBudget(2)
    budget.open(0.0, 100.0, [0.0, 0.0], tick=1)
    budget.fits(1, 0.0)
    budget.fits(1, 0.0005)  # kind 1 measured: 0.5 ms a sample
    cost1 = budget.agent_cost_s[1]
    assert cost1 > 0
    # Kind 1 waited longest: kind 0, done first, stops where kind 1's agent would no longer fit.
    budget.open(0.0, 2.0, [0.0, 3.0], tick=2)
    assert budget.preferred == 1
    assert budget.fits(0, 0.002 - cost1 - 1e-6)
    budget.open(0.0, 2.0, [0.0, 3.0], tick=3)
    assert not budget.fits(0, 0.002 - cost1 + 1e-6)
    # Kind 0 waited longest (or kind 1 has nothing waiting): no room kept.
    budget.open(0.0, 2.0, [3.0, 0.0], tick=4)
    assert budget.fits(0, 0.002 - cost1 + 1e-6)
    budget.open(0.0, 2.0, [0.0, NONE], tick=5)
    assert budget.fits(0, 0.002 - 1e-6)
