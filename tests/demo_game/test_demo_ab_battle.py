"""The A/B battle: one squad planned by the model, the other by the rules, seeded and headless."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

import aiplanner
from aiplanner.backends.base import ScoreRequest
from aiplanner.phrasing import CONTENT_FREE
from demo_game.ab_battle import BattleResult, main, play, summarise
from demo_game.game import Game


def _contrarian(request: ScoreRequest) -> Sequence[float]:
    """A scorer that always prefers the rules' last candidate: a model squad that never agrees."""
    n = len(request.continuations)
    if request.messages[-1].content == CONTENT_FREE:
        return [0.0] * n
    return [float(i) * 10 for i in range(n)]


def _backend() -> aiplanner.ScriptedBackend:
    return aiplanner.ScriptedBackend(
        latency_s=0.1, virtual_time=True, scoring=True, scorer=_contrarian
    )


def test_only_the_model_team_asks_the_model_and_the_round_repeats() -> None:
    backend = _backend()
    first = play(1, backend, squad_size=2, max_seconds=8.0)
    again = play(1, _backend(), squad_size=2, max_seconds=8.0)
    assert first == again  # seeded, lockstep, virtual clock: the same round twice
    assert first.model_team == 1
    asked = [c.tag["requests"][0].snapshot.me.team for c in backend.score_calls if c.agents]
    assert asked and set(asked) == {1}  # the rules' squad never asked the model
    assert first.decisions > 0 and first.model_plans > 0
    # The scorer never picks the rules' first candidate where there is a choice.
    assert first.agree_rate is not None and first.agree_rate < 0.5


def test_the_model_team_changes_sides_with_the_seed() -> None:
    assert [play(s, _backend(), squad_size=1, max_seconds=2.0).model_team for s in (4, 5)] == [0, 1]


def test_summary_counts_wins_and_damage() -> None:
    def r(model_team: int, winner: int, to_model: int, to_rules: int) -> BattleResult:
        return BattleResult(0, model_team, winner, "", 1.0, to_model, to_rules, 1, 1, None)

    s = summarise([r(0, 0, 10, 30), r(1, 0, 50, 10), r(0, -1, 20, 20)])
    assert (s.rounds, s.model_wins, s.rules_wins, s.draws) == (3, 1, 1, 1)
    assert s.damage_ratio == pytest.approx(60 / 80)
    assert s.win_rate == pytest.approx(1 / 3)


def test_command_line_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--squad", "1", "--seconds", "2"], make_backend=_backend) == 0
    out = capsys.readouterr().out
    assert "model squad:" in out and "of 2" in out


def test_the_teacher_can_plan_the_model_squad(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--planner", "teacher", "--seeds", "2", "--squad", "2", "--seconds", "6"]
    assert main([*argv, "--horizon-s", "2", "--variants", "1"]) == 0
    out = capsys.readouterr().out
    assert "model squad:" in out and "of 2" in out
    decided = int(out.split("teacher: ")[1].split()[0])
    assert decided > 0 and "0 snapshots that made no legal world" in out
    # seeded and lockstep: the same rounds again
    assert main([*argv, "--horizon-s", "2", "--variants", "1"]) == 0
    assert capsys.readouterr().out == out
    # a teacher that hates hurting anybody decides otherwise (its settings reach the squad)
    assert main([*argv, "--horizon-s", "2", "--weights", "dealt=-5,kill=-200"]) == 0
    assert capsys.readouterr().out != out


def test_the_teacher_squads_decisions_are_written_as_training_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aiplanner.training.teacher import OutcomeTeacher, TeacherConfig, load_labels

    path = tmp_path / "labels.jsonl"
    argv = ["--planner", "teacher", "--seeds", "1", "--squad", "2", "--seconds", "4"]
    assert main([*argv, "--horizon-s", "2", "--variants", "1", "--labels-out", str(path)]) == 0
    out = capsys.readouterr().out
    labels = load_labels(path)
    decided = int(out.split("teacher: ")[1].split()[0])
    assert len(labels) == decided > 0 and f"{decided} labels -> {path}" in out
    teacher = OutcomeTeacher(TeacherConfig(horizon_s=2.0, variants=1))
    for label in labels[:3]:  # each is a legal world the teacher labels the same way again
        label.situation.check()
        again = teacher.label(label.situation, label.candidates)
        assert again.best == label.best
        assert again.scores == pytest.approx(label.scores, abs=1e-3)  # saved to 4 places


def test_realtime_round_never_waits_for_the_model() -> None:
    """Lockstep would wait for an answer that never comes (its 600 s budget); the live game plays
    on with the rules' provisional plans and applies no model plan."""
    gate = threading.Event()  # never set while the round runs: the backend never answers
    backend = aiplanner.ScriptedBackend(latency_s=0.0, scoring=True, scorer=_contrarian, gate=gate)
    games: list[Game] = []
    results: list[BattleResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            play(1, backend, squad_size=2, max_seconds=1.0, setup=games.append, realtime=True)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60.0)
    gate.set()
    assert not worker.is_alive(), "the real-time round waited for the model"
    (result,) = results
    assert result.model_team == 1 and result.model_plans == 0
    config = games[0].plugin.config
    assert not config.lockstep and config.provisional and config.model_teams == (1,)
    stats = games[0].plugin.stats()
    assert isinstance(stats["provisional"], int) and stats["provisional"] > 0
    assert isinstance(stats["requests"], int) and stats["requests"] > 0  # the model was asked


def test_realtime_model_plans_arrive_and_apply() -> None:
    backend = aiplanner.ScriptedBackend(latency_s=0.05, scoring=True, scorer=_contrarian)
    result = play(2, backend, squad_size=2, max_seconds=2.0, realtime=True)
    assert result.model_team == 0
    assert result.model_plans > 0 and result.decisions > 0
    assert result.agree_rate is not None and result.agree_rate < 0.5


def test_realtime_is_refused_for_the_teacher() -> None:
    with pytest.raises(SystemExit) as info:
        main(["--realtime", "--planner", "teacher", "--seeds", "1"])
    assert info.value.code == 2
