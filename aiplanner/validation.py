"""The plan validator: every plan, whoever wrote it, is checked here before an agent runs it.

Checks are derived from the action registry (each argument's :class:`ArgKind` says how it is
checked) and the agent's snapshot (what it can see). A plan is all or nothing: the first bad
step rejects it with a :class:`~aiplanner.errors.PlanRejected` whose ``reason`` is one of
:class:`RejectReason` 's values, so metrics can count rejections by kind.

Model output is untrusted: argument values are checked to be real ints (``bool`` is refused even
though it subclasses ``int``) before they are compared with anything.
"""

from __future__ import annotations

import enum
from typing import Final, Protocol

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind, Plan, Step
from aiplanner.components import Battlefield
from aiplanner.errors import PlanRejected
from aiplanner.places import unpack_cell
from aiplanner.snapshot import SeenUnit

__all__ = ["PlanView", "RejectReason", "validate_plan", "validate_step"]


class PlanView(Protocol):
    """What a plan is checked against: the map, the agent's id, and the living units it sees.

    A :class:`~aiplanner.snapshot.WorldSnapshot` is one; so is
    :meth:`aiplanner.snapshot_system.SnapshotSystem.sight`, which looks for the units only
    when a step names one (checking an arrived plan needs no cover, obstacles or self view).
    """

    @property
    def field(self) -> Battlefield: ...

    @property
    def me_id(self) -> int: ...

    def enemy(self, entity: int, /) -> SeenUnit | None: ...

    def ally(self, entity: int, /) -> SeenUnit | None: ...


class RejectReason(enum.StrEnum):
    """Why a plan was rejected; the value is ``PlanRejected.reason``.

    A ``str`` enum (``StrEnum``: ``str(member)`` is the value), so members compare equal to
    the reason strings carried by :class:`PlanRejected`.
    """

    UNKNOWN_ACTION = "unknown_action"
    BAD_ARGUMENTS = "bad_arguments"  # wrong count, or an argument that is not an int (or is a bool)
    OUT_OF_RANGE = "out_of_range"  # a COUNT argument outside its lo..hi
    OUT_OF_BOUNDS = "out_of_bounds"  # a cell outside the map (or its declared lo..hi)
    BLOCKED = "blocked_cell"
    NOT_COVER = "not_cover"  # a COVER argument naming a cell that is not a cover point
    BAD_TARGET = "bad_target"  # Attack target not a visible living enemy
    BAD_HEAL_TARGET = "bad_heal_target"  # not a visible living ally, nor the agent itself
    TOO_MANY_STEPS = "too_many_steps"
    EMPTY_PLAN = "empty_plan"
    BAD_PLAN = "bad_plan"  # not a Plan of Steps at all


# The kinds as plain names: an Enum member looked up on its class costs ~0.1 us in 3.11, and every
# candidate plan of the rules is validated here, several comparisons per argument.
_COUNT: Final = ArgKind.COUNT
_X: Final = ArgKind.X
_Y: Final = ArgKind.Y
_PLACE: Final = ArgKind.PLACE
_COVER: Final = ArgKind.COVER
_ENEMY: Final = ArgKind.ENEMY
_ALLY: Final = ArgKind.ALLY


def _reject(reason: RejectReason, detail: str) -> PlanRejected:
    return PlanRejected(reason.value, detail)


