"""What an action does: the typed shapes of the behaviour an :class:`ActionSpec` declares.

An action is declared once, in its :class:`~aiplanner.actions.ActionSpec`, data and behaviour
together:

* ``handler`` (:class:`ActionHandler`): carries out one step for one agent for one tick, as game
  data; :class:`~aiplanner.execution_system.ActionExecutionSystem` calls it. Every action a
  planner may produce needs one: installing a registry with an action without one is refused.
* ``propose`` (:class:`CandidateProposer`, optional): the rules' candidate plans that start with
  this action, each with a rank; :class:`~aiplanner.heuristic.HeuristicPlanner` merges every
  action's proposals by rank.
* ``upkeep`` (:class:`Upkeep`, optional): game state the action relies on that changes every
  tick whoever acts (weapon cooldowns), run once per tick before any step.

The built-in verbs are declared this way in :mod:`aiplanner.combat`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from aiplanner.actions import ArgKind, Plan, Step
from aiplanner.components import ActionQueue
from aiplanner.errors import PlannerError
from aiplanner.pathfinding import find_path
from aiplanner.spatial import to_cell

if TYPE_CHECKING:
    from aiplanner.actions import ActionRegistry, ActionSpec
    from aiplanner.adapter import ComponentMap
    from aiplanner.components import Battlefield
    from aiplanner.snapshot import WorldSnapshot

__all__ = [
    "ActionHandler",
    "CandidateProposer",
    "Proposal",
    "ProposalContext",
    "StepContext",
    "StepDeferred",
    "StepFailed",
    "Upkeep",
]

_T = TypeVar("_T")

# The kinds as plain names (an Enum member looked up on its class costs ~0.1 us in 3.11):
# ProposalContext.step runs for every step of every candidate plan of the rules.
_X: Final = ArgKind.X
_Y: Final = ArgKind.Y
_COUNT: Final = ArgKind.COUNT
_ENEMY: Final = ArgKind.ENEMY
_ALLY: Final = ArgKind.ALLY

_PATHS_KEPT: Final = 1024
"""Paths a :class:`StepContext` keeps for reuse before it starts over."""
_Path = tuple[int, ...]  # a path's cells, flat: x0, y0, x1, y1, ...

Proposal = tuple[int, Plan | None]
"""A candidate plan and its rank (lower is better); None stands for a plan that does not apply."""


class StepFailed(PlannerError):
    """Raised by a handler: the step cannot be carried out. ``reason`` (a short snake_case word,
    e.g. ``unreachable``) becomes ``PlanState.invalid_reason`` and the agent needs a new plan.
    The execution system catches it: it never reaches the game loop."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StepDeferred(PlannerError):
    """Raised by :meth:`StepContext.path` when this tick's paths are used up (see
    ``ActionExecutionSystem(max_paths_per_tick=...)``): the agent waits, its step unchanged,
    and the handler runs again next tick. A handler asks for its path before it changes
    anything. The execution system catches it: it never reaches the game loop."""


