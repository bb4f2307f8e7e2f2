"""ActionExecutionSystem: every action, impossible steps, early invalidation, deaths, order."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import esper
import pytest

import aiplanner.behaviour as behaviour_module
from aiplanner import queries
from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, ArgSpec, Step
from aiplanner.behaviour import StepContext, StepFailed
from aiplanner.components import (
    ActionQueue,
    Agent,
    Ammo,
    Battlefield,
    Health,
    PlanState,
    PlanStatus,
    Position,
    Team,
    Weapon,
)
from aiplanner.errors import ConfigError
from aiplanner.execution_system import ActionExecutionSystem
from aiplanner.pathfinding import find_path
from aiplanner.spatial import to_cell

_worlds = itertools.count()
DT = 0.1


@pytest.fixture
def world() -> Iterator[str]:
    name = f"test-execution-system-{next(_worlds)}"
    esper.switch_world(name)
    yield name
    esper.switch_world("default")
    esper.delete_world(name)


def field(blocked: frozenset[tuple[int, int]] = frozenset()) -> int:
    return esper.create_entity(Battlefield(20, 20, blocked=blocked))


def actor(
    x: float,
    y: float,
    *steps: Step,
    speed: float = 2.0,
    team: int = 1,
    hp: int = 100,
    weapon: Weapon | None = None,
    ammo: Ammo | None = None,
    status: PlanStatus = PlanStatus.EXECUTING,
) -> int:
    comps: list[object] = [
        Agent("tactical", speed),
        Position(x, y),
        Team(team),
        Health(hp),
        ActionQueue(list(steps)),
        PlanState(status),
    ]
    if weapon is not None:
        comps.append(weapon)
    if ammo is not None:
        comps.append(ammo)
    return esper.create_entity(*comps)


def target(x: float, y: float, hp: int = 100) -> int:
    return esper.create_entity(Agent(), Position(x, y), Team(2), Health(hp))


def state(ent: int) -> PlanState:
    return esper.component_for_entity(ent, PlanState)


def queue(ent: int) -> ActionQueue:
    return esper.component_for_entity(ent, ActionQueue)


def pos(ent: int) -> tuple[float, float]:
    p = esper.component_for_entity(ent, Position)
    return p.x, p.y


def run(system: ActionExecutionSystem, ticks: int, dt: float = DT) -> None:
    for _ in range(ticks):
        system.process(dt)


# --- movement -------------------------------------------------------------------------------


def test_move_walks_at_speed_and_finishes(world: str) -> None:
    field()
    me = actor(0, 0, Step("MoveTo", (4, 0)), speed=2.0)
    system = ActionExecutionSystem()
    system.process(DT)
    assert pos(me) == pytest.approx((0.2, 0.0))
    assert queue(me).path[-1] == (4, 0)
    run(system, 18)
    assert state(me).status is PlanStatus.EXECUTING
    run(system, 1)  # 20 ticks * 0.2 cells = 4 cells
    assert pos(me) == (4.0, 0.0)
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == ""
    assert queue(me).done


def test_move_paths_once_per_step(world: str, monkeypatch: pytest.MonkeyPatch) -> None:
    field()
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def counting(f: Battlefield, a: tuple[int, int], b: tuple[int, int], n: int = 4000) -> object:
        calls.append((a, b))
        return find_path(f, a, b, n)

    monkeypatch.setattr(behaviour_module, "find_path", counting)
    me = actor(0, 0, Step("MoveTo", (3, 3)), Step("Retreat", (0, 3)), speed=5.0)
    system = ActionExecutionSystem()
    run(system, 30)
    assert calls == [((0, 0), (3, 3)), ((3, 3), (0, 3))]
    assert pos(me) == (0.0, 3.0)
    assert state(me).status is PlanStatus.IDLE


def test_move_goes_around_walls_without_entering_them(world: str) -> None:
    wall = frozenset((5, y) for y in range(0, 15))
    field(wall)
    me = actor(2, 2, Step("TakeCover", (8, 2)), speed=3.0)
    system = ActionExecutionSystem()
    for _ in range(200):
        system.process(DT)
        assert to_cell(*pos(me)) not in wall
        if state(me).status is PlanStatus.IDLE:
            break
    assert pos(me) == (8.0, 2.0)
    assert state(me).invalid_reason == ""


def test_unreachable_move_is_impossible(world: str) -> None:
    ring = frozenset({(9, 10), (11, 10), (10, 9), (10, 11), (9, 9), (11, 11), (9, 11), (11, 9)})
    field(ring)
    me = actor(0, 0, Step("MoveTo", (10, 10)), Step("Scan"))
    ActionExecutionSystem().process(DT)
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == "unreachable"
    assert pos(me) == (0.0, 0.0)


def test_move_without_a_map_is_impossible(world: str) -> None:
    me = actor(0, 0, Step("MoveTo", (1, 1)))
    ActionExecutionSystem().process(DT)
    assert state(me).invalid_reason == "no_map"


# --- attack ---------------------------------------------------------------------------------


def test_attack_fires_on_cooldown_until_target_dies(world: str) -> None:
    field()
    foe = target(3, 0, hp=50)
    me = actor(
        0,
        0,
        Step("Attack", (foe,)),
        Step("Scan"),
        weapon=Weapon(range=5, damage=20, cooldown=0.25),
        ammo=Ammo(6),
    )
    system = ActionExecutionSystem()
    system.process(DT)
    assert esper.component_for_entity(foe, Health).hp == 30
    assert esper.component_for_entity(me, Ammo).rounds == 5
    run(system, 2)  # cooldown 0.25 s: no shot at 0.1 s or 0.2 s
    assert esper.component_for_entity(foe, Health).hp == 30
    run(system, 1)
    assert esper.component_for_entity(foe, Health).hp == 10
    assert queue(me).index == 0
    run(system, 3)
    assert esper.component_for_entity(foe, Health).hp == -10
    assert queue(me).index == 1  # killed: on to Scan
    assert not esper.entity_exists(foe)  # deleted (deferred) after the loop
    assert esper.component_for_entity(me, Ammo).rounds == 3


def test_attack_ends_when_magazine_is_empty(world: str) -> None:
    field()
    foe = target(1, 0, hp=1000)
    me = actor(
        0, 0, Step("Attack", (foe,)), Step("Reload"), weapon=Weapon(cooldown=0), ammo=Ammo(2)
    )
    system = ActionExecutionSystem()
    run(system, 2)
    assert esper.component_for_entity(me, Ammo).rounds == 0
    assert queue(me).current == Step("Reload")
    assert esper.component_for_entity(foe, Health).hp == 1000 - 2 * Weapon().damage


def test_attack_with_empty_magazine_ends_at_once(world: str) -> None:
    field()
    foe = target(1, 0)
    me = actor(0, 0, Step("Attack", (foe,)), Step("Scan"), ammo=Ammo(0))
    ActionExecutionSystem().process(DT)
    assert esper.component_for_entity(foe, Health).hp == 100
    assert queue(me).current == Step("Scan")


def test_attack_out_of_range_approaches_then_fires(world: str) -> None:
    field()
    foe = target(10, 0)
    me = actor(0, 0, Step("Attack", (foe,)), speed=4.0, weapon=Weapon(range=3.0, cooldown=0))
    system = ActionExecutionSystem()
    system.process(DT)
    assert pos(me) == pytest.approx((0.4, 0.0))
    assert esper.component_for_entity(foe, Health).hp == 100
    ticks = 1
    while esper.component_for_entity(foe, Health).hp == 100 and ticks < 100:
        system.process(DT)
        ticks += 1
    assert math.dist(pos(me), (10, 0)) <= 3.0
    assert ticks == 19  # 7 cells at 0.4 per tick, then the first shot


def test_attack_follows_a_moving_target(world: str) -> None:
    field()
    foe = target(10, 0)
    me = actor(0, 0, Step("Attack", (foe,)), speed=2.0, weapon=Weapon(range=2.0))
    system = ActionExecutionSystem()
    run(system, 3)
    esper.component_for_entity(foe, Position).y = 8.0  # moves to another cell
    run(system, 5)
    assert queue(me).path and queue(me).path[-1] == (10, 8)


def test_attack_on_a_gone_target_is_impossible(world: str) -> None:
    field()
    foe = target(1, 0)
    me = actor(0, 0, Step("Attack", (foe,)))
    esper.delete_entity(foe)
    ActionExecutionSystem().process(DT)
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == "target_gone"


def test_lower_id_acts_first(world: str) -> None:
    field()
    foe = target(1, 0, hp=10)
    first = actor(0, 0, Step("Attack", (foe,)), ammo=Ammo(6))
    second = actor(2, 0, Step("Attack", (foe,)), ammo=Ammo(6))
    ActionExecutionSystem().process(DT)
    assert esper.component_for_entity(first, Ammo).rounds == 5
    assert esper.component_for_entity(second, Ammo).rounds == 6
    assert state(first).invalid_reason == ""
    assert state(second).invalid_reason == "target_gone"


def test_remaining_steps_are_invalidated_early(world: str) -> None:
    field()
    foe = target(15, 15)
    me = actor(0, 0, Step("MoveTo", (5, 0)), Step("Attack", (foe,)))
    system = ActionExecutionSystem()
    system.process(DT)
    assert state(me).status is PlanStatus.EXECUTING
    esper.component_for_entity(foe, Health).hp = 0
    before = pos(me)
    system.process(DT)
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == "target_gone"
    assert pos(me) == before  # dropped before walking on


# --- reload, heal, scan, wait ---------------------------------------------------------------


def test_reload_takes_reload_time(world: str) -> None:
    field()
    me = actor(0, 0, Step("Reload"), weapon=Weapon(reload_time=0.3), ammo=Ammo(0, capacity=9))
    system = ActionExecutionSystem()
    run(system, 2)
    assert esper.component_for_entity(me, Ammo).rounds == 0
    system.process(DT)
    assert esper.component_for_entity(me, Ammo).rounds == 9
    assert state(me).status is PlanStatus.IDLE


def test_heal_approaches_then_heals_capped(world: str) -> None:
    field()
    friend = esper.create_entity(Agent(), Position(4, 0), Team(1), Health(90, 100))
    me = actor(0, 0, Step("Heal", (friend,)), speed=10.0, weapon=Weapon(heal_amount=25))
    system = ActionExecutionSystem()
    system.process(DT)  # 1 cell closer, 3 away: still walking
    assert esper.component_for_entity(friend, Health).hp == 90
    run(system, 2)
    assert math.dist(pos(me), (4, 0)) <= 1.5
    assert esper.component_for_entity(friend, Health).hp == 90  # arriving takes the tick
    system.process(DT)
    assert esper.component_for_entity(friend, Health).hp == 100
    assert state(me).status is PlanStatus.IDLE


def test_heal_self(world: str) -> None:
    field()
    me = actor(0, 0, weapon=Weapon(heal_amount=25))
    queue(me).replace([Step("Heal", (me,))], 1)
    esper.component_for_entity(me, Health).hp = 40
    ActionExecutionSystem().process(DT)
    assert esper.component_for_entity(me, Health).hp == 65


def test_scan_takes_half_a_second(world: str) -> None:
    field()
    me = actor(0, 0, Step("Scan"))
    system = ActionExecutionSystem()
    run(system, 29, dt=1 / 60)
    assert state(me).status is PlanStatus.EXECUTING
    run(system, 1, dt=1 / 60)  # 30 summed float dts land a hair under 0.5
    assert state(me).status is PlanStatus.IDLE


def test_wait_counts_process_calls(world: str) -> None:
    field()
    me = actor(0, 0, Step("Wait", (3,)))
    system = ActionExecutionSystem()
    run(system, 2, dt=100.0)
    assert state(me).status is PlanStatus.EXECUTING
    run(system, 1, dt=0.0)
    assert state(me).status is PlanStatus.IDLE


# --- bookkeeping ----------------------------------------------------------------------------


def test_cooldowns_tick_for_everyone(world: str) -> None:
    idle = actor(0, 0, status=PlanStatus.IDLE, weapon=Weapon(cooldown_left=0.25))
    system = ActionExecutionSystem()
    system.process(DT)
    assert esper.component_for_entity(idle, Weapon).cooldown_left == pytest.approx(0.15)
    run(system, 5)
    assert esper.component_for_entity(idle, Weapon).cooldown_left == 0.0


def test_idle_agents_stand_still_and_waiting_agents_run_their_provisional_plan(world: str) -> None:
    field()
    ids = [
        actor(0, 0, Step("MoveTo", (5, 0)), status=s)
        for s in (PlanStatus.IDLE, PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)
    ]
    ActionExecutionSystem().process(DT)
    assert pos(ids[0]) == (0.0, 0.0)
    assert all(pos(e)[0] > 0.0 for e in ids[1:])
    run(ActionExecutionSystem(), 200)  # the provisional plan ends: they wait, still not idle
    assert [state(e).status for e in ids] == [
        PlanStatus.IDLE,
        PlanStatus.REQUESTED,
        PlanStatus.IN_FLIGHT,
    ]
    assert all(queue(e).done and pos(e) == (5.0, 0.0) for e in ids[1:])


def test_empty_queue_goes_idle(world: str) -> None:
    me = actor(0, 0)
    ActionExecutionSystem().process(DT)
    assert state(me).status is PlanStatus.IDLE and state(me).invalid_reason == ""


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        (Step("Fly", (1,)), "unknown_action"),
        (Step("MoveTo", (1,)), "bad_arguments"),
    ],
)
def test_impossible_steps(world: str, step: Step, reason: str) -> None:
    field()
    me = actor(0, 0, step)
    ActionExecutionSystem().process(DT)
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == reason


def test_an_action_without_a_handler_is_refused_up_front() -> None:
    registry = ActionRegistry([*DEFAULT_REGISTRY.actions, ActionSpec("Dance", "D", (), "")])
    with pytest.raises(ConfigError, match="Dance"):
        ActionExecutionSystem(registry)


def test_a_declared_handler_runs_with_the_agent_and_may_fail(world: str) -> None:
    field()
    seen: list[tuple[int, object, object, float, tuple[int, ...]]] = []
    ticks: list[float] = []

    def dance(ctx: StepContext, args: tuple[int, ...], /) -> bool:
        seen.append((ctx.entity, ctx.agent, ctx.position, ctx.dt, args))
        ctx.queue.progress += 1
        if args[0] == 0:
            raise StepFailed("too_tired")
        return ctx.queue.progress >= args[0]

    def upkeep(dt: float, /) -> None:
        ticks.append(dt)

    count = ArgSpec("beats", ArgKind.COUNT, 0, 9)
    registry = ActionRegistry(
        [
            ActionSpec("Dance", "D", (count,), "", handler=dance, upkeep=upkeep),
            ActionSpec("Bow", "B", (count,), "", handler=dance, upkeep=upkeep),
        ]
    )
    me = actor(0, 0, Step("Dance", (2,)), Step("Dance", (0,)))
    system = ActionExecutionSystem(registry)
    for _ in range(3):
        system.process(DT)
    assert ticks == [DT] * 3  # one upkeep shared by two actions runs once per tick
    agent, pos = esper.component_for_entity(me, Agent), esper.component_for_entity(me, Position)
    assert seen == [
        (me, agent, pos, DT, (2,)),
        (me, agent, pos, DT, (2,)),
        (me, agent, pos, DT, (0,)),
    ]
    assert state(me).status is PlanStatus.IDLE
    assert state(me).invalid_reason == "too_tired"


def test_missing_weapon_gets_a_default_one(world: str) -> None:
    field()
    foe = target(1, 0)
    me = actor(0, 0, Step("Attack", (foe,)))
    ActionExecutionSystem().process(DT)
    assert esper.has_component(me, Weapon)
    assert esper.component_for_entity(foe, Health).hp == 100 - Weapon().damage


def test_dead_are_deleted_only_when_asked(world: str) -> None:
    corpse = target(0, 0, hp=0)
    dead_actor = actor(1, 1, Step("Scan"), hp=-3)
    ActionExecutionSystem(delete_dead=False).process(DT)
    assert esper.entity_exists(corpse) and esper.entity_exists(dead_actor)
    assert queue(dead_actor).progress == 0.0  # the dead do nothing
    ActionExecutionSystem().process(DT)
    assert not esper.entity_exists(corpse) and not esper.entity_exists(dead_actor)


def test_dead_agents_are_found_in_the_rows_and_other_dead_by_esper_s_query(world: str) -> None:
    field()
    foe = actor(3, 0, Step("Scan"), hp=10, team=2)
    me = actor(0, 0, Step("Attack", (foe,)), weapon=Weapon(range=5, damage=20), ammo=Ammo(6))
    system = ActionExecutionSystem()
    system.process(DT)  # every holder of health is an agent: the dead are found in the rows
    assert not esper.entity_exists(foe) and esper.entity_exists(me)
    crate = esper.create_entity(Position(5, 5), Health(0))  # not an agent
    system.process(DT)
    assert not esper.entity_exists(crate) and esper.entity_exists(me)


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError):
        ActionExecutionSystem(max_path_nodes=0)


def test_runs_are_deterministic() -> None:
    def play() -> list[tuple[float, float, int]]:
        name = f"test-execution-system-{next(_worlds)}"
        esper.switch_world(name)
        try:
            field(frozenset({(5, y) for y in range(3, 12)}))
            foes = [target(9 + i % 3, 4 + i, hp=60) for i in range(5)]
            mine = [
                actor(1, 2 * i, Step("Attack", (foes[i],)), Step("Scan"), ammo=Ammo(4))
                for i in range(5)
            ]
            system = ActionExecutionSystem()
            run(system, 60)
            out = []
            for e in mine:
                x, y = pos(e)
                out.append((x, y, esper.component_for_entity(e, Ammo).rounds))
            return out
        finally:
            esper.switch_world("default")
            esper.delete_world(name)

    assert play() == play()


@pytest.mark.parametrize("tables", ["esper's tables", "public queries"])
def test_agents_without_team_or_health_run_and_rows_follow_new_components(
    world: str, tables: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rows come from the snapshot query (agent, position, team, health) when it covers
    # every agent, else from the full query: both must run everyone, in id order; built from
    # esper's tables or, under an esper without them, through its queries.
    if tables == "public queries":
        monkeypatch.setattr(queries, "_tables", lambda: None)
    field()
    bare = esper.create_entity(
        Agent("tactical", 2.0), Position(0, 2), ActionQueue([Step("MoveTo", (4, 2))]), PlanState()
    )
    esper.component_for_entity(bare, PlanState).status = PlanStatus.EXECUTING
    me = actor(0, 0, Step("MoveTo", (4, 0)), speed=2.0)
    system = ActionExecutionSystem()
    system.process(DT)
    assert pos(bare) == pytest.approx((0.2, 2.0)) and pos(me) == pytest.approx((0.2, 0.0))
    esper.add_component(bare, Health(0))  # it dies: it stops acting, and is deleted
    system.process(DT)
    assert pos(bare) == pytest.approx((0.2, 2.0)) and pos(me) == pytest.approx((0.4, 0.0))
    late = actor(0, 4, Step("MoveTo", (4, 4)), speed=2.0)  # a new agent joins between ticks
    system.process(DT)
    assert not esper.entity_exists(bare)
    assert pos(late) == pytest.approx((0.2, 4.0)) and pos(me) == pytest.approx((0.6, 0.0))


# --- what is worked out once per step, what is read every tick ------------------------------


def test_a_later_steps_target_killed_earlier_in_the_same_tick_drops_the_plan(world: str) -> None:
    field()
    foe = target(1, 0, hp=10)
    killer = actor(0, 0, Step("Attack", (foe,)), ammo=Ammo(6))
    walker = actor(0, 5, Step("MoveTo", (5, 5)), Step("Attack", (foe,)))
    system = ActionExecutionSystem(delete_dead=False)
    system.process(DT)
    assert esper.component_for_entity(foe, Health).hp <= 0
    assert state(killer).invalid_reason == ""
    assert state(walker).invalid_reason == "target_gone"
    assert pos(walker) == (0.0, 5.0)  # dropped before walking on


def test_a_target_that_loses_its_position_between_ticks_is_gone(world: str) -> None:
    field()
    foe = target(15, 15)
    me = actor(0, 0, Step("MoveTo", (5, 0)), Step("Attack", (foe,)))
    system = ActionExecutionSystem()
    system.process(DT)
    assert state(me).status is PlanStatus.EXECUTING
    esper.remove_component(foe, Position)
    system.process(DT)
    assert state(me).invalid_reason == "target_gone"


@pytest.mark.parametrize("how", ["append", "replace_current", "new_list", "index"])
def test_a_plan_the_game_changes_between_ticks_is_read_anew(world: str, how: str) -> None:
    field()
    foe = target(15, 15, hp=0)  # dead: a plan naming it is dropped at once
    me = actor(0, 0, Step("Scan"), Step("MoveTo", (5, 0)), Step("Attack", (foe,)))
    q = queue(me)
    q.steps.pop()  # the plan as run: Scan, then MoveTo
    system = ActionExecutionSystem(delete_dead=False)
    system.process(DT)
    assert state(me).status is PlanStatus.EXECUTING and q.progress == pytest.approx(DT)
    if how == "append":  # the same list, grown
        q.steps.append(Step("Attack", (foe,)))
    elif how == "replace_current":  # the same list and length, its running step replaced
        q.steps[0] = Step("Attack", (foe,))
    elif how == "new_list":
        q.steps = [Step("Scan"), Step("Attack", (foe,))]
    else:  # the game moves the index onto a step that cannot run
        q.steps = [Step("Scan"), Step("Scan"), Step("Attack", (foe, 1))]
        system.process(DT)
        assert state(me).status is PlanStatus.EXECUTING
        q.index = 2
    system.process(DT)
    expected = "bad_arguments" if how == "index" else "target_gone"
    assert state(me).invalid_reason == expected
    assert state(me).status is PlanStatus.IDLE


# --- paths per tick -------------------------------------------------------------------------


def test_paths_per_tick_are_capped_and_the_others_wait_in_id_order(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    field()
    per_tick: list[list[int]] = []

    def counting(f: Battlefield, a: tuple[int, int], b: tuple[int, int], n: int = 4000) -> object:
        per_tick[-1].append(b[1])  # which agent (its row) asked
        return find_path(f, a, b, n)

    monkeypatch.setattr(behaviour_module, "find_path", counting)
    movers = [actor(0, y, Step("MoveTo", (6, y)), speed=2.0) for y in range(5)]
    system = ActionExecutionSystem(max_paths_per_tick=2)
    for _ in range(4):
        per_tick.append([])
        system.process(DT)
    assert per_tick == [[0, 1], [2, 3], [4], []]
    # Each waited its turn without moving, its step unchanged, then walked at full speed.
    assert [pos(e)[0] for e in movers] == pytest.approx([0.8, 0.8, 0.6, 0.6, 0.4])
    assert all(state(e).status is PlanStatus.EXECUTING for e in movers)
    assert all(state(e).invalid_reason == "" and queue(e).index == 0 for e in movers)
    run(system, 30)
    assert [pos(e) for e in movers] == [(6.0, float(y)) for y in range(5)]


def test_agents_act_in_id_order_whatever_order_esper_keeps_them_in(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    field()
    asked: list[int] = []

    def counting(f: Battlefield, a: tuple[int, int], b: tuple[int, int], n: int = 4000) -> object:
        asked.append(b[1])  # which agent (its row) asked
        return find_path(f, a, b, n)

    monkeypatch.setattr(behaviour_module, "find_path", counting)
    first = actor(0, 1, Step("MoveTo", (6, 1)))
    for _ in range(6):
        esper.create_entity()  # ids the later agent's set slot wraps around
    second = actor(0, 2, Step("MoveTo", (6, 2)))
    # esper's set of agents iterates the later id first (an int set's slots wrap): the
    # precondition that makes the order below the system's own doing.
    assert list(queries.entities(Agent)) == [second, first]
    system = ActionExecutionSystem(max_paths_per_tick=1)
    system.process(DT)
    assert asked == [1]  # the lower id takes the tick's only path
    assert pos(first)[0] > 0.0 and pos(second) == (0.0, 2.0)


def test_an_attacker_without_a_path_this_tick_neither_moves_nor_fires(world: str) -> None:
    field()
    foe = target(10, 0)
    walker = actor(0, 2, Step("MoveTo", (6, 2)))  # lower id: takes the tick's only path
    shooter = actor(0, 0, Step("Attack", (foe,)), ammo=Ammo(6), weapon=Weapon(range=3.0))
    system = ActionExecutionSystem(max_paths_per_tick=1)
    system.process(DT)
    assert queue(walker).path and pos(walker) != (0.0, 2.0)
    assert pos(shooter) == (0.0, 0.0) and not queue(shooter).path
    assert state(shooter).status is PlanStatus.EXECUTING
    system.process(DT)  # the walker needs no new path: the shooter gets it
    assert queue(shooter).path and pos(shooter)[0] > 0.0
    assert esper.component_for_entity(foe, Health).hp == 100


def test_no_cap_paths_everyone_at_once_and_a_cap_below_one_is_refused(world: str) -> None:
    field()
    movers = [actor(0, y, Step("MoveTo", (6, y))) for y in range(20)]  # more than the default
    ActionExecutionSystem(max_paths_per_tick=None).process(DT)
    assert all(pos(e)[0] > 0.0 for e in movers)
    with pytest.raises(ConfigError, match="max_paths_per_tick"):
        ActionExecutionSystem(max_paths_per_tick=0)


def test_on_tick_end_runs_after_every_tick_even_one_that_raised(world: str) -> None:
    def boom(ctx: StepContext, args: tuple[int, ...], /) -> bool:
        raise RuntimeError("a game handler failed")

    registry = ActionRegistry([ActionSpec("Boom", "X", (), "", handler=boom)])
    ended: list[int] = []
    system = ActionExecutionSystem(registry, on_tick_end=lambda: ended.append(len(ended)))
    field()
    actor(1, 1, status=PlanStatus.IDLE)
    system.process(DT)
    assert ended == [0]
    actor(2, 2, Step("Boom", ()))
    with pytest.raises(RuntimeError, match="handler failed"):
        system.process(DT)
    assert ended == [0, 1]
