"""Named places and free-mode options: what a free plan may name, built from the snapshot."""

from __future__ import annotations

import math

import pytest

from aiplanner.actions import ActionSpec, ArgKind, ArgSpec
from aiplanner.components import Battlefield
from aiplanner.pathfinding import find_path, path_cost, reachable
from aiplanner.places import (
    MAX_PLACES,
    PLACE_STRIDE,
    Slot,
    free_options,
    named_places,
    pack_cell,
    slots,
    unpack_cell,
    with_cells,
)
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

# A wall between x=8 and the rest in rows 0..9, with a gap at row 10.
WALL = frozenset((8, y) for y in range(10))
FIELD = Battlefield(20, 14, WALL, ((4, 4), (12, 2), (3, 9), (6, 1)), (15, 12))


def snap(
    *,
    at: tuple[int, int] = (3, 3),
    hp: int = 100,
    enemies: tuple[SeenUnit, ...] = (),
    allies: tuple[SeenUnit, ...] = (),
    field: Battlefield = FIELD,
) -> WorldSnapshot:
    me = SelfView(7, "tactical", 0, at[0], at[1], hp, 100, 6, 6, False, 6.0)
    cover = tuple(sorted(field.cover, key=lambda c: (math.dist(c, at), c)))
    return WorldSnapshot(0, me, enemies, allies, cover, (), field.objective, field)


def enemy(uid: int, x: int, y: int, hp: int = 100) -> SeenUnit:
    return SeenUnit(uid, x, y, hp, False, 0.0)


def test_cells_pack_into_one_integer_and_back() -> None:
    for cell in [(0, 0), (5, 7), (PLACE_STRIDE - 1, 3), (2, 40_000)]:
        assert unpack_cell(pack_cell(*cell)) == cell
    assert pack_cell(5, 7) == 7 * PLACE_STRIDE + 5


def test_slots_pair_x_then_y_and_place_kinds() -> None:
    spec = ActionSpec(
        "Throw",
        "Z",
        (
            ArgSpec("x", ArgKind.X),
            ArgSpec("y", ArgKind.Y),
            ArgSpec("n", ArgKind.COUNT),
            ArgSpec("to", ArgKind.PLACE),
            ArgSpec("hide", ArgKind.COVER),
            ArgSpec("y2", ArgKind.Y),  # a Y without its X before it is a plain integer
        ),
        "",
    )
    assert slots(spec) == (
        Slot((0, 1), "place"),
        Slot((2,), "plain"),
        Slot((3,), "place"),
        Slot((4,), "cover"),
        Slot((5,), "plain"),
    )
    assert with_cells(spec, (1, 2, 3, pack_cell(4, 5), pack_cell(6, 7), 8)) == [
        1, 2, 3, 4, 5, 6, 7, 8,
    ]  # fmt: skip


def test_places_are_reachable_distinct_walkable_cells_not_my_own() -> None:
    s = snap(enemies=(enemy(91, 12, 3), enemy(92, 3, 8)), allies=(enemy(15, 4, 4),))
    places = named_places(s)
    assert 1 <= len(places) <= MAX_PLACES
    cells = [p.cell for p in places]
    assert len(set(cells)) == len(cells)
    here = (3, 3)
    for p in places:
        assert FIELD.walkable(*p.cell) and p.cell != here
        assert find_path(FIELD, here, p.cell) is not None
        assert p.cover == (p.cell in FIELD.cover)
    assert (4, 4) not in cells  # an ally stands on that cover point
    assert (12, 2) in cells  # cover behind the wall: a long walk round, but reachable


def test_places_name_cover_goal_and_near_and_away_from_enemies() -> None:
    s = snap(enemies=(enemy(91, 3, 9), enemy(92, 12, 12)))
    places = named_places(s)
    names = [p.name for p in places]
    assert names[0] == "cover" and names.count("cover") == 3  # the 3 nearest cover points
    assert "goal" in names
    here = (3, 3)
    for p in places:
        if p.name.startswith(("near", "away")):
            uid = int(p.name[4:])
            foe = next(e for e in s.enemies if e.id == uid)
            before, after = math.dist(here, (foe.x, foe.y)), math.dist(p.cell, (foe.x, foe.y))
            assert (after < before) if p.name.startswith("near") else (after > before)
            assert reachable(FIELD, here, 60).get(p.cell) is not None  # within 6 steps
    assert {"near91", "away91"} <= set(names)
    goal = places[names.index("goal")]
    assert goal.cell == (15, 12) and goal.steps >= 12


def test_dead_enemies_get_no_place_and_no_target() -> None:
    s = snap(enemies=(enemy(91, 3, 9, hp=0), enemy(92, 12, 12)))
    assert not any(p.name.endswith("91") for p in named_places(s))
    assert [e.id for e in free_options(s).enemies] == [92]


def test_unreachable_and_blocked_cells_are_never_places() -> None:
    # The agent is walled in at (1, 1): nothing outside its pen is reachable.
    pen = frozenset({(0, 2), (1, 2), (2, 2), (2, 1), (2, 0)})
    field = Battlefield(10, 10, pen | {(9, 9)}, ((5, 5), (0, 0)), (9, 9))
    s = snap(at=(1, 1), enemies=(enemy(91, 6, 6),), field=field)
    cells = {p.cell for p in named_places(s)}
    assert cells <= {(0, 0), (1, 0), (0, 1)}
    assert (0, 0) in cells  # the one cover point inside the pen
    assert not any(p.name == "goal" for p in named_places(s))  # the goal is a wall


def test_places_are_deterministic_and_capped() -> None:
    foes = (enemy(90, 0, 12), enemy(91, 7, 0), enemy(92, 0, 0), enemy(93, 10, 12))
    a = named_places(snap(enemies=foes))
    named_places.cache_clear()
    b = named_places(snap(enemies=foes))
    assert a == b
    assert len(a) == MAX_PLACES


@pytest.mark.parametrize(("my_hp", "expected"), [(100, [15, 18]), (40, [15, 18, 7])])
def test_heal_targets_are_the_hurt_allies_shown_and_me_when_hurt(
    my_hp: int, expected: list[int]
) -> None:
    allies = (
        SeenUnit(15, 2, 3, 60, False, 1.0),
        SeenUnit(16, 2, 4, 100, False, 1.4),
        SeenUnit(17, 2, 5, 0, False, 2.2),  # dead
        SeenUnit(18, 1, 5, 10, False, 2.8),
        SeenUnit(19, 1, 6, 10, False, 3.6),  # a fourth living ally: not shown
    )
    options = free_options(snap(hp=my_hp, allies=allies))
    assert [a.id for a in options.allies] == [15, 16, 18]
    assert list(options.heal_ids) == expected


def test_cover_indices() -> None:
    options = free_options(snap(enemies=(enemy(91, 3, 9),)))
    assert options.cover_indices == tuple(i for i, p in enumerate(options.places) if p.cover)
    assert len(options.cover_indices) == 3


def test_reachable_costs_are_the_shortest_walks() -> None:
    here = (3, 3)
    costs = reachable(FIELD, here, 80)
    assert costs[here] == 0
    for x in range(FIELD.width):
        for y in range(FIELD.height):
            path = find_path(FIELD, here, (x, y)) if FIELD.walkable(x, y) else None
            cost = None if path is None else path_cost(here, path)
            if cost is not None and cost <= 80:
                assert costs.get((x, y)) == cost, (x, y)
            else:
                assert (x, y) not in costs or (x, y) == here
