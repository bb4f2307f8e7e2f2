"""PlannerConfig: every knob of the plugin, as one frozen dataclass with good defaults.

Live tuning (batch size, max wait, strategy, cache on/off) goes through ``PlannerPlugin.tune``,
which swaps in a new validated config; the next batch uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.components import ROLES
from aiplanner.errors import ConfigError

__all__ = ["MODES", "PROMPT_TIERS", "STRATEGIES", "PlannerConfig"]

STRATEGIES: tuple[str, ...] = ("sequential", "packed", "concurrent", "auto")
MODES: tuple[str, ...] = ("guided", "free")
PROMPT_TIERS: tuple[str, ...] = ("compressed", "full")


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    """Configuration of :class:`~aiplanner.plugin.PlannerPlugin`.

    Raises :class:`ConfigError` from ``__post_init__`` for any out-of-range value.

    * ``max_batch_size`` / ``max_wait_ms``: a batch is sent when it is full or its oldest agent
      has waited this long (plugin clock).
    * ``strategy``: how a batch meets the backend (see :mod:`aiplanner.strategies`).
    * ``mode``: ``guided`` (the model picks among rule-ranked candidates by index) or ``free``
      (the model writes a compact plan under a schema).
    * ``prompt_tier``: the first LLM tier's prompt; the simplified retry always uses ``compressed``
      in guided mode.
    * ``plan_deadline_s``: an agent that has no plan this long after asking gets the fallback.
    * ``max_plans_per_tick``: time-slicing; at most this many agents get a plan applied or ask
      for one per tick, the others on later ticks (None: no limit). Bounds the cost of a tick
      where many agents finish their plans at once.
    * ``provisional``: while an agent waits for its plan it carries out the heuristic plan, so
      nobody stands still; the model's plan replaces it when it arrives.
    * ``lockstep``: deterministic delivery for tests and replays: every tick waits (up to
      ``lockstep_timeout_s``) until all submitted work has answered, and applies answers by their
      ``ready_at``. Never use it for live play: it makes the frame wait on the backend.
    """

    max_batch_size: int = 8
    max_wait_ms: float = 30.0
    strategy: str = "auto"
    mode: Literal["guided", "free"] = "guided"
    prompt_tier: Literal["compressed", "full"] = "compressed"
    plan_deadline_s: float = 4.0
    provisional: bool = True
    max_plans_per_tick: int | None = None
    max_candidates: int = 4
    simplified_retry: bool = True
    cache_enabled: bool = True
    cache_size: int = 2048
    cache_cell: int = 2
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    max_in_flight: int = 256
    max_response_bytes: int = 65_536
    temperature: float = 0.0
    seed: int = 0
    delete_dead: bool = True
    lockstep: bool = False
    lockstep_timeout_s: float = 10.0
    roles: tuple[str, ...] = ROLES
    registry: ActionRegistry = field(default=DEFAULT_REGISTRY)
    components: ComponentMap = field(default=DEFAULT_COMPONENTS)

    def check_role(self, entity: int, role: str) -> None:
        """Raise :class:`ConfigError` if ``role`` (of ``entity``) is not one of ``roles``."""
        if role not in self.roles:
            raise ConfigError(f"entity {entity} has unknown role {role!r}; known: {self.roles}")

    def __post_init__(self) -> None:
        if self.max_batch_size <= 0:
            raise ConfigError(f"max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_batch_size > 256:
            raise ConfigError(f"max_batch_size is at most 256, got {self.max_batch_size}")
        if self.max_plans_per_tick is not None and self.max_plans_per_tick <= 0:
            raise ConfigError(f"max_plans_per_tick must be positive, got {self.max_plans_per_tick}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {MODES}")
        if self.prompt_tier not in PROMPT_TIERS:
            raise ConfigError(f"unknown prompt tier {self.prompt_tier!r}; choose {PROMPT_TIERS}")
        if self.plan_deadline_s <= 0:
            raise ConfigError(f"plan_deadline_s must be positive, got {self.plan_deadline_s}")
        if not 1 <= self.max_candidates <= 9:
            raise ConfigError(f"max_candidates must be 1..9, got {self.max_candidates}")
        for name in ("cache_size", "cache_cell", "breaker_failures", "max_in_flight"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.breaker_cooldown_s < 0:
            raise ConfigError("breaker_cooldown_s must be >= 0")
        if self.max_response_bytes < 256:
            raise ConfigError("max_response_bytes must be at least 256")
        if not self.roles:
            raise ConfigError("roles must not be empty")
        unknown = [r for r in self.roles if not r.isidentifier()]
        if unknown:
            raise ConfigError(f"role names must be identifiers: {unknown}")
