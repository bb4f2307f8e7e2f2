"""A* on the Battlefield grid: 8-connected, no corner cutting, a bounded node budget.

Costs are integers (10 straight, 14 diagonal) so comparisons are exact, and the open list is
ordered by (f, h, x, y): the same map and endpoints give the same path on every machine.
"""

from __future__ import annotations

import heapq

from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError

__all__ = ["find_path", "path_cost", "reachable"]

_STRAIGHT = 10
_DIAGONAL = 14
# Straight moves first: with equal costs the order only matters for determinism.
_MOVES = (
    (1, 0, _STRAIGHT),
    (0, 1, _STRAIGHT),
    (-1, 0, _STRAIGHT),
    (0, -1, _STRAIGHT),
    (1, 1, _DIAGONAL),
    (1, -1, _DIAGONAL),
    (-1, 1, _DIAGONAL),
    (-1, -1, _DIAGONAL),
)


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
    width, height, blocked = field.width, field.height, field.blocked
    gx, gy = goal
    if not (0 <= gx < width and 0 <= gy < height) or goal in blocked:
        return None

    def h(x: int, y: int) -> int:
        dx, dy = abs(x - gx), abs(y - gy)
        # Octile distance: exact on an empty map, so the heuristic is consistent.
        return _STRAIGHT * (dx + dy) + (_DIAGONAL - 2 * _STRAIGHT) * min(dx, dy)

    sx, sy = start
    best_g: dict[tuple[int, int], int] = {start: 0}
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    closed: set[tuple[int, int]] = set()
    h0 = h(sx, sy)
    heap: list[tuple[int, int, int, int]] = [(h0, h0, sx, sy)]
    heappush, heappop = heapq.heappush, heapq.heappop
    expanded = 0
    while heap:
        _, _, x, y = heappop(heap)
        node = (x, y)
        if node in closed:
            continue
        if node == goal:
            path = [node]
            while (node := parent[node]) != start:
                path.append(node)
            path.reverse()
            return path
        expanded += 1
        if expanded > max_nodes:
            return None
        closed.add(node)
        g = best_g[node]
        # Walkability of the four straight neighbours, tested once: the diagonal moves reuse
        # them for their no-corner-cutting rule (the hot loop of every MoveTo; no calls here).
        row_in = 0 <= y < height
        col_in = 0 <= x < width
        east = row_in and 0 <= x + 1 < width and (x + 1, y) not in blocked
        south = col_in and 0 <= y + 1 < height and (x, y + 1) not in blocked
        west = row_in and 0 <= x - 1 < width and (x - 1, y) not in blocked
        north = col_in and 0 <= y - 1 < height and (x, y - 1) not in blocked
        # The order of _MOVES: straight moves first, then the diagonals.
        for nx, ny, cost, ok in (
            (x + 1, y, _STRAIGHT, east),
            (x, y + 1, _STRAIGHT, south),
            (x - 1, y, _STRAIGHT, west),
            (x, y - 1, _STRAIGHT, north),
            (x + 1, y + 1, _DIAGONAL, east and south and (x + 1, y + 1) not in blocked),
            (x + 1, y - 1, _DIAGONAL, east and north and (x + 1, y - 1) not in blocked),
            (x - 1, y + 1, _DIAGONAL, west and south and (x - 1, y + 1) not in blocked),
            (x - 1, y - 1, _DIAGONAL, west and north and (x - 1, y - 1) not in blocked),
        ):
            if not ok:
                continue
            cell = (nx, ny)
            if cell in closed:
                continue
            ng = g + cost
            if ng < best_g.get(cell, ng + 1):
                best_g[cell] = ng
                parent[cell] = node
                dx = nx - gx if nx > gx else gx - nx
                dy = ny - gy if ny > gy else gy - ny
                nh = _STRAIGHT * (dx + dy) + (_DIAGONAL - 2 * _STRAIGHT) * (dx if dx < dy else dy)
                heappush(heap, (ng + nh, nh, nx, ny))
    return None


def reachable(
    field: Battlefield, start: tuple[int, int], max_cost: int
) -> dict[tuple[int, int], int]:
    """Every walkable cell within ``max_cost`` of ``start`` (A*'s units: 10 per straight step, 14
    per diagonal one), with its shortest walking cost; ``start`` itself maps to 0.

    The same moves as :func:`find_path` (8 neighbours, no corner cutting); bounded by
    ``max_cost``, so at most about ``(2 * max_cost / 10 + 1) ** 2`` cells are visited.
    """
    best: dict[tuple[int, int], int] = {start: 0}
    heap: list[tuple[int, int, int]] = [(0, start[0], start[1])]
    done: set[tuple[int, int]] = set()
    while heap:
        g, x, y = heapq.heappop(heap)
        if (x, y) in done:
            continue
        done.add((x, y))
        for dx, dy, cost in _MOVES:
            nx, ny = x + dx, y + dy
            ng = g + cost
            if ng > max_cost or not field.walkable(nx, ny) or (nx, ny) in done:
                continue
            if dx and dy and not (field.walkable(x + dx, y) and field.walkable(x, y + dy)):
                continue
            if ng < best.get((nx, ny), ng + 1):
                best[(nx, ny)] = ng
                heapq.heappush(heap, (ng, nx, ny))
    return best
