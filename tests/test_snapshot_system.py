"""SnapshotSystem: tick, map, liveness, ordering, caps, cover, obstacles, memo, defaults."""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager

import esper
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiplanner.actions import Plan, Step
from aiplanner.combat import DEFAULT_REGISTRY
from aiplanner.components import (
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    Position,
    Team,
    Weapon,
)
from aiplanner.errors import ConfigError, PlanRejected
from aiplanner.snapshot import WorldSnapshot
from aiplanner.snapshot_system import Sight, SnapshotSystem, _Nearby
from aiplanner.spatial import UniformGrid, to_cell
from aiplanner.validation import PlanView, validate_plan

_worlds = itertools.count()


@contextmanager
def fresh_world() -> Iterator[str]:
    name = f"test-snapshot-system-{next(_worlds)}"
    esper.switch_world(name)
    try:
        yield name
    finally:
        esper.switch_world("default")
        esper.delete_world(name)


@pytest.fixture
def world() -> Iterator[str]:
    with fresh_world() as name:
        yield name


def agent(
    x: float,
    y: float,
    team: int = 1,
    hp: int = 100,
    role: str = "tactical",
    radius: float | None = None,
    *extra: object,
) -> int:
    comps: list[object] = [Agent(role), Position(x, y), Team(team), Health(hp)]
    if radius is not None:
        comps.append(Perception(radius))
    comps.extend(extra)
    return esper.create_entity(*comps)


FIELD = Battlefield(40, 40)


