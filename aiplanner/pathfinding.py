"""A* on the Battlefield grid: 8-connected, no corner cutting, a bounded node budget.

Costs are integers (10 straight, 14 diagonal) so comparisons are exact, and the open list is
ordered by (f, h, x, y): the same map and endpoints give the same path on every machine.

The hot loop works on flat arrays: each map is turned once into a walkability bytearray with a
blocked border two cells wide (no bounds tests per neighbour, even from a start just off the
map), cells are numbered column-major (``(x + 2) * (height + 4) + y + 2``: numeric order is
(x, y) order), and each open-list entry is one integer ``(f * H + h) * N + cell`` whose order is
exactly (f, h, x, y)'s.
"""

from __future__ import annotations

import heapq
from typing import Final

from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError

__all__ = ["find_path", "path_cost", "reachable"]

_STRAIGHT: Final = 10
_DIAGONAL: Final = 14
_GRIDS_KEPT: Final = 8  # maps whose flat grid is kept (one per map in play, usually one)
_BORDER: Final = 2  # blocked cells around the map in the flat grid


class _Grid:
    """A map as flat arrays: ``open[c]`` is 1 for a walkable cell, 0 for a wall or the border;
    ``moves`` the 8 neighbour offsets with their costs, the two straight offsets a diagonal
    passes between (0 for straight moves) and the (dx, dy) of the move, straight moves first."""

    __slots__ = ("cells", "height", "moves", "open", "stride", "width")

    def __init__(self, field: Battlefield) -> None:
        self.width = w = field.width
        self.height = h = field.height
        self.stride = s = h + 2 * _BORDER  # one column of the bordered grid
        self.cells = (w + 2 * _BORDER) * s
        walkable = bytearray(self.cells)
        for x in range(w):
            base = self._at(x, 0)
            walkable[base : base + h] = b"\x01" * h
        for x, y in field.blocked:
            if 0 <= x < w and 0 <= y < h:
                walkable[self._at(x, y)] = 0
        self.open = bytes(walkable)
        east, south = s, 1
        # The order of the original move list: E, S, W, N, then SE, NE, SW, NW.
        self.moves: tuple[tuple[int, int, int, int, int, int], ...] = (
            (east, _STRAIGHT, 0, 0, 1, 0),
            (south, _STRAIGHT, 0, 0, 0, 1),
            (-east, _STRAIGHT, 0, 0, -1, 0),
            (-south, _STRAIGHT, 0, 0, 0, -1),
            (east + south, _DIAGONAL, east, south, 1, 1),
            (east - south, _DIAGONAL, east, -south, 1, -1),
            (-east + south, _DIAGONAL, -east, south, -1, 1),
            (-east - south, _DIAGONAL, -east, -south, -1, -1),
        )

    def cell(self, x: int, y: int) -> int | None:
        """The flat number of (x, y), None for a cell more than one off the map (no neighbour
        of such a cell is on the map)."""
        if -1 <= x <= self.width and -1 <= y <= self.height:
            return self._at(x, y)
        return None

    def xy(self, c: int) -> tuple[int, int]:
        """The (x, y) of flat number ``c``."""
        x, y = divmod(c, self.stride)
        return x - _BORDER, y - _BORDER

    def _at(self, x: int, y: int) -> int:
        return (x + _BORDER) * self.stride + y + _BORDER


_grids: dict[int, tuple[Battlefield, _Grid]] = {}


def _grid(field: Battlefield) -> _Grid:
    """``field``'s flat grid, built on first use (keyed by identity: maps are frozen)."""
    kept = _grids.get(id(field))
    if kept is not None and kept[0] is field:
        return kept[1]
    if len(_grids) >= _GRIDS_KEPT:
        _grids.clear()
    grid = _Grid(field)
    _grids[id(field)] = (field, grid)  # the map is kept too, so its id is not reused
    return grid


def path_cost(start: tuple[int, int], path: list[tuple[int, int]]) -> int:
    """The cost of walking ``path`` from ``start`` in A*'s units (10 per straight step, 14 per
    diagonal one). Raises ``ValueError`` if two consecutive cells are not neighbours."""
    cost = 0
    px, py = start
    for x, y in path:
        dx, dy = abs(x - px), abs(y - py)
        if max(dx, dy) != 1:
            raise ValueError(f"({px}, {py}) -> ({x}, {y}) is not a single step")
        cost += _DIAGONAL if dx and dy else _STRAIGHT
        px, py = x, y
    return cost


