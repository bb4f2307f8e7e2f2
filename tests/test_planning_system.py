"""PlanningSystem behaviour through the plugin: cache, circuit breaker, deadlines, live tuning."""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections.abc import Sequence

import esper
import pytest
from scenario import spawn_battle

from aiplanner import (
    ActionQueue,
    Agent,
    BackendUnavailable,
    ConfigError,
    PlannerConfig,
    PlannerPlugin,
    PlanState,
    PlanStatus,
    ScriptedBackend,
    ScriptedReply,
    Step,
    Tier,
    queries,
)
from aiplanner.backends.base import CompletionRequest
from aiplanner.bench.world import spawn_agent
from aiplanner.planning_system import FRESH_S
from aiplanner.tick_budget import PLANNING_FLOOR

DT = 1 / 30


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tick(clock: Clock, n: int = 1) -> None:
    for _ in range(n):
        clock.now += DT
        esper.process(DT)


def _finish_plans(ents: list[int]) -> None:
    """Make every agent need a new plan (as if its queue ran out)."""
    for e in ents:
        esper.component_for_entity(e, PlanState).status = PlanStatus.IDLE


def test_cache_hit_skips_the_backend(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(virtual_time=True)
    cfg = PlannerConfig(max_wait_ms=0, lockstep=True)
    ents = spawn_battle(2)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock, 3)
        calls = len(backend.calls)
        assert calls == 2
        assert {esper.component_for_entity(e, PlanState).tier for e in ents} == {Tier.LLM}
        _finish_plans(ents)  # same situation again: the cached plans apply, no new call
        _tick(clock)
        assert len(backend.calls) == calls
        assert {esper.component_for_entity(e, PlanState).tier for e in ents} == {Tier.CACHE}
        assert plugin.cache.hits == 2
        # Latency counts only the agents that waited on the backend, not instant cache hits.
        assert plugin.metrics.latency_s.count == 2


def test_stale_cached_plan_is_not_used(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(virtual_time=True)
    ents = spawn_battle(1)
    with PlannerPlugin(PlannerConfig(max_wait_ms=0, lockstep=True), backend, clock=clock) as plugin:
        _tick(clock, 3)
        assert len(backend.calls) == 1
        # Poison the cache: the entry now names a target that is not a visible enemy.
        key = next(iter(plugin.cache._entries))
        from aiplanner import Plan

        plugin.cache.put(key, Plan((Step("Attack", (987654,)),)))
        _finish_plans(ents)
        _tick(clock, 3)
        assert plugin.cache.stale == 1
        st = esper.component_for_entity(ents[0], PlanState)
        assert st.tier is Tier.LLM  # asked the backend again instead of using the stale plan
        assert len(backend.calls) == 2
        steps = esper.component_for_entity(ents[0], ActionQueue).steps
        assert Step("Attack", (987654,)) not in steps


def test_dead_backend_opens_the_breaker_then_is_tried_after_cooldown(world: str) -> None:
    clock = Clock()
    alive = [False]

    def responder(call: CompletionRequest) -> ScriptedReply | None:
        return None if alive[0] else ScriptedReply(error=BackendUnavailable("connection refused"))

    backend = ScriptedBackend(responder, virtual_time=True, max_concurrency=1, parallel=False)
    cfg = PlannerConfig(
        max_wait_ms=0,
        lockstep=True,
        breaker_failures=3,
        breaker_cooldown_s=2.0,
        cache_enabled=False,
        simplified_retry=False,
    )
    ents = spawn_battle(4)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock, 3)
        assert plugin.breaker.state == "open"
        assert len(backend.calls) == 3  # the fourth agent was refused by the breaker, not called
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert {s.tier for s in states} == {Tier.HEURISTIC}  # nobody was left without a plan
        for _ in range(20):  # while open: plans keep coming from rules, the backend is not called
            _finish_plans(ents)
            _tick(clock)
        assert len(backend.calls) == 3
        assert plugin.stats()["tiers"]["heuristic"] >= 4 * 20
        alive[0] = True
        clock.now += 2.0  # cool-down over: half-open, one trial call, then closed again
        _finish_plans(ents)
        _tick(clock, 3)
        assert plugin.breaker.state == "closed"
        assert len(backend.calls) > 3
        _finish_plans(ents)
        _tick(clock, 3)
        assert {s.tier for s in states} == {Tier.LLM}


def test_deadline_passes_then_fallback_and_late_answer_is_dropped(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(latency_s=5.0, virtual_time=True)  # answers "arrive" after 5 s
    cfg = PlannerConfig(
        max_wait_ms=0,
        lockstep=True,
        plan_deadline_s=1.0,
        cache_enabled=False,
        simplified_retry=False,
    )
    ents = spawn_battle(2)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock, int(1.0 / DT) + 3)
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert {s.tier for s in states} == {Tier.HEURISTIC}
        assert {s.invalid_reason for s in states} == {"deadline"}
        _tick(clock, int(5.0 / DT))
        stats = plugin.stats()
        assert stats["deadline_misses"] == 2
        assert "llm" not in stats["tiers"]  # the late answers never became plans


def test_tuning_applies_to_the_next_batch(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(virtual_time=True)
    cfg = PlannerConfig(
        max_batch_size=4, max_wait_ms=0, lockstep=True, strategy="packed", cache_enabled=False
    )
    ents = spawn_battle(8)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock, 2)
        assert [len(c.agents) for c in backend.calls] == [4, 4]
        plugin.tune(max_batch_size=2, strategy="sequential")
        _finish_plans(ents)
        _tick(clock, 2)
        assert [len(c.agents) for c in list(backend.calls)[2:]] == [1] * 8
        assert plugin.stats()["max_batch_size"] == 2


