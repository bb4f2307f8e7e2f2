"""ECS components: plain data, nothing else.

State that changes every frame is a mutable slotted dataclass changed in place (replacing a
component dirties esper's query cache). Things that cross threads live elsewhere and are frozen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aiplanner.actions import Step

__all__ = [
    "ROLES",
    "ActionQueue",
    "Agent",
    "Ammo",
    "Battlefield",
    "Health",
    "Perception",
    "PlanState",
    "PlanStatus",
    "Position",
    "Team",
    "Tier",
    "Weapon",
]

ROLES: tuple[str, ...] = ("tactical", "stealth", "support", "exploration")


@dataclass(slots=True)
class Position:
    """World position in map cells (floats: agents move continuously between cells)."""

    x: float
    y: float


@dataclass(slots=True)
class Health:
    hp: int
    max_hp: int = 100


@dataclass(slots=True)
class Ammo:
    """Rounds in the magazine, and the magazine size a Reload restores."""

    rounds: int
    capacity: int = 6


@dataclass(slots=True)
class Team:
    team: int
    squad: int = 0


@dataclass(slots=True)
class Agent:
    """Marks an entity as a planning NPC. ``speed`` is in cells per second."""

    role: str = "tactical"
    speed: float = 3.0


@dataclass(slots=True)
class Perception:
    """Radius (cells) within which the agent sees enemies, allies, cover and obstacles."""

    radius: float = 8.0


@dataclass(slots=True)
class Weapon:
    range: float = 6.0
    damage: int = 20
    cooldown: float = 0.5
    cooldown_left: float = 0.0
    reload_time: float = 1.0
    heal_amount: int = 25


@dataclass(frozen=True, slots=True)
class Battlefield:
    """The map, on one entity of its own: size, blocked cells, cover points, objective.

    Frozen and shared: snapshots keep a reference to it for bounds and obstacle checks.
    """

    width: int
    height: int
    blocked: frozenset[tuple[int, int]] = frozenset()
    cover: tuple[tuple[int, int], ...] = ()
    objective: tuple[int, int] | None = None

    def in_bounds(self, x: int, y: int) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def walkable(self, x: int, y: int) -> bool:
        return self.in_bounds(x, y) and (x, y) not in self.blocked


class PlanStatus(enum.Enum):
    IDLE = "idle"  # needs a plan
    REQUESTED = "requested"  # waiting to be batched
    IN_FLIGHT = "in_flight"  # submitted to the backend
    EXECUTING = "executing"  # carrying out its ActionQueue


class Tier(enum.Enum):
    """Which tier produced a plan, best first."""

    LLM = "llm"
    LLM_SIMPLE = "llm_simple"
    CACHE = "cache"
    HEURISTIC = "heuristic"
    EMERGENCY = "emergency"


@dataclass(slots=True)
class ActionQueue:
    """Pending steps of the current plan and the progress of the current step."""

    steps: list[Step] = field(default_factory=list)
    index: int = 0
    progress: float = 0.0
    plan_id: int = 0
    path: list[tuple[int, int]] = field(default_factory=list)

    @property
    def current(self) -> Step | None:
        return self.steps[self.index] if self.index < len(self.steps) else None

    @property
    def done(self) -> bool:
        return self.index >= len(self.steps)

    def replace(self, steps: list[Step], plan_id: int) -> None:
        """Start a new plan in place."""
        self.steps = steps
        self.index = 0
        self.progress = 0.0
        self.plan_id = plan_id
        self.path = []

    def advance(self) -> None:
        self.index += 1
        self.progress = 0.0
        self.path = []


@dataclass(slots=True)
class PlanState:
    """Where the agent stands in the planning cycle.

    ``deadline`` is on the plugin's clock (seconds); ``invalid_reason`` says why a running plan was
    dropped (e.g. its target died), for the HUD and metrics.
    """

    status: PlanStatus = PlanStatus.IDLE
    plan_id: int = 0
    tier: Tier | None = None
    requested_tick: int = -1
    requested_at: float = 0.0
    deadline: float = 0.0
    failures: int = 0
    invalid_reason: str = ""
