"""Map loading: the shipped maps are valid and different; every broken file is named precisely."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from demo_game.maps import MAPS_DIR, MapError, available_maps, load_map, parse_map

SMALL = ["#######", "#A...B#", "#..O..#", "#.c...#", "#######"]


def _doc(**changes: object) -> str:
    doc: dict[str, object] = {"name": "Small", "rows": SMALL}
    doc.update(changes)
    return orjson.dumps(doc).decode()


def test_at_least_two_shipped_maps_with_different_layouts() -> None:
    names = available_maps()
    assert len(names) >= 2
    specs = [load_map(n) for n in names]
    assert len({s.blocked for s in specs}) == len(specs)
    assert len({s.objective for s in specs}) >= 2 or len({(s.width, s.height) for s in specs}) >= 2
    for spec in specs:
        assert spec.cover, spec.key
        assert spec.spawns[0] and spec.spawns[1], spec.key
        assert spec.objective not in spec.blocked
        assert not set(spec.cover) & spec.blocked
        assert spec.water <= spec.blocked


def test_small_map_parses_into_the_battlefield() -> None:
    spec = parse_map(_doc(objective_radius=1, hold_seconds=2.5), key="small")
    assert (spec.width, spec.height) == (7, 5)
    assert spec.objective == (3, 2)
    assert spec.spawns == (((1, 1),), ((5, 1),))
    assert spec.cover == ((2, 3),)
    assert spec.hold_seconds == 2.5 and spec.objective_radius == 1
    field = spec.battlefield()
    assert field.objective == (3, 2)
    assert not field.walkable(0, 0) and field.walkable(3, 2)
    assert field.cover == spec.cover


def test_load_by_path(map_file: Callable[[str], Path]) -> None:
    path = map_file(_doc())
    spec = load_map(str(path))
    assert spec.key == "custom" and spec.title == "Small"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_doc(walls=[]), "unknown field 'walls'"),
        (_doc(rows=None), "rows: missing"),
        (_doc(rows=[1, 2, 3, 4, 5]), "rows: expected a list of strings"),
        (_doc(rows=[*SMALL[:2], "#..O.#", *SMALL[3:]]), "rows[2]: expected 7 cells"),
        (_doc(rows=[*SMALL[:3], "#.cx..#", SMALL[4]]), "rows[3][3]: unknown cell 'x'"),
        (
            _doc(rows=[SMALL[0], "#AO..B#", *SMALL[2:]]),
            "exactly one objective 'O' is needed, found 2",
        ),
        (_doc(rows=[SMALL[0], "#A....#", *SMALL[2:]]), "no spawn cell 'B' for team 1"),
        (
            _doc(rows=[SMALL[0], "#A..#B#", "#..O#.#", "#.c.###", SMALL[4]]),
            "rows[1][5]: spawn cell 'B'",
        ),
        (_doc(objective_radius=0), "objective_radius: expected an integer 1..8"),
        (_doc(objective_radius=True), "objective_radius"),
        (_doc(hold_seconds=-1), "hold_seconds"),
        (_doc(name=7), "name: expected a string"),
        (_doc(rows=SMALL[:3]), "rows: expected 5..200 rows"),
    ],
)
def test_bad_map_names_the_file_and_field(
    map_file: Callable[[str], Path], text: str, expected: str
) -> None:
    path = map_file(text)
    with pytest.raises(MapError) as info:
        load_map(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert expected in message


def test_unknown_map_name_lists_the_known_ones() -> None:
    with pytest.raises(MapError) as info:
        load_map("atlantis")
    assert "atlantis.json" in str(info.value)
    for name in available_maps():
        assert name in str(info.value)


def test_oversized_file_is_refused(map_file: Callable[[str], Path]) -> None:
    path = map_file(" " * (1 << 20) + _doc())
    with pytest.raises(MapError, match="larger than"):
        load_map(path)


def test_shipped_maps_are_package_data_found_through_importlib_resources() -> None:
    from importlib.resources import files

    assert files("demo_game") / "assets" / "maps" == MAPS_DIR
    assert MAPS_DIR.is_dir() and (MAPS_DIR / "crossroads.json").is_file()
    assert set(available_maps()) == {
        p.name.removesuffix(".json") for p in MAPS_DIR.iterdir() if p.name.endswith(".json")
    }


def test_a_directory_of_ones_own_holds_other_maps(tmp_path: Path) -> None:
    (tmp_path / "small.json").write_text(_doc())
    (tmp_path / "notes.txt").write_text("not a map")
    assert available_maps(tmp_path) == ("small",)
    assert load_map("small", tmp_path).title == "Small"
    assert available_maps(tmp_path / "missing") == ()