def test_max_wait_holds_a_partial_batch(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend()
    cfg = PlannerConfig(max_batch_size=8, max_wait_ms=100, cache_enabled=False)
    spawn_battle(3)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)  # 3 < 8 and no time has passed: held back
        assert plugin.stats()["pending"] == 3 and plugin.stats()["in_flight"] == 0
        clock.now += 0.1
        _tick(clock)
        assert plugin.stats()["pending"] == 0 and plugin.stats()["in_flight"] == 3


def test_max_plans_per_tick_time_slices_a_burst(world: str) -> None:
    clock = Clock()
    ents = spawn_battle(12)
    cfg = PlannerConfig(max_plans_per_tick=5, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:  # rules only: every need is met at once
        counts = []
        for _ in range(3):
            _tick(clock)
            counts.append(plugin.stats()["plans"])
        assert counts == [5, 10, 12]
        executing = [
            e
            for e in ents
            if esper.component_for_entity(e, PlanState).status is PlanStatus.EXECUTING
        ]
        assert executing == sorted(ents)  # served in entity-id order, nobody starved


def test_budget_serves_idle_agents_first_and_holds_back_arrived_plans(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(virtual_time=True)
    cfg = PlannerConfig(max_wait_ms=0, lockstep=True, cache_enabled=False, max_plans_per_tick=3)
    spawn_battle(6)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)  # 3 agents ask (budget), the other 3 wait for the next tick
        assert plugin.stats()["in_flight"] == 3
        # The 3 waiting agents stand idle: they ask first and use the whole budget, while the
        # 3 answers that arrived wait (their agents are busy with their provisional plans).
        _tick(clock)
        assert plugin.stats()["in_flight"] == 6 and plugin.stats()["tiers"] == {}
        _tick(clock)  # nobody idle: the budget goes to the oldest answers
        assert plugin.stats()["tiers"] == {"llm": 3}
        _tick(clock)
        assert plugin.stats()["tiers"] == {"llm": 6} and plugin.stats()["in_flight"] == 0


def _wait_until(cond: object, ticks: int = 2000) -> None:
    for _ in range(ticks):
        if cond():  # type: ignore[operator]
            return
        esper.process(0.0)
        threading.Event().wait(0.002)
    raise AssertionError("condition not reached")


def _serial_gated() -> tuple[threading.Event, ScriptedBackend]:
    """A backend serving one call at a time, each answer held until the event is set."""
    gate = threading.Event()
    return gate, ScriptedBackend(gate=gate, parallel=False, max_concurrency=1)


def _calls_have_taken(plugin: PlannerPlugin, seconds: float) -> None:
    """The backend's calls have been taking ``seconds`` each (its measured median)."""
    for _ in range(5):
        plugin.metrics.record_call(seconds, None)


def test_serial_engine_gets_one_batch_at_a_time_and_only_agents_that_can_make_it(
    world: str,
) -> None:
    clock = Clock()
    gate, backend = _serial_gated()
    cfg = PlannerConfig(max_wait_ms=0, plan_deadline_s=2.5, cache_enabled=False)
    ents = spawn_battle(6)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _calls_have_taken(plugin, 1.0)
        _tick(clock)
        # 2.5 s of budget at 1 s a call: two agents fit in the batch, the rest wait here.
        assert plugin.stats()["in_flight"] == 2 and plugin.stats()["pending"] == 4
        clock.now += 2.0  # the engine is still busy: no second batch is sent meanwhile
        _tick(clock)
        assert plugin.stats()["in_flight"] == 2 and plugin.stats()["pending"] == 4
        gate.set()
        _wait_until(lambda: plugin.stats()["in_flight"] == 0)
        # 0.5 s left is less than one call: the four waiting agents fall back at once.
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert sorted(s.invalid_reason for s in states).count("no_time") == 4
        assert plugin.stats()["tiers"] == {"llm": 2, "heuristic": 4}
        assert len(backend.calls) == 2


class WorkClock:
    """A fake plugin clock: moves when the test moves ``now``, and by ``work`` seconds at every
    read, as if each piece of work between two reads took that long. Deterministic."""

    def __init__(self, work: float = 0.0) -> None:
        self.now = 0.0
        self.work = work

    def __call__(self) -> float:
        self.now += self.work
        return self.now


def _served(ents: list[int]) -> list[int]:
    return [e for e in ents if esper.component_for_entity(e, PlanState).tier is not None]


def test_time_budget_spreads_a_burst_over_ticks(world: str) -> None:
    ents = spawn_battle(12)
    clock = WorkClock(work=0.0005)  # every clock read costs 0.5 ms: a 2 ms budget fits a few
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:  # rules only: every need met at once
        served: list[list[int]] = []
        for _ in range(12):
            _tick(clock)
            served.append(_served(ents))
        first = served[0]
        assert 1 <= len(first) < len(ents)  # the burst did not fit in one tick...
        assert served[-1] == ents  # ...and everyone got a plan on a later one
        for before, after in itertools.pairwise(served):
            assert after[: len(before)] == before  # first come, first served: in id order
        assert plugin.stats()["budget_cuts"]


class _SlowGameStep(esper.Processor):
    """A game processor between the snapshot and planning systems that takes ``cost`` seconds
    of the plugin clock."""

    def __init__(self, clock: WorkClock, cost: float) -> None:
        self.clock = clock
        self.cost = cost

    def process(self, dt: float) -> None:
        self.clock.now += self.cost


def test_the_budget_covers_the_whole_tick_not_planning_alone(world: str) -> None:
    served = []
    for slow in (0.0, 0.0019):  # work before planning: none, or 1.9 ms of a 2 ms budget
        ents = spawn_battle(12)
        clock = WorkClock(work=0.0001)
        cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
        with PlannerPlugin(cfg, None, clock=clock) as plugin:
            esper.add_processor(_SlowGameStep(clock, slow), priority=250)  # between the two
            _tick(clock)
            served.append(len(_served(ents)))
            assert plugin.planning_system is not None
            assert plugin.planning_system.tick_budget.rest_s > 0  # the execution was measured
        esper.remove_processor(_SlowGameStep)
        for ent in ents:
            esper.delete_entity(ent, immediate=True)
        esper.clear_cache()
    fast, slow_served = served
    # 1.9 ms gone before planning: only planning's floor (half the budget) is left of 2 ms.
    assert 1 < slow_served < fast
    assert slow_served <= fast * PLANNING_FLOOR + 1


def test_no_budget_and_lockstep_do_the_whole_burst_in_one_tick(world: str) -> None:
    ents = spawn_battle(12)
    for cfg in (
        PlannerConfig(tick_budget_ms=None, cache_enabled=False),
        PlannerConfig(tick_budget_ms=2.0, cache_enabled=False, lockstep=True),
    ):
        clock = WorkClock(work=0.0005)
        for e in ents:
            esper.component_for_entity(e, PlanState).tier = None
        _finish_plans(ents)
        with PlannerPlugin(cfg, None, clock=clock) as plugin:
            _tick(clock)
            assert _served(ents) == ents
            assert plugin.stats()["budget_cuts"] == 0


def test_time_budget_starves_nobody_under_constant_demand(world: str) -> None:
    ents = spawn_battle(12)
    clock = WorkClock(work=0.0005)
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock):
        last_served = dict.fromkeys(ents, 0)
        longest_wait = 0
        for tick in range(1, 41):
            plan_ids = {e: esper.component_for_entity(e, PlanState).plan_id for e in ents}
            _tick(clock)
            for e in ents:
                if esper.component_for_entity(e, PlanState).plan_id != plan_ids[e]:
                    longest_wait = max(longest_wait, tick - last_served[e])
                    last_served[e] = tick
            _finish_plans(ents)  # every plan ends at once: everyone needs a new one every tick
        # Served in id order every tick, the low ids would take the whole budget forever.
        assert min(last_served.values()) > 30
        assert longest_wait <= len(ents)


