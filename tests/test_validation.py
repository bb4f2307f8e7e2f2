"""The validator: one test per rejection reason at least, and what it accepts."""

from __future__ import annotations

from typing import Any

import pytest

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.components import Battlefield
from aiplanner.errors import PlanRejected
from aiplanner.places import pack_cell
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot
from aiplanner.validation import RejectReason, validate_plan, validate_step

FIELD = Battlefield(10, 8, blocked=frozenset({(4, 4)}), cover=((2, 2),), objective=(9, 7))


def snap(
    enemies: tuple[SeenUnit, ...] = (SeenUnit(20, 5, 5, 60, False, 2.8),),
    allies: tuple[SeenUnit, ...] = (SeenUnit(30, 2, 3, 40, False, 1.4),),
) -> WorldSnapshot:
    me = SelfView(10, "tactical", 1, 3, 3, 80, 100, 6, 6, False, 6.0)
    return WorldSnapshot(1, me, enemies, allies, ((2, 2),), ((4, 4),), (9, 7), FIELD)


def reason_of(plan: Plan, registry: ActionRegistry = DEFAULT_REGISTRY) -> str:
    with pytest.raises(PlanRejected) as info:
        validate_plan(plan, snap(), registry)
    return info.value.reason


def one(action: str, *args: Any) -> Plan:
    return Plan((Step(action, tuple(args)),))


def test_a_legal_plan_is_returned_unchanged() -> None:
    plan = Plan((Step("MoveTo", (4, 3)), Step("Attack", (20,)), Step("Heal", (30,))))
    assert validate_plan(plan, snap()) is plan


@pytest.mark.parametrize(
    "plan",
    [
        one("Heal", 10),  # itself
        one("Wait", 1),
        one("Wait", 120),
        one("Reload"),
        one("Scan"),
        one("TakeCover", 2, 2),
        one("Retreat", 0, 0),
        one("MoveTo", 9, 7),
    ],
)
def test_accepts(plan: Plan) -> None:
    assert validate_plan(plan, snap()) is plan


def test_unknown_action() -> None:
    assert reason_of(one("Fly", 1, 2)) == RejectReason.UNKNOWN_ACTION.value == "unknown_action"


@pytest.mark.parametrize(
    "plan",
    [
        one("MoveTo", 1),  # too few
        one("Attack", 20, 1),  # too many
        one("Reload", 0),
        one("MoveTo", 1.0, 2),  # a float
        one("MoveTo", "1", 2),  # a string
        one("Attack", True),  # bool is an int subclass, but not an id
        one("Wait", None),
    ],
)
def test_bad_arguments(plan: Plan) -> None:
    assert reason_of(plan) == RejectReason.BAD_ARGUMENTS


@pytest.mark.parametrize("ticks", [0, -5, 121, 10**30])
def test_out_of_range(ticks: int) -> None:
    assert reason_of(one("Wait", ticks)) == RejectReason.OUT_OF_RANGE


@pytest.mark.parametrize("cell", [(10, 0), (0, 8), (-1, 0), (0, -1), (10**9, 3)])
def test_out_of_bounds(cell: tuple[int, int]) -> None:
    assert reason_of(one("MoveTo", *cell)) == RejectReason.OUT_OF_BOUNDS
    assert reason_of(one("Retreat", *cell)) == RejectReason.OUT_OF_BOUNDS


def test_blocked_cell() -> None:
    assert reason_of(one("MoveTo", 4, 4)) == RejectReason.BLOCKED.value == "blocked_cell"
    assert reason_of(one("TakeCover", 4, 4)) == RejectReason.BLOCKED


@pytest.mark.parametrize("target", [10, 30, 99, -1])  # self, an ally, unseen, nonsense
def test_bad_target(target: int) -> None:
    assert reason_of(one("Attack", target)) == RejectReason.BAD_TARGET


