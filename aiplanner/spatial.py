"""UniformGrid: the spatial index behind perception, rebuilt every tick.

Agents are bucketed into square cells of ``cell_size`` map cells; a radius query visits only the
buckets the query circle overlaps, so finding neighbours costs O(k) in the number of agents
nearby, never an all-pairs scan. Rebuilding (``clear`` then ``insert`` for every agent) is O(n).

Also home of :func:`to_cell`, the one rounding rule from continuous positions to map cells that
snapshots, the validator's callers and the execution system all share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

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
        # Buckets as rows of columns: looking one up needs no tuple key built per probe.
        self._rows: dict[int, dict[int, list[tuple[int, float, float]]]] = {}
        self._where: dict[int, tuple[float, float]] = {}
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

    def insert(self, entity: int, x: float, y: float) -> None:
        """Add ``entity`` at ``(x, y)``, or move it there if present.

        Raises ``ValueError`` if a coordinate is NaN or infinite.
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"entity {entity}: position ({x!r}, {y!r}) is not finite")
        if entity in self._where:
            self.remove(entity)
        inv = self._inv
        cx = math.floor(x * inv)
        cy = math.floor(y * inv)
        row = self._rows.get(cx)
        if row is None:
            self._rows[cx] = {cy: [(entity, x, y)]}
        else:
            bucket = row.get(cy)
            if bucket is None:
                row[cy] = [(entity, x, y)]
            else:
                bucket.append((entity, x, y))
        self._where[entity] = (x, y)
        if self._max_cx < self._min_cx:  # first point
            self._min_cx = self._max_cx = cx
            self._min_cy = self._max_cy = cy
        else:
            if cx < self._min_cx:
                self._min_cx = cx
            elif cx > self._max_cx:
                self._max_cx = cx
            if cy < self._min_cy:
                self._min_cy = cy
            elif cy > self._max_cy:
                self._max_cy = cy

    def rebuild(self, points: Iterable[tuple[int, float, float]]) -> None:
        """Replace the contents with ``points`` (``(id, x, y)``): the per-tick rebuild.

        Same result as :meth:`clear` then :meth:`insert` for each point, in one tight loop.
        Raises ``ValueError`` (keeping the points before it) for a non-finite coordinate.
        """
        self.clear()
        inv = self._inv
        floor = math.floor
        isfinite = math.isfinite
        rows = self._rows
        where = self._where
        try:
            for entity, x, y in points:
                if entity in where or not (isfinite(x) and isfinite(y)):
                    self.insert(entity, x, y)  # the slow path moves, or raises
                    continue
                cx = floor(x * inv)
                cy = floor(y * inv)
                row = rows.get(cx)
                if row is None:
                    rows[cx] = {cy: [(entity, x, y)]}
                else:
                    bucket = row.get(cy)
                    if bucket is None:
                        row[cy] = [(entity, x, y)]
                    else:
                        bucket.append((entity, x, y))
                where[entity] = (x, y)
        finally:
            # Bounds once at the end: cheaper than per point, as there are fewer buckets.
            if rows:
                self._min_cx = min(rows)
                self._max_cx = max(rows)
                self._min_cy = min(min(row) for row in rows.values())
                self._max_cy = max(max(row) for row in rows.values())

    def remove(self, entity: int) -> bool:
        """Remove ``entity``; return whether it was present."""
        pos = self._where.pop(entity, None)
        if pos is None:
            return False
        cx = math.floor(pos[0] * self._inv)
        cy = math.floor(pos[1] * self._inv)
        row = self._rows[cx]
        bucket = row[cy]
        for i, item in enumerate(bucket):
            if item[0] == entity:
                del bucket[i]
                break
        if not bucket:
            del row[cy]
            if not row:
                del self._rows[cx]
        return True

    def position(self, entity: int) -> tuple[float, float] | None:
        """Where ``entity`` was inserted, or None."""
        return self._where.get(entity)

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
        sqrt = math.sqrt
        found: list[tuple[float, int, float, float]] = []
        append = found.append
        rows = self._rows
        span = hi_y - lo_y
        for cx in range(lo_x, hi_x + 1):
            row = rows.get(cx)
            if row is None:
                continue
            if span < len(row):
                for cy in range(lo_y, hi_y + 1):
                    bucket = row.get(cy)
                    if bucket is None:
                        continue
                    for ent, px, py in bucket:
                        d2 = (px - x) * (px - x) + (py - y) * (py - y)
                        if d2 <= r2:
                            append((sqrt(d2), ent, px, py))
            else:
                # Fewer occupied buckets in this row than the circle spans: visit only those.
                for cy, bucket in row.items():
                    if lo_y <= cy <= hi_y:
                        for ent, px, py in bucket:
                            d2 = (px - x) * (px - x) + (py - y) * (py - y)
                            if d2 <= r2:
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