def test_no_agent_stays_idle_past_the_limit_whatever_the_budget(world: str) -> None:
    from aiplanner.planning_system import IDLE_LIMIT_TICKS

    ents = spawn_battle(12)
    clock = WorkClock(work=0.005)  # each agent's work costs 5 ms: a 2 ms budget fits one a tick
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:
        for _ in range(IDLE_LIMIT_TICKS):
            _tick(clock)
        assert len(_served(ents)) == IDLE_LIMIT_TICKS  # the budget let one through a tick...
        counts = []
        while len(_served(ents)) < len(ents) and len(counts) < 10:
            waiting = len(ents) - len(_served(ents))
            _tick(clock)
            counts.append(waiting - (len(ents) - len(_served(ents))))
        # ...but past the limit a third of those overdue (rounded up) go regardless, and they
        # are the tick's progress (no agent past the budget besides them): 6 overdue -> 2,
        # 4 -> 2, 2 -> 1, 1 -> 1. Spread, not all on one tick.
        assert counts == [2, 2, 1, 1]
        assert plugin.stats()["budget_cuts"]


def test_a_large_burst_waits_at_most_twice_the_idle_limit(world: str) -> None:
    from aiplanner.planning_system import IDLE_LIMIT_TICKS

    ents = spawn_battle(300)  # a level starts: everyone needs a plan on the same tick
    clock = WorkClock(work=0.005)  # nothing fits a 2 ms budget: only what goes regardless
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock):
        waiting = []
        for _ in range(2 * IDLE_LIMIT_TICKS + 1):
            _tick(clock)
            waiting.append(len(ents) - len(_served(ents)))
        # Spread: a third of the overdue a tick (that alone would take until tick 17 here)...
        assert waiting[IDLE_LIMIT_TICKS] > len(ents) / 2
        # ...and everyone idle twice the limit served at once.
        assert waiting[-1] == 0


def test_deadline_fallbacks_are_spread_and_late_agents_keep_their_provisional_plan(
    world: str,
) -> None:
    gate = threading.Event()  # the backend never answers: every agent runs out of time
    backend = ScriptedBackend(gate=gate, max_concurrency=16)
    cfg = PlannerConfig(max_batch_size=12, max_wait_ms=0, plan_deadline_s=1.0, cache_enabled=False)
    ents = spawn_battle(12)
    clock = WorkClock()  # no work cost while the agents ask: they all ask on the first tick
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)
        assert plugin.stats()["in_flight"] == len(ents)
        provisional = {e: list(esper.component_for_entity(e, ActionQueue).steps) for e in ents}
        clock.now += 1.0  # every deadline passes on the same tick
        clock.work = 0.0005
        fell_back: list[int] = []
        for _ in range(12):
            _tick(clock)
            served = [e for e in ents if esper.component_for_entity(e, PlanState).tier]
            fell_back.append(len(served))
            for e in ents:
                st = esper.component_for_entity(e, PlanState)
                if st.tier is None:  # still late: busy with its provisional plan, call cancelled
                    assert st.status is PlanStatus.IN_FLIGHT
                    queue = esper.component_for_entity(e, ActionQueue)
                    assert queue.steps == provisional[e] or queue.done
        assert 1 <= fell_back[0] < len(ents)  # not all twelve fallbacks on one tick
        assert fell_back[-1] == len(ents)
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert {s.invalid_reason for s in states} == {"deadline"}
        assert {s.tier for s in states} == {Tier.HEURISTIC}
        stats = plugin.stats()
        assert stats["deadline_misses"] == len(ents) and stats["in_flight"] == 0


