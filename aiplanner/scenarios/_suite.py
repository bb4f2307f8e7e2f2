"""Scenarios: a snapshot, the first actions that make sense in it, and why; loaded from JSON.

A scenario file is one JSON object::

    {"scenarios": [{"name": "tactical-empty-mag-enemy-close",
                    "why": "No bullets and an enemy 3 steps away: reload or get to cover.",
                    "snapshot": {...WorldSnapshot.to_dict() shape...},
                    "accept": [{"action": "Reload"}, {"action": "TakeCover"}]}]}

The snapshot carries the whole map the scenario needs: ``obstacles`` are its walls, ``cover`` its
free cover points, ``objective`` its goal and ``map`` its size (:meth:`WorldSnapshot.from_dict`
builds the :class:`Battlefield` from them). Each ``accept`` entry names an acceptable first
action; where the argument matters it says which: ``targets`` (ids an enemy- or ally-targeting
argument may take), ``toward`` / ``away_from`` (a point the step's cell, an X/Y pair or a
PLACE/COVER argument, must end closer to / farther from than the agent stands now).

Everything is checked on load (:func:`parse_scenarios`): a mistake raises :class:`ConfigError`
naming the file and the scenario, never a wrong figure later.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, Plan, Step
from aiplanner.components import ROLES
from aiplanner.errors import ConfigError
from aiplanner.places import unpack_cell
from aiplanner.snapshot import WorldSnapshot

__all__ = [
    "Acceptable",
    "Judgement",
    "Scenario",
    "load_scenarios",
    "parse_scenarios",
    "suite_files",
]

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,79}")
_MAX_FILE_BYTES: Final = 2_000_000
_DIST_TOLERANCE: Final = 0.051  # to_dict rounds distances to 0.1 cells
_SCENARIO_KEYS: Final = frozenset({"name", "why", "snapshot", "accept"})
_ACCEPT_KEYS: Final = frozenset({"action", "targets", "toward", "away_from"})
_TARGET_KINDS: Final = (ArgKind.ENEMY, ArgKind.ALLY)
_PLACE_KINDS: Final = (ArgKind.PLACE, ArgKind.COVER)


@dataclass(frozen=True, slots=True, kw_only=True)
class Acceptable:
    """One acceptable first action; ``None`` constraints mean any argument will do."""

    action: str
    targets: frozenset[int] | None = None
    toward: tuple[int, int] | None = None
    away_from: tuple[int, int] | None = None

    @property
    def constrained(self) -> bool:
        return self.targets is not None or self.toward is not None or self.away_from is not None

    def fits(self, step: Step, spec: ActionSpec, here: tuple[int, int]) -> bool:
        """Whether ``step`` (an action named :attr:`action`) meets every constraint."""
        target = _arg(step, spec, _TARGET_KINDS)
        if self.targets is not None and target not in self.targets:
            return False
        cell = _cell(step, spec)
        if self.toward is not None and (
            cell is None or math.dist(cell, self.toward) >= math.dist(here, self.toward)
        ):
            return False
        return self.away_from is None or (
            cell is not None and math.dist(cell, self.away_from) > math.dist(here, self.away_from)
        )


@dataclass(frozen=True, slots=True)
class Judgement:
    """How one plan's first step fares against a scenario.

    ``target_checked``: the acceptable entries for that action all constrain the argument, so the
    target (or place) was judged; ``target_ok`` is then whether it fits. ``sensible`` needs both.
    """

    action_ok: bool
    target_checked: bool
    target_ok: bool

    @property
    def sensible(self) -> bool:
        return self.action_ok and (self.target_ok or not self.target_checked)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One situation of the suite. ``source`` is the file it came from."""

    name: str
    why: str
    snapshot: WorldSnapshot
    accept: tuple[Acceptable, ...]
    source: str
    registry: ActionRegistry = DEFAULT_REGISTRY

    @property
    def role(self) -> str:
        return self.snapshot.me.role

    @property
    def actions(self) -> frozenset[str]:
        """The acceptable first actions' names."""
        return frozenset(a.action for a in self.accept)

    def judge(self, plan: Plan) -> Judgement:
        """Judge ``plan`` by its first step (a plan must already be valid to be judged)."""
        if not plan.steps:
            return Judgement(False, False, False)
        step = plan.steps[0]
        entries = [a for a in self.accept if a.action == step.action]
        spec = self.registry.get(step.action)
        if not entries or spec is None:
            return Judgement(False, False, False)
        if not all(a.constrained for a in entries):
            return Judgement(True, False, False)
        here = (self.snapshot.me.x, self.snapshot.me.y)
        return Judgement(True, True, any(a.fits(step, spec, here) for a in entries))

    def to_dict(self) -> dict[str, object]:
        """The JSON-ready form :func:`parse_scenarios` reads (labelled data for other tools)."""
        return {
            "name": self.name,
            "why": self.why,
            "snapshot": self.snapshot.to_dict(),
            "accept": [_acceptable_dict(a) for a in self.accept],
        }


