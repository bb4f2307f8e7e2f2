"""Battle maps: small JSON files under ``demo_game/assets/maps/``, validated into a frozen
:class:`MapSpec`.

The shipped maps are package data, found through :mod:`importlib.resources`, so an installed
wheel has them as a checkout does (they used to live in the top-level ``assets/maps``, which no
wheel carries).

A map file holds one object::

    {
      "name": "Crossroads",                 # optional title (default: the file name)
      "description": "...",                 # optional
      "objective_radius": 2,                # optional, cells (1..8, default 2)
      "hold_seconds": 5.0,                  # optional, seconds a team must hold it (default 5)
      "rows": ["#####", "#A.O", ...]        # the grid, one string per row, all the same length
    }

Grid cells: ``#`` wall and ``~`` water (both blocked), ``.`` floor, ``c`` cover point, ``O`` the
objective (exactly one), ``A`` / ``B`` spawn cells of team 0 / team 1 (at least one each). Every
spawn cell must reach the objective by 4-neighbour moves over walkable cells.

Every problem is reported as a :class:`MapError` naming the file and the field (``rows[3][7]``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import orjson

from aiplanner.components import Battlefield

__all__ = [
    "MAPS_DIR",
    "MapError",
    "MapSpec",
    "available_maps",
    "load_map",
    "parse_map",
]

MAPS_DIR: Traversable = files("demo_game") / "assets" / "maps"

_MAX_FILE_BYTES = 1 << 20
_MIN_SIDE, _MAX_SIDE = 5, 200
_WALL, _WATER, _FLOOR, _COVER, _OBJECTIVE = "#", "~", ".", "c", "O"
_SPAWNS = ("A", "B")
_CELLS = (_WALL, _WATER, _FLOOR, _COVER, _OBJECTIVE, *_SPAWNS)
_FIELDS = ("name", "description", "objective_radius", "hold_seconds", "rows")

Cell = tuple[int, int]


class MapError(ValueError):
    """A map file that is missing, not JSON, or breaks a rule; the message names file and field."""


@dataclass(frozen=True, slots=True)
class MapSpec:
    """A validated map. ``water`` is a subset of ``blocked`` kept apart only for drawing.

    ``spawns[t]`` are the spawn cells of team ``t`` in row-major order.
    """

    key: str
    title: str
    description: str
    width: int
    height: int
    blocked: frozenset[Cell]
    water: frozenset[Cell]
    cover: tuple[Cell, ...]
    objective: Cell
    objective_radius: int
    hold_seconds: float
    spawns: tuple[tuple[Cell, ...], tuple[Cell, ...]]

    def battlefield(self) -> Battlefield:
        return Battlefield(
            width=self.width,
            height=self.height,
            blocked=self.blocked,
            cover=self.cover,
            objective=self.objective,
        )


def available_maps(directory: Traversable = MAPS_DIR) -> tuple[str, ...]:
    """Names of the maps in ``directory`` (file stems), sorted."""
    if not directory.is_dir():
        return ()
    names = (p.name for p in directory.iterdir() if p.is_file())
    return tuple(sorted(n.removesuffix(".json") for n in names if n.endswith(".json")))


def load_map(name_or_path: str | Path, directory: Traversable = MAPS_DIR) -> MapSpec:
    """Load a map by name (``crossroads``) from ``directory``, or from a path to a ``.json`` file.

    Raises :class:`MapError` when the file is missing, too large, not JSON or not a valid map.
    """
    text = str(name_or_path)
    path: Traversable
    if text.endswith(".json") or "/" in text or "\\" in text:
        path = Path(text).expanduser()
    else:
        path = directory / f"{text}.json"
    if not path.is_file():
        known = ", ".join(available_maps(directory)) or "none"
        raise MapError(f"{path}: map file not found (maps in {directory}: {known})")
    with path.open("rb") as fh:
        raw = fh.read(_MAX_FILE_BYTES + 1)
    if len(raw) > _MAX_FILE_BYTES:
        raise MapError(f"{path}: map file is larger than {_MAX_FILE_BYTES} bytes")
    return parse_map(raw, source=str(path), key=path.name.removesuffix(".json"))


def parse_map(raw: bytes | str, *, source: str = "<map>", key: str = "map") -> MapSpec:
    """Parse and validate the JSON text of a map. ``source`` names it in errors.

    Raises :class:`MapError`.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MapError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MapError(f"{source}: expected a JSON object at the top level")
    for field in doc:
        if field not in _FIELDS:
            raise MapError(f"{source}: unknown field {field!r} (known: {', '.join(_FIELDS)})")

    title = _string(doc, "name", key, source)
    description = _string(doc, "description", "", source)
    radius = doc.get("objective_radius", 2)
    if isinstance(radius, bool) or not isinstance(radius, int) or not 1 <= radius <= 8:
        raise MapError(f"{source}: objective_radius: expected an integer 1..8, got {radius!r}")
    hold = doc.get("hold_seconds", 5.0)
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 < hold <= 600:
        raise MapError(f"{source}: hold_seconds: expected a number in (0, 600], got {hold!r}")

    rows = doc.get("rows")
    if rows is None:
        raise MapError(f"{source}: rows: missing (a list of strings, one per map row)")
    if not isinstance(rows, list) or not all(isinstance(r, str) for r in rows):
        raise MapError(f"{source}: rows: expected a list of strings")
    if not _MIN_SIDE <= len(rows) <= _MAX_SIDE:
        raise MapError(f"{source}: rows: expected {_MIN_SIDE}..{_MAX_SIDE} rows, got {len(rows)}")
    width = len(rows[0])
    if not _MIN_SIDE <= width <= _MAX_SIDE:
        raise MapError(f"{source}: rows[0]: expected {_MIN_SIDE}..{_MAX_SIDE} cells, got {width}")

    blocked: set[Cell] = set()
    water: set[Cell] = set()
    cover: list[Cell] = []
    objectives: list[Cell] = []
    spawns: tuple[list[Cell], list[Cell]] = ([], [])
    for y, row in enumerate(rows):
        if len(row) != width:
            raise MapError(
                f"{source}: rows[{y}]: expected {width} cells like rows[0], got {len(row)}"
            )
        for x, ch in enumerate(row):
            if ch == _FLOOR:
                continue
            if ch == _WALL:
                blocked.add((x, y))
            elif ch == _WATER:
                blocked.add((x, y))
                water.add((x, y))
            elif ch == _COVER:
                cover.append((x, y))
            elif ch == _OBJECTIVE:
                objectives.append((x, y))
            elif ch in _SPAWNS:
                spawns[_SPAWNS.index(ch)].append((x, y))
            else:
                raise MapError(
                    f"{source}: rows[{y}][{x}]: unknown cell {ch!r} "
                    f"(expected one of {' '.join(_CELLS)})"
                )

    if len(objectives) != 1:
        where = ", ".join(f"{x},{y}" for x, y in objectives[:4])
        raise MapError(
            f"{source}: rows: exactly one objective 'O' is needed, found {len(objectives)}"
            + (f" (at {where})" if where else "")
        )
    objective = objectives[0]
    for team, cells in enumerate(spawns):
        if not cells:
            raise MapError(f"{source}: rows: no spawn cell {_SPAWNS[team]!r} for team {team}")
    reachable = _reachable(objective, width, len(rows), blocked)
    for team, cells in enumerate(spawns):
        for x, y in cells:
            if (x, y) not in reachable:
                raise MapError(
                    f"{source}: rows[{y}][{x}]: spawn cell {_SPAWNS[team]!r} cannot reach the "
                    f"objective at {objective[0]},{objective[1]}"
                )

    return MapSpec(
        key=key,
        title=title,
        description=description,
        width=width,
        height=len(rows),
        blocked=frozenset(blocked),
        water=frozenset(water),
        cover=tuple(cover),
        objective=objective,
        objective_radius=radius,
        hold_seconds=float(hold),
        spawns=(tuple(spawns[0]), tuple(spawns[1])),
    )


def _string(doc: dict[str, object], field: str, default: str, source: str) -> str:
    value = doc.get(field, default)
    if not isinstance(value, str) or len(value) > 500:
        raise MapError(f"{source}: {field}: expected a string of at most 500 characters")
    return value


def _reachable(start: Cell, width: int, height: int, blocked: Iterable[Cell]) -> set[Cell]:
    walls = set(blocked)
    seen = {start}
    todo = deque([start])
    while todo:
        x, y = todo.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            inside = 0 <= nx < width and 0 <= ny < height
            if inside and (nx, ny) not in walls and (nx, ny) not in seen:
                seen.add((nx, ny))
                todo.append((nx, ny))
    return seen
