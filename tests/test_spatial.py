"""UniformGrid against a brute-force reference, and the shared cell rounding rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiplanner.errors import ConfigError
from aiplanner.spatial import UniformGrid, to_cell

coord = st.floats(min_value=-50, max_value=150, allow_nan=False, allow_infinity=False)
points = st.dictionaries(st.integers(0, 10_000), st.tuples(coord, coord), max_size=60)


def brute(pts: dict[int, tuple[float, float]], x: float, y: float, r: float) -> list[int]:
    found = []
    for ent, (px, py) in pts.items():
        d = math.sqrt((px - x) ** 2 + (py - y) ** 2)
        if d <= r:
            found.append((d, ent))
    return [ent for _, ent in sorted(found)]


@settings(max_examples=200, deadline=None)
@given(
    pts=points,
    x=coord,
    y=coord,
    r=st.floats(min_value=0, max_value=80),
    cell=st.sampled_from([0.5, 1.0, 3.0, 4.0, 17.0]),
)
def test_query_matches_brute_force(
    pts: dict[int, tuple[float, float]], x: float, y: float, r: float, cell: float
) -> None:
    grid = UniformGrid(cell)
    for ent, (px, py) in pts.items():
        grid.insert(ent, px, py)
    assert grid.query(x, y, r) == brute(pts, x, y, r)
    assert len(grid) == len(pts)


@settings(max_examples=100, deadline=None)
@given(pts=points, moves=points, x=coord, y=coord, r=st.floats(min_value=0, max_value=60))
def test_reinsert_moves_and_remove(
    pts: dict[int, tuple[float, float]],
    moves: dict[int, tuple[float, float]],
    x: float,
    y: float,
    r: float,
) -> None:
    grid = UniformGrid(4.0)
    for ent, (px, py) in pts.items():
        grid.insert(ent, px, py)
    for ent, (px, py) in moves.items():
        grid.insert(ent, px, py)
    merged = {**pts, **moves}
    assert grid.query(x, y, r) == brute(merged, x, y, r)
    gone = sorted(merged)[: len(merged) // 2]
    for ent in gone:
        assert grid.remove(ent)
        assert not grid.remove(ent)
    left = {e: p for e, p in merged.items() if e not in gone}
    assert grid.query(x, y, r) == brute(left, x, y, r)


@settings(max_examples=100, deadline=None)
@given(
    old=points,
    new=st.lists(st.tuples(st.integers(0, 50), coord, coord), max_size=60),
    x=coord,
    y=coord,
    r=st.floats(min_value=0, max_value=80),
)
def test_rebuild_equals_clear_and_insert(
    old: dict[int, tuple[float, float]],
    new: list[tuple[int, float, float]],
    x: float,
    y: float,
    r: float,
) -> None:
    rebuilt = UniformGrid(3.0)
    for ent, (px, py) in old.items():
        rebuilt.insert(ent, px, py)
    rebuilt.rebuild(new)  # repeated ids: the last position wins, as with insert
    expected = {ent: (px, py) for ent, px, py in new}
    assert rebuilt.query(x, y, r) == brute(expected, x, y, r)
    assert rebuilt.query(x, y, math.inf) == brute(expected, x, y, math.inf)
    assert len(rebuilt) == len(expected)


steps = st.sampled_from([0.0, 0.0, 0.0, 0.1, -0.3, 2.5, -7.0])
small_world = st.dictionaries(st.integers(0, 60), st.tuples(coord, coord), max_size=40)


@settings(max_examples=100, deadline=None)
@given(
    start=small_world,
    changes=st.lists(
        st.tuples(
            st.dictionaries(st.integers(0, 60), st.tuples(steps, steps)),  # moves (or arrivals)
            st.sets(st.integers(0, 60)),  # departures
        ),
        max_size=6,
    ),
    x=coord,
    y=coord,
    r=st.floats(min_value=0, max_value=80),
)
def test_successive_rebuilds_follow_moves_arrivals_and_departures(
    start: dict[int, tuple[float, float]],
    changes: list[tuple[dict[int, tuple[float, float]], set[int]]],
    x: float,
    y: float,
    r: float,
) -> None:
    # The incremental update: standing still, moving within a bucket or across, leaving, arriving.
    grid = UniformGrid(3.0)
    frame = dict(start)
    grid.rebuild([(e, px, py) for e, (px, py) in frame.items()])
    for moved, left in changes:
        frame = {e: p for e, p in frame.items() if e not in left}
        for e, (dx, dy) in moved.items():
            px, py = frame.get(e, (float(e), 50.0 - e))
            frame[e] = (px + dx, py + dy)
        grid.rebuild([(e, px, py) for e, (px, py) in frame.items()])
        assert grid.query(x, y, r) == brute(frame, x, y, r)
        assert grid.query(x, y, math.inf) == brute(frame, x, y, math.inf)
        assert len(grid) == len(frame)
        assert all(grid.position(e) == p for e, p in frame.items())


def test_failed_rebuild_keeps_exactly_the_points_before_the_bad_one() -> None:
    grid = UniformGrid(2.0)
    grid.rebuild([(1, 0.0, 0.0), (2, 5.0, 5.0), (3, 9.0, 9.0)])
    with pytest.raises(ValueError):
        grid.rebuild([(3, 9.5, 9.0), (1, 0.0, 0.0), (4, math.inf, 0.0), (2, 5.0, 5.0)])
    assert grid.query(0.0, 0.0, math.inf) == [1, 3]
    assert grid.position(3) == (9.5, 9.0) and grid.position(2) is None and 4 not in grid


def test_rebuild_rejects_non_finite_points() -> None:
    grid = UniformGrid()
    with pytest.raises(ValueError):
        grid.rebuild([(1, 0.0, 0.0), (2, math.nan, 1.0)])
    assert grid.query(0.0, 0.0, 1.0) == [1]


def test_ties_sorted_by_id_and_radius_inclusive() -> None:
    grid = UniformGrid(1.0)
    for ent in (9, 3, 7):
        grid.insert(ent, 2.0, 0.0)
    grid.insert(1, 0.0, 2.0)  # same distance from the origin as the others
    grid.insert(2, 0.0, 2.0001)  # just outside
    assert grid.query(0.0, 0.0, 2.0) == [1, 3, 7, 9]


def test_query_dist_returns_distances() -> None:
    grid = UniformGrid(2.0)
    grid.insert(5, 3.0, 4.0)
    grid.insert(6, 1.0, 0.0)
    assert grid.query_dist(0.0, 0.0, 10.0) == [(1.0, 6), (5.0, 5)]


def test_clear_empties_and_huge_radius_finds_everything() -> None:
    grid = UniformGrid(4.0)
    grid.insert(1, -1000.0, 5.0)
    grid.insert(2, 1e6, -1e6)
    assert grid.query(0.0, 0.0, math.inf) == [1, 2]
    assert grid.query(0.0, 0.0, 1e9) == [1, 2]
    grid.clear()
    assert len(grid) == 0
    assert grid.query(0.0, 0.0, math.inf) == []
    assert grid.position(1) is None


def test_negative_or_nan_radius_finds_nothing() -> None:
    grid = UniformGrid()
    grid.insert(1, 0.0, 0.0)
    assert grid.query(0.0, 0.0, -1.0) == []
    assert grid.query(0.0, 0.0, math.nan) == []


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError):
        UniformGrid(0.0)
    with pytest.raises(ConfigError):
        UniformGrid(math.nan)
    grid = UniformGrid()
    with pytest.raises(ValueError):
        grid.insert(1, math.nan, 0.0)
    with pytest.raises(ValueError):
        grid.insert(1, 0.0, math.inf)
    with pytest.raises(ValueError):
        grid.query(math.nan, 0.0, 1.0)
    assert 1 not in grid


def test_query_visits_only_nearby_buckets() -> None:
    # Structural check that no all-pairs scan happens: a far-away crowd is never looked at.
    grid = UniformGrid(4.0)
    for i in range(1000):
        grid.insert(i, 1000.0 + (i % 30), 1000.0 + (i // 30))
    grid.insert(5000, 1.0, 1.0)
    looked: list[int] = []
    rows = grid._rows  # white box: record which rows of buckets the query reads

    class Spy(dict[int, dict[int, dict[int, tuple[float, float]]]]):
        def get(self, key, default=None):  # type: ignore[no-untyped-def]
            looked.append(key)
            return super().get(key, default)

    grid._rows = Spy(rows)
    assert grid.query(0.0, 0.0, 3.0) == [5000]
    assert looked and all(abs(cx) <= 1 for cx in looked)


@pytest.mark.parametrize(
    ("x", "y", "cell"),
    [
        (0.49, 0.5, (0, 1)),
        (1.5, 2.5, (2, 3)),
        (-0.5, -1.5, (-1, -2)),
        (-0.49, 3.0, (0, 3)),
        (7.0, 7.999, (7, 8)),
    ],
)
def test_to_cell_rounds_half_away_from_zero(x: float, y: float, cell: tuple[int, int]) -> None:
    assert to_cell(x, y) == cell


@settings(max_examples=100, deadline=None)
@given(
    old=points,
    new=st.lists(st.tuples(st.integers(0, 50), coord, coord), max_size=60),
    bad_at=st.none() | st.integers(0, 59),
)
def test_rebuild_columns_equals_clear_and_insert_up_to_a_bad_point(
    old: dict[int, tuple[float, float]],
    new: list[tuple[int, float, float]],
    bad_at: int | None,
) -> None:
    if bad_at is not None and bad_at < len(new):
        new[bad_at] = (new[bad_at][0], math.nan, 0.0)
    else:
        bad_at = None
    grid = UniformGrid(3.0)
    for ent, (px, py) in old.items():
        grid.insert(ent, px, py)
    columns = ([p[0] for p in new], [p[1] for p in new], [p[2] for p in new])
    if bad_at is None:
        grid.rebuild_columns(*columns)
    else:
        with pytest.raises(ValueError):
            grid.rebuild_columns(*columns)
    # The points before a bad one (each id at its last position); nothing else.
    expected = {ent: (px, py) for ent, px, py in new[:bad_at]}
    assert sorted(grid.points()) == sorted((e, px, py) for e, (px, py) in expected.items())
    assert grid.query(0.0, 0.0, math.inf) == brute(expected, 0.0, 0.0, math.inf)


def test_rebuild_columns_of_different_lengths_is_refused_and_changes_nothing() -> None:
    grid = UniformGrid(2.0)
    grid.rebuild([(1, 0.0, 0.0)])
    with pytest.raises(ValueError, match="columns"):
        grid.rebuild_columns([1, 2], [0.0, 1.0], [0.0])
    assert grid.points() == [(1, 0.0, 0.0)]


@pytest.mark.parametrize("cell", [0.5, 4.0])
def test_a_point_whose_distance_rounds_to_the_radius_is_found(cell: float) -> None:
    # dx*dx + dy*dy is a hair over radius**2, but sqrt rounds it to exactly the radius: inside,
    # as the documented distance says (found by the brute-force comparison above).
    grid = UniformGrid(cell)
    grid.insert(0, 0.0, 0.0)
    y = 1.192092896e-07
    assert 8.0**2 + y**2 > 8.0 * 8.0 and math.sqrt(8.0**2 + y**2) == 8.0
    assert grid.query(8.0, y, 8.0) == [0] == brute({0: (0.0, 0.0)}, 8.0, y, 8.0)