def _acceptable_dict(a: Acceptable) -> dict[str, object]:
    out: dict[str, object] = {"action": a.action}
    if a.targets is not None:
        out["targets"] = sorted(a.targets)
    if a.toward is not None:
        out["toward"] = list(a.toward)
    if a.away_from is not None:
        out["away_from"] = list(a.away_from)
    return out


def _cell(step: Step, spec: ActionSpec) -> tuple[int, int] | None:
    """The cell a step goes to: its X/Y pair, or its PLACE/COVER argument."""
    x, y = _arg(step, spec, (ArgKind.X,)), _arg(step, spec, (ArgKind.Y,))
    if x is not None and y is not None:
        return (x, y)
    packed = _arg(step, spec, _PLACE_KINDS)
    return None if packed is None else unpack_cell(packed)


def _arg(step: Step, spec: ActionSpec, kinds: tuple[ArgKind, ...]) -> int | None:
    for value, arg in zip(step.args, spec.args, strict=False):
        if arg.kind in kinds:
            return value
    return None


def suite_files() -> tuple[Traversable, ...]:
    """The suite's JSON files shipped in this package, sorted by name."""
    folder = resources.files(__package__ or "aiplanner.scenarios")
    return tuple(
        sorted(
            (f for f in folder.iterdir() if f.is_file() and f.name.endswith(".json")),
            key=lambda f: f.name,
        )
    )


def load_scenarios(
    files: Iterable[Traversable | Path] | None = None,
    *,
    registry: ActionRegistry = DEFAULT_REGISTRY,
) -> tuple[Scenario, ...]:
    """Load and check scenario files (default: the suite shipped with aiplanner), in file order.

    Raises :class:`ConfigError` naming the file (and the scenario) for an unreadable or malformed
    file, a bad scenario, or a name used twice across the files.
    """
    out: list[Scenario] = []
    seen: dict[str, str] = {}
    for f in suite_files() if files is None else files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{f.name}: cannot read the scenario file: {exc}") from exc
        if len(raw) > _MAX_FILE_BYTES:
            raise ConfigError(f"{f.name}: larger than {_MAX_FILE_BYTES} bytes")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{f.name}: not JSON: {exc}") from exc
        for s in parse_scenarios(data, f.name, registry=registry):
            if s.name in seen:
                raise ConfigError(
                    f"{f.name}: scenario {s.name!r}: name already used in {seen[s.name]}"
                )
            seen[s.name] = f.name
            out.append(s)
    return tuple(out)


def parse_scenarios(
    data: object, source: str, *, registry: ActionRegistry = DEFAULT_REGISTRY
) -> tuple[Scenario, ...]:
    """Check one file's parsed JSON and build its scenarios.

    Raises :class:`ConfigError` (``"{source}: scenario 'name': problem"``) on the first problem.
    """
    if not isinstance(data, dict) or set(data) != {"scenarios"}:
        raise ConfigError(f'{source}: expected an object with one key, "scenarios"')
    items = data["scenarios"]
    if not isinstance(items, list) or not items:
        raise ConfigError(f'{source}: "scenarios" must be a non-empty list')
    names: set[str] = set()
    out: list[Scenario] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        label = f"{source}: scenario {name!r}" if isinstance(name, str) else f"{source}: item {i}"
        try:
            scenario = _scenario(item, source, registry)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        if scenario.name in names:
            raise ConfigError(f"{label}: name used twice in this file")
        names.add(scenario.name)
        out.append(scenario)
    return tuple(out)