class StepContext:
    """What a handler sees of the agent it runs a step for, and of the world.

    One object per execution system, refilled for each agent (handlers must not keep it).
    ``agent`` and ``position`` are that agent's components of the types the
    :class:`~aiplanner.adapter.ComponentMap` declares; ``queue.progress`` and ``queue.path`` are
    the handler's to use while the step lasts (both are reset when the step ends).
    ``paths_left`` is how many more paths this tick may find (the execution system sets it).

    Paths found are kept (up to 1024, for the map they were found on): agents
    often walk from the same cell to the same goal (cover, the objective, a standing target),
    and a search costs up to a millisecond. A kept path still counts against ``paths_left``, so
    who walks and who waits on each tick is as without it.
    """

    __slots__ = (
        "_paths",
        "_paths_field",
        "agent",
        "components",
        "dt",
        "entity",
        "field",
        "max_path_nodes",
        "paths_left",
        "position",
        "queue",
    )

    def __init__(self, components: ComponentMap, max_path_nodes: int) -> None:
        self.components = components
        self.max_path_nodes = max_path_nodes
        self.field: Battlefield | None = None  # the map of this tick
        self.entity = 0
        self.agent: Any = None
        self.position: Any = None
        self.queue = ActionQueue()  # the running agent's, once a step runs
        self.dt = 0.0
        self.paths_left = sys.maxsize
        # (start cell, goal, node budget) -> the path found (None: unreachable), for one map.
        self._paths: dict[tuple[tuple[int, int], tuple[int, int], int], _Path | None] = {}
        self._paths_field: Battlefield | None = None

    def path(self, start: tuple[float, float], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """A* cells from ``start`` (a position) to ``goal``, start excluded.

        Raises :class:`StepFailed` (``no_map`` or ``unreachable``), or :class:`StepDeferred`
        when this tick's paths are used up.
        """
        if self.field is None:
            raise StepFailed("no_map")
        if self.paths_left <= 0:
            raise StepDeferred("no paths left this tick")
        self.paths_left -= 1
        field = self.field
        paths = self._paths
        if field is not self._paths_field:
            paths.clear()  # another map: its paths are not these
            self._paths_field = field
        key = (to_cell(*start), goal, self.max_path_nodes)
        kept: _Path | None
        if key in paths:
            kept = paths[key]
        else:
            found = find_path(field, key[0], goal, self.max_path_nodes)
            # Kept flat (x0, y0, x1, y1, ...): one object that outlives the walk rather than a
            # tuple per cell, which would fill the collector's youngest generation (measured:
            # gen0 collections inside ticks 23 -> 41 in 900 ticks with a tuple per cell).
            kept = None if found is None else tuple([c for cell in found for c in cell])
            if len(paths) >= _PATHS_KEPT:
                paths.clear()
            paths[key] = kept
        if kept is None:
            raise StepFailed("unreachable")
        # A new list of new cells: the handler's own, consumed as it walks.
        return list(zip(kept[::2], kept[1::2], strict=True))

    def living(self, entity: int) -> tuple[float, float] | None:
        """The position of ``entity`` if it exists, has the mapped health and position, and is
        alive; else None."""
        return self.components.living_position(entity)


class ActionHandler(Protocol):
    """Runs one step for ``ctx.entity`` for ``ctx.dt`` seconds; True when the step is done.

    ``args`` are the step's integer arguments, in declaration order (their count is checked).
    Raises :class:`StepFailed` when the step cannot be carried out.
    """

    def __call__(self, ctx: StepContext, args: tuple[int, ...], /) -> bool: ...


class Upkeep(Protocol):
    """Once per tick, before any step: advance state that changes whoever acts."""

    def __call__(self, dt: float, /) -> None: ...


class ProposalContext:
    """What a proposer sees: the snapshot, the registry in force, and helpers to build legal-looking
    steps from it. Derived values shared by several proposers are computed once with
    :meth:`shared`. ``emergency`` is True when the planner asks for an emergency plan: a proposer
    then offers only cheap, safe plans (or none)."""

    __slots__ = ("_shared", "emergency", "registry", "snapshot")

    def __init__(
        self, snapshot: WorldSnapshot, registry: ActionRegistry, *, emergency: bool = False
    ) -> None:
        self.snapshot = snapshot
        self.registry = registry
        self.emergency = emergency
        self._shared: dict[object, object] = {}

    def shared(self, derive: Callable[[WorldSnapshot], _T]) -> _T:
        """``derive(snapshot)``, computed once per context whoever asks."""
        try:
            return self._shared[derive]  # type: ignore[return-value]
        except KeyError:
            value = self._shared[derive] = derive(self.snapshot)
            return value

    def step(
        self,
        action: ActionSpec,
        *,
        cell: tuple[int, int] | None = None,
        target: int | None = None,
        count: int | None = None,
    ) -> Step | None:
        """A step of ``action`` with its arguments filled by kind (X/Y from ``cell``, ENEMY/ALLY
        from ``target``, COUNT from ``count`` clamped to its range), or None if the registry in
        force lacks that action, a needed value is missing, or an argument is of another kind."""
        spec = self.registry.get(action.name)
        if spec is None:
            return None
        args: list[int] = []
        for a in spec.args:
            value: int | None
            kind = a.kind
            if kind is _X:
                value = None if cell is None else cell[0]
            elif kind is _Y:
                value = None if cell is None else cell[1]
            elif kind is _COUNT:
                value = None if count is None else min(max(count, a.lo), a.hi)
            elif kind is _ENEMY or kind is _ALLY:
                value = target
            else:
                value = None  # a kind this helper cannot fill
            if value is None:
                return None
            args.append(value)
        return Step(spec.name, tuple(args))

    @staticmethod
    def plan(*steps: Step | None) -> Plan | None:
        """The plan of the steps that exist; None if the first does not. A missing follow-up is
        dropped, but never promoted: Attack without its TakeCover is a different plan."""
        if not steps or steps[0] is None:
            return None
        return Plan(tuple(s for s in steps if s is not None))


class CandidateProposer(Protocol):
    """Candidate plans starting with this action, in increasing rank; may repeat or be illegal
    (the planner drops duplicates and validates each)."""

    def __call__(self, ctx: ProposalContext, /) -> Iterable[Proposal]: ...