def validate_step(
    step: Step, snapshot: PlanView, registry: ActionRegistry = DEFAULT_REGISTRY
) -> None:
    """Check one step against the registry and what the agent can see.

    Raises :class:`PlanRejected` (reason from :class:`RejectReason`) on the first problem.
    """
    if not isinstance(step, Step):
        raise _reject(RejectReason.BAD_PLAN, f"not a step: {type(step).__name__}")
    name = step.action
    spec = registry.get(name) if isinstance(name, str) else None
    if spec is None:
        raise _reject(RejectReason.UNKNOWN_ACTION, f"unknown action {str(name)[:40]!r}")
    args = step.args
    spec_args = spec.args
    if not isinstance(args, tuple) or len(args) != len(spec_args):
        count = len(args) if isinstance(args, tuple) else "?"
        raise _reject(
            RejectReason.BAD_ARGUMENTS, f"{name} takes {len(spec_args)} arguments, got {count}"
        )
    for value, arg in zip(args, spec_args, strict=True):
        # ``type(...) is int``: the common case decided without two isinstance calls.
        if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
            raise _reject(
                RejectReason.BAD_ARGUMENTS, f"{name}.{arg.name} must be an int, got {value!r:.40}"
            )
    field = snapshot.field
    x: int | None = None
    y: int | None = None
    for value, arg in zip(args, spec_args, strict=True):
        kind = arg.kind
        if kind is _COUNT:
            if not arg.lo <= value <= arg.hi:
                raise _reject(
                    RejectReason.OUT_OF_RANGE,
                    f"{name}.{arg.name}={value} outside {arg.lo}..{arg.hi}",
                )
        elif kind is _X or kind is _Y:
            size = field.width if kind is _X else field.height
            if not (arg.lo <= value <= arg.hi and 0 <= value < size):
                raise _reject(
                    RejectReason.OUT_OF_BOUNDS,
                    f"{name}.{arg.name}={value} outside the map (0..{size - 1})",
                )
            if kind is _X:
                x = value
            else:
                y = value
        elif kind is _PLACE or kind is _COVER:
            _check_place(name, arg.name, value, snapshot, cover=kind is _COVER)
        elif kind is _ENEMY:
            enemy = snapshot.enemy(value)
            if enemy is None or enemy.hp <= 0:
                raise _reject(
                    RejectReason.BAD_TARGET, f"{name}.{arg.name}={value} is not a visible enemy"
                )
        elif kind is _ALLY and value != snapshot.me_id:
            ally = snapshot.ally(value)
            if ally is None or ally.hp <= 0:
                raise _reject(
                    RejectReason.BAD_HEAL_TARGET, f"{name}.{arg.name}={value} is not a visible ally"
                )
    if x is not None and y is not None and (x, y) in field.blocked:
        raise _reject(RejectReason.BLOCKED, f"{name} to ({x}, {y}): the cell is blocked")


def _check_place(name: str, arg: str, value: int, snapshot: PlanView, *, cover: bool) -> None:
    field = snapshot.field
    x, y = unpack_cell(value)
    if value < 0 or not field.in_bounds(x, y):
        raise _reject(RejectReason.OUT_OF_BOUNDS, f"{name}.{arg}={value} is not a cell of the map")
    if (x, y) in field.blocked:
        raise _reject(RejectReason.BLOCKED, f"{name} to ({x}, {y}): the cell is blocked")
    if cover and (x, y) not in field.cover:
        raise _reject(RejectReason.NOT_COVER, f"{name} to ({x}, {y}): not a cover point")


def validate_plan(
    plan: Plan, snapshot: PlanView, registry: ActionRegistry = DEFAULT_REGISTRY
) -> Plan:
    """Return ``plan`` unchanged if every step is legal for this snapshot.

    Raises :class:`PlanRejected` (reason from :class:`RejectReason`): ``empty_plan``,
    ``too_many_steps`` (more than ``registry.max_steps``), or the first bad step's reason.
    """
    if not isinstance(plan, Plan) or not isinstance(plan.steps, tuple):
        raise _reject(RejectReason.BAD_PLAN, f"not a plan: {type(plan).__name__}")
    if not plan.steps:
        raise _reject(RejectReason.EMPTY_PLAN, "the plan has no steps")
    if len(plan.steps) > registry.max_steps:
        raise _reject(
            RejectReason.TOO_MANY_STEPS,
            f"{len(plan.steps)} steps, at most {registry.max_steps} allowed",
        )
    for i, step in enumerate(plan.steps):
        try:
            validate_step(step, snapshot, registry)
        except PlanRejected as exc:
            raise PlanRejected(exc.reason, f"step {i}: {exc.detail}") from None
    return plan
