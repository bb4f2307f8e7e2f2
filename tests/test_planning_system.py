"""PlanningSystem behaviour through the plugin: cache, circuit breaker, deadlines, live tuning."""

from __future__ import annotations

import threading

import esper
from scenario import spawn_battle

from aiplanner import (
    ActionQueue,
    BackendUnavailable,
    PlannerConfig,
    PlannerPlugin,
    PlanState,
    PlanStatus,
    ScriptedBackend,
    ScriptedReply,
    Step,
    Tier,
)
from aiplanner.backends.base import CompletionRequest

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


def test_budget_also_holds_back_arrived_plans(world: str) -> None:
    clock = Clock()
    backend = ScriptedBackend(virtual_time=True)
    cfg = PlannerConfig(max_wait_ms=0, lockstep=True, cache_enabled=False, max_plans_per_tick=3)
    spawn_battle(6)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        _tick(clock)  # 3 agents ask (budget), the other 3 wait for the next tick
        assert plugin.stats()["in_flight"] == 3
        _tick(clock)  # 3 answers arrive and use the whole budget: nobody new asks
        assert plugin.stats()["tiers"] == {"llm": 3}
        assert plugin.stats()["in_flight"] == 0
        _tick(clock, 3)
        assert plugin.stats()["tiers"] == {"llm": 6}


def _wait_until(cond: object, ticks: int = 2000) -> None:
    for _ in range(ticks):
        if cond():  # type: ignore[operator]
            return
        esper.process(0.0)
        threading.Event().wait(0.002)
    raise AssertionError("condition not reached")


def test_serial_engine_gets_one_batch_at_a_time_and_only_agents_that_can_make_it(
    world: str,
) -> None:
    clock = Clock()
    gate = threading.Event()
    backend = ScriptedBackend(gate=gate, parallel=False, max_concurrency=1)
    cfg = PlannerConfig(max_wait_ms=0, plan_deadline_s=2.5, cache_enabled=False)
    ents = spawn_battle(6)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        for _ in range(5):
            plugin.metrics.record_call(1.0, None)  # calls have been taking 1 s each
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
