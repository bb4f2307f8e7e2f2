"""A* paths: legal moves, optimal cost (against a Dijkstra reference), budget and determinism."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError
from aiplanner.pathfinding import find_path, path_cost


def legal(field: Battlefield, start: tuple[int, int], path: list[tuple[int, int]]) -> bool:
    px, py = start
    for x, y in path:
        dx, dy = x - px, y - py
        if max(abs(dx), abs(dy)) != 1 or not field.walkable(x, y):
            return False
        if dx and dy and not (field.walkable(px + dx, py) and field.walkable(px, py + dy)):
            return False
        px, py = x, y
    return True


def dijkstra(field: Battlefield, start: tuple[int, int], goal: tuple[int, int]) -> int | None:
    dist = {start: 0}
    heap = [(0, start)]
    while heap:
        d, (x, y) = heapq.heappop(heap)
        if (x, y) == goal:
            return d
        if d > dist[(x, y)]:
            continue
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if not (dx or dy):
                    continue
                nx, ny = x + dx, y + dy
                if not field.walkable(nx, ny):
                    continue
                if dx and dy and not (field.walkable(x + dx, y) and field.walkable(x, y + dy)):
                    continue
                nd = d + (14 if dx and dy else 10)
                if nd < dist.get((nx, ny), nd + 1):
                    dist[(nx, ny)] = nd
                    heapq.heappush(heap, (nd, (nx, ny)))
    return None


def test_straight_line_on_open_map() -> None:
    field = Battlefield(10, 10)
    assert find_path(field, (0, 0), (3, 0)) == [(1, 0), (2, 0), (3, 0)]
    assert find_path(field, (0, 0), (2, 2)) == [(1, 1), (2, 2)]


def test_start_equals_goal_is_empty_path() -> None:
    assert find_path(Battlefield(5, 5), (2, 2), (2, 2)) == []


def test_goes_around_a_wall() -> None:
    wall = frozenset((3, y) for y in range(0, 8))
    field = Battlefield(10, 10, blocked=wall)
    path = find_path(field, (0, 0), (6, 0))
    assert path is not None and path[-1] == (6, 0)
    assert legal(field, (0, 0), path)
    assert all(c not in wall for c in path)
    assert path_cost((0, 0), path) == dijkstra(field, (0, 0), (6, 0))


def test_no_corner_cutting() -> None:
    # (0,0) -> (1,1) diagonally would slip between two blocked cells' corners.
    field = Battlefield(3, 3, blocked=frozenset({(1, 0)}))
    path = find_path(field, (0, 0), (1, 1))
    assert path == [(0, 1), (1, 1)]


def test_blocked_out_of_bounds_or_walled_off_goal_is_none() -> None:
    ring = frozenset({(4, 5), (6, 5), (5, 4), (5, 6), (4, 4), (6, 6), (4, 6), (6, 4)})
    field = Battlefield(10, 10, blocked=ring)
    assert find_path(field, (0, 0), (5, 5)) is None  # enclosed
    assert find_path(field, (0, 0), (4, 5)) is None  # blocked
    assert find_path(field, (0, 0), (10, 0)) is None  # off the map


def test_node_budget_bounds_the_search() -> None:
    field = Battlefield(200, 200)
    assert find_path(field, (0, 0), (150, 0), max_nodes=10) is None
    assert find_path(field, (0, 0), (150, 0), max_nodes=4000) is not None
    with pytest.raises(ConfigError):
        find_path(field, (0, 0), (1, 0), max_nodes=0)


def test_start_on_a_blocked_cell_can_walk_off() -> None:
    field = Battlefield(5, 5, blocked=frozenset({(0, 0)}))
    assert find_path(field, (0, 0), (2, 0)) == [(1, 0), (2, 0)]


def test_path_cost_rejects_jumps() -> None:
    with pytest.raises(ValueError):
        path_cost((0, 0), [(2, 0)])


@settings(max_examples=150, deadline=None)
@given(
    blocked=st.frozensets(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=60),
    start=st.tuples(st.integers(0, 11), st.integers(0, 11)),
    goal=st.tuples(st.integers(0, 11), st.integers(0, 11)),
)
def test_optimal_and_legal_against_dijkstra(
    blocked: frozenset[tuple[int, int]], start: tuple[int, int], goal: tuple[int, int]
) -> None:
    field = Battlefield(12, 12, blocked=blocked - {start})
    path = find_path(field, start, goal)
    best = dijkstra(field, start, goal)
    if best is None:
        assert path is None
    else:
        assert path is not None
        assert legal(field, start, path)
        assert (path[-1] if path else start) == goal
        assert path_cost(start, path) == best
        assert find_path(field, start, goal) == path  # deterministic
