"""PlannerConfig: every knob of the plugin, as one frozen dataclass with good defaults.

Live tuning (batch size, max wait, strategy, cache on/off) goes through ``PlannerPlugin.tune``,
which swaps in a new validated config; the next batch uses it. Settings chosen by measurement
(``python -m aiplanner tune``) are kept in a TOML file: ``PlannerConfig.from_toml(path)`` reads
one, ``config.to_toml()`` writes one. The file holds top-level ``key = value`` pairs named like the
fields (every field but ``registry``); keys left out keep their defaults.
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.components import ROLES
from aiplanner.decision import DEFAULT_RANK_PRIOR
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
    * ``guided_decision``: ``score`` (default) ranks the candidates by the model's calibrated
      log-likelihood of each one's plain-words phrase plus the rules' rank prior, generating
      nothing (backends that cannot score fall back to ``generate``); ``generate`` asks the model
      for the index. ``rank_prior``: score points a candidate pays per rank step below the rules'
      first choice (0: the model alone decides; default 0.5, chosen with the shipped adapter on
      held-out game situations, :data:`aiplanner.decision.DEFAULT_RANK_PRIOR`). ``calibrated``:
      subtract each phrase's score after a content-free context (see :mod:`aiplanner.decision`).
      ``score_memo``: keep the model's scores of the phrases it scored after each situation
      (bounded, :data:`aiplanner.decision.ScoreMemo`), so an agent whose situation reads word
      for word as one scored before is decided from those scores at once, without a call
      (``stats()["remembered"]`` counts them); set at start.
    * ``cache_enabled`` / ``cache_size`` / ``cache_cell``: the plan cache, which answers an
      agent at once with a plan the model chose for a similar situation (its key:
      :func:`aiplanner.snapshot.quantised_key`, positions bucketed by ``cache_cell``), up to
      ``cache_size`` plans. It saves calls to a slow backend; with scored decisions and
      ``score_memo`` a fresh decision is cheap and exact repeats are remembered anyway, so the
      demo turns it off for the embedded model (measured: more plans from the model;
      ``benchmarks/RESULTS.md``, "The plan cache in the demo"). ``cache_enabled`` can be tuned live.
    * ``model_teams``: only agents of these teams ask the model; the others get the rules'
      plan at once (A/B battles, or a cheap side). None: every team.
    * ``plan_deadline_s``: an agent that has no plan this long after asking gets the fallback.
    * ``max_plans_per_tick``: time-slicing; at most this many agents get a plan applied or ask
      for one per tick, the others on later ticks (None: no limit). Bounds the cost of a tick
      where many agents finish their plans at once.
    * ``tick_budget_ms``: the time budget of the plugin's whole tick (snapshots, planning,
      execution), in milliseconds of the plugin clock: the planning system takes on per-agent
      work (applying arrived plans, deadline fallbacks, new requests) only while it is expected
      to end within it, leaving the rest of the tick (and planning's own last steps) its
      measured share; the rest carries on at the next tick, first come first served; the
      longest-waiting kind of work gets one agent a tick even when none fits, and agents idle
      a few ticks are served regardless (None: no budget). See :mod:`aiplanner.tick_budget`.
      Lockstep and replay runs ignore it.
    * ``provisional``: while an agent waits for its plan it carries out the heuristic plan, so
      nobody stands still (one that runs out first is followed by the heuristic plan for the
      situation then); the model's plan replaces it when it arrives (the same plan carries on
      where it is).
    * ``lockstep``: deterministic delivery for tests and replays: every tick waits (up to
      ``lockstep_timeout_s``) until all submitted work has answered, and applies answers by their
      ``ready_at``. Never use it for live play: it makes the frame wait on the backend.
    * ``registry`` / ``components``: the game's actions (with what each does) and where its state
      lives among its own components (see :mod:`aiplanner.adapter`).
    """

    max_batch_size: int = 8
    max_wait_ms: float = 30.0
    strategy: str = "auto"
    mode: Literal["guided", "free"] = "guided"
    prompt_tier: Literal["compressed", "full"] = "compressed"
    plan_deadline_s: float = 4.0
    provisional: bool = True
    max_plans_per_tick: int | None = None
    tick_budget_ms: float | None = 2.0
    max_candidates: int = 4
    guided_decision: Literal["score", "generate"] = "score"
    rank_prior: float = DEFAULT_RANK_PRIOR
    calibrated: bool = True
    score_memo: bool = True
    model_teams: tuple[int, ...] | None = None
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

    @classmethod
    def from_toml(cls, path: str | Path) -> PlannerConfig:
        """Load a configuration written by :meth:`to_toml` (or by hand).

        Raises :class:`ConfigError` naming the file, and the key where one is at fault, for an
        unreadable file, invalid TOML, an unknown key, a value of the wrong type or out of range.
        """
        try:
            with Path(path).open("rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        kinds = _toml_kinds()
        values: dict[str, Any] = {}
        for key, value in doc.items():
            kind = kinds.get(key)
            if kind is None:
                raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(kinds)}")
            values[key] = _from_toml_value(path, key, value, kind)
        try:
            return cls(**values)
        except ConfigError as exc:
            for key, value in values.items():  # find the key at fault, so the message names it
                try:
                    cls(**{key: value})
                except ConfigError as single:
                    raise ConfigError(f"{path}: {key}: {single}") from exc
            raise ConfigError(f"{path}: {exc}") from exc

    def to_toml(self, header: str = "", only: Sequence[str] | None = None) -> str:
        """This configuration as TOML text for :meth:`from_toml`; ``header`` becomes comments.

        ``only`` names the keys to write (default: all); the others keep their defaults when
        the file is read, so a later release's better defaults still apply to them.
        """
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        for name in _toml_kinds():
            if only is not None and name not in only:
                continue
            value = getattr(self, name)
            if value is None:  # TOML has no null: a missing key means the default (None)
                continue
            lines.append(f"{name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"

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
        if self.tick_budget_ms is not None and not 0 < self.tick_budget_ms < math.inf:
            raise ConfigError(f"tick_budget_ms must be positive or None, got {self.tick_budget_ms}")
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
        if self.guided_decision not in ("score", "generate"):
            raise ConfigError(
                f"unknown guided_decision {self.guided_decision!r}; choose 'score' or 'generate'"
            )
        if self.model_teams is not None and not all(isinstance(t, int) for t in self.model_teams):
            raise ConfigError(f"model_teams must be team numbers, got {self.model_teams!r}")
        if not self.rank_prior >= 0:
            raise ConfigError(f"rank_prior must be >= 0, got {self.rank_prior}")
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


def _toml_kinds() -> dict[str, tuple[type, type | None]]:
    """What a file may set: each field's value type, and the item type when that is a tuple.

    Fields of types TOML cannot hold (``registry``: code, not data) are left out.
    """
    hints = typing.get_type_hints(PlannerConfig)
    kinds: dict[str, tuple[type, type | None]] = {}
    for f in fields(PlannerConfig):
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = inner[0] if len(inner) == 1 else hint
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if hint in (int, float, bool, str):
            kinds[f.name] = (hint, None)
        elif origin is Literal and len({type(a) for a in args}) == 1:
            kinds[f.name] = (type(args[0]), None)
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, str):
            kinds[f.name] = (tuple, args[0])
    return kinds


def _is(value: object, kind: type) -> bool:
    """``isinstance`` where a bool is not an int (TOML tells them apart; so do we)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _from_toml_value(
    path: str | Path, key: str, value: object, kind: tuple[type, type | None]
) -> object:
    outer, item = kind
    if item is not None:
        if isinstance(value, list) and all(_is(v, item) for v in value):
            return tuple(value)
        raise ConfigError(f"{path}: {key}: expected a list of {item.__name__}, got {value!r}")
    if outer is float and _is(value, int):
        return float(value)  # type: ignore[arg-type]
    if _is(value, outer):
        return value
    raise ConfigError(f"{path}: {key}: expected {outer.__name__}, got {value!r}")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()  # JSON string escapes are valid TOML basic strings
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")
