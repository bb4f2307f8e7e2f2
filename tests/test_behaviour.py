"""ProposalContext (steps filled by argument kind, shared derivations) and StepContext.path."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import esper
import pytest

from aiplanner import behaviour as behaviour_module
from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, ArgSpec, Plan, Step
from aiplanner.adapter import DEFAULT_COMPONENTS
from aiplanner.behaviour import ProposalContext, StepContext, StepDeferred, StepFailed
from aiplanner.components import Battlefield
from aiplanner.pathfinding import find_path
from aiplanner.snapshot import SelfView, WorldSnapshot

FIELD = Battlefield(10, 10, blocked=frozenset({(5, y) for y in range(10)}))
GO = ActionSpec("Go", "G", (ArgSpec("x", ArgKind.X), ArgSpec("y", ArgKind.Y)), "")
HIT = ActionSpec("Hit", "H", (ArgSpec("who", ArgKind.ENEMY, 0, 99),), "")
NAP = ActionSpec("Nap", "N", (ArgSpec("ticks", ArgKind.COUNT, 2, 5),), "")
HIDE = ActionSpec("Hide", "D", (ArgSpec("at", ArgKind.COVER),), "")
SHOUT = ActionSpec("Shout", "S", (), "")

_worlds = itertools.count()


@pytest.fixture
def world() -> Iterator[str]:
    name = f"test-behaviour-{next(_worlds)}"
    esper.switch_world(name)
    yield name
    esper.switch_world("default")
    esper.delete_world(name)


def context(*actions: ActionSpec) -> ProposalContext:
    me = SelfView(
        id=1,
        role="tactical",
        team=1,
        x=1,
        y=1,
        hp=100,
        max_hp=100,
        ammo=6,
        ammo_capacity=6,
        in_cover=False,
        weapon_range=6.0,
    )
    snap = WorldSnapshot(3, me, (), (), (), (), None, FIELD)
    return ProposalContext(snap, ActionRegistry(actions))


def test_steps_are_filled_by_argument_kind() -> None:
    ctx = context(GO, HIT, NAP, SHOUT)
    assert ctx.step(GO, cell=(3, 4)) == Step("Go", (3, 4))
    assert ctx.step(HIT, target=7) == Step("Hit", (7,))
    assert ctx.step(NAP, count=10) == Step("Nap", (5,))  # clamped into its declared range
    assert ctx.step(NAP, count=0) == Step("Nap", (2,))
    assert ctx.step(SHOUT) == Step("Shout")
    assert ctx.step(GO) is None and ctx.step(HIT) is None  # a needed value is missing


def test_an_action_the_registry_lacks_or_cannot_fill_gives_no_step() -> None:
    ctx = context(GO, HIDE)
    assert ctx.step(HIT, target=7) is None
    assert ctx.step(HIDE, cell=(3, 4), target=7) is None  # a kind this helper cannot fill


def test_plans_drop_missing_follow_ups_but_never_promote_them() -> None:
    ctx = context(GO, SHOUT)
    go, shout = ctx.step(GO, cell=(2, 2)), ctx.step(SHOUT)
    assert ctx.plan(go, None, shout) == Plan((Step("Go", (2, 2)), Step("Shout")))
    assert ctx.plan(None, shout) is None
    assert ctx.plan() is None


def test_shared_derivations_are_computed_once_per_context() -> None:
    calls: list[int] = []

    def derive(snap: WorldSnapshot) -> int:
        calls.append(snap.tick)
        return snap.tick * 2

    ctx = context(SHOUT)
    assert ctx.shared(derive) == 6 and ctx.shared(derive) == 6
    assert calls == [3]
    assert context(SHOUT).shared(derive) == 6 and calls == [3, 3]


def test_paths_fail_with_a_reason(world: str) -> None:
    ctx = StepContext(DEFAULT_COMPONENTS, max_path_nodes=4000)
    with pytest.raises(StepFailed, match="no_map") as no_map:
        ctx.path((1.0, 1.0), (3, 3))
    assert no_map.value.reason == "no_map"
    ctx.field = FIELD
    assert ctx.path((1.0, 1.0), (3, 1)) == [(2, 1), (3, 1)]
    with pytest.raises(StepFailed) as walled:
        ctx.path((1.0, 1.0), (8, 1))  # a wall splits the map
    assert walled.value.reason == "unreachable"


def test_kept_paths_are_the_same_fresh_lists_count_per_tick_and_follow_the_map(
    world: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    searches: list[tuple[tuple[int, int], tuple[int, int]]] = []

    def counting(f: Battlefield, a: tuple[int, int], b: tuple[int, int], n: int) -> object:
        searches.append((a, b))
        return find_path(f, a, b, n)

    monkeypatch.setattr(behaviour_module, "find_path", counting)
    ctx = StepContext(DEFAULT_COMPONENTS, max_path_nodes=4000)
    ctx.field = FIELD
    ctx.paths_left = 3
    first = ctx.path((1.0, 1.0), (3, 3))
    assert first == find_path(FIELD, (1, 1), (3, 3))
    first.pop(0)  # the walker consumes its list: the kept path is not touched
    assert ctx.path((0.9, 1.2), (3, 3)) == [(2, 2), (3, 3)]  # the same start cell: kept
    with pytest.raises(StepFailed, match="unreachable"):
        ctx.path((1.0, 1.0), (8, 1))
    assert searches == [((1, 1), (3, 3)), ((1, 1), (8, 1))]
    with pytest.raises(StepDeferred):  # a kept path still used one of the tick's three
        ctx.path((1.0, 1.0), (3, 3))
    ctx.paths_left = 3
    with pytest.raises(StepFailed, match="unreachable"):  # kept too
        ctx.path((1.0, 1.0), (8, 1))
    assert len(searches) == 2
    ctx.field = Battlefield(10, 10)  # another map: the wall is gone, paths are searched again
    assert ctx.path((1.0, 1.0), (8, 1)) == find_path(ctx.field, (1, 1), (8, 1))
    assert searches[2:] == [((1, 1), (8, 1))]
