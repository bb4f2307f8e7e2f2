"""The spine's acceptance: the frame never waits, 100 agents x 600 ticks, install/close rules."""

from __future__ import annotations

import threading
from collections import defaultdict

import esper
import pytest
from scenario import spawn_battle, world_digest

from aiplanner import (
    DEFAULT_REGISTRY,
    EVENT_PLAN_APPLIED,
    ActionRegistry,
    ActionSpec,
    Agent,
    ConfigError,
    Plan,
    PlannerConfig,
    PlannerPlugin,
    PlanningSystem,
    PlanState,
    PlanStatus,
    ScriptedBackend,
    Team,
    Tier,
)
from aiplanner.bridge import AsyncBridge

DT = 1 / 30
_RECORDERS: list[object] = []


def _run_in_thread(fn: object, timeout_s: float) -> None:
    """Run ``fn`` on a thread; fail (instead of hanging) if it does not finish in time."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "esper.process() blocked on the backend (deadlock guard fired)"
    if errors:
        raise errors[0]


def test_process_never_waits_on_the_backend(world: str) -> None:
    gate = threading.Event()  # the backend answers nothing until the test opens it
    backend = ScriptedBackend(gate=gate)
    ents = spawn_battle(6)
    for ent in ents:  # one team: nobody dies while the answers are held (ticks back to back)
        esper.add_component(ent, Team(0))
    cfg = PlannerConfig(max_batch_size=3, max_wait_ms=0, plan_deadline_s=60.0, cache_enabled=False)
    with PlannerPlugin(cfg, backend) as plugin:
        ticks = 50

        def run_ticks() -> None:
            for _ in range(ticks):
                esper.process(DT)

        # If process() waited for the held answers, this would never finish.
        _run_in_thread(run_ticks, timeout_s=30)
        states = [esper.component_for_entity(e, PlanState) for e in ents]
        assert all(s.status is PlanStatus.IN_FLIGHT for s in states)
        assert plugin.stats()["in_flight"] == len(ents)
        assert all(s.tier is None for s in states)  # nothing came from the model yet
        rec = Recorder()
        _RECORDERS.append(rec)
        esper.set_handler(EVENT_PLAN_APPLIED, rec.on_plan)
        gate.set()

        def until_planned() -> None:
            while {e for _, e, tier in rec.events if tier is Tier.LLM} != set(ents):
                esper.process(DT)

        _run_in_thread(until_planned, timeout_s=30)


class Recorder:
    """Records EVENT_PLAN_APPLIED.

    esper holds handlers weakly and its weakref callback fails if the handler dies after being
    removed, so recorders are kept alive for the whole session (``_RECORDERS``).
    """

    def __init__(self) -> None:
        self.events: list[tuple[int, int, Tier]] = []

    def on_plan(self, entity: int, plan: Plan, tier: Tier, tick: int) -> None:
        self.events.append((tick, entity, tier))


class Observer(esper.Processor):  # type: ignore[misc]
    """Runs between planning and execution and checks the planner's promises every tick."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.violations: list[str] = []

    def process(self, dt: float) -> None:
        for ent, (st,) in esper.get_components(PlanState):
            if st.status is PlanStatus.IDLE:
                self.violations.append(f"t={self.clock.now:.2f}: entity {ent} left idle")
            if (
                st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)
                and self.clock.now > st.deadline
            ):
                self.violations.append(f"t={self.clock.now:.2f}: entity {ent} past its deadline")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _simulate(
    seed: int, ticks: int = 600, n: int = 100
) -> tuple[str, Recorder, PlannerPlugin, set[int]]:
    clock = Clock()
    backend = ScriptedBackend(
        latency_s=(0.05, 1.6), failure_rate=0.15, seed=seed, virtual_time=True
    )
    cfg = PlannerConfig(
        max_batch_size=8, max_wait_ms=50, plan_deadline_s=1.0, lockstep=True, seed=seed
    )
    ents = spawn_battle(n, seed=seed)
    rec = Recorder()
    _RECORDERS.append(rec)
    esper.set_handler(EVENT_PLAN_APPLIED, rec.on_plan)
    doomed = set(ents[::10])  # deleted mid-run, some while their plan is in flight
    deleted_at: dict[int, int] = {}
    plugin = PlannerPlugin(cfg, backend, clock=clock).install()
    observer = Observer(clock)
    esper.add_processor(observer, priority=150)  # between PLANNING (200) and EXECUTION (100)
    try:
        for tick in range(1, ticks + 1):
            clock.now = tick * DT
            if tick == 200:
                for e in sorted(doomed):
                    if esper.entity_exists(e):
                        esper.delete_entity(e)
                        deleted_at[e] = tick
            esper.process(DT)
    finally:
        plugin.close()
        esper.remove_processor(Observer)
        esper.remove_handler(EVENT_PLAN_APPLIED, rec.on_plan)
    assert not observer.violations, observer.violations[:5]
    late = [(t, e) for (t, e, _) in rec.events if e in deleted_at and t >= deleted_at[e]]
    assert not late, f"plans applied to deleted entities: {late[:5]}"
    return world_digest(), rec, plugin, set(deleted_at)