def test_a_request_reuses_the_snapshot_and_candidates_made_when_the_agent_asked(
    world: str,
) -> None:
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate)
    ents = spawn_battle(2)
    for wait_s, reused in ((0.1, True), (2 * FRESH_S, False)):
        _finish_plans(ents)
        clock = Clock()
        cfg = PlannerConfig(max_batch_size=8, max_wait_ms=wait_s * 1000, cache_enabled=False)
        with PlannerPlugin(cfg, backend, clock=clock) as plugin:
            planner = plugin.planning_system
            assert planner is not None
            _tick(clock)  # both ask; the partial batch waits for max_wait_ms
            asked = plugin.snapshot_system.tick if plugin.snapshot_system else 0
            assert plugin.stats()["pending"] == 2
            while plugin.stats()["pending"]:
                _tick(clock)
            snaps = [planner._in_flight[e].snapshot for e in ents]
            assert all((s.tick == asked) is reused for s in snaps)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_tick_budget_must_be_a_positive_number_or_none(bad: float) -> None:
    with pytest.raises(ConfigError, match="tick_budget_ms"):
        PlannerConfig(tick_budget_ms=bad)
    assert PlannerConfig(tick_budget_ms=None).tick_budget_ms is None


def test_adoption_notices_new_agents_and_ones_that_lost_their_plan_state(world: str) -> None:
    ents = spawn_battle(2)
    with PlannerPlugin(PlannerConfig(tick_budget_ms=None), None):
        esper.process(DT)
        esper.process(DT)  # nothing came or went: the adoption pass has nothing to do
        late = spawn_battle(1)[0]
        esper.process(DT)
        assert esper.component_for_entity(late, PlanState).status is PlanStatus.EXECUTING
        esper.remove_component(ents[0], PlanState)  # the game took it away
        for _ in range(3):
            esper.process(DT)
        assert esper.component_for_entity(ents[0], PlanState).status is PlanStatus.EXECUTING


def test_an_agent_with_an_unknown_role_is_refused_on_every_tick(world: str) -> None:
    spawn_battle(2)
    with PlannerPlugin(PlannerConfig(tick_budget_ms=None), None):
        esper.process(DT)
        esper.create_entity(Agent(role="wizard"))
        for _ in range(2):  # refused again: not remembered as adopted
            with pytest.raises(ConfigError, match="wizard"):
                esper.process(DT)


def test_arrived_plans_move_on_every_tick_while_idle_agents_use_the_budget(
    world: str,
) -> None:
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate, max_concurrency=16)
    cfg = PlannerConfig(max_batch_size=6, max_wait_ms=0, plan_deadline_s=100.0, cache_enabled=False)
    ents = spawn_battle(12)
    askers, busy = ents[:6], ents[6:]
    for e in busy:
        esper.component_for_entity(e, PlanState).status = PlanStatus.EXECUTING
    clock = WorkClock()
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        planner = plugin.planning_system
        assert planner is not None
        _tick(clock)
        assert plugin.stats()["in_flight"] == len(askers)
        gate.set()
        bridge = planner._bridge
        assert bridge is not None
        for _ in range(2000):  # the six answers wait in the bridge, not yet applied
            if bridge.active_batches == 0:
                break
            threading.Event().wait(0.002)
        clock.work = 0.005  # each agent's work costs 5 ms: a 2 ms budget fits one a tick
        applied = []
        for _ in range(8):
            _finish_plans(busy)  # six agents need a plan on every tick: step 1 eats the budget
            _tick(clock)
            applied.append(
                len([e for e in askers if esper.component_for_entity(e, PlanState).tier])
            )
        gains = [b - a for a, b in itertools.pairwise([0, *applied])]
        # The budget holds (nothing fits: one agent's work a tick), and nobody starves: the
        # arrived plans, waiting as long as the idle agents, take turns with them for it.
        assert max(gains) == 1
        assert all(a + b == 1 for a, b in itertools.pairwise(gains))


def test_stale_snapshots_of_waiting_agents_are_not_kept(world: str) -> None:
    gate = threading.Event()
    ents = spawn_battle(2)
    clock = Clock()
    cfg = PlannerConfig(max_batch_size=8, max_wait_ms=10_000, cache_enabled=False)
    with PlannerPlugin(cfg, ScriptedBackend(gate=gate), clock=clock) as plugin:
        planner = plugin.planning_system
        assert planner is not None
        _tick(clock)  # both ask; the partial batch waits
        assert set(planner._candidates) == set(ents)
        clock.now += FRESH_S / 2
        _tick(clock)
        assert set(planner._candidates) == set(ents)  # still fresh: kept for the request
        clock.now += FRESH_S
        _tick(clock)
        assert planner._candidates == {} and plugin.stats()["pending"] == 2