def find_path(
    field: Battlefield,
    start: tuple[int, int],
    goal: tuple[int, int],
    max_nodes: int = 4000,
) -> list[tuple[int, int]] | None:
    """A shortest path from ``start`` to ``goal``: the cells to step through after ``start``,
    ending with ``goal`` (``[]`` when they are equal).

    Moves go to the 8 neighbours; a diagonal move needs both cells it passes between walkable.
    ``start`` itself need not be walkable (an agent may have been pushed onto a wall), ``goal``
    must be. Returns None if the goal is not walkable, unreachable, or more than ``max_nodes``
    cells would have to be expanded. Raises :class:`ConfigError` if ``max_nodes < 1``.
    """
    if max_nodes < 1:
        raise ConfigError(f"max_nodes must be at least 1, got {max_nodes}")
    if start == goal:
        return []
    gx, gy = goal
    if not field.walkable(gx, gy):
        return None
    grid = _grid(field)
    first = grid.cell(*start)
    if first is None:  # no neighbour of a start this far out is on the map
        return None
    target = grid._at(gx, gy)
    walkable = grid.open
    n = grid.cells
    # f and h both fit under this bound many times over: (f * bound + h) * n + cell orders
    # entries by f, then h, then the cell (x, then y).
    bound = _DIAGONAL * (grid.width + grid.height + 4) + 1
    stride = grid.stride
    xy = grid.xy
    moves = grid.moves
    sx, sy = start
    dx, dy = abs(sx - gx), abs(sy - gy)
    h0 = _STRAIGHT * (dx + dy) + (_DIAGONAL - 2 * _STRAIGHT) * min(dx, dy)
    unseen = 1 << 62  # more than any cost
    best_g = [unseen] * n
    best_g[first] = 0
    parent = [0] * n
    # Walkable and not yet expanded, in one test: a copy of the map, cells cleared as expanded.
    free = bytearray(walkable)
    free[first] = 1  # the start may stand on a wall; it is expanded first
    heap = [(h0 * bound + h0) * n + first]
    heappush, heappop = heapq.heappush, heapq.heappop
    expanded = 0
    while heap:
        c = heappop(heap) % n
        if not free[c]:
            continue
        if c == target:
            path = []
            while c != first:
                path.append(xy(c))
                c = parent[c]
            path.reverse()
            return path
        expanded += 1
        if expanded > max_nodes:
            return None
        free[c] = 0
        g = best_g[c]
        rx, ry = divmod(c, stride)  # the cell relative to the goal: (x - gx, y - gy)
        rx -= gx + _BORDER
        ry -= gy + _BORDER
        for step, cost, side_a, side_b, mx, my in moves:
            nc = c + step
            if not free[nc]:
                continue
            if side_a and not (walkable[c + side_a] and walkable[c + side_b]):
                continue
            ng = g + cost
            if ng < best_g[nc]:
                best_g[nc] = ng
                parent[nc] = c
                ddx = rx + mx
                ddy = ry + my
                if ddx < 0:
                    ddx = -ddx
                if ddy < 0:
                    ddy = -ddy
                nh = _STRAIGHT * (ddx + ddy) + (_DIAGONAL - 2 * _STRAIGHT) * (
                    ddx if ddx < ddy else ddy
                )
                heappush(heap, ((ng + nh) * bound + nh) * n + nc)
    return None


def reachable(
    field: Battlefield, start: tuple[int, int], max_cost: int
) -> dict[tuple[int, int], int]:
    """Every walkable cell within ``max_cost`` of ``start`` (A*'s units: 10 per straight step, 14
    per diagonal one), with its shortest walking cost; ``start`` itself maps to 0.

    The same moves as :func:`find_path` (8 neighbours, no corner cutting); bounded by
    ``max_cost``, so at most about ``(2 * max_cost / 10 + 1) ** 2`` cells are visited.
    """
    grid = _grid(field)
    first = grid.cell(*start)
    if first is None:
        return {start: 0}
    walkable = grid.open
    n = grid.cells
    best: dict[int, int] = {first: 0}
    done = bytearray(n)
    heap = [first]  # entries g * n + cell: by cost, then the cell
    heappush, heappop = heapq.heappush, heapq.heappop
    while heap:
        g, c = divmod(heappop(heap), n)
        if done[c]:
            continue
        done[c] = 1
        for step, cost, side_a, side_b, _, _ in grid.moves:
            nc = c + step
            ng = g + cost
            if ng > max_cost or not walkable[nc] or done[nc]:
                continue
            if side_a and not (walkable[c + side_a] and walkable[c + side_b]):
                continue
            if ng < best.get(nc, ng + 1):
                best[nc] = ng
                heappush(heap, ng * n + nc)
    xy = grid.xy
    return {xy(c): g for c, g in best.items()}
