"""ComponentMap: declarations checked when built, and snapshots from a game's own components."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import esper
import pytest

from aiplanner.adapter import (
    DEFAULT_AMMO,
    DEFAULT_COMPONENTS,
    DEFAULT_PERCEPTION,
    DEFAULT_ROLE,
    DEFAULT_WEAPON_RANGE,
    ComponentMap,
)
from aiplanner.components import Agent, Ammo, Battlefield, Health, Perception, Position, Team
from aiplanner.errors import ConfigError
from aiplanner.snapshot_system import SnapshotSystem

_worlds = itertools.count()


@pytest.fixture
def world() -> Iterator[str]:
    name = f"test-adapter-{next(_worlds)}"
    esper.switch_world(name)
    yield name
    esper.switch_world("default")
    esper.delete_world(name)


@dataclass(slots=True)
class Npc:
    kind: str


@dataclass(slots=True)
class Body:
    """Position and health in one component, as some games keep them."""

    px: float
    py: float
    life: int
    life_max: int = 80


@dataclass(slots=True)
class Side:
    colour: int


@dataclass(slots=True)
class Eyes:
    sight: float


class Gun:
    """A plain class: fields declared as class annotations."""

    reach: float
    shells: int
    max_shells: int

    def __init__(self, reach: float, shells: int, max_shells: int) -> None:
        self.reach, self.shells, self.max_shells = reach, shells, max_shells


@dataclass(frozen=True, slots=True)
class Level:
    w: int
    h: int
    walls: frozenset[tuple[int, int]] = frozenset()
    hideouts: tuple[tuple[int, int], ...] = ()
    flag: tuple[int, int] | None = None


def to_field(level: Level) -> Battlefield:
    return Battlefield(level.w, level.h, level.walls, level.hideouts, level.flag)


def game_map(**changes: Any) -> ComponentMap:
    declared: dict[str, Any] = {
        "agent": Npc,
        "role": "kind",
        "position": (Body, "px", "py"),
        "health": (Body, "life"),
        "max_health": (Body, "life_max"),
        "team": (Side, "colour"),
        "perception": (Eyes, "sight"),
        "weapon_range": (Gun, "reach"),
        "ammo": (Gun, "shells", "max_shells"),
        "world": (Level, to_field),
    }
    declared.update(changes)
    return ComponentMap(**declared)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"position": (Body, "px", "pz")}, r"position: Body has no field 'pz'"),
        ({"health": (Body, "hp")}, r"health: Body has no field 'hp'"),
        ({"role": "job"}, r"role: Npc has no field 'job'"),
        ({"ammo": (Gun, "shells", "capacity")}, r"ammo: Gun has no field 'capacity'"),
        ({"team": ("Side", "colour")}, r"team: 'Side' is not a component type"),
        ({"agent": None}, r"agent: None is not a component type"),
        ({"perception": (Eyes,)}, r"perception: expected \(Type, 'field1'\)"),
        ({"position": (Body, "px")}, r"position: expected \(Type, 'field1', 'field2'\)"),
        ({"world": (Level, "to_field")}, r"world: 'to_field' is not callable"),
        ({"world": Level}, r"world: expected \(Type, to_battlefield\)"),
        ({"max_health": (Eyes, "sight")}, r"max_health: Eyes must be one of the agent's"),
        ({"max_health": 0}, r"max_health: must be positive"),
    ],
)
def test_bad_declarations_are_refused_naming_the_entry(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        game_map(**changes)


def place_pair(x: float, y: float, team: int, hp: int, role: str, extra: bool) -> tuple[int, int]:
    """The same unit twice, in aiplanner's components and in the game's."""
    ours: list[object] = [Agent(role), Position(x, y), Team(team), Health(hp, 80)]
    theirs: list[object] = [Npc(role), Body(x, y, hp), Side(team)]
    if extra:
        ours += [Perception(5.0), Ammo(2, 9)]
        theirs += [Eyes(5.0), Gun(DEFAULT_WEAPON_RANGE, 2, 9)]
    return esper.create_entity(*ours), esper.create_entity(*theirs)


def test_a_games_own_components_give_the_snapshot_aiplanners_give() -> None:
    units = [
        (3.0, 4.0, 1, 70, "tactical", True),
        (5.2, 4.4, 2, 30, "support", False),
        (4.0, 6.0, 1, 12, "stealth", True),
        (9.0, 9.0, 2, 0, "tactical", False),  # dead: seen by neither
        (6.0, 3.0, 2, 80, "exploration", True),
    ]
    snaps = []
    for components, pick in ((DEFAULT_COMPONENTS, 0), (game_map(), 1)):
        name = f"test-adapter-{next(_worlds)}"
        esper.switch_world(name)
        try:
            level = Level(16, 12, frozenset({(4, 5)}), ((5, 5), (2, 2)), (10, 10))
            esper.create_entity(level)
            esper.create_entity(to_field(level))  # each map only reads its own world type
            ids = [place_pair(*u)[pick] for u in units]
            system = SnapshotSystem(components=components)
            system.process(0.0)
            snaps.append([system.snapshot(e) for e in ids])
        finally:
            esper.switch_world("default")
            esper.delete_world(name)
    ours, theirs = snaps
    assert ours[3] is None and theirs[3] is None
    for a, b in zip(ours, theirs, strict=True):
        if a is None or b is None:
            continue
        # The entities differ by id (created in pairs), everything else matches.
        assert a.to_dict()["me"] | {"id": 0} == b.to_dict()["me"] | {"id": 0}
        assert [u.hp for u in a.enemies] == [u.hp for u in b.enemies]
        assert [u.max_hp for u in a.allies] == [u.max_hp for u in b.allies]
        assert (a.cover, a.obstacles, a.objective, a.field) == (
            b.cover,
            b.obstacles,
            b.objective,
            b.field,
        )
    assert theirs[0] is not None and theirs[0].me.ammo == 2 and theirs[0].me.ammo_capacity == 9


def test_missing_optional_components_and_constants_read_as_defaults(world: str) -> None:
    cm = game_map()
    plain = esper.create_entity(Npc("tactical"), Body(1.0, 1.0, 10), Side(1))
    assert cm.perception_of(plain) == DEFAULT_PERCEPTION
    assert cm.weapon_range_of(plain) == DEFAULT_WEAPON_RANGE
    assert cm.ammo_of(plain) == (DEFAULT_AMMO, DEFAULT_AMMO)
    fixed = game_map(perception=3.5, weapon_range=2, ammo=None, role=None, max_health=40)
    assert fixed.perception_of(plain) == 3.5 and fixed.weapon_range_of(plain) == 2.0
    assert fixed.ammo_of(plain) == (DEFAULT_AMMO, DEFAULT_AMMO)
    assert fixed.role_of(Npc("ignored")) == DEFAULT_ROLE
    assert fixed.max_hp_of([Npc("x"), Body(0, 0, 1), Side(1)]) == 40


def test_the_map_is_converted_again_only_when_replaced(world: str) -> None:
    calls: list[Level] = []

    def counting(level: Level) -> Battlefield:
        calls.append(level)
        return to_field(level)

    cm = game_map(world=(Level, counting))
    assert cm.read_map() is None
    holder = esper.create_entity(Level(8, 8))
    first = cm.read_map()
    assert first is not None and cm.read_map() is first and len(calls) == 1
    esper.add_component(holder, Level(9, 8))
    second = cm.read_map()
    assert second is not None and second.width == 9 and len(calls) == 2
    esper.create_entity(Level(3, 3))  # a later holder does not win: the lowest id does
    assert cm.read_map() is second


def test_a_converter_that_returns_something_else_is_named(world: str) -> None:
    cm = game_map(world=(Level, lambda level: (level.w, level.h)))
    esper.create_entity(Level(8, 8))
    with pytest.raises(ConfigError, match="returned tuple, not a Battlefield"):
        cm.read_map()


def test_liveness_reads_the_mapped_health(world: str) -> None:
    cm = game_map()
    alive = esper.create_entity(Npc("tactical"), Body(2.0, 3.0, 5), Side(1))
    dead = esper.create_entity(Npc("tactical"), Body(2.0, 3.0, 0), Side(1))
    assert cm.alive(alive) and cm.living_position(alive) == (2.0, 3.0)
    assert not cm.alive(dead) and cm.living_position(dead) is None
    assert not cm.alive(9999) and cm.living_position(9999) is None


def _as_set(rows: list[tuple[int, tuple[Any, ...]]]) -> set[tuple[int, tuple[int, ...]]]:
    return {(e, tuple(id(c) for c in comps)) for e, comps in rows}


@pytest.mark.parametrize("mapping", ["default", "game"])
def test_rows_are_esper_s_query_joined_and_follow_every_change(world: str, mapping: str) -> None:
    if mapping == "default":
        cm = DEFAULT_COMPONENTS
        full = [Agent(), Position(1.0, 2.0), Team(0), Health(100)]
    else:
        cm = game_map()  # position and health share one component: a three-type query
        full = [Npc("tactical"), Body(1.0, 2.0, 50), Side(1)]
    assert len(cm.query) == (4 if mapping == "default" else 3)
    ents = [esper.create_entity(*full) for _ in range(5)]
    esper.create_entity(*full[:-1])  # lacks one component: not an agent
    esper.create_entity(full[0])
    rows = cm.rows()
    assert _as_set(rows) == _as_set(list(esper.get_components(*cm.query)))
    assert {e for e, _ in rows} == set(ents)
    assert cm.rows() is rows  # nothing changed: the same rows, not joined again
    esper.remove_component(ents[0], type(full[-1]))  # a component goes...
    esper.delete_entity(ents[1], immediate=True)  # ...an entity goes...
    ents.append(esper.create_entity(*full))  # ...and one comes
    rows = cm.rows()
    assert _as_set(rows) == _as_set(list(esper.get_components(*cm.query)))
    assert {e for e, _ in rows} == set(ents[2:])
    esper.switch_world(world + "-other")  # another world: its own rows
    try:
        assert cm.rows() == []
    finally:
        esper.switch_world(world)
        esper.delete_world(world + "-other")
    assert {e for e, _ in cm.rows()} == set(ents[2:])