@pytest.mark.parametrize("provisional_done", [False, True])
def test_admission_fallbacks_keep_the_provisional_plan_or_wait_for_later_ticks(
    world: str, provisional_done: bool
) -> None:
    _, backend = _serial_gated()  # the gate never opens: no call is ever made
    cfg = PlannerConfig(
        max_batch_size=16, max_wait_ms=100, plan_deadline_s=0.5, cache_enabled=False
    )
    ents = spawn_battle(12)
    clock = WorkClock()  # no work cost while the agents ask: they all ask on the first tick
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _calls_have_taken(plugin, 1.0)  # nobody can make 0.5 s
        _tick(clock)  # all ask; the partial batch waits for max_wait_ms
        assert plugin.stats()["pending"] == len(ents)
        queues = {e: esper.component_for_entity(e, ActionQueue) for e in ents}
        provisional = {e: list(q.steps) for e, q in queues.items()}
        if provisional_done:  # their provisional plans ran out: a fallback must be computed
            for q in queues.values():
                q.index = len(q.steps)
        clock.now += 0.2
        clock.work = 0.0005  # a 2 ms budget fits a few fallbacks a tick
        _tick(clock)  # admission: all twelve are out of time at once
        served = _served(ents)
        if not provisional_done:
            # Each keeps the rules' plan it is carrying out, as it stands: nothing to compute,
            # so all twelve on this tick.
            assert served == ents
            for e in ents:
                assert queues[e].steps == provisional[e]
                assert esper.component_for_entity(e, PlanState).status is PlanStatus.EXECUTING
        else:
            assert 1 <= len(served) < len(ents)  # the burst did not go in one tick
            for e in ents:
                if e not in served:  # waiting for its fallback, standing by
                    st = esper.component_for_entity(e, PlanState)
                    assert st.status is PlanStatus.REQUESTED
        clock.now += 1.0  # their deadlines pass while some still wait: counted once
        for _ in range(len(ents)):
            _tick(clock)
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert _served(ents) == ents
        assert {s.invalid_reason for s in states} == {"no_time"}
        assert {s.tier for s in states} == {Tier.HEURISTIC}
        assert plugin.stats()["deadline_misses"] == len(ents)
        assert len(backend.calls) == 0


def test_a_batch_that_fills_up_leaves_everyone_it_passed_over_waiting_in_order(
    world: str,
) -> None:
    # The selection stops once the batch is full; an agent it passed over before that (too
    # little time for a place this far back in the batch, enough for a call of its own) keeps
    # its place in the queue with those it never looked at, and goes out with the next batch.
    clock = Clock()
    gate, backend = _serial_gated()
    cfg = PlannerConfig(
        max_wait_ms=1000,
        max_batch_size=10,
        max_in_flight=2,
        plan_deadline_s=3.0,
        cache_enabled=False,
    )
    a, b, c, d = spawn_battle(4)
    later = {e: esper.component_for_entity(e, Agent) for e in (c, d)}
    for e in later:
        esper.remove_component(e, Agent)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _calls_have_taken(plugin, 1.0)
        _tick(clock)  # a and b ask; the batch waits up to 1 s to fill
        clock.now = 0.5
        for e, agent in later.items():
            esper.add_component(e, agent)
        _tick(clock)  # c and d ask, 0.5 s later
        assert plugin.stats()["pending"] == 4 and plugin.stats()["in_flight"] == 0
        clock.now = 1.05
        _tick(clock)
        # Room for two: a goes first (1.95 s left, one call ahead of it: 1 s); b would be
        # second (2 s needed, 1.95 left): passed over; c (2.45 s left) takes the second place.
        assert plugin.stats()["in_flight"] == 2 and plugin.stats()["pending"] == 2
        states = {e: esper.component_for_entity(e, PlanState) for e in (a, b, c, d)}
        assert [states[e].status for e in (a, b, c, d)] == [
            PlanStatus.IN_FLIGHT,
            PlanStatus.REQUESTED,
            PlanStatus.IN_FLIGHT,
            PlanStatus.REQUESTED,
        ]
        gate.set()
        _wait_until(lambda: plugin.stats()["in_flight"] == plugin.stats()["pending"] == 0)
        assert plugin.stats()["tiers"] == {"llm": 4}
        assert {s.invalid_reason for s in states.values()} == {""}


def test_a_parallel_backend_gets_only_the_agents_its_measured_rate_can_serve_in_time(
    world: str,
) -> None:
    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate, parallel=True, max_concurrency=64)
    cfg = PlannerConfig(max_wait_ms=0, plan_deadline_s=5.5, cache_enabled=False)
    ents = spawn_battle(8)
    later = ents[2:]
    agents = {e: esper.component_for_entity(e, Agent) for e in later}
    for e in later:  # not agents yet: they join after the rate is measured
        esper.remove_component(e, Agent)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)  # nothing measured yet: both go
        assert plugin.stats()["in_flight"] == 2
        clock.now += 4.0  # both answered 4 s after they went: 2 s of busy backend per plan
        gate.set()
        _wait_until(lambda: plugin.stats()["in_flight"] == 0)
        gate.clear()
        for e, agent in agents.items():
            esper.add_component(e, agent)
        _tick(clock)
        # 5.5 s left at 2 s a plan: two of the six can be answered in time, four wait.
        assert plugin.stats()["in_flight"] == 2 and plugin.stats()["pending"] == 4
        clock.now += 4.0  # 1.5 s left, behind two in flight: no plan of theirs can make it
        _tick(clock)
        states = [esper.component_for_entity(e, PlanState) for e in later]
        assert sorted(s.invalid_reason for s in states).count("no_time") == 4
        assert plugin.stats()["pending"] == 0 and plugin.stats()["in_flight"] == 2
        gate.set()
        _wait_until(lambda: plugin.stats()["in_flight"] == 0)
        assert plugin.stats()["tiers"] == {"llm": 4, "heuristic": 4}
        assert len(backend.calls) == 4