def test_hundred_agents_six_hundred_ticks_deterministic(world: str) -> None:
    digest1, rec, plugin, deleted = _simulate(seed=7)
    stats = plugin.stats()
    tiers = stats["tiers"]
    assert isinstance(tiers, dict)
    # Realistic latency and failures: the LLM tier, retries and fallbacks all occurred.
    assert tiers.get("llm", 0) > 0 and tiers.get("heuristic", 0) > 0
    assert stats["deadline_misses"] and stats["requests"]
    assert deleted
    # Finished LLM plans are applied at the tick boundary in entity-id order.
    by_tick: dict[int, list[int]] = defaultdict(list)
    for tick, ent, tier in rec.events:
        if tier in (Tier.LLM, Tier.LLM_SIMPLE):
            by_tick[tick].append(ent)
    assert any(len(v) > 1 for v in by_tick.values())
    assert all(v == sorted(v) for v in by_tick.values())

    esper.switch_world("default")
    esper.delete_world(world)
    esper.switch_world(world)
    digest2, *_ = _simulate(seed=7)
    assert digest1 == digest2
    esper.switch_world("default")
    esper.delete_world(world)
    esper.switch_world(world)
    digest3, *_ = _simulate(seed=8)
    assert digest3 != digest1  # the digest does see the world


def test_lockstep_breaker_keeps_the_time_of_the_tick_whose_call_failed(world: str) -> None:
    """A tick-driven clock moves on while the bridge thread still works on the last tick's
    batch (here a call that takes 50 ms of wall time to fail): in lockstep the breaker must see
    the tick the batch was sent on, or its cool-down ends a tick early or late by chance."""
    from aiplanner import BackendUnavailable, ScriptedReply

    def slow_failure(call: object) -> ScriptedReply:
        return ScriptedReply(error=BackendUnavailable("down"), delay_s=0.05)

    step = 0.25  # seconds per tick: the cool-down below is exactly two ticks
    clock = Clock()
    backend = ScriptedBackend(slow_failure, virtual_time=True, max_concurrency=1, parallel=False)
    cfg = PlannerConfig(
        max_wait_ms=0,
        lockstep=True,
        breaker_failures=1,
        breaker_cooldown_s=0.5,
        cache_enabled=False,
        simplified_retry=False,
    )
    spawn_battle(1)
    with PlannerPlugin(cfg, backend, clock=clock) as plugin:
        states = []
        for tick in (1, 2, 3):
            clock.now = tick * step
            esper.process(step)
            states.append(plugin.breaker.state)
        assert len(backend.calls) == 1
        # Sent at tick 1 (0.25 s), failed while the game was on tick 2: open from 0.25 s, so
        # half-open at tick 3 (0.75 s), not one tick later.
        assert states == ["closed", "open", "half_open"]


def test_install_twice_and_bad_config_fail_clearly(world: str) -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        PlannerConfig(max_batch_size=0)
    with pytest.raises(ConfigError, match="strategy"):
        PlannerConfig(strategy="telepathy")
    plugin = PlannerPlugin().install()
    try:
        with pytest.raises(ConfigError, match="already installed"):
            plugin.install()
    finally:
        plugin.close()
    esper.create_entity(Agent(role="wizard"))
    with pytest.raises(ConfigError, match="wizard"):
        PlannerPlugin().install()


def test_install_refuses_an_action_without_a_handler(world: str) -> None:
    registry = ActionRegistry([*DEFAULT_REGISTRY.actions, ActionSpec("Dance", "D", (), "")])
    backend = ScriptedBackend()
    plugin = PlannerPlugin(PlannerConfig(registry=registry), backend)
    threads = threading.active_count()
    with pytest.raises(ConfigError, match="Dance"):
        plugin.install()
    # Refused before anything was registered or started.
    assert not plugin.installed and threading.active_count() == threads
    assert esper.get_processor(PlanningSystem) is None
    plugin.close()


