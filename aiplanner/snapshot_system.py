"""SnapshotSystem: rebuilds the spatial index each tick and builds agents' snapshots on demand.

The per-tick work is O(n): one pass over living agents into one :class:`UniformGrid` per team.
A :class:`WorldSnapshot` is built only for an agent someone asks about (usually one that needs a
plan), and is memoised until the next tick. It shows the nearest few allies and enemies, so it
asks its own team's grid, then the other teams' grids, for the units within half its perception
radius first, and looks farther only when that did not find enough: its cost follows what it
shows, not how crowded the whole circle is.

What a snapshot shows:

* positions are those of the last :meth:`SnapshotSystem.process` (the grid), rounded to map cells
  by :func:`aiplanner.spatial.to_cell` (half away from zero); distances use the exact positions
  and are rounded to 0.1 cell;
* health, ammo, weapon and perception are read from the components when the snapshot is built,
  and units that died or were deleted since ``process`` are left out. Run this processor right
  before the one that asks for snapshots so both views agree;
* the components are the game's own, read through a :class:`~aiplanner.adapter.ComponentMap`
  (default: aiplanner's, :data:`~aiplanner.adapter.DEFAULT_COMPONENTS`). Missing optional
  components read as the map's defaults: no :class:`Perception` sees ``Perception().radius``
  cells, no :class:`Weapon` has ``Weapon().range``, and no :class:`Ammo` shows a full magazine of
  ``Ammo`` 's default capacity (the execution system never runs an agent without an ``Ammo``
  component dry).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import esper

from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError
from aiplanner.snapshot import (
    SeenUnit,
    WorldSnapshot,
    new_seen_unit,
    new_self_view,
    new_snapshot,
)
from aiplanner.spatial import UniformGrid, to_cell

if TYPE_CHECKING:
    from aiplanner.validation import PlanView  # validation imports the registry: not at runtime

__all__ = ["COVER_RADIUS", "OCCUPIED_RADIUS", "Sight", "SnapshotSystem"]

COVER_RADIUS: Final = 0.75
"""An agent this close (cells) to a cover point is in cover."""
OCCUPIED_RADIUS: Final = 0.5
"""A cover point with another agent this close is taken and not offered."""

_NOWHERE: Final = object()  # not in any team's grid (team values may be None)


_MEMO_LIMIT: Final = 65536  # (cell, radius) entries per _Nearby before it starts over
_EXACT_LIMIT: Final = 8192  # answers per radius and _Nearby before it starts over
_EXACT_RADII: Final = 16  # radii per _Nearby before it starts over


class _Nearby:
    """Fixed points (cover, walls) near a position: the ids that ``UniformGrid.query`` gives,
    sorted by (distance, id), from a short list of candidates made once per map cell and radius
    (every point within ``radius`` of some position in that cell) instead of a grid walk.

    The answer for an exact position is kept too: an agent standing still (shooting, waiting,
    in cover) asks from the same position tick after tick, and the points never move."""

    __slots__ = ("_exact", "_grid", "_memo", "_points")

    def __init__(self, points: tuple[tuple[int, int], ...], cell_size: float) -> None:
        self._points = points
        self._grid = UniformGrid(cell_size)
        for i, (x, y) in enumerate(points):
            self._grid.insert(i, x, y)
        self._memo: dict[tuple[int, int, float], tuple[tuple[int, int, int], ...]] = {}
        # radius -> position as complex(x, y) -> the answer: keys that are not containers, so
        # the answers kept add one object each to the collector's youngest generation, not two.
        self._exact: dict[float, dict[complex, tuple[int, ...]]] = {}

    def query(self, x: float, y: float, radius: float) -> tuple[int, ...]:
        if not radius >= 0:  # negative or NaN: nothing, as the grid says
            return ()
        exact = self._exact.get(radius)
        if exact is None:
            if len(self._exact) >= _EXACT_RADII:
                self._exact.clear()
            exact = self._exact[radius] = {}
        at = complex(x, y)
        ids = exact.get(at)
        if ids is not None:
            return ids
        fx = math.floor(x)
        fy = math.floor(y)
        key = (fx, fy, radius)
        near = self._memo.get(key)
        if near is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            points = self._points
            # Every position in the cell is within sqrt(0.5) < 0.75 of its centre.
            near = self._memo[key] = tuple(
                (i, *points[i]) for i in self._grid.query(fx + 0.5, fy + 0.5, radius + 0.75)
            )
        r2 = radius * radius
        r2_near = r2 * (1.0 + 1e-9)  # the grid's boundary rule (UniformGrid.query_points)
        sqrt = math.sqrt
        found: list[tuple[float, int]] = []
        for i, px, py in near:
            dx = px - x
            dy = py - y
            d2 = dx * dx + dy * dy  # the grid's own arithmetic: the same order, ties by id
            if d2 <= r2 or (d2 <= r2_near and sqrt(d2) <= radius):
                found.append((sqrt(d2), i))
        found.sort()
        if len(exact) >= _EXACT_LIMIT:
            exact.clear()
        ids = exact[at] = tuple([i for _, i in found])
        return ids


@dataclass(frozen=True, slots=True)
class _FieldIndex:
    """Static lookups derived from one Battlefield, rebuilt only when the map object changes."""

    field: Battlefield
    cover: tuple[tuple[int, int], ...]  # sorted by (x, y): the ids of cover_near index into it
    cover_set: frozenset[tuple[int, int]]
    cover_near: _Nearby
    blocked: tuple[tuple[int, int], ...]  # sorted by (x, y)
    blocked_near: _Nearby

    @classmethod
    def build(cls, field: Battlefield, cell_size: float) -> _FieldIndex:
        cover = tuple(sorted(set(field.cover)))
        blocked = tuple(sorted(field.blocked))
        return cls(
            field,
            cover,
            frozenset(cover),
            _Nearby(cover, cell_size),
            blocked,
            _Nearby(blocked, cell_size),
        )

    def in_cover(self, x: float, y: float) -> bool:
        cover = self.cover_set
        if not cover:
            return False
        # Cover points sit on integer cells, and COVER_RADIUS < 1: only the four cells around
        # (x, y) can be close enough.
        r2 = COVER_RADIUS * COVER_RADIUS
        fx = math.floor(x)
        fy = math.floor(y)
        for cx in (fx, fx + 1):
            dx2 = (cx - x) * (cx - x)
            if dx2 > r2:
                continue
            for cy in (fy, fy + 1):
                if dx2 + (cy - y) * (cy - y) <= r2 and (cx, cy) in cover:
                    return True
        return False


class Sight:
    """An agent's view as a plan is checked against it (a
    :class:`~aiplanner.validation.PlanView`): the map and its id at once, the enemies and allies
    it sees only when first asked for, found by the same search as its snapshot's, so they are
    the same units. Made by :meth:`SnapshotSystem.sight` for the tick it is read in."""

    __slots__ = ("_allies", "_enemies", "_radius", "_system", "_team", "_x", "_y", "field", "me_id")

    def __init__(
        self,
        system: SnapshotSystem,
        entity: int,
        team: object,
        x: float,
        y: float,
        radius: float,
        field: Battlefield,
    ) -> None:
        self._system = system
        self.me_id = entity
        self._team = team
        self._x = x
        self._y = y
        self._radius = radius
        self.field = field
        self._enemies: tuple[SeenUnit, ...] | None = None
        self._allies: tuple[SeenUnit, ...] = ()

    def _seen(self) -> tuple[SeenUnit, ...]:
        """The enemies, after finding both lists on first use."""
        if self._enemies is None:
            self._enemies, self._allies = self._system._units(
                self.me_id, self._team, self._x, self._y, self._radius
            )
        return self._enemies

    def enemy(self, entity: int, /) -> SeenUnit | None:
        for u in self._seen():
            if u.id == entity:
                return u
        return None

    def ally(self, entity: int, /) -> SeenUnit | None:
        self._seen()
        for u in self._allies:
            if u.id == entity:
                return u
        return None


class SnapshotSystem(esper.Processor):
    """Keeps the spatial index of living agents and builds per-agent :class:`WorldSnapshot` s.

    An agent is an entity with the map's agent, position, team and health components and
    ``hp > 0`` (by default (Agent, Position, Team, Health)); entities whose
    position is not finite are left out of the index (they cannot be placed on the map).
    ``max_units`` caps each of the enemy and ally lists, ``max_cover`` and ``max_obstacles`` the
    other two. Raises :class:`ConfigError` for a non-positive ``cell_size`` or a negative cap.
    """

    def __init__(
        self,
        *,
        cell_size: float = 4.0,
        max_units: int = 8,
        max_cover: int = 4,
        max_obstacles: int = 8,
        components: ComponentMap = DEFAULT_COMPONENTS,
        on_tick_start: Callable[[], None] | None = None,
    ) -> None:
        for name, value in (
            ("max_units", max_units),
            ("max_cover", max_cover),
            ("max_obstacles", max_obstacles),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        self.tick: int = 0
        self.max_units = max_units
        self.max_cover = max_cover
        self.max_obstacles = max_obstacles
        self.components = components
        # Called first thing each tick (the plugin holds its bridge's loop: see AsyncBridge.hold).
        self.on_tick_start = on_tick_start
        self._cell_size = cell_size
        self._grid = UniformGrid(cell_size)  # raises ConfigError for a bad cell_size
        # The index proper: one grid of living agents per team (team values are dict keys), and
        # which team's grid holds each agent. ``_grid`` (all agents) is filled only when read.
        self._teams: dict[Any, UniformGrid] = {}
        self._team_of: dict[int, Any] = {}
        self._columns: dict[Any, tuple[list[int], list[float], list[float]]] = {}
        self._grid_tick = 0
        self._field: Battlefield | None = None
        self._index: _FieldIndex | None = None
        # Component objects are changed in place, so holding them gives live values later: each
        # agent's row of ``components.query`` components.
        self._agents: dict[int, Sequence[Any]] = {}
        self._memo: dict[int, WorldSnapshot | None] = {}
        # Cover point (index into _FieldIndex.cover) -> the agents of the grid within
        # OCCUPIED_RADIUS of it; found when first asked, forgotten every tick.
        self._near_cover: dict[int, list[int]] = {}
        # Agent -> its map cell and whether it is in cover, as indexed this tick: an agent is
        # seen by many others, worked out once per tick whoever sees it first.
        self._placed: dict[int, tuple[int, int, bool]] = {}

    @property
    def field(self) -> Battlefield | None:
        """The map seen by the last :meth:`process`, or None if no entity holds a Battlefield."""
        return self._field

    @property
    def grid(self) -> UniformGrid:
        """The index of living agents as of the last :meth:`process` (read it, don't change it).

        Made from the per-team grids on the first read after each :meth:`process`."""
        if self._grid_tick != self.tick:
            self._grid_tick = self.tick
            self._grid.rebuild([p for g in self._teams.values() for p in g.points()])
        return self._grid

    def process(self, dt: float) -> None:
        """Advance the tick, read the map, rebuild the agent index and forget memoised snapshots."""
        if self.on_tick_start is not None:
            self.on_tick_start()
        self.tick += 1
        self._refresh_field()
        self._agents.clear()
        self._memo.clear()
        self._near_cover.clear()
        self._placed.clear()
        self._team_of.clear()
        # Per team, the ids and coordinates as three columns, kept from tick to tick: no tuple
        # per agent and tick (see UniformGrid.rebuild_columns).
        by_team = self._columns
        for ents, xs, ys in by_team.values():
            ents.clear()
            xs.clear()
            ys.clear()
        self._read_agents(by_team)
        grids = self._teams
        for team in [t for t, columns in by_team.items() if not columns[0]]:
            del by_team[team]
        for team in [t for t in grids if t not in by_team]:
            del grids[team]
        for team, (ents, xs, ys) in by_team.items():
            grid = grids.get(team)
            if grid is None:
                grid = grids[team] = UniformGrid(self._cell_size)
            grid.rebuild_columns(ents, xs, ys)

    def _read_agents(self, by_team: dict[Any, tuple[list[int], list[float], list[float]]]) -> None:
        """Every living agent with a finite position, read through the component map: its row
        into ``_agents``, its team into ``_team_of``, its id and coordinates into its team's
        columns of ``by_team`` (a team seen for the first time gets new ones)."""
        cm = self.components
        agents = self._agents
        placed = self._team_of
        isfinite = math.isfinite
        xy = cm.xy
        hp = cm.hp
        team_of = cm.team
        ip = cm.position_index
        ih = cm.health_index
        it = cm.team_index
        for ent, row in cm.rows():
            x, y = xy(row[ip])
            if hp(row[ih]) > 0 and isfinite(x) and isfinite(y):
                team = team_of(row[it])
                columns = by_team.get(team)
                if columns is None:
                    columns = by_team[team] = ([], [], [])
                columns[0].append(ent)
                columns[1].append(x)
                columns[2].append(y)
                agents[ent] = row
                placed[ent] = team

    def _refresh_field(self) -> None:
        """Read the map; rebuild its static lookups only when the map object changed."""
        field = self.components.read_map()
        self._field = field
        if field is None:
            self._index = None
        elif self._index is None or self._index.field is not field:
            self._index = _FieldIndex.build(field, self._cell_size)

    def _alive(self, entity: int) -> bool:
        row = self._agents.get(entity)
        cm = self.components
        return row is not None and cm.hp(row[cm.health_index]) > 0 and esper.entity_exists(entity)

    def _position(self, entity: int) -> tuple[float, float] | None:
        """Where ``entity`` was indexed by the last :meth:`process`, or None."""
        team = self._team_of.get(entity, _NOWHERE)
        return None if team is _NOWHERE else self._teams[team].position(entity)

    def _near(
        self, grids: Sequence[UniformGrid], x: float, y: float, radius: float
    ) -> list[tuple[float, int, float, float]]:
        """``UniformGrid.query_points`` over several grids: one list, sorted the same way."""
        if len(grids) == 1:
            return grids[0].query_points(x, y, radius)
        found = [p for g in grids for p in g.query_points(x, y, radius)]
        found.sort()
        return found

    def neighbours(self, entity: int, radius: float) -> list[int]:
        """Other living agents within ``radius`` of ``entity``, nearest first, ties by id.

        Empty if ``entity`` is not a living agent of the last :meth:`process`.
        """
        pos = self._position(entity)
        if pos is None:
            return []
        near = self._near(list(self._teams.values()), pos[0], pos[1], radius)
        return [e for _, e, _, _ in near if e != entity and self._alive(e)]

    def snapshot(self, entity: int) -> WorldSnapshot | None:
        """The snapshot of ``entity`` for this tick, built on first request and memoised.

        None before the first :meth:`process`, when there is no Battlefield, or when the entity
        is gone, dead, or lacks one of the map's agent, position, team and health components.
        """
        if entity in self._memo:
            return self._memo[entity]
        if entity not in self._agents:
            return None  # not memoised: the memo stays bounded by the number of agents
        snap = self._build(entity)
        self._memo[entity] = snap
        return snap

    def sight(self, entity: int) -> PlanView | None:
        """What a plan for ``entity`` is checked against this tick (see
        :func:`~aiplanner.validation.validate_plan`): its snapshot if one was built this tick,
        else a :class:`Sight`, which finds the units only if a step names one; the same answer
        as checking against :meth:`snapshot`, without the cover, obstacles and self view.

        None exactly when :meth:`snapshot` is None. Read it in the tick it was made in.
        """
        if entity in self._memo:
            return self._memo[entity]
        if entity not in self._agents:
            return None
        found = self._located(entity)
        if found is None:
            self._memo[entity] = None  # as snapshot() would have found
            return None
        index, row, x, y = found
        cm = self.components
        return Sight(
            self, entity, cm.team(row[cm.team_index]), x, y, cm.perception_of(entity), index.field
        )

    def _located(self, entity: int) -> tuple[_FieldIndex, Sequence[Any], float, float] | None:
        """The map's lookups, ``entity``'s row of components and its indexed position, or None
        when it has no snapshot (no map, not indexed, dead or gone, a component missing)."""
        index = self._index
        pos = self._position(entity)
        if index is None or pos is None or not self._alive(entity):
            return None
        row = esper.try_components(entity, *self.components.query)
        if row is None:
            return None
        return index, row, pos[0], pos[1]

    def _build(self, entity: int) -> WorldSnapshot | None:
        found = self._located(entity)
        if found is None:
            return None
        index, row, x, y = found
        cm = self.components
        team = cm.team(row[cm.team_index])
        radius = cm.perception_of(entity)
        rounds, capacity = cm.ammo_of(entity)
        mx, my = to_cell(x, y)
        me = new_self_view(
            entity,  # id
            cm.role_of(row[cm.agent_index]),  # role
            team,
            mx,  # x
            my,  # y
            cm.hp(row[cm.health_index]),  # hp
            cm.max_hp_of(row),  # max_hp
            rounds,  # ammo
            capacity,  # ammo_capacity
            index.in_cover(x, y),  # in_cover
            cm.weapon_range_of(entity),  # weapon_range
        )
        enemies, allies = self._units(entity, team, x, y, radius)
        cover = self._cover(index, entity, x, y, radius)
        blocked = index.blocked
        near = index.blocked_near.query(x, y, radius)
        return new_snapshot(
            self.tick,
            me,
            enemies,
            allies,
            cover,
            tuple([blocked[i] for i in near[: self.max_obstacles]]),  # obstacles
            index.field.objective,
            index.field,
        )

    def _units(
        self, entity: int, team: object, x: float, y: float, radius: float
    ) -> tuple[tuple[SeenUnit, ...], tuple[SeenUnit, ...]]:
        """(enemies, allies) within ``radius``, nearest first, ties by id, each capped."""
        if self.max_units == 0:
            return (), ()
        own: list[UniformGrid] = []
        others: list[UniformGrid] = []
        for t, grid in self._teams.items():
            (own if t == team else others).append(grid)
        return (
            self._nearest(others, entity, x, y, radius) if others else (),
            self._nearest(own, entity, x, y, radius) if own else (),
        )

    def _nearest(
        self, grids: Sequence[UniformGrid], entity: int, x: float, y: float, radius: float
    ) -> tuple[SeenUnit, ...]:
        """The ``max_units`` nearest living agents of ``grids`` within ``radius`` (ties by id),
        ``entity`` left out. In a crowd (the map's density puts more than ``2 * max_units`` of
        them within ``radius``) looked for within half the radius first, then within all of it
        when that found too few (or the last one found could tie with one farther out);
        otherwise the half-radius pass would mostly find too few, so all of it at once."""
        cap = self.max_units
        index = self._index
        assert index is not None  # _build checked it
        agents = self._agents
        exists = esper.entity_exists
        in_cover = index.in_cover
        placed = self._placed
        cm = self.components
        hp = cm.hp
        max_hp = cm.max_hp
        ih = cm.health_index
        im = cm.max_index
        make = new_seen_unit
        area = max(1, index.field.width * index.field.height)
        crowd = sum(len(g) for g in grids) * math.pi * radius * radius / area
        reach = radius * 0.5 if crowd > 2 * cap else radius
        while True:
            found: list[SeenUnit] = []
            last = 0.0
            for dist, other, ox, oy in self._near(grids, x, y, reach):
                if other == entity:
                    continue
                row = agents[other]
                other_hp = hp(row[ih])
                if other_hp <= 0 or not exists(other):
                    continue  # died or was deleted since process()
                where = placed.get(other)
                if where is None:
                    cx, cy = to_cell(ox, oy)
                    where = placed[other] = (cx, cy, in_cover(ox, oy))
                found.append(
                    make(
                        other,
                        where[0],
                        where[1],
                        other_hp,
                        where[2],
                        round(dist, 1),
                        max_hp(row[im]),
                    )
                )
                last = dist
                if len(found) >= cap:
                    break
            # Everything within ``reach`` was seen in order: enough found strictly inside it
            # means nobody farther out could come before them.
            if reach >= radius or (len(found) >= cap and last < reach):
                return tuple(found)
            reach = radius

    def _cover(
        self, index: _FieldIndex, entity: int, x: float, y: float, radius: float
    ) -> tuple[tuple[int, int], ...]:
        """Free cover points within ``radius``, nearest first, capped: a point is taken when
        another living agent stands within ``OCCUPIED_RADIUS`` of it."""
        cap = self.max_cover
        free: list[tuple[int, int]] = []
        if cap == 0:
            return ()
        near_cover = self._near_cover
        for i in index.cover_near.query(x, y, radius):
            cx, cy = index.cover[i]
            near = near_cover.get(i)
            if near is None:  # who stands on it, found once per tick whoever asks
                near = near_cover[i] = [
                    p[1]
                    for g in self._teams.values()
                    for p in g.query_points(cx, cy, OCCUPIED_RADIUS)
                ]
            if not any(other != entity and self._alive(other) for other in near):
                free.append((cx, cy))
                if len(free) >= cap:
                    break
        return tuple(free)
