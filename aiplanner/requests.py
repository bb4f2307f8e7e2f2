"""What crosses the thread boundary between the game and the async bridge: per-agent requests
(:class:`PlanRequest`) going out and per-agent outcomes (:class:`PlanOutcome`) coming back.

Both are frozen: the game thread and the event loop never share mutable state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiplanner.actions import Plan
from aiplanner.backends.base import Usage
from aiplanner.components import Tier
from aiplanner.errors import PlannerError
from aiplanner.snapshot import WorldSnapshot

__all__ = ["PlanOutcome", "PlanRequest"]


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """One agent's need for a plan.

    ``candidates`` are rule-ranked legal plans, best first (guided mode picks one by index).
    ``requested_at``/``deadline`` are on the plugin clock; ``budget_s`` is the wall-clock time the
    async side may spend (the deadline minus now, at submission).
    """

    entity: int
    plan_id: int
    snapshot: WorldSnapshot
    candidates: tuple[Plan, ...]
    requested_tick: int
    requested_at: float
    deadline: float
    budget_s: float

    @property
    def role(self) -> str:
        return self.snapshot.me.role


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """The answer for one agent: a validated plan and the tier that produced it, or an error.

    ``raw`` is (a bounded prefix of) the model text behind it. ``usage`` holds this agent's share of
    the call (a packed call's tokens are split evenly). ``ready_at`` is set by virtual-time doubles.
    ``alternatives`` are the decision's other candidates, the model's preference first: when
    ``plan`` no longer fits the world by the time it is applied (its target died, say), the first
    of them that still does is applied instead, still the model's choice among what is left.
    """

    entity: int
    plan_id: int
    plan: Plan | None
    tier: Tier | None
    error: PlannerError | None = None
    raw: str = ""
    usage: Usage = field(default_factory=Usage)
    ready_at: float | None = None
    strategy: str = ""
    alternatives: tuple[Plan, ...] = ()

    @property
    def ok(self) -> bool:
        return self.plan is not None