def test_uninstall_removes_processors_and_reinstall_works(world: str) -> None:
    from aiplanner import ActionExecutionSystem, PlanningSystem, SnapshotSystem

    # No tick budget: the two ticks below must serve all four agents on a busy machine too.
    plugin = PlannerPlugin(PlannerConfig(tick_budget_ms=None)).install()
    assert esper.get_processor(PlanningSystem) is not None
    plugin.uninstall()
    for kind in (PlanningSystem, SnapshotSystem, ActionExecutionSystem):
        assert esper.get_processor(kind) is None
    plugin.install()
    spawn_battle(4)
    esper.process(DT)
    esper.process(DT)
    assert plugin.stats()["tiers"] == {"heuristic": 4}  # no backend: rules alone
    plugin.close()


def test_close_with_requests_in_flight_is_prompt_and_leaves_no_thread(world: str) -> None:
    before = set(threading.enumerate())
    backend = ScriptedBackend(gate=threading.Event())  # never answers
    # No tick budget: on a slow machine it may leave an agent for a tick after these three.
    plugin = PlannerPlugin(PlannerConfig(max_wait_ms=0, tick_budget_ms=None), backend).install()
    spawn_battle(8)
    for _ in range(3):
        esper.process(DT)
    assert plugin.stats()["in_flight"] == 8
    _run_in_thread(plugin.close, timeout_s=10)
    assert backend.closed
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leftover, leftover


def test_reinstall_keeps_the_backend_and_close_closes_it(world: str) -> None:
    before = set(threading.enumerate())
    backend = ScriptedBackend()
    plugin = PlannerPlugin(PlannerConfig(max_wait_ms=0, cache_enabled=False), backend)
    ents = spawn_battle(2)
    for _ in range(2):
        plugin.install()
        tiers = plugin.stats()["tiers"]
        assert isinstance(tiers, dict)
        llm_before = tiers.get("llm", 0)

        def planned(llm_before: int = llm_before) -> None:
            while plugin.stats()["tiers"].get("llm", 0) <= llm_before:  # type: ignore[attr-defined]
                esper.process(DT)

        _run_in_thread(planned, timeout_s=30)  # the backend answers after each install
        plugin.uninstall()
        assert not backend.closed  # uninstalling keeps the backend for the next install
        for e in ents:
            if esper.entity_exists(e):  # (one may have died in the fight)
                esper.component_for_entity(e, PlanState).status = PlanStatus.IDLE
    plugin.close()
    assert backend.closed
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leftover, leftover


class _Mark(esper.Processor):
    def __init__(self, marks: list[str]) -> None:
        self.marks = marks

    def process(self, dt: float) -> None:
        self.marks.append("game processor")


def test_the_plugin_holds_its_bridge_loop_from_its_first_processor_to_its_last(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks: list[str] = []
    hold, release = AsyncBridge.hold, AsyncBridge.release

    def held(bridge: AsyncBridge) -> None:
        marks.append("hold")
        hold(bridge)

    def released(bridge: AsyncBridge) -> None:
        marks.append("release")
        release(bridge)

    monkeypatch.setattr(AsyncBridge, "hold", held)
    monkeypatch.setattr(AsyncBridge, "release", released)
    spawn_battle(2)
    with PlannerPlugin(PlannerConfig(), ScriptedBackend()):
        esper.add_processor(_Mark(marks), priority=150)  # between PLANNING and EXECUTION
        esper.add_processor(_Mark(marks), priority=50)  # after the plugin's last processor
        try:
            esper.process(DT)
            esper.process(DT)
        finally:
            esper.remove_processor(_Mark)
            esper.remove_processor(_Mark)
    tick = ["hold", "game processor", "release", "game processor"]
    assert marks == tick * 2


@pytest.mark.parametrize("on", [True, False])
def test_the_bridge_keeps_a_score_memo_unless_configured_off(world: str, on: bool) -> None:
    spawn_battle(2)
    with PlannerPlugin(PlannerConfig(score_memo=on), ScriptedBackend(scoring=True)) as plugin:
        bridge = plugin._bridge
        assert bridge is not None
        assert (bridge._ctx.memo is not None) is on
