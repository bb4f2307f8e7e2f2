"""WorldSnapshot.from_dict: untrusted snapshot files fail through the PlannerError tree."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from scenario import make_snapshot

from aiplanner.errors import PlannerError, SnapshotFormatError
from aiplanner.snapshot import WorldSnapshot


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
