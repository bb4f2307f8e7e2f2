"""WorldSnapshot.from_dict: untrusted snapshot files fail through the PlannerError tree."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields
from typing import Any

import orjson
import pytest
from scenario import make_snapshot

from aiplanner import snapshot as snapshot_module
from aiplanner.components import Battlefield
from aiplanner.errors import PlannerError, SnapshotFormatError
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot


def _data() -> dict[str, Any]:
    snap = make_snapshot(1, enemies=2)
    assert isinstance(snap, WorldSnapshot)
    data = orjson.loads(snap.to_json())
    assert isinstance(data, dict)
    return data


def test_round_trip() -> None:
    data = _data()
    again = WorldSnapshot.from_dict(data)
    assert again.to_dict() == data


def _broken(change: str) -> object:
    data = _data()
    if change == "not an object":
        return [data]
    if change == "me missing":
        del data["me"]
    elif change == "me not an object":
        data["me"] = "me"
    elif change == "hp missing":
        del data["me"]["hp"]
    elif change == "hp not a number":
        data["me"]["hp"] = "lots"
    elif change == "hp a list":
        data["me"]["hp"] = [1]
    elif change == "map too short":
        data["map"] = [32]
    elif change == "enemies not a list":
        data["enemies"] = {"id": 1}
    elif change == "enemy without id":
        del data["enemies"][0]["id"]
    elif change == "cover cell not a pair":
        data["cover"] = [[1, 2, 3]]
    elif change == "objective not a cell":
        data["objective"] = 7
    return data


@pytest.mark.parametrize(
    "change",
    [
        "not an object",
        "me missing",
        "me not an object",
        "hp missing",
        "hp not a number",
        "hp a list",
        "map too short",
        "enemies not a list",
        "enemy without id",
        "cover cell not a pair",
        "objective not a cell",
    ],
)
def test_malformed_data_raises_snapshot_format_error(change: str) -> None:
    with pytest.raises(SnapshotFormatError) as info:
        WorldSnapshot.from_dict(_broken(change))
    assert isinstance(info.value, PlannerError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("snapshot")


def test_fast_constructors_make_the_same_objects() -> None:
    """The snapshot system's constructors (slot setters, no frozen __init__) fill every field
    of the dataclass, each with its own argument: distinct values show a swapped or missing one."""
    unit_args = (1, 2, 3, 4, True, 5.5, 6)
    unit = snapshot_module.new_seen_unit(*unit_args)
    assert unit == SeenUnit(*unit_args)
    assert [getattr(unit, f.name) for f in fields(SeenUnit)] == list(unit_args)
    me_args = (7, "stealth", 8, 9, 10, 11, 12, 13, 14, True, 15.5)
    me = snapshot_module.new_self_view(*me_args)
    assert me == SelfView(*me_args)
    assert [getattr(me, f.name) for f in fields(SelfView)] == list(me_args)
    field = Battlefield(20, 30, frozenset({(1, 1)}), ((2, 2),), (3, 3))
    snap_args = (16, me, (unit,), (), ((2, 2),), ((1, 1),), (3, 3), field)
    snap = snapshot_module.new_snapshot(*snap_args)
    assert snap == WorldSnapshot(*snap_args)
    assert [getattr(snap, f.name) for f in fields(WorldSnapshot)] == list(snap_args)
    with pytest.raises(FrozenInstanceError):
        unit.hp = 0  # type: ignore[misc]
