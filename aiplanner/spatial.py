"""UniformGrid: the spatial index behind perception, kept up to date every tick.

Agents are bucketed into square cells of ``cell_size`` map cells; a radius query visits only the
buckets the query circle overlaps, so finding neighbours costs O(k) in the number of agents
nearby, never an all-pairs scan. The per-tick update (:meth:`UniformGrid.rebuild`) is
incremental: an agent that has not moved costs one dictionary lookup, one that moved within its
bucket an update in place, and only agents that appeared, left or crossed into another bucket
touch the bucket structure, so a battle where most agents stand and shoot is cheap to index.

Also home of :func:`to_cell`, the one rounding rule from continuous positions to map cells that
snapshots, the validator's callers and the execution system all share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from aiplanner.errors import ConfigError

__all__ = ["UniformGrid", "to_cell"]


def _round_half_away(v: float) -> int:
    # Python's round() is banker's rounding (round(2.5) == 2): surprising for map cells.
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def to_cell(x: float, y: float) -> tuple[int, int]:
    """The map cell a continuous position stands in: each coordinate rounded half away from zero.

    Cell ``(i, j)`` covers positions from ``i - 0.5`` to ``i + 0.5``. Raises ``ValueError`` for
    NaN and ``OverflowError`` for infinite coordinates.
    """
    return _round_half_away(x), _round_half_away(y)


def _not_finite(entity: int, x: float, y: float) -> ValueError:
    return ValueError(f"entity {entity}: position ({x!r}, {y!r}) is not finite")


class UniformGrid:
    """A uniform-grid index of points (entity ids at float positions).

    Raises :class:`ConfigError` if ``cell_size`` is not a positive finite number.
    Inserting an id that is already present moves it. Queries are inclusive of the radius and
    return ids sorted by (distance, id), so results never depend on insertion order. Distance is
    ``sqrt(dx*dx + dy*dy)`` in floats.
    """

    __slots__ = ("_cell", "_inv", "_max_cx", "_max_cy", "_min_cx", "_min_cy", "_rows", "_where")

    def __init__(self, cell_size: float = 4.0) -> None:
        if not (math.isfinite(cell_size) and cell_size > 0):
            raise ConfigError(f"cell_size must be a positive number, got {cell_size!r}")
        self._cell = float(cell_size)
        self._inv = 1.0 / self._cell
        # Buckets as rows of columns (looking one up needs no tuple key built per probe), each
        # bucket id -> position, so a point moves or leaves in O(1).
        self._rows: dict[int, dict[int, dict[int, tuple[float, float]]]] = {}
        self._where: dict[int, tuple[float, float, int, int]] = {}  # id -> x, y, bucket
        # Bounds of the occupied buckets: an enormous radius then visits only real buckets.
        self._min_cx = self._min_cy = 0
        self._max_cx = self._max_cy = -1

    @property
    def cell_size(self) -> float:
        return self._cell

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, entity: object) -> bool:
        return entity in self._where

    def clear(self) -> None:
        """Forget every point."""
        self._rows.clear()
        self._where.clear()
        self._min_cx = self._min_cy = 0
        self._max_cx = self._max_cy = -1

    def _link(self, entity: int, pos: tuple[float, float], cx: int, cy: int) -> None:
        """Put ``entity`` into bucket ``(cx, cy)``, widening the bounds if needed."""
        row = self._rows.get(cx)
        if row is None:
            self._rows[cx] = {cy: {entity: pos}}
        else:
            bucket = row.get(cy)
            if bucket is None:
                row[cy] = {entity: pos}
            else:
                bucket[entity] = pos
        if self._max_cx < self._min_cx:  # first point
            self._min_cx = self._max_cx = cx
            self._min_cy = self._max_cy = cy
        else:
            self._min_cx = min(self._min_cx, cx)
            self._max_cx = max(self._max_cx, cx)
            self._min_cy = min(self._min_cy, cy)
            self._max_cy = max(self._max_cy, cy)

    def _unlink(self, entity: int, cx: int, cy: int) -> None:
        """Take ``entity`` out of bucket ``(cx, cy)``; empty buckets and rows go too (the bounds
        may stay wider than needed, which only costs a few empty probes)."""
        row = self._rows[cx]
        bucket = row[cy]
        del bucket[entity]
        if not bucket:
            del row[cy]
            if not row:
                del self._rows[cx]

    def insert(self, entity: int, x: float, y: float) -> None:
        """Add ``entity`` at ``(x, y)``, or move it there if present.

        Raises ``ValueError`` if a coordinate is NaN or infinite.
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise _not_finite(entity, x, y)
        old = self._where.get(entity)
        if old is not None:
            self._unlink(entity, old[2], old[3])
        cx = math.floor(x * self._inv)
        cy = math.floor(y * self._inv)
        self._where[entity] = (x, y, cx, cy)
        self._link(entity, (x, y), cx, cy)

    def rebuild(self, points: Iterable[tuple[int, float, float]]) -> None:
        """Make the contents exactly ``points`` (``(id, x, y)``): the per-tick update.

        Same result as :meth:`clear` then :meth:`insert` for each point (a repeated id ends at
        its last position), done incrementally (see the module docstring). Raises ``ValueError``
        for a non-finite coordinate, the grid then holding exactly the points before it.
        """
        pts = points if isinstance(points, list | tuple) else list(points)
        self.rebuild_columns([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts])

    def rebuild_columns(
        self, entities: Sequence[int], xs: Sequence[float], ys: Sequence[float]
    ) -> None:
        """:meth:`rebuild` from three columns: the ids, their x and their y, in step.

        The per-tick form: no tuple made per point, so a tick that indexes a thousand agents
        does not set off a collection of the garbage collector's youngest generation (which
        counts the container objects made and not yet freed) on its own. Raises ``ValueError``
        if the columns differ in length, or as :meth:`rebuild` does.
        """
        if not len(entities) == len(xs) == len(ys):
            raise ValueError(f"columns of {len(entities)}, {len(xs)} and {len(ys)} points")
        inv = self._inv
        floor = math.floor
        isfinite = math.isfinite
        rows = self._rows
        where = self._where
        done = 0
        try:
            for entity, x, y in zip(entities, xs, ys, strict=True):
                old = where.get(entity)
                if old is not None and old[0] == x and old[1] == y:
                    done += 1
                    continue  # has not moved: nothing to do
                if not (isfinite(x) and isfinite(y)):
                    raise _not_finite(entity, x, y)
                cx = floor(x * inv)
                cy = floor(y * inv)
                where[entity] = (x, y, cx, cy)
                if old is not None:
                    if old[2] == cx and old[3] == cy:
                        rows[cx][cy][entity] = (x, y)  # moved within its bucket
                        done += 1
                        continue
                    self._unlink(entity, old[2], old[3])
                self._link(entity, (x, y), cx, cy)
                done += 1
        finally:
            kept = set(entities[:done] if done < len(entities) else entities)
            if len(kept) != len(where):
                for entity in where.keys() - kept:
                    _, _, cx, cy = where.pop(entity)
                    self._unlink(entity, cx, cy)

    def remove(self, entity: int) -> bool:
        """Remove ``entity``; return whether it was present."""
        old = self._where.pop(entity, None)
        if old is None:
            return False
        self._unlink(entity, old[2], old[3])
        return True

    def points(self) -> list[tuple[int, float, float]]:
        """Every ``(id, x, y)`` held, in no particular order (what :meth:`rebuild` takes)."""
        return [(entity, w[0], w[1]) for entity, w in self._where.items()]

    def position(self, entity: int) -> tuple[float, float] | None:
        """Where ``entity`` was inserted, or None."""
        old = self._where.get(entity)
        return None if old is None else (old[0], old[1])

    def query_points(
        self, x: float, y: float, radius: float
    ) -> list[tuple[float, int, float, float]]:
        """``(distance, id, px, py)`` of every point within ``radius`` of ``(x, y)``, sorted by
        (distance, id).

        A negative or NaN radius finds nothing. Raises ``ValueError`` if ``x`` or ``y`` is not
        finite.
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"query position ({x!r}, {y!r}) is not finite")
        if not radius >= 0 or not self._where:
            return []
        if math.isfinite(radius):
            # A hair of slack so points whose rounded distance is within the radius are never
            # in a bucket we skip (rounding can make a point just outside count as inside).
            reach = radius + 1e-9 * (1.0 + radius + abs(x) + abs(y))
            inv = self._inv
            lo_x = max(math.floor((x - reach) * inv), self._min_cx)
            hi_x = min(math.floor((x + reach) * inv), self._max_cx)
            lo_y = max(math.floor((y - reach) * inv), self._min_cy)
            hi_y = min(math.floor((y + reach) * inv), self._max_cy)
        else:
            lo_x, hi_x, lo_y, hi_y = self._min_cx, self._max_cx, self._min_cy, self._max_cy
        r2 = radius * radius
        # d2 <= r2 implies sqrt(d2) <= radius; the converse can fail by an ulp (sqrt rounds),
        # so points just past r2 are decided by their distance, as documented.
        r2_near = r2 * (1.0 + 1e-9)
        sqrt = math.sqrt
        found: list[tuple[float, int, float, float]] = []
        append = found.append
        rows = self._rows
        span = hi_y - lo_y
        ys = range(lo_y, hi_y + 1)
        buckets: Iterable[dict[int, tuple[float, float]] | None]
        for cx in range(lo_x, hi_x + 1):
            row = rows.get(cx)
            if row is None:
                continue
            if span < len(row):
                buckets = map(row.get, ys)  # None for an empty bucket
            else:
                # Fewer occupied buckets in this row than the circle spans: visit only those.
                buckets = [b for cy, b in row.items() if lo_y <= cy <= hi_y]
            for bucket in buckets:
                if bucket is None:
                    continue
                for ent, (px, py) in bucket.items():
                    dx = px - x
                    dy = py - y
                    d2 = dx * dx + dy * dy
                    if d2 <= r2 or (d2 <= r2_near and sqrt(d2) <= radius):
                        append((sqrt(d2), ent, px, py))
        found.sort()
        return found

    def query_dist(self, x: float, y: float, radius: float) -> list[tuple[float, int]]:
        """``(distance, id)`` of every point within ``radius`` of ``(x, y)``, sorted.

        Raises ``ValueError`` if ``x`` or ``y`` is not finite.
        """
        return [(d, ent) for d, ent, _, _ in self.query_points(x, y, radius)]

    def query(self, x: float, y: float, radius: float) -> list[int]:
        """Ids of every point within ``radius`` of ``(x, y)``, sorted by (distance, id).

        Raises ``ValueError`` if ``x`` or ``y`` is not finite.
        """
        return [ent for _, ent, _, _ in self.query_points(x, y, radius)]
