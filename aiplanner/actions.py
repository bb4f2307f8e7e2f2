"""The action registry: every action declared once, data and behaviour together.

Every other view is derived from this declaration: the JSON Schemas used for constrained decoding
(:mod:`aiplanner.schema`), the action docs in prompts (:mod:`aiplanner.prompts`), the compact plan
codec (:mod:`aiplanner.codec`) and the validator (:mod:`aiplanner.validation`). What an action
does (its execution handler, its candidate proposer for the rules, its per-tick upkeep) is
declared on the same :class:`ActionSpec` (see :mod:`aiplanner.behaviour`).

``DEFAULT_REGISTRY``, the built-in verbs, is declared in :mod:`aiplanner.combat` with their
behaviour and is re-exported here (loaded on first use: its handlers need the game layer).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiplanner.errors import ConfigError

if TYPE_CHECKING:
    from aiplanner.behaviour import ActionHandler, CandidateProposer, Upkeep

__all__ = [
    "DEFAULT_REGISTRY",
    "ActionRegistry",
    "ActionSpec",
    "ArgKind",
    "ArgSpec",
    "Plan",
    "Step",
]


class ArgKind(enum.Enum):
    """What an integer argument means, which decides how it is checked against a snapshot."""

    X = "x"  # a map column: 0 <= x < width, and the cell must be walkable
    Y = "y"  # a map row
    ENEMY = "enemy"  # id of a visible, living enemy
    ALLY = "ally"  # id of a visible, living ally (or the agent itself)
    COUNT = "count"  # a plain bounded integer (ticks to wait...)
    # A cell as one argument, ``y * PLACE_STRIDE + x`` (aiplanner.places.pack_cell; lo/hi do
    # not apply): on the map and walkable. Free-mode plans name it by its index in the prompt's
    # list of named places, as they name an X,Y pair.
    PLACE = "place"
    COVER = "cover"  # a PLACE that must also be one of the map's cover points


@dataclass(frozen=True, slots=True)
class ArgSpec:
    name: str
    kind: ArgKind
    lo: int = 0
    hi: int = 10_000


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action: its name, a one-letter code for compact plans, its arguments and a short doc.

    ``phrase`` says the action in plain words, in the first person, for scored decisions
    (:mod:`aiplanner.phrasing`): ``{name}`` slots take the argument of that name, and ``{place}``
    where the X/Y pair leads, described against the snapshot ("to cover", "to the goal",
    "closer to enemy 1"...). Empty: the doc is used.

    ``handler``, ``propose`` and ``upkeep`` are the action's behaviour (see
    :mod:`aiplanner.behaviour`). They are left out of ``repr`` and comparisons, so
    :attr:`ActionRegistry.version` depends on the declaration alone and is the same in every
    process.
    """

    name: str
    code: str
    args: tuple[ArgSpec, ...]
    doc: str
    phrase: str = ""
    handler: ActionHandler | None = field(default=None, repr=False, compare=False, kw_only=True)
    propose: CandidateProposer | None = field(default=None, repr=False, compare=False, kw_only=True)
    upkeep: Upkeep | None = field(default=None, repr=False, compare=False, kw_only=True)

    def arg_index(self, name: str) -> int:
        for i, a in enumerate(self.args):
            if a.name == name:
                return i
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a plan: an action name and its integer arguments, in declaration order."""

    action: str
    args: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]

    def __len__(self) -> int:
        return len(self.steps)


class ActionRegistry:
    """An immutable set of actions, looked up by name or compact code.

    Raises :class:`ConfigError` for duplicate names or codes, or a bad declaration.
    """

    __slots__ = ("_by_code", "_by_name", "max_steps", "version")

    def __init__(self, actions: Iterable[ActionSpec], *, max_steps: int = 4) -> None:
        by_name: dict[str, ActionSpec] = {}
        by_code: dict[str, ActionSpec] = {}
        for spec in actions:
            if not spec.name.isidentifier():
                raise ConfigError(f"action name {spec.name!r} is not an identifier")
            if len(spec.code) != 1 or not spec.code.isalpha():
                raise ConfigError(f"action {spec.name}: code {spec.code!r} must be one letter")
            if spec.name in by_name:
                raise ConfigError(f"duplicate action name {spec.name!r}")
            if spec.code in by_code:
                raise ConfigError(f"duplicate action code {spec.code!r} ({spec.name})")
            for a in spec.args:
                if a.lo > a.hi:
                    raise ConfigError(f"action {spec.name}: argument {a.name} has lo > hi")
            by_name[spec.name] = spec
            by_code[spec.code] = spec
        if not by_name:
            raise ConfigError("an action registry needs at least one action")
        if max_steps <= 0:
            raise ConfigError(f"max_steps must be positive, got {max_steps}")
        self._by_name: Mapping[str, ActionSpec] = by_name
        self._by_code: Mapping[str, ActionSpec] = by_code
        self.max_steps = max_steps
        digest = hashlib.sha256(repr((sorted(by_name.items()), max_steps)).encode()).hexdigest()
        self.version: str = digest[:12]

    @property
    def actions(self) -> tuple[ActionSpec, ...]:
        return tuple(self._by_name.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> ActionSpec | None:
        return self._by_name.get(name)

    def by_code(self, code: str) -> ActionSpec | None:
        return self._by_code.get(code)

    def spec(self, name: str) -> ActionSpec:
        """Return the spec of ``name``; raise :class:`ConfigError` if it is unknown."""
        spec = self._by_name.get(name)
        if spec is None:
            raise ConfigError(f"unknown action {name!r}; known: {', '.join(self._by_name)}")
        return spec

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def targets(self, plans: Iterable[Plan]) -> frozenset[int]:
        """The entity ids the steps of ``plans`` target: their enemy and ally arguments.

        Raises :class:`ConfigError` for an action the registry lacks.
        """
        out: set[int] = set()
        for plan in plans:
            for step in plan.steps:
                spec = self.spec(step.action)
                for arg, value in zip(spec.args, step.args, strict=False):
                    if arg.kind in (ArgKind.ENEMY, ArgKind.ALLY):
                        out.add(value)
        return frozenset(out)

    def require_handlers(self) -> None:
        """Raise :class:`ConfigError` naming every action that has no execution handler."""
        missing = [spec.name for spec in self._by_name.values() if spec.handler is None]
        if missing:
            raise ConfigError(
                f"action(s) {', '.join(missing)} have no handler: declare what each does with "
                "ActionSpec(..., handler=...)"
            )

    def __repr__(self) -> str:
        return f"ActionRegistry({', '.join(self._by_name)}; v{self.version})"


if TYPE_CHECKING:
    DEFAULT_REGISTRY: ActionRegistry


def __getattr__(name: str) -> object:
    # DEFAULT_REGISTRY carries the built-in handlers, which need esper and the components: it is
    # declared in aiplanner.combat and loaded on first use, so that this module stays plain data.
    if name == "DEFAULT_REGISTRY":
        from aiplanner.combat import DEFAULT_REGISTRY

        return DEFAULT_REGISTRY
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