def test_past_its_deadline_an_agent_keeps_its_provisional_plan_without_restarting_it(
    world: str,
) -> None:
    gate = threading.Event()  # the backend never answers
    backend = ScriptedBackend(gate=gate, max_concurrency=4)
    cfg = PlannerConfig(max_wait_ms=0, plan_deadline_s=1.0, cache_enabled=False)
    ents = spawn_battle(2)
    clock = Clock()
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)
        assert plugin.stats()["in_flight"] == 2
        queues = {e: esper.component_for_entity(e, ActionQueue) for e in ents}
        before = {e: (list(q.steps), q.plan_id) for e, q in queues.items()}
        for q in queues.values():
            q.progress = 0.25  # part way through its first step
        clock.now += 1.0
        _tick(clock)
        for e in ents:
            st = esper.component_for_entity(e, PlanState)
            q = queues[e]
            assert st.status is PlanStatus.EXECUTING and st.tier is Tier.HEURISTIC
            assert st.invalid_reason == "deadline"
            assert (list(q.steps), q.plan_id) == before[e] and st.plan_id == q.plan_id
            assert q.index == 0 and q.progress > 0.0  # carried on, not restarted
        assert plugin.stats()["tiers"] == {"heuristic": 2}


def _duel(enemies: int) -> tuple[int, list[int]]:
    """One tactical agent (team 0) at (3, 3) facing ``enemies`` in range on a small open map."""
    from aiplanner import Battlefield
    from aiplanner.bench.world import spawn_agent

    esper.create_entity(Battlefield(20, 12, frozenset(), ((3, 5),), (15, 3)))

    def unit(x: float, team: int) -> int:
        return spawn_agent(x, 3.0, team, "tactical")

    me = unit(3.0, 0)
    return me, [unit(6.0 + i, 1) for i in range(enemies)]


def _prefers_shooting(request: object) -> list[float]:
    """The model's taste: shooting first, then cover, then anything else; no calibration
    effect (the content-free context scores every phrase 0)."""
    from aiplanner.backends.base import ScoreRequest
    from aiplanner.phrasing import CONTENT_FREE

    assert isinstance(request, ScoreRequest)
    if request.messages[-1].content == CONTENT_FREE:
        return [0.0] * len(request.continuations)
    return _prefers_shooting_scores(request.continuations)


def _prefers_shooting_scores(phrases: Sequence[str]) -> list[float]:
    return [0.0 if c.startswith(" shoot") else -1.0 if "cover" in c else -4.0 for c in phrases]


@pytest.mark.parametrize("rescuable", [True, False])
def test_a_stale_answer_gives_way_to_the_models_next_choice_that_still_fits(
    world: str, rescuable: bool
) -> None:
    from aiplanner import DEFAULT_REGISTRY
    from aiplanner.phrasing import plan_phrase

    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(scoring=True, scorer=_prefers_shooting, gate=gate)
    cfg = PlannerConfig(
        max_wait_ms=0,
        cache_enabled=False,
        rank_prior=0.0,
        provisional=False,
        tick_budget_ms=None,
        max_candidates=4 if rescuable else 2,
    )
    me, foes = _duel(1)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        planning = plugin.planning_system
        assert planning is not None
        _tick(clock)
        for _ in range(500):  # the situation's call is out and held by the gate
            if backend.score_calls:
                break
            threading.Event().wait(0.01)
        req = planning._in_flight[me]
        needs_foe = [any(s.args == (foes[0],) for s in c.steps) for c in req.candidates]
        assert req.candidates[0].steps[0] == Step("Attack", (foes[0],))
        assert all(needs_foe) is not rescuable  # with 2 candidates both shoot the one enemy
        esper.delete_entity(foes[0], immediate=True)  # the target dies while the model thinks
        gate.set()
        for _ in range(500):  # the plugin clock stands still: no deadline passes meanwhile
            esper.process(DT)
            if plugin.stats()["plans"]:
                break
            threading.Event().wait(0.01)
        st = esper.component_for_entity(me, PlanState)
        stats = plugin.stats()
        assert stats["invalid"] == {"stale_bad_target": 1}
        steps = tuple(esper.component_for_entity(me, ActionQueue).steps)
        if rescuable:
            # The model's best choice among those that still fit (its scores, ties in the
            # rules' order), not the rules' own next plan.
            phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
            scores = _prefers_shooting_scores(phrases)
            fits = [i for i, need in enumerate(needs_foe) if not need]
            best = max(fits, key=lambda i: (scores[i], -i))
            assert st.tier is Tier.LLM and stats["rescued"] == 1
            assert steps == req.candidates[best].steps
        else:
            assert st.tier is Tier.HEURISTIC and stats["rescued"] == 0
        assert all(s.args != (foes[0],) for s in steps)  # never the dead target


