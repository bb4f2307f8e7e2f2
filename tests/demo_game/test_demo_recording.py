"""Record every applied plan, replay it: the same final world state, without a backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import esper
import orjson
import pytest

from aiplanner.actions import Plan, Step
from aiplanner.components import Tier
from demo_game.game import Game
from demo_game.recording import (
    PlanRecorder,
    RecordedPlan,
    Recording,
    RecordingError,
    load_recording,
    save_recording,
)

GameFactory = Callable[..., Game]


PLAN = Plan((Step("MoveTo", (3, 4)), Step("Attack", (7,))))


def _recording(*plans: RecordedPlan) -> Recording:
    return Recording("crossroads", 3, 2, 90, plans)


def test_round_trip(tmp_path: Path) -> None:
    rec = _recording(
        RecordedPlan(5, 2, Tier.LLM, PLAN),
        RecordedPlan(5, 1, Tier.CACHE, Plan((Step("Reload"),))),
        RecordedPlan(9, 2, Tier.HEURISTIC, Plan((Step("Wait", (10,)),))),
    )
    path = tmp_path / "rec.json"
    save_recording(path, rec)
    back = load_recording(path)
    assert back == rec
    assert back.schedule() == {
        5: [(2, PLAN, Tier.LLM), (1, Plan((Step("Reload"),)), Tier.CACHE)],
        9: [(2, Plan((Step("Wait", (10,)),)), Tier.HEURISTIC)],
    }


def test_recorder_is_bounded() -> None:
    rec = PlanRecorder(max_plans=2)
    for tick in range(5):
        rec.on_plan_applied(1, PLAN, Tier.LLM, tick)
    assert [p.tick for p in rec.plans] == [0, 1] and rec.dropped == 3


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"tick": 1, "entity": 2, "tier": "llm", "steps": [["Reload"]]}
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("plans", "expected"),
    [
        ([_entry(steps=[["Teleport", 1, 2]])], "plans[0].steps[0]: unknown action 'Teleport'"),
        ([_entry(), _entry(steps=[["MoveTo", 1]])], "plans[1].steps[0]: MoveTo takes 2 arguments"),
        ([_entry(steps=[["Attack", "x"]])], "Attack.target_id: expected an integer"),
        ([_entry(steps=[["Attack", True]])], "Attack.target_id: expected an integer"),
        ([_entry(tier="oracle")], "plans[0]: tier: expected one of"),
        ([_entry(tick=-1)], "plans[0]: tick"),
        ([_entry(steps=[])], "plans[0]: steps: expected 1..4 steps"),
        ([_entry(steps=[["Reload"]] * 5)], "plans[0]: steps: expected 1..4 steps"),
        (["nope"], "plans[0]: expected an object"),
        ({"a": 1}, "plans: expected a list"),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, plans: object, expected: str) -> None:
    path = tmp_path / "rec.json"
    doc = {"version": 1, "map": "crossroads", "seed": 0, "squad_size": 2, "frames": 10}
    path.write_bytes(orjson.dumps({**doc, "plans": plans}))
    with pytest.raises(RecordingError) as info:
        load_recording(path)
    assert str(info.value).startswith(str(path))
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{", "not valid JSON"),
        (b'{"version": 2}', "version: expected 1"),
        (b'{"version": 1, "map": 3}', "map: expected a map name"),
        (b'{"version": 1, "map": "x", "seed": 0, "squad_size": 0}', "squad_size"),
    ],
)
def test_bad_headers_are_named(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "rec.json"
    path.write_bytes(raw)
    with pytest.raises(RecordingError, match=expected):
        load_recording(path)


def test_replay_reproduces_the_final_state(make_game: GameFactory) -> None:
    recorder = PlanRecorder()
    game = make_game(squad_size=4, seed=9, on_plan_applied=recorder.on_plan_applied)
    game.run(200)
    recorded = game.digest()
    rec = recorder.finish(map_name="crossroads", seed=9, squad_size=4, frames=200)
    game.close()
    assert rec.plans and any(p.tier is Tier.LLM for p in rec.plans)
    esper.clear_database()

    replayed = PlanRecorder()
    again = make_game(
        squad_size=4, seed=9, replay=rec.schedule(), on_plan_applied=replayed.on_plan_applied
    )
    assert again.plugin.backend is None
    again.run(200)
    assert again.digest() == recorded
    assert replayed.plans == recorder.plans


def test_replay_without_the_plans_diverges(make_game: GameFactory) -> None:
    # Guards the test above: the digest does depend on the plans applied.
    recorder = PlanRecorder()
    game = make_game(squad_size=4, seed=9, on_plan_applied=recorder.on_plan_applied)
    game.run(200)
    recorded = game.digest()
    game.close()
    esper.clear_database()
    empty = make_game(squad_size=4, seed=9, replay={})
    empty.run(200)
    assert empty.digest() != recorded