def test_tick_counts_and_nothing_before_first_process(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(1, 1)
    system = SnapshotSystem()
    assert system.tick == 0
    assert system.snapshot(me) is None
    assert system.field is None
    system.process(0.016)
    assert system.tick == 1
    assert system.field is FIELD
    snap = system.snapshot(me)
    assert snap is not None and snap.tick == 1
    system.process(0.016)
    assert system.tick == 2


def test_no_battlefield_means_no_snapshot(world: str) -> None:
    me = agent(1, 1)
    system = SnapshotSystem()
    system.process(0.016)
    assert system.field is None
    assert system.snapshot(me) is None


def test_self_view_reads_components_and_defaults(world: str) -> None:
    esper.create_entity(FIELD)
    full = agent(2.5, 3.49, 2, 70, "stealth", None, Ammo(3, 8), Weapon(range=9.5))
    bare = agent(10, 10)
    system = SnapshotSystem()
    system.process(0.016)
    snap = system.snapshot(full)
    assert snap is not None
    me = snap.me
    assert (me.id, me.role, me.team, me.hp, me.max_hp) == (full, "stealth", 2, 70, 100)
    assert (me.x, me.y) == (3, 3)  # 2.5 rounds half away from zero
    assert (me.ammo, me.ammo_capacity, me.weapon_range) == (3, 8, 9.5)
    bare_snap = system.snapshot(bare)
    assert bare_snap is not None
    assert (bare_snap.me.ammo, bare_snap.me.ammo_capacity) == (6, 6)  # no Ammo: a full magazine
    assert bare_snap.me.weapon_range == Weapon().range
    assert bare_snap.objective is None and bare_snap.field is FIELD


def test_enemies_and_allies_sorted_nearest_first_ties_by_id(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(10, 10, 1)
    e_far = agent(13, 10, 2)
    e_tie_b = agent(10, 12, 2)
    e_tie_a = agent(12, 10, 2)  # same distance as e_tie_b, created later: a higher id
    a_near = agent(11, 10, 1)
    agent(30, 30, 2)  # beyond the default radius of 8
    system = SnapshotSystem()
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    assert [u.id for u in snap.enemies] == [e_tie_b, e_tie_a, e_far]
    assert [u.id for u in snap.allies] == [a_near]
    assert [u.dist for u in snap.enemies] == [2.0, 2.0, 3.0]
    assert snap.enemy(e_far) is not None and snap.ally(e_far) is None


def test_units_capped_and_distance_rounded(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(0, 0, 1)
    foes = [agent(0.33 * i, 0.1, 2) for i in range(1, 10)]
    friends = [agent(0.1, 0.4 * i, 1) for i in range(1, 6)]
    system = SnapshotSystem(max_units=3)
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    assert [u.id for u in snap.enemies] == foes[:3]
    assert [u.id for u in snap.allies] == friends[:3]
    assert snap.enemies[0].dist == round(math.hypot(0.33, 0.1), 1)


def test_perception_radius_limits_what_is_seen(world: str) -> None:
    esper.create_entity(FIELD)
    short = agent(10, 10, 1, 100, "tactical", 2.0)
    near = agent(12, 10, 2)  # exactly at the radius: seen
    far = agent(10, 12.01, 2)
    system = SnapshotSystem()
    system.process(0.016)
    snap = system.snapshot(short)
    assert snap is not None
    assert [u.id for u in snap.enemies] == [near]
    assert far not in [u.id for u in snap.enemies]


def test_dead_deleted_and_incomplete_entities(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(5, 5)
    dead = agent(6, 5, 2, 0)
    dies_later = agent(7, 5, 2)
    deleted_later = agent(8, 5, 2)
    no_team = esper.create_entity(Agent(), Position(5, 6), Health(100))
    system = SnapshotSystem()
    system.process(0.016)
    assert system.snapshot(dead) is None
    assert system.snapshot(no_team) is None
    assert system.snapshot(123456) is None
    esper.component_for_entity(dies_later, Health).hp = 0
    esper.delete_entity(deleted_later)  # deferred, but already gone for us
    snap = system.snapshot(me)
    assert snap is not None
    assert snap.enemies == ()
    assert system.snapshot(dies_later) is None
    assert system.snapshot(deleted_later) is None
    assert system.neighbours(me, 10) == []


def test_snapshot_is_memoised_per_tick(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(5, 5)
    system = SnapshotSystem()
    system.process(0.016)
    first = system.snapshot(me)
    assert first is not None and system.snapshot(me) is first
    esper.component_for_entity(me, Health).hp = 50
    assert system.snapshot(me) is first  # same tick: the memo answers
    system.process(0.016)
    second = system.snapshot(me)
    assert second is not None and second is not first
    assert second.me.hp == 50 and second.tick == 2


def test_positions_follow_process(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(5, 5)
    other = agent(20, 20, 2)
    system = SnapshotSystem()
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None and snap.enemies == ()
    esper.component_for_entity(other, Position).x = 6.0
    esper.component_for_entity(other, Position).y = 5.0
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    assert [(u.id, u.x, u.y, u.dist) for u in snap.enemies] == [(other, 6, 5, 1.0)]


def test_cover_free_nearest_first_capped_and_in_cover(world: str) -> None:
    cover = ((12, 10), (8, 10), (10, 13), (10, 7), (10, 10), (30, 30), (14, 10))
    field = Battlefield(40, 40, cover=cover)
    esper.create_entity(field)
    me = agent(10.5, 10)  # 0.5 from (10, 10): in cover, and that point stays offered to me
    agent(12.3, 10.2, 2)  # takes (12, 10)
    agent(8, 10.6, 1)  # 0.6 from (8, 10): not taking it
    system = SnapshotSystem(max_cover=3)
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    assert snap.me.in_cover
    # distances from (10.5, 10): (10,10)=0.5, (8,10)=2.5, (10,7)=(10,13)=~3.04 tie by (x, y)
    assert snap.cover == ((10, 10), (8, 10), (10, 7))
    assert [u.in_cover for u in snap.enemies] == [True]  # 0.36 from (12, 10)
    assert [u.in_cover for u in snap.allies] == [True]  # 0.6 from (8, 10)


def test_in_cover_threshold(world: str) -> None:
    esper.create_entity(Battlefield(20, 20, cover=((5, 5),)))
    inside = agent(5.75, 5)
    outside = agent(5, 5.76)
    system = SnapshotSystem()
    system.process(0.016)
    a, b = system.snapshot(inside), system.snapshot(outside)
    assert a is not None and b is not None
    assert a.me.in_cover and not b.me.in_cover


def test_obstacles_nearest_first_ties_by_coordinates_capped(world: str) -> None:
    blocked = frozenset({(5, 7), (7, 5), (3, 5), (5, 3), (5, 6), (20, 20)})
    esper.create_entity(Battlefield(30, 30, blocked=blocked))
    me = agent(5, 5)
    system = SnapshotSystem(max_obstacles=4)
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    assert snap.obstacles == ((5, 6), (3, 5), (5, 3), (5, 7))


def test_lowest_entity_battlefield_wins_and_new_map_is_picked_up(world: str) -> None:
    first = esper.create_entity(Battlefield(10, 10))
    esper.create_entity(Battlefield(50, 50))
    me = agent(1, 1)
    system = SnapshotSystem()
    system.process(0.016)
    assert system.field == Battlefield(10, 10)
    replacement = Battlefield(10, 10, blocked=frozenset({(1, 2)}))
    esper.add_component(first, replacement)
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None and snap.obstacles == ((1, 2),) and snap.field is replacement


def test_neighbours(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(0, 0)
    b = agent(1, 1, 2)
    a = agent(1, 0, 1)
    agent(5, 5, 2)
    system = SnapshotSystem()
    system.process(0.016)
    assert system.neighbours(me, 2.0) == [a, b]
    assert system.neighbours(999, 2.0) == []


def test_non_finite_positions_are_left_out(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(0, 0)
    lost = agent(math.nan, 0, 2)
    system = SnapshotSystem()
    system.process(0.016)
    assert system.snapshot(lost) is None
    snap = system.snapshot(me)
    assert snap is not None and snap.enemies == ()


@pytest.mark.parametrize(
    "kwargs",
    [{"cell_size": 0.0}, {"max_units": -1}, {"max_cover": -2}, {"max_obstacles": 1.5}],
)
def test_bad_settings_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SnapshotSystem(**kwargs)  # type: ignore[arg-type]


# (x, y, team, hp) of up to 40 agents on a 31x31 map, some dead.
PEOPLE = st.lists(
    st.tuples(
        st.floats(0, 30, allow_nan=False),
        st.floats(0, 30, allow_nan=False),
        st.integers(1, 3),
        st.integers(-5, 100),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(people=PEOPLE, cap=st.integers(0, 6))
def test_units_match_brute_force(people: list[tuple[float, float, int, int]], cap: int) -> None:
    with fresh_world():
        esper.create_entity(Battlefield(31, 31))
        ids = [agent(x, y, t, hp) for x, y, t, hp in people]
        system = SnapshotSystem(max_units=cap, cell_size=3.0)
        system.process(0.016)
        for ent, (x, y, team, hp) in zip(ids, people, strict=True):
            snap = system.snapshot(ent)
            if hp <= 0:
                assert snap is None
                continue
            assert snap is not None
            near = sorted(
                (math.sqrt((ox - x) ** 2 + (oy - y) ** 2), other, ot)
                for other, (ox, oy, ot, ohp) in zip(ids, people, strict=True)
                if other != ent and ohp > 0 and (ox - x) ** 2 + (oy - y) ** 2 <= 64.0
            )
            assert [u.id for u in snap.enemies] == [o for _, o, t in near if t != team][:cap]
            assert [u.id for u in snap.allies] == [o for _, o, t in near if t == team][:cap]


@settings(max_examples=40, deadline=None)
@given(
    people=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(-1, 100)),
        min_size=1,
        max_size=90,
    ),
    cover=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30),
    cap=st.integers(0, 6),
)
def test_cover_matches_brute_force(
    people: list[tuple[int, int, int]], cover: list[tuple[int, int]], cap: int
) -> None:
    # Up to 90 agents on a 10x10 map: crowds both below and above the linear-scan threshold.
    with fresh_world():
        esper.create_entity(Battlefield(10, 10, cover=tuple(cover)))
        spots = [(x / 4, y / 4, hp) for x, y, hp in people]
        ids = [agent(x, y, 1, hp) for x, y, hp in spots]
        system = SnapshotSystem(max_cover=cap)
        system.process(0.016)
        for ent, (x, y, hp) in zip(ids, spots, strict=True):
            snap = system.snapshot(ent)
            if hp <= 0:
                continue
            assert snap is not None
            free = sorted(
                (math.sqrt((cx - x) ** 2 + (cy - y) ** 2), cx, cy)
                for cx, cy in set(cover)
                if (cx - x) ** 2 + (cy - y) ** 2 <= 64.0
                and not any(
                    o != ent and ohp > 0 and (ox - cx) ** 2 + (oy - cy) ** 2 <= 0.25
                    for o, (ox, oy, ohp) in zip(ids, spots, strict=True)
                )
            )
            assert snap.cover == tuple((cx, cy) for _, cx, cy in free[:cap])


def test_seen_units_carry_their_max_hp(world: str) -> None:
    esper.create_entity(FIELD)
    me = agent(5, 5)
    big = esper.create_entity(Agent("support"), Position(6, 5), Team(1), Health(90, 200))
    system = SnapshotSystem()
    system.process(0.016)
    snap = system.snapshot(me)
    assert snap is not None
    (ally,) = snap.allies
    assert (ally.id, ally.hp, ally.max_hp, ally.hurt) == (big, 90, 200, True)
    assert WorldSnapshot.from_dict(orjson.loads(snap.to_json()), FIELD).allies == snap.allies


def test_units_killed_after_process_make_room_for_farther_ones(world: str) -> None:
    # Perception 8: the first look reaches 4 cells. Both near allies die after process(), so
    # the one at 6 cells must come from the second, wider look.
    esper.create_entity(FIELD)
    me = agent(10, 10, 1, 100, "tactical", 8.0)
    near = [agent(11, 10, 1), agent(10, 12, 1)]
    far = agent(16, 10, 1)
    agent(10, 19, 1)  # out of sight
    enemy = agent(13, 10, 2)
    system = SnapshotSystem(max_units=2)
    system.process(0.016)
    esper.component_for_entity(near[0], Health).hp = 0
    esper.delete_entity(near[1])
    snap = system.snapshot(me)
    assert snap is not None
    assert [u.id for u in snap.allies] == [far]
    assert [u.id for u in snap.enemies] == [enemy]


def test_grid_holds_every_team_and_follows_team_changes(world: str) -> None:
    esper.create_entity(FIELD)
    a = agent(1, 1, 1)
    b = agent(2, 2, 2)
    c = agent(3, 3, 3)
    system = SnapshotSystem()
    system.process(0.016)
    assert sorted(system.grid.query(0, 0, 100)) == [a, b, c]
    esper.component_for_entity(b, Team).team = 1  # b changes sides
    esper.component_for_entity(c, Health).hp = 0
    system.process(0.016)
    assert sorted(system.grid.query(0, 0, 100)) == [a, b]
    snap = system.snapshot(a)
    assert snap is not None and [u.id for u in snap.allies] == [b] and snap.enemies == ()


@settings(max_examples=40, deadline=None)
@given(
    walls=st.sets(st.tuples(st.integers(0, 19), st.integers(0, 19)), max_size=120),
    spots=st.lists(
        st.tuples(st.floats(0, 19, allow_nan=False), st.floats(0, 19, allow_nan=False)),
        min_size=1,
        max_size=12,
    ),
    radius=st.sampled_from([0.0, 1.5, 4.0, 7.3, 30.0]),
)
def test_obstacles_match_brute_force(
    walls: set[tuple[int, int]], spots: list[tuple[float, float]], radius: float
) -> None:
    # Several agents per map cell: the candidates kept per cell must serve every position in it.
    with fresh_world():
        esper.create_entity(Battlefield(20, 20, blocked=frozenset(walls)))
        ids = [agent(x, y, 1, 100, "tactical", radius) for x, y in spots]
        system = SnapshotSystem(max_obstacles=200)
        for _ in range(2):  # the second tick answers from the kept candidates
            system.process(0.016)
            for ent, (x, y) in zip(ids, spots, strict=True):
                snap = system.snapshot(ent)
                assert snap is not None
                near = sorted(
                    (math.sqrt((wx - x) * (wx - x) + (wy - y) * (wy - y)), (wx, wy))
                    for wx, wy in walls
                    if (wx - x) * (wx - x) + (wy - y) * (wy - y) <= radius * radius
                )
                assert snap.obstacles == tuple(w for _, w in near)


def test_a_tick_of_the_index_sets_off_no_young_collection(world: str) -> None:
    # Nothing is made per agent that stays alive for the rest of the tick's indexing (a tuple
    # per agent used to be: a thousand agents then set off a collection on every tick).
    esper.create_entity(Battlefield(64, 64))
    ents = [agent(float(i % 60), float(i // 60), team=i % 2) for i in range(1200)]
    system = SnapshotSystem()
    system.process(0.1)  # the grids are made: that allocates, once
    for e in ents:
        esper.component_for_entity(e, Position).x += 0.3  # everyone moves
    started: list[int] = []

    def log(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    was_enabled, threshold = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 10, 10)
    gc.collect()
    gc.callbacks.append(log)
    try:
        system.process(0.1)
    finally:
        gc.callbacks.remove(log)
        gc.set_threshold(*threshold)
        if not was_enabled:
            gc.disable()
    assert started == []
    assert system.snapshot(ents[0]) is not None and len(system.grid) == len(ents)


def test_on_tick_start_runs_first_thing_each_tick(world: str) -> None:
    esper.create_entity(FIELD)
    seen: list[int] = []
    system = SnapshotSystem()
    system.on_tick_start = lambda: seen.append(system.tick)  # before the tick advances
    system.process(0.1)
    system.process(0.1)
    assert seen == [0, 1] and system.tick == 2


@pytest.mark.parametrize("side", [20, 400])  # a crowd for the map (half radius first), or not
def test_units_in_a_crowd_or_not_match_brute_force(side: int) -> None:
    people = [(5.0 + (i * 7 % 13) * 0.7, 5.0 + (i * 5 % 11) * 0.9, i % 2) for i in range(60)]
    with fresh_world():
        esper.create_entity(Battlefield(side, side))
        ids = [agent(x, y, t) for x, y, t in people]
        system = SnapshotSystem(max_units=4)
        system.process(0.016)
        for ent, (x, y, team) in zip(ids, people, strict=True):
            snap = system.snapshot(ent)
            assert snap is not None
            near = sorted(
                (math.sqrt((ox - x) ** 2 + (oy - y) ** 2), other, ot)
                for other, (ox, oy, ot) in zip(ids, people, strict=True)
                if other != ent and (ox - x) ** 2 + (oy - y) ** 2 <= 64.0
            )
            assert [u.id for u in snap.enemies] == [o for _, o, t in near if t != team][:4]
            assert [u.id for u in snap.allies] == [o for _, o, t in near if t == team][:4]
            for unit in (*snap.enemies, *snap.allies):  # cell and cover worked out once a tick
                ox, oy, _ = people[ids.index(unit.id)]
                assert (unit.x, unit.y) == to_cell(ox, oy) and unit.in_cover is False


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-2, 34, allow_nan=False), st.floats(-2, 34, allow_nan=False)),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from([0.0, 0.5, 3.0, 8.0]),
)
def test_nearby_points_answer_as_the_grid_from_memo_too(
    positions: list[tuple[float, float]], radius: float
) -> None:
    """_Nearby keeps candidates per map cell and answers per exact position: asked again, from
    the same or another position of the same cell, it still answers as UniformGrid.query."""
    points = tuple((x, y) for x in range(0, 32, 3) for y in range(1, 32, 4))
    nearby = _Nearby(points, 4.0)
    grid = UniformGrid(4.0)
    for i, (px, py) in enumerate(points):
        grid.insert(i, px, py)
    for x, y in [*positions, *positions, *((x + 0.25, y) for x, y in positions)]:
        assert list(nearby.query(x, y, radius)) == grid.query(x, y, radius)


def _verdict(plan: Plan, view: PlanView) -> str:
    try:
        validate_plan(plan, view, DEFAULT_REGISTRY)
    except PlanRejected as exc:
        return exc.reason
    return "ok"


def _plans_naming(ids: list[int], me: int) -> list[Plan]:
    """A plan per unit argument (every id as an enemy and as an ally, the agent itself too),
    plus plans that name no unit, and one naming a unit after a legal step."""
    plans = [Plan((Step("Attack", (e,)),)) for e in [*ids, 999_999]]
    plans += [Plan((Step("Heal", (e,)),)) for e in [*ids, me]]
    plans += [
        Plan((Step("Scan"),)),
        Plan((Step("MoveTo", (3, 4)),)),
        Plan((Step("MoveTo", (99, 4)),)),  # off the map: rejected, no unit named
        Plan((Step("Reload"), Step("Attack", (ids[0],)))),
    ]
    return plans


@settings(max_examples=40, deadline=None)
@given(people=PEOPLE, cap=st.integers(0, 4))
def test_a_sight_checks_every_plan_as_the_snapshot_does(
    people: list[tuple[float, float, int, int]], cap: int
) -> None:
    """Attack and Heal of every unit (seen, too far, beyond the cap, dead, the agent itself),
    and plans naming none: the same verdict against the agent's sight as against its snapshot,
    from a system that has built no snapshot (so the sight finds the units itself)."""
    with fresh_world():
        esper.create_entity(Battlefield(31, 31))
        ids = [agent(x, y, t, hp) for x, y, t, hp in people]
        sights = SnapshotSystem(max_units=cap, cell_size=3.0)
        snapshots = SnapshotSystem(max_units=cap, cell_size=3.0)
        sights.process(0.016)
        snapshots.process(0.016)
        for ent in ids:
            view = sights.sight(ent)
            snap = snapshots.snapshot(ent)
            assert (view is None) == (snap is None)
            if view is None or snap is None:
                continue
            assert isinstance(view, Sight)
            for plan in _plans_naming(ids, ent):
                assert _verdict(plan, view) == _verdict(plan, snap), plan


def test_a_sight_is_none_exactly_when_the_snapshot_is(world: str) -> None:
    system = SnapshotSystem()
    system.process(0.016)
    me = agent(5, 5)
    assert system.sight(me) is None  # not indexed yet
    esper.create_entity(FIELD)
    dead = agent(6, 5, 2, 0)
    dies_later = agent(7, 5, 2)
    deleted_later = agent(8, 5, 2)
    no_team = esper.create_entity(Agent(), Position(5, 6), Health(100))
    system.process(0.016)
    esper.component_for_entity(dies_later, Health).hp = 0
    esper.delete_entity(deleted_later)
    for ent in (dead, dies_later, deleted_later, no_team, 123456):
        assert system.sight(ent) is None
        assert system.snapshot(ent) is None
    view = system.sight(me)
    assert isinstance(view, Sight) and view.me_id == me and view.field is FIELD


def test_a_sight_looks_for_units_only_when_a_step_names_one(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of a sight: a plan that names no unit is checked without the units' search,
    one that names units searches once; and a snapshot built this tick is used as it is."""
    esper.create_entity(FIELD)
    me = agent(5, 5)
    foe = agent(7, 5, 2)
    friend = agent(5, 7)
    system = SnapshotSystem()
    system.process(0.016)
    searches: list[int] = []
    units = system._units

    def counted(*args: object) -> object:
        searches.append(1)
        return units(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(system, "_units", counted)
    view = system.sight(me)
    assert view is not None
    validate_plan(Plan((Step("Scan"), Step("MoveTo", (3, 4)))), view)
    assert searches == []
    validate_plan(Plan((Step("Attack", (foe,)), Step("Heal", (friend,)))), view)
    validate_plan(Plan((Step("Heal", (friend,)),)), view)
    assert searches == [1]
    snap = system.snapshot(foe)
    assert system.sight(foe) is snap
