"""A* paths: legal moves, optimal cost (against a Dijkstra reference), budget, determinism and
the exact tie-breaks of the documented open-list order (against a plain tuple-keyed A*)."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError
from aiplanner.pathfinding import find_path, path_cost, reachable


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


def reference_path(
    field: Battlefield, start: tuple[int, int], goal: tuple[int, int], max_nodes: int
) -> list[tuple[int, int]] | None:
    """The documented search, written plainly: open list ordered by (f, h, x, y), neighbours
    E, S, W, N, SE, NE, SW, NW, a node budget on expansions."""
    if start == goal:
        return []
    if not field.walkable(*goal):
        return None

    def h(c: tuple[int, int]) -> int:
        dx, dy = abs(c[0] - goal[0]), abs(c[1] - goal[1])
        return 10 * (dx + dy) - 6 * min(dx, dy)

    g = {start: 0}
    parent: dict[tuple[int, int], tuple[int, int]] = {}
    closed: set[tuple[int, int]] = set()
    heap = [(h(start), h(start), start[0], start[1])]
    expanded = 0
    while heap:
        *_, x, y = heapq.heappop(heap)
        if (x, y) in closed:
            continue
        if (x, y) == goal:
            path = [goal]
            while (node := parent[path[-1]]) != start:
                path.append(node)
            return path[::-1]
        expanded += 1
        if expanded > max_nodes:
            return None
        closed.add((x, y))
        for dx, dy in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            n = (x + dx, y + dy)
            if not field.walkable(*n) or n in closed:
                continue
            if dx and dy and not (field.walkable(x + dx, y) and field.walkable(x, y + dy)):
                continue
            ng = g[(x, y)] + (14 if dx and dy else 10)
            if ng < g.get(n, ng + 1):
                g[n] = ng
                parent[n] = (x, y)
                heapq.heappush(heap, (ng + h(n), h(n), n[0], n[1]))
    return None


@settings(max_examples=200, deadline=None)
@given(
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    blocked=st.frozensets(st.tuples(st.integers(-1, 12), st.integers(-1, 12)), max_size=70),
    start=st.tuples(st.integers(-3, 14), st.integers(-3, 14)),
    goal=st.tuples(st.integers(-1, 12), st.integers(-1, 12)),
    max_nodes=st.sampled_from([1, 3, 12, 4000]),
)
def test_same_path_as_the_documented_order(
    size: tuple[int, int],
    blocked: frozenset[tuple[int, int]],
    start: tuple[int, int],
    goal: tuple[int, int],
    max_nodes: int,
) -> None:
    # Starts may lie on walls or off the map (one cell off still has neighbours on it).
    field = Battlefield(*size, blocked=blocked)
    assert find_path(field, start, goal, max_nodes) == reference_path(field, start, goal, max_nodes)


def test_start_just_off_the_map_walks_on() -> None:
    field = Battlefield(4, 4)
    assert find_path(field, (-1, 0), (1, 0)) == [(0, 0), (1, 0)]
    assert find_path(field, (4, 3), (3, 3)) == [(3, 3)]
    assert find_path(field, (-2, 0), (1, 0)) is None  # no neighbour on the map


def test_maps_with_the_same_size_do_not_share_walls() -> None:
    open_map = Battlefield(5, 1)
    walled = Battlefield(5, 1, blocked=frozenset({(2, 0)}))
    assert find_path(open_map, (0, 0), (4, 0)) == [(1, 0), (2, 0), (3, 0), (4, 0)]
    assert find_path(walled, (0, 0), (4, 0)) is None
    assert find_path(open_map, (0, 0), (4, 0)) is not None


@settings(max_examples=100, deadline=None)
@given(
    blocked=st.frozensets(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=40),
    start=st.tuples(st.integers(-1, 10), st.integers(-1, 10)),
    max_cost=st.sampled_from([0, 10, 14, 30, 60]),
)
def test_reachable_is_every_cell_within_the_cost(
    blocked: frozenset[tuple[int, int]], start: tuple[int, int], max_cost: int
) -> None:
    field = Battlefield(10, 10, blocked=blocked)
    found = reachable(field, start, max_cost)
    assert found[start] == 0
    for x in range(10):
        for y in range(10):
            if (x, y) == start:
                continue
            best = dijkstra(field, start, (x, y)) if field.walkable(x, y) else None
            expected = best if best is not None and best <= max_cost else None
            assert found.get((x, y)) == expected, (x, y)
