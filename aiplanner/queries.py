"""Cached queries of the current esper world, made again only when esper's own would be.

esper 3.x drops every query it cached whenever an entity or a component comes or goes (a death, a
respawn, a component added), and builds each one again, entity by entity through a generator, the
next time it is asked. In ``benchmarks/whole_tick.py``'s battle at 1000 agents, three ticks in ten
follow such a change, and the queries the three systems read then cost ~3 ms more of that tick
(measured: the map's four-component join, the states, the queues, health and weapons), freeing
the lists they replace included: those ticks made the p99.

:func:`column` and :func:`components` return what ``esper.get_component`` (as two lists in step)
and ``esper.get_components`` return, kept until esper's next change. They build it from the
world's two tables (``esper._components``: the entities of each component type,
``esper._entities``: each entity's components) with set operations in C and one look-up per
entity, or, under an esper without those tables, through esper's public queries. A change is seen
through esper's own cache: the query of :class:`_Probe`, a type no entity holds, is a new (empty)
list after every change and after a world switch. Results that a change replaced are not freed in
the tick (:func:`retire`) but in the frame's idle time (:func:`release`, from
``PlannerPlugin.between_frames``).

Game thread only, like esper. The lists are shared: callers must not modify them.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Final, TypeVar

import esper

__all__ = [
    "column",
    "components",
    "entities",
    "entity_table",
    "generation",
    "release",
    "retire",
]

_C = TypeVar("_C")


class _Probe:
    """A component type no entity holds (see the module docstring)."""


_seen: list[Any] | None = None  # esper's list for _Probe when the caches below were filled
_one: dict[type[Any], tuple[list[int], list[Any]]] = {}
_many: dict[tuple[type[Any], ...], list[tuple[int, tuple[Any, ...]]]] = {}
_retired: list[object] = []  # lists of past generations, to free in idle time (release())
_kept = False  # whether release() was ever called: until then nothing waits for it
RETIRED_KEPT: Final = 8
"""At most this many retired results wait for :func:`release`; older ones are freed at once."""


def generation() -> object:
    """An object that stays the same (``is``) exactly while esper's queries are unchanged: no
    entity or component came or went, and the same world is current."""
    global _seen, _one, _many
    probe = esper.get_component(_Probe)
    if probe is not _seen:
        _seen = probe
        if _one or _many:
            retire((_one, _many))
            _one, _many = {}, {}
    return probe


def retire(lists: object) -> None:
    """Keep ``lists`` (query results no longer used) alive until :func:`release`: freeing a
    thousand agents' rows costs ~1 ms, which the frame's idle time can pay instead of a tick.
    In a program that never calls :func:`release` nothing is kept: it is freed at once, as the
    caller drops it."""
    if _kept:
        _retired.append(lists)
        if len(_retired) > RETIRED_KEPT:
            del _retired[0]


def release() -> None:
    """Free the retired query results (called from the frame's idle time); from now on,
    :func:`retire` keeps what it is given until the next call."""
    global _kept
    _kept = True
    _retired.clear()


def _tables() -> tuple[dict[type[Any], set[int]], dict[int, dict[type[Any], Any]]] | None:
    """esper's tables of the current world, or None if this esper keeps them otherwise."""
    comps = getattr(esper, "_components", None)
    ents = getattr(esper, "_entities", None)
    if isinstance(comps, dict) and isinstance(ents, dict):
        return comps, ents
    return None


def entities(component_type: type[Any]) -> frozenset[int] | set[int]:
    """The entities holding a component of ``component_type``: esper's own set, not a copy
    (read it, never change it; set operations on it run in C)."""
    tables = _tables()
    if tables is None:
        return frozenset(e for e, _ in esper.get_component(component_type))
    return tables[0].get(component_type, _NONE)


_NONE: frozenset[int] = frozenset()


def entity_table() -> dict[int, dict[type[Any], Any]] | None:
    """esper's table of each entity's components (type -> component) in the current world, to
    read, never change; None under an esper that keeps it otherwise (use the queries then)."""
    tables = _tables()
    return None if tables is None else tables[1]


def column(component_type: type[_C]) -> tuple[list[int], list[_C]]:
    """The entities holding a ``component_type`` and their components, as two lists in step, in
    the order ``esper.get_component`` gives; made again only after a change. Two lists rather
    than a pair per entity: nothing is made per entity, so building and freeing cost less."""
    generation()
    found = _one.get(component_type)
    if found is None:
        tables = _tables()
        if tables is None:
            pairs = esper.get_component(component_type)
            found = ([e for e, _ in pairs], [c for _, c in pairs])
        else:
            comps, ents = tables
            ids = list(comps.get(component_type, ()))
            found = (ids, [ents[e][component_type] for e in ids])
        _one[component_type] = found
    return found


def components(*component_types: type[Any]) -> list[tuple[int, tuple[Any, ...]]]:
    """``esper.get_components(*component_types)``, made again only after a change; entities in
    the order of the first type's (a type may repeat: its component then fills both places)."""
    generation()
    found = _many.get(component_types)
    if found is None:
        found = _join(component_types)
        _many[component_types] = found
    return found


def _join(types: tuple[type[Any], ...]) -> list[tuple[int, tuple[Any, ...]]]:
    if not types:
        return []
    tables = _tables()
    if tables is None:
        return list(esper.get_components(*types))
    comps, ents = tables
    sets = [comps.get(t) for t in types]
    first = sets[0]
    if first is None or any(s is None for s in sets):
        return []
    get = itemgetter(*types)
    if len(types) == 1:
        return [(e, (ents[e][types[0]],)) for e in first]
    both = first.intersection(*sets[1:])  # type: ignore[arg-type]
    if len(both) == len(first):
        return [(e, get(ents[e])) for e in first]
    return [(e, get(ents[e])) for e in first if e in both]