@pytest.mark.parametrize("agrees", [True, False])
def test_an_answer_that_is_the_running_provisional_plan_carries_on_where_it_is(
    world: str, agrees: bool
) -> None:
    """The model picks the rules' first choice, which the agent has been running as its
    provisional plan: the plan becomes the model's without going back to its first step. Another
    pick replaces it from the start."""
    from aiplanner.backends.base import ScoreRequest
    from aiplanner.phrasing import CONTENT_FREE

    def scorer(request: object) -> list[float]:
        assert isinstance(request, ScoreRequest)
        n = len(request.continuations)
        if request.messages[-1].content == CONTENT_FREE:
            return [0.0] * n
        return [-10.0 * i if agrees else 10.0 * i for i in range(n)]  # first or last

    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(scoring=True, scorer=scorer, gate=gate)
    cfg = PlannerConfig(max_wait_ms=0, cache_enabled=False, tick_budget_ms=None)
    me, _ = _duel(2)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        planning = plugin.planning_system
        assert planning is not None
        _tick(clock)
        for _ in range(500):  # the call is out and held by the gate
            if backend.score_calls:
                break
            threading.Event().wait(0.01)
        req = planning._in_flight[me]
        assert len(req.candidates) >= 2 and req.candidates[0].steps != req.candidates[-1].steps
        queue = esper.component_for_entity(me, ActionQueue)
        assert tuple(queue.steps) == req.candidates[0].steps  # the provisional plan runs
        stopgap_id = queue.plan_id
        queue.progress = 0.25  # part way through its first step
        gate.set()
        for _ in range(500):  # the plugin clock stands still: no deadline passes meanwhile
            before = (queue.index, queue.progress)
            esper.process(DT)
            if esper.component_for_entity(me, PlanState).tier is not None:
                break
            threading.Event().wait(0.01)
        st = esper.component_for_entity(me, PlanState)
        assert st.tier is Tier.LLM and st.status is PlanStatus.EXECUTING
        if agrees:
            assert queue.plan_id == stopgap_id == st.plan_id
            assert (queue.index, queue.progress) >= before  # carried on, not restarted
        else:
            assert queue.plan_id == st.plan_id != stopgap_id
            assert tuple(queue.steps) == req.candidates[-1].steps


@pytest.mark.parametrize("provisional", [True, False])
def test_a_provisional_plan_that_runs_out_while_waiting_is_renewed(
    world: str, provisional: bool
) -> None:
    """The agent's provisional plan ends (here its steps fail, as when the target dies) while
    its request is out: it gets the rules' plan for now instead of standing by, and still takes
    the model's answer when it comes. Without provisional plans nothing is renewed."""
    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate)
    cfg = PlannerConfig(
        max_wait_ms=0, cache_enabled=False, tick_budget_ms=None, provisional=provisional
    )
    ents = spawn_battle(2)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)
        assert plugin.stats()["in_flight"] == 2
        queues = {e: esper.component_for_entity(e, ActionQueue) for e in ents}
        first = {e: q.plan_id for e, q in queues.items()}
        ran_out = ents[0]
        queues[ran_out].steps = []  # what the execution system does to a failed stand-in plan
        queues[ran_out].index = 0
        _tick(clock)
        st = esper.component_for_entity(ran_out, PlanState)
        assert st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)  # still waiting
        if provisional:
            assert queues[ran_out].plan_id != first[ran_out] and not queues[ran_out].done
            assert plugin.stats()["provisional"] == 3
        else:
            assert queues[ran_out].done and plugin.stats()["provisional"] == 0
        assert queues[ents[1]].plan_id == first[ents[1]]  # its plan still runs: untouched
        gate.set()
        for _ in range(500):  # the plugin clock stands still: no deadline passes meanwhile
            esper.process(DT)
            if plugin.stats()["plans"] == 2:
                break
            threading.Event().wait(0.01)
        assert esper.component_for_entity(ran_out, PlanState).tier is Tier.LLM


# -- the frame's idle time: PlannerPlugin.between_frames ---------------------------------------


def test_between_frames_serves_in_the_idle_time_what_the_tick_left(world: str) -> None:
    ents = spawn_battle(12)
    clock = WorkClock(work=0.0005)  # a 2 ms budget fits a few agents a tick
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:
        _tick(clock)
        after_tick = _served(ents)
        assert 1 <= len(after_tick) < len(ents)
        done = plugin.between_frames(1000.0)  # a whole second of idle time: everyone fits
        assert _served(ents) == ents
        assert done >= len(ents) - len(after_tick)
        assert plugin.stats()["budget_cuts"] == 1  # the tick's cut; none counted in the pass
        assert plugin.stats()["between_frames"] == done


class _Freed:
    """Something whose freeing a weak reference sees."""


def test_between_frames_frees_the_query_results_ticks_replaced(world: str) -> None:
    spawn_battle(4)
    clock = WorkClock(work=0.0)
    with PlannerPlugin(PlannerConfig(), None, clock=clock) as plugin:
        _tick(clock)
        plugin.between_frames(5.0)  # a game that offers idle time: results wait for it
        kept = _Freed()
        ref = weakref.ref(kept)
        queries.retire(kept)  # as a tick does with the rows a change replaced
        del kept
        _tick(clock)
        assert ref() is not None  # not in a tick
        plugin.between_frames(0.0)
        assert ref() is not None  # no idle time offered: nothing done
        plugin.between_frames(5.0)
        assert ref() is None


def test_between_frames_stops_at_the_end_of_the_time_it_is_given(world: str) -> None:
    ents = spawn_battle(12)
    clock = WorkClock(work=0.005)  # each agent's work costs 5 ms
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:
        _tick(clock)
        before = len(_served(ents))
        assert plugin.between_frames(60.0) >= 1
        after = len(_served(ents))
        assert before < after < len(ents)  # 60 ms of an agent's ~10 ms of reads: a few, not all
        assert plugin.between_frames(0.0) == 0  # no time: nothing done
        assert len(_served(ents)) == after