def test_bad_target_when_enemy_is_dead_in_snapshot() -> None:
    dead = snap(enemies=(SeenUnit(20, 5, 5, 0, False, 2.8),))
    with pytest.raises(PlanRejected) as info:
        validate_plan(one("Attack", 20), dead)
    assert info.value.reason == RejectReason.BAD_TARGET


@pytest.mark.parametrize("target", [20, 99])  # an enemy, unseen
def test_bad_heal_target(target: int) -> None:
    assert reason_of(one("Heal", target)) == RejectReason.BAD_HEAL_TARGET


def test_too_many_steps() -> None:
    plan = Plan(tuple(Step("Scan") for _ in range(DEFAULT_REGISTRY.max_steps + 1)))
    assert reason_of(plan) == RejectReason.TOO_MANY_STEPS
    ok = Plan(tuple(Step("Scan") for _ in range(DEFAULT_REGISTRY.max_steps)))
    assert validate_plan(ok, snap()) is ok


def test_empty_plan() -> None:
    assert reason_of(Plan(())) == RejectReason.EMPTY_PLAN


def test_not_a_plan() -> None:
    assert reason_of([Step("Scan")]) == RejectReason.BAD_PLAN  # type: ignore[arg-type]
    assert reason_of(Plan(("Scan",))) == RejectReason.BAD_PLAN  # type: ignore[arg-type]


def test_first_bad_step_wins_and_detail_names_it() -> None:
    plan = Plan((Step("Scan"), Step("MoveTo", (4, 4)), Step("Fly")))
    with pytest.raises(PlanRejected) as info:
        validate_plan(plan, snap())
    assert info.value.reason == "blocked_cell"
    assert info.value.detail.startswith("step 1:")


def test_registry_decides_what_exists() -> None:
    tiny = ActionRegistry([ActionSpec("Scan", "S", (), "look")], max_steps=1)
    assert reason_of(one("Reload"), tiny) == RejectReason.UNKNOWN_ACTION
    assert reason_of(Plan((Step("Scan"), Step("Scan"))), tiny) == RejectReason.TOO_MANY_STEPS


def test_validate_step_alone() -> None:
    validate_step(Step("Attack", (20,)), snap())
    with pytest.raises(PlanRejected) as info:
        validate_step(Step("Attack", (21,)), snap())
    assert info.value.reason == "bad_target"


def test_huge_model_strings_are_bounded_in_the_message() -> None:
    with pytest.raises(PlanRejected) as info:
        validate_plan(one("X" * 100_000), snap())
    assert len(str(info.value)) < 200


def test_every_reason_is_a_str() -> None:
    for reason in RejectReason:
        assert isinstance(reason, str)
        assert str(reason) == reason.value


PLACE_REGISTRY = ActionRegistry(
    [
        ActionSpec("Go", "G", (ArgSpec("to", ArgKind.PLACE),), "go"),
        ActionSpec("Hide", "H", (ArgSpec("at", ArgKind.COVER),), "hide"),
    ]
)


@pytest.mark.parametrize(
    ("plan", "reason"),
    [
        (one("Go", pack_cell(9, 7)), None),
        (one("Hide", pack_cell(2, 2)), None),
        (one("Go", pack_cell(10, 0)), RejectReason.OUT_OF_BOUNDS),  # x past the 10-wide map
        (one("Go", pack_cell(0, 8)), RejectReason.OUT_OF_BOUNDS),
        (one("Go", -1), RejectReason.OUT_OF_BOUNDS),
        (one("Go", pack_cell(4, 4)), RejectReason.BLOCKED),
        (one("Hide", pack_cell(4, 4)), RejectReason.BLOCKED),
        (one("Hide", pack_cell(3, 3)), RejectReason.NOT_COVER),
    ],
)
def test_place_and_cover_arguments(plan: Plan, reason: RejectReason | None) -> None:
    if reason is None:
        assert validate_plan(plan, snap(), PLACE_REGISTRY) is plan
    else:
        assert reason_of(plan, PLACE_REGISTRY) == reason.value
