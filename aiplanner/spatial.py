"""UniformGrid: the spatial index behind perception, rebuilt every tick.

Agents are bucketed into square cells of ``cell_size`` map cells; a radius query visits only the
buckets the query circle overlaps, so finding neighbours costs O(k) in the number of agents
nearby, never an all-pairs scan. Rebuilding (``clear`` then ``insert`` for every agent) is O(n).

Also home of :func:`to_cell`, the one rounding rule from continuous positions to map cells that
snapshots, the validator's callers and the execution system all share.
"""

from __future__ import annotations

import math

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
    return ids sorted by (distance, id), so results never depend on insertion order.
    """

    __slots__ = ("_cell", "_cells", "_max_cx", "_max_cy", "_min_cx", "_min_cy", "_where")

    def __init__(self, cell_size: float = 4.0) -> None:
        if not (math.isfinite(cell_size) and cell_size > 0):
            raise ConfigError(f"cell_size must be a positive number, got {cell_size!r}")
        self._cell = float(cell_size)
        self._cells: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
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
        """Forget every point (the buckets' memory is released too)."""
        self._cells.clear()
        self._where.clear()
        self._min_cx = self._min_cy = 0
        self._max_cx = self._max_cy = -1

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return math.floor(x / self._cell), math.floor(y / self._cell)

    def insert(self, entity: int, x: float, y: float) -> None:
        """Add ``entity`` at ``(x, y)``, or move it there if present.

        Raises ``ValueError`` if a coordinate is NaN or infinite.
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"entity {entity}: position ({x!r}, {y!r}) is not finite")
        if entity in self._where:
            self.remove(entity)
        key = self._key(x, y)
        bucket = self._cells.get(key)
        if bucket is None:
            self._cells[key] = [(entity, x, y)]
        else:
            bucket.append((entity, x, y))
        self._where[entity] = (x, y)
        cx, cy = key
        if self._max_cx < self._min_cx:  # first point
            self._min_cx = self._max_cx = cx
            self._min_cy = self._max_cy = cy
        else:
            self._min_cx = min(self._min_cx, cx)
            self._max_cx = max(self._max_cx, cx)
            self._min_cy = min(self._min_cy, cy)
            self._max_cy = max(self._max_cy, cy)

    def remove(self, entity: int) -> bool:
        """Remove ``entity``; return whether it was present."""
        pos = self._where.pop(entity, None)
        if pos is None:
            return False
        key = self._key(*pos)
        bucket = self._cells[key]
        for i, item in enumerate(bucket):
            if item[0] == entity:
                del bucket[i]
                break
        if not bucket:
            del self._cells[key]
        return True

    def position(self, entity: int) -> tuple[float, float] | None:
        """Where ``entity`` was inserted, or None."""
        return self._where.get(entity)

    def query_dist(self, x: float, y: float, radius: float) -> list[tuple[float, int]]:
        """``(distance, id)`` of every point within ``radius`` of ``(x, y)``, sorted.

        A negative or NaN radius finds nothing. Raises ``ValueError`` if ``x`` or ``y`` is not
        finite.
        """
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"query position ({x!r}, {y!r}) is not finite")
        if not radius >= 0 or not self._where:
            return []
        r2 = radius * radius
        cells = self._cells
        buckets: list[list[tuple[int, float, float]]]
        if math.isfinite(radius):
            # A hair of slack so points whose rounded distance is within the radius are never
            # in a bucket we skip (rounding can make a point just outside count as inside).
            reach = radius + 1e-9 * (1.0 + radius + abs(x) + abs(y))
            lo_x, lo_y = self._key(x - reach, y - reach)
            hi_x, hi_y = self._key(x + reach, y + reach)
            lo_x, hi_x = max(lo_x, self._min_cx), min(hi_x, self._max_cx)
            lo_y, hi_y = max(lo_y, self._min_cy), min(hi_y, self._max_cy)
            if lo_x > hi_x or lo_y > hi_y:
                return []
            span = (hi_x - lo_x + 1) * (hi_y - lo_y + 1)
        else:
            span = len(cells) + 1
        if span <= len(cells):
            buckets = [
                b
                for cx in range(lo_x, hi_x + 1)
                for cy in range(lo_y, hi_y + 1)
                if (b := cells.get((cx, cy))) is not None
            ]
        else:
            # Fewer occupied buckets than the circle overlaps: scanning them all is cheaper.
            buckets = list(cells.values())
        found: list[tuple[float, int]] = []
        for bucket in buckets:
            for ent, px, py in bucket:
                dx = px - x
                dy = py - y
                d2 = dx * dx + dy * dy
                if d2 <= r2:
                    found.append((math.sqrt(d2), ent))
        found.sort()
        return found

    def query(self, x: float, y: float, radius: float) -> list[int]:
        """Ids of every point within ``radius`` of ``(x, y)``, sorted by (distance, id).

        Raises ``ValueError`` if ``x`` or ``y`` is not finite.
        """
        return [ent for _, ent in self.query_dist(x, y, radius)]