def test_a_tick_leaves_its_work_to_the_idle_time_only_after_a_pass_that_did_everything(
    world: str,
) -> None:
    ents = spawn_battle(12)
    clock = Clock()  # work costs nothing: every pass does everything it finds
    cfg = PlannerConfig(cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:
        _tick(clock)
        assert _served(ents) == ents  # no pass before it: the tick plans as ever
        plugin.between_frames(5.0)  # nothing left: the pass did all it found
        plan_ids = {e: esper.component_for_entity(e, PlanState).plan_id for e in ents}
        _finish_plans(ents)
        _tick(clock)  # left to the next pass: nobody served in the tick
        assert all(esper.component_for_entity(e, PlanState).status is PlanStatus.IDLE for e in ents)
        assert plugin.between_frames(5.0) == len(ents)
        assert all(esper.component_for_entity(e, PlanState).plan_id != plan_ids[e] for e in ents)
        _tick(clock)  # a frame without a pass (the game had no idle time) ...
        _finish_plans(ents)
        _tick(clock)  # ... and the tick plans again itself
        assert all(
            esper.component_for_entity(e, PlanState).status is not PlanStatus.IDLE for e in ents
        )


def test_a_pass_cut_short_leaves_the_next_tick_its_own_budget(world: str) -> None:
    ents = spawn_battle(12)
    clock = WorkClock(work=0.005)
    cfg = PlannerConfig(tick_budget_ms=2.0, cache_enabled=False)
    with PlannerPlugin(cfg, None, clock=clock) as plugin:
        _tick(clock)
        plugin.between_frames(30.0)  # did not fit everyone: the tick must go on planning
        before = len(_served(ents))
        assert before < len(ents)
        _tick(clock)
        assert len(_served(ents)) > before


def test_between_frames_does_nothing_uninstalled_before_a_tick_elsewhere_or_in_lockstep(
    world: str,
) -> None:
    ents = spawn_battle(4)
    plugin = PlannerPlugin(PlannerConfig(cache_enabled=False), None, clock=Clock())
    assert plugin.between_frames(5.0) == 0  # not installed
    with plugin:
        assert plugin.between_frames(5.0) == 0  # no tick yet: nothing indexed
        assert _served(ents) == []
    for ent in ents:
        esper.delete_entity(ent, immediate=True)
    ents = spawn_battle(4)
    with PlannerPlugin(PlannerConfig(cache_enabled=False), None, clock=Clock()) as plugin:
        esper.process(DT)
        _finish_plans(ents)
        esper.switch_world(world + "-other")  # the game shows another world meanwhile
        try:
            assert plugin.between_frames(5.0) == 0  # not this plugin's world: nothing read
        finally:
            esper.switch_world(world)
            esper.delete_world(world + "-other")
        assert _served(ents) != [] and all(
            esper.component_for_entity(e, PlanState).status is PlanStatus.IDLE for e in ents
        )
        assert plugin.between_frames(5.0) == len(ents)  # its own world again
    for ent in ents:
        esper.delete_entity(ent, immediate=True)
    ents = spawn_battle(4)
    clock = Clock()
    cfg = PlannerConfig(cache_enabled=False, lockstep=True, max_wait_ms=0)
    with PlannerPlugin(cfg, ScriptedBackend(), clock=clock) as plugin:
        _tick(clock)
        _finish_plans(ents)
        assert plugin.between_frames(5.0) == 0  # a lockstep run must repeat exactly
        assert all(esper.component_for_entity(e, PlanState).status is PlanStatus.IDLE for e in ents)


class _AdoptedYet(esper.Processor):
    """Between the snapshot and planning systems: notes whether ``entity`` has PlanState."""

    def __init__(self) -> None:
        self.entity = -1
        self.seen: list[bool] = []

    def process(self, dt: float) -> None:
        if self.entity >= 0:
            self.seen.append(esper.has_component(self.entity, PlanState))


def test_new_agents_are_adopted_as_the_tick_starts_before_anything_reads_them(
    world: str,
) -> None:
    spawn_battle(4)
    clock = Clock()
    with PlannerPlugin(PlannerConfig(cache_enabled=False), None, clock=clock):
        probe = _AdoptedYet()
        esper.add_processor(probe, priority=250)
        _tick(clock)
        probe.entity = spawn_agent(1.0, 1.0, 0, "tactical")  # arrives between two ticks...
        esper.remove_component(probe.entity, PlanState)  # ...without the planner's components
        esper.remove_component(probe.entity, ActionQueue)
        _tick(clock)
        assert probe.seen == [True]  # it had its components before planning ran
        esper.remove_processor(_AdoptedYet)


def test_plans_that_arrive_are_applied_in_the_idle_time_after_a_tick_that_left_them(
    world: str,
) -> None:
    ents = spawn_battle(4)
    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate)  # answers once the gate opens
    cfg = PlannerConfig(cache_enabled=False, max_wait_ms=0)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)  # no pass before it: the tick asks and sends the batch itself
        assert plugin.stats()["in_flight"] == len(ents)
        plugin.between_frames(50.0)  # nothing has arrived: a pass with nothing left undone
        gate.set()
        for _ in range(2500):  # the bridge thread answers; the game thread only waits
            if not plugin.backend_busy:
                break
            threading.Event().wait(0.002)
        assert not plugin.backend_busy
        _tick(clock)  # the last pass did all it found: the answers wait for the next one
        assert plugin.stats()["tiers"] == {}
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert all(s.status is PlanStatus.IN_FLIGHT for s in states)
        assert plugin.between_frames(50.0) == len(ents)
        assert plugin.stats()["tiers"] == {"llm": len(ents)}
        assert all(s.status is PlanStatus.EXECUTING and s.tier is Tier.LLM for s in states)
