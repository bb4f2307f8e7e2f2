"""ComponentMap: how a game's own components read as what planning needs.

Planning needs, per agent: a marker component (and its role), a position, health and its
maximum, a team, a perception radius, a weapon range and ammunition; and one map. A game declares
where each lives among its own component types, once::

    SURVIVAL = ComponentMap(
        agent=Survivor, role="job",
        position=(Transform, "x", "y"),
        health=(Vitals, "hp"), max_health=(Vitals, "max_hp"),
        team=(Faction, "side"),
        perception=(Senses, "radius"),
        world=(Terrain, terrain_to_battlefield),
    )

Every component type must be a class and every field one it declares (dataclass field, slot,
annotation or class attribute): a mistake raises :class:`ConfigError` naming it when the map is
built. Optional entries take a constant instead of a ``(Type, field)`` pair; an agent without the
declared optional component reads the constant default (:data:`DEFAULT_PERCEPTION`...).
``world`` is the component type of the map's entity (the lowest id wins if several hold one) and a
function turning it into a :class:`Battlefield`, called again only when the component object is
replaced.

:data:`DEFAULT_COMPONENTS` maps aiplanner's own components; the demo uses it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Final

import esper

from aiplanner import queries
from aiplanner.components import (
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    Position,
    Team,
    Weapon,
)
from aiplanner.errors import ConfigError

__all__ = [
    "DEFAULT_AMMO",
    "DEFAULT_COMPONENTS",
    "DEFAULT_PERCEPTION",
    "DEFAULT_ROLE",
    "DEFAULT_WEAPON_RANGE",
    "ComponentMap",
]

DEFAULT_PERCEPTION: Final = Perception().radius
DEFAULT_WEAPON_RANGE: Final = Weapon().range
DEFAULT_AMMO: Final = Ammo(rounds=0).capacity
"""An agent without ammunition shows a full magazine of this size (it never runs dry)."""
DEFAULT_ROLE: Final = "tactical"

_Getter = Callable[[Any], Any]


def _fields_of(cls: type) -> set[str]:
    names: set[str] = set()
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls))
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.update((slots,) if isinstance(slots, str) else slots)
        names.update(inspect.get_annotations(klass))
        names.update(k for k in klass.__dict__ if not k.startswith("_"))
    return names


def _type(entry: str, value: object) -> type[Any]:
    if not isinstance(value, type):
        raise ConfigError(f"ComponentMap {entry}: {value!r} is not a component type (a class)")
    return value


def _field(entry: str, cls: type, name: object) -> str:
    if not isinstance(name, str) or name not in _fields_of(cls):
        known = ", ".join(sorted(n for n in _fields_of(cls) if not n.startswith("_")))
        raise ConfigError(
            f"ComponentMap {entry}: {cls.__name__} has no field {name!r} (it has: {known})"
        )
    return name


def _pair(entry: str, value: object, n_fields: int = 1) -> tuple[type[Any], tuple[str, ...]]:
    if not isinstance(value, tuple) or len(value) != 1 + n_fields:
        shape = ", ".join(["Type", *(f"'field{i + 1}'" for i in range(n_fields))])
        raise ConfigError(f"ComponentMap {entry}: expected ({shape}), got {value!r:.80}")
    cls = _type(entry, value[0])
    return cls, tuple(_field(entry, cls, name) for name in value[1:])


class ComponentMap:
    """Where planning reads a game's state (see the module docstring).

    The systems read through the attributes below on every tick; treat them as read-only.
    Raises :class:`ConfigError` naming the entry for a value that is not a component type, a
    field that type lacks, a malformed entry, or a ``world`` converter that is not callable.
    """

    __slots__ = (
        "_ammo",
        "_field",
        "_field_source",
        "_perception",
        "_range",
        "_role",
        "_to_field",
        "agent",
        "agent_index",
        "health",
        "health_index",
        "hp",
        "max_hp",
        "max_index",
        "position",
        "position_index",
        "query",
        "team",
        "team_index",
        "world",
        "xy",
    )

    def __init__(
        self,
        *,
        agent: type,
        role: str | None = None,
        position: tuple[type, str, str],
        health: tuple[type, str],
        max_health: tuple[type, str] | int = 100,
        team: tuple[type, str],
        perception: tuple[type, str] | float = DEFAULT_PERCEPTION,
        weapon_range: tuple[type, str] | float = DEFAULT_WEAPON_RANGE,
        ammo: tuple[type, str, str] | None = None,
        world: tuple[type, Callable[[Any], Battlefield]],
    ) -> None:
        self.agent = _type("agent", agent)
        self._role = None if role is None else attrgetter(_field("role", self.agent, role))
        pos_type, (fx, fy) = _pair("position", position, 2)
        health_type, (fhp,) = _pair("health", health)
        team_type, (fteam,) = _pair("team", team)
        self.position = pos_type
        self.health = health_type
        self.xy: _Getter = attrgetter(fx, fy)
        """(x, y) of a position component."""
        self.hp: _Getter = attrgetter(fhp)
        """Health points of a health component."""
        self.team: _Getter = attrgetter(fteam)
        """Team of a team component."""
        # One esper query yields every agent with its required components; the indexes say
        # where each lives in a row (a game may keep several in one component).
        query: list[type[Any]] = []
        for cls in (self.agent, pos_type, team_type, health_type):
            if cls not in query:
                query.append(cls)
        self.query: tuple[type[Any], ...] = tuple(query)
        self.agent_index = query.index(self.agent)
        self.position_index = query.index(pos_type)
        self.team_index = query.index(team_type)
        self.health_index = query.index(health_type)
        if isinstance(max_health, int) and not isinstance(max_health, bool):
            if max_health <= 0:
                raise ConfigError(f"ComponentMap max_health: must be positive, got {max_health}")
            constant = max_health
            self.max_hp: _Getter = lambda _component: constant
            self.max_index = self.health_index
        else:
            max_type, (fmax,) = _pair("max_health", max_health)
            if max_type not in query:
                raise ConfigError(
                    f"ComponentMap max_health: {max_type.__name__} must be one of the agent's "
                    f"required components ({', '.join(c.__name__ for c in query)})"
                )
            self.max_hp = attrgetter(fmax)
            self.max_index = query.index(max_type)
        self._perception = _optional("perception", perception, DEFAULT_PERCEPTION)
        self._range = _optional("weapon_range", weapon_range, DEFAULT_WEAPON_RANGE)
        self._ammo: tuple[type[Any], _Getter] | None = None
        if ammo is not None:
            ammo_type, (frounds, fcap) = _pair("ammo", ammo, 2)
            self._ammo = (ammo_type, attrgetter(frounds, fcap))
        if not isinstance(world, tuple) or len(world) != 2:
            raise ConfigError(
                f"ComponentMap world: expected (Type, to_battlefield), got {world!r:.80}"
            )
        self.world = _type("world", world[0])
        if not callable(world[1]):
            raise ConfigError(f"ComponentMap world: {world[1]!r:.60} is not callable")
        self._to_field: Callable[[Any], Battlefield] = world[1]
        self._field_source: object = None
        self._field: Battlefield | None = None

    # -- reading (game thread only) -------------------------------------------------------------
    def role_of(self, agent: object) -> str:
        """The role held by an agent marker component (:data:`DEFAULT_ROLE` if none is mapped)."""
        return DEFAULT_ROLE if self._role is None else str(self._role(agent))

    def max_hp_of(self, row: Sequence[Any]) -> int:
        """Maximum health of an agent, from its row of :attr:`query` components."""
        return self.max_hp(row[self.max_index])  # type: ignore[no-any-return]

    def perception_of(self, entity: int) -> float:
        return _read(self._perception, entity)

    def weapon_range_of(self, entity: int) -> float:
        return _read(self._range, entity)

    def ammo_of(self, entity: int) -> tuple[int, int]:
        """(rounds, capacity); a full :data:`DEFAULT_AMMO` magazine when none is mapped or held."""
        if self._ammo is None:
            return DEFAULT_AMMO, DEFAULT_AMMO
        cls, get = self._ammo
        comp = esper.try_component(entity, cls)
        if comp is None:
            return DEFAULT_AMMO, DEFAULT_AMMO
        rounds, capacity = get(comp)
        return rounds, capacity

    def rows(self) -> list[tuple[int, tuple[Any, ...]]]:
        """Every entity holding all of :attr:`query`'s components, with them in that order:
        what ``esper.get_components(*query)`` returns, in no particular order.

        The same list until an entity or component comes or goes (:mod:`aiplanner.queries`):
        the snapshot and execution systems read the same rows, so a death or a respawn costs
        one join a tick."""
        return queries.components(*self.query)

    def read_map(self) -> Battlefield | None:
        """The map of the current world: the ``world`` component of the lowest entity id,
        converted (again only when that component object is replaced); None if no entity holds
        one. Raises :class:`ConfigError` if the converter returns something else."""
        holders = esper.get_component(self.world)
        if not holders:
            self._field_source = self._field = None
            return None
        source = min(holders, key=lambda pair: pair[0])[1]
        if source is not self._field_source:
            converted = self._to_field(source)
            if not isinstance(converted, Battlefield):
                raise ConfigError(
                    f"ComponentMap world: the converter returned {type(converted).__name__}, "
                    "not a Battlefield"
                )
            self._field_source, self._field = source, converted
        return self._field

    def alive(self, entity: int) -> bool:
        """The entity exists, has the mapped health component, and its health is above zero."""
        if not esper.entity_exists(entity):
            return False
        comp = esper.try_component(entity, self.health)
        return comp is not None and self.hp(comp) > 0

    def living_position(self, entity: int) -> tuple[float, float] | None:
        """(x, y) of ``entity`` if it exists, has the mapped position and health, and is alive."""
        if not esper.entity_exists(entity):
            return None
        comps = esper.try_components(entity, self.position, self.health)
        if comps is None or self.hp(comps[1]) <= 0:
            return None
        x, y = self.xy(comps[0])
        return float(x), float(y)

    def __repr__(self) -> str:
        names = ", ".join(c.__name__ for c in self.query)
        return f"ComponentMap({names}; map {self.world.__name__})"


_Optional = tuple[type[Any] | None, _Getter | None, float]


def _optional(entry: str, value: tuple[type, str] | float, default: float) -> _Optional:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None, None, float(value)
    cls, (name,) = _pair(entry, value)
    return cls, attrgetter(name), default


def _read(spec: _Optional, entity: int) -> float:
    cls, get, default = spec
    if cls is None or get is None:
        return default
    comp = esper.try_component(entity, cls)
    return default if comp is None else get(comp)


def _same(field: Battlefield) -> Battlefield:
    return field


DEFAULT_COMPONENTS: Final = ComponentMap(
    agent=Agent,
    role="role",
    position=(Position, "x", "y"),
    health=(Health, "hp"),
    max_health=(Health, "max_hp"),
    team=(Team, "team"),
    perception=(Perception, "radius"),
    weapon_range=(Weapon, "range"),
    ammo=(Ammo, "rounds", "capacity"),
    world=(Battlefield, _same),
)
"""aiplanner's own components: :class:`Agent`, :class:`Position`, :class:`Health`..."""