def _scenario(item: object, source: str, registry: ActionRegistry) -> Scenario:
    if not isinstance(item, dict):
        raise ConfigError("a scenario must be an object")
    keys = set(item)
    if keys != _SCENARIO_KEYS:
        missing, extra = sorted(_SCENARIO_KEYS - keys), sorted(keys - _SCENARIO_KEYS)
        raise ConfigError(f"keys missing {missing}, unknown {extra}")
    name, why, snap_data, accept = item["name"], item["why"], item["snapshot"], item["accept"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError("name must be 1-80 characters of a-z, 0-9 and '-'")
    if not isinstance(why, str) or not why.strip():
        raise ConfigError("why must be a non-empty string")
    if not isinstance(snap_data, dict):
        raise ConfigError("snapshot must be an object")
    try:
        snap = WorldSnapshot.from_dict(snap_data)
    except (KeyError, TypeError, ValueError, AssertionError, IndexError) as exc:
        raise ConfigError(f"bad snapshot: {type(exc).__name__}: {exc}") from None
    _check_snapshot(snap)
    if not isinstance(accept, list) or not accept:
        raise ConfigError("accept must be a non-empty list")
    entries = tuple(_acceptable(a, snap, registry) for a in accept)
    return Scenario(
        name=name, why=why, snapshot=snap, accept=entries, source=source, registry=registry
    )


def _check_snapshot(snap: WorldSnapshot) -> None:
    me, field = snap.me, snap.field
    if me.role not in ROLES:
        raise ConfigError(f"role {me.role!r} is not one of {ROLES}")
    if not field.walkable(me.x, me.y):
        raise ConfigError(f"the agent stands on a wall or off the map at {me.x},{me.y}")
    if me.in_cover != ((me.x, me.y) in field.cover):
        raise ConfigError("me.in_cover must say whether the agent stands on a cover point")
    if not 0 < me.hp <= me.max_hp or not 0 <= me.ammo <= me.ammo_capacity:
        raise ConfigError("me: need 0 < hp <= max_hp and 0 <= ammo <= ammo_capacity")
    ids = {me.id}
    for kind, units in (("enemy", snap.enemies), ("ally", snap.allies)):
        for u in units:
            if u.id in ids:
                raise ConfigError(f"{kind} {u.id}: id used twice")
            ids.add(u.id)
            if not field.walkable(u.x, u.y):
                raise ConfigError(f"{kind} {u.id} stands on a wall or off the map")
            dist = math.dist((me.x, me.y), (u.x, u.y))
            if abs(dist - u.dist) > _DIST_TOLERANCE:
                raise ConfigError(f"{kind} {u.id}: dist {u.dist} but it stands {dist:.2f} away")
    for c in field.cover:
        if not field.walkable(*c):
            raise ConfigError(f"cover point {c} is on a wall or off the map")
    if snap.objective is not None and not field.in_bounds(*snap.objective):
        raise ConfigError(f"objective {snap.objective} is off the map")


def _acceptable(item: object, snap: WorldSnapshot, registry: ActionRegistry) -> Acceptable:
    if not isinstance(item, dict) or not isinstance(item.get("action"), str):
        raise ConfigError('an accept entry must be an object with an "action" string')
    extra = set(item) - _ACCEPT_KEYS
    if extra:
        raise ConfigError(f"accept entry: unknown keys {sorted(extra)}")
    name = item["action"]
    spec = registry.get(name)
    if spec is None:
        raise ConfigError(f"accept entry: unknown action {name!r}")
    kinds = {a.kind for a in spec.args}
    targets = item.get("targets")
    target_set: frozenset[int] | None = None
    if targets is not None:
        if not kinds & set(_TARGET_KINDS):
            raise ConfigError(f"accept entry: {name} takes no target")
        if not isinstance(targets, list) or not targets or not all(_is_int(t) for t in targets):
            raise ConfigError(f"accept entry: {name} targets must be a non-empty list of ids")
        target_set = frozenset(targets)
        for t in sorted(target_set):
            _check_target(name, t, kinds, snap)
    places = {k: _point(name, k, item.get(k), kinds) for k in ("toward", "away_from")}
    return Acceptable(
        action=name, targets=target_set, toward=places["toward"], away_from=places["away_from"]
    )


def _check_target(name: str, target: int, kinds: set[ArgKind], snap: WorldSnapshot) -> None:
    enemy, ally = snap.enemy(target), snap.ally(target)
    ok = (ArgKind.ENEMY in kinds and enemy is not None and enemy.hp > 0) or (
        ArgKind.ALLY in kinds and (target == snap.me.id or (ally is not None and ally.hp > 0))
    )
    if not ok:
        raise ConfigError(f"accept entry: {name} target {target} is not a legal target here")


def _point(name: str, key: str, value: object, kinds: set[ArgKind]) -> tuple[int, int] | None:
    if value is None:
        return None
    if not ({ArgKind.X, ArgKind.Y} <= kinds or kinds & set(_PLACE_KINDS)):
        raise ConfigError(f"accept entry: {name} takes no cell, so {key} cannot apply")
    if not isinstance(value, list) or len(value) != 2 or not all(_is_int(v) for v in value):
        raise ConfigError(f"accept entry: {name} {key} must be [x, y]")
    return (value[0], value[1])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
