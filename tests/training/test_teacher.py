"""The outcome teacher: deterministic rollouts that prefer the obviously better candidate."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, replace
from pathlib import Path

import esper
import pytest

from aiplanner.actions import Plan, Step
from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError
from aiplanner.training.situations import (
    Situation,
    UnitSpec,
    generate_situations,
    situation_snapshot,
)
from aiplanner.training.teacher import (
    OutcomeTeacher,
    OutcomeWeights,
    TeacherConfig,
    add_teacher_arguments,
    file_sha256,
    load_labels,
    parse_weights,
    save_labels,
    teacher_config_from,
)

OPEN = Battlefield(30, 20, frozenset(), (), None)


def _first(plan: Plan) -> str:
    return plan.steps[0].action


def test_nearly_dead_soldier_facing_three_falls_back() -> None:
    me = UnitSpec(team=0, role="tactical", x=10, y=10, hp=10)
    enemies = tuple(UnitSpec(team=1, role="tactical", x=17, y=9 + i) for i in range(3))
    sit = Situation(seed=1, kind="hand", field=OPEN, me=me, enemies=enemies)
    label = OutcomeTeacher().label(sit)
    actions = [_first(c) for c in label.candidates]
    assert "Retreat" in actions and actions[0] != "Retreat"  # the rules rank it lower
    assert _first(label.candidates[label.best]) == "Retreat"
    assert label.margin > 0


def test_out_of_ammo_next_to_an_enemy_reloads_before_attacking() -> None:
    me = UnitSpec(team=0, role="tactical", x=10, y=10, ammo=0)
    sit = Situation(
        seed=2,
        kind="hand",
        field=OPEN,
        me=me,
        enemies=(UnitSpec(team=1, role="tactical", x=12, y=10),),
    )
    snap, _ = situation_snapshot(sit)
    enemy = snap.enemies[0].id
    attack = Plan((Step("Attack", (enemy,)),))
    reload_first = Plan((Step("Reload"), Step("Attack", (enemy,))))
    label = OutcomeTeacher().label(sit, [attack, reload_first])
    assert label.best == 1 and label.margin > 0
    # in either order, so the tie-break toward the first candidate is not what decides
    assert OutcomeTeacher().label(sit, [reload_first, attack]).best == 0


def test_a_kill_in_range_beats_standing_still() -> None:
    me = UnitSpec(team=0, role="tactical", x=10, y=10)
    sit = Situation(
        seed=3,
        kind="hand",
        field=OPEN,
        me=me,
        enemies=(UnitSpec(team=1, role="tactical", x=14, y=10, hp=20, ammo=0),),
    )
    snap, _ = situation_snapshot(sit)
    enemy = snap.enemies[0].id
    label = OutcomeTeacher().label(
        sit, [Plan((Step("Wait", (40,)),)), Plan((Step("Attack", (enemy,)),))]
    )
    out = OutcomeTeacher().rollout(sit, label.candidates[1])
    assert label.best == 1 and out.kills == 1 and out.dealt == 20 and not out.died


def test_rollouts_are_deterministic_and_leave_no_world_behind(world: str) -> None:
    sits = generate_situations(6, seed=11)
    before = set(esper.list_worlds())
    a = OutcomeTeacher().label_all(sits)
    b = OutcomeTeacher().label_all(sits)
    assert a == b
    assert set(esper.list_worlds()) == before and esper.current_world == world


def test_variants_are_the_chance_and_the_mean_is_the_score() -> None:
    sit = next(s for s in generate_situations(40, seed=5) if len(s.enemies) >= 2)
    one = OutcomeTeacher(TeacherConfig(variants=1)).label(sit)
    three = OutcomeTeacher(TeacherConfig(variants=3)).label(sit)
    teacher = OutcomeTeacher()
    by_hand = [
        sum(teacher.rollout(sit.variant(k), c).score for k in range(3)) / 3
        for c in three.candidates
    ]
    assert three.scores == pytest.approx(by_hand)
    assert one.scores == pytest.approx([teacher.rollout(sit, c).score for c in one.candidates])


def test_labels_round_trip_with_a_stable_digest(tmp_path: Path) -> None:
    labels = OutcomeTeacher(TeacherConfig(variants=1)).label_all(generate_situations(4, seed=2))
    path = tmp_path / "labels.jsonl"
    digest = save_labels(path, labels)
    assert digest == file_sha256(path)
    back = load_labels(path)
    assert [b.situation for b in back] == [a.situation for a in labels]
    assert [b.candidates for b in back] == [a.candidates for a in labels]
    assert [b.best for b in back] == [a.best for a in labels]
    assert save_labels(tmp_path / "again.jsonl", back) == digest


def test_bad_label_files_and_settings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"candidates": []}\n')
    with pytest.raises(ConfigError):
        load_labels(path)
    path.write_bytes(b"not json\n")
    with pytest.raises(ConfigError):
        load_labels(path)
    with pytest.raises(ConfigError):
        TeacherConfig(dt=0)
    with pytest.raises(ConfigError):
        OutcomeTeacher().label(generate_situations(1)[0], [])


# --- the teacher on the scenario suite ----------------------------------------------------------


def test_a_snapshot_becomes_the_world_it_describes() -> None:
    from aiplanner.scenarios import load_scenarios
    from aiplanner.training.situations import situation_from_snapshot

    for scenario in load_scenarios()[::7]:
        snap = scenario.snapshot
        again, roster = situation_snapshot(situation_from_snapshot(snap))
        me, me2 = snap.me, again.me
        assert (me2.x, me2.y, me2.hp, me2.ammo, me2.role, me2.in_cover) == (
            me.x,
            me.y,
            me.hp,
            me.ammo,
            me.role,
            me.in_cover,
        )
        assert len(roster.enemies) == len(snap.enemies)
        seen = {u.id: (u.x, u.y, u.hp) for u in again.enemies}
        for new_id, u in zip(roster.enemies, snap.enemies, strict=True):
            assert seen[new_id] == (u.x, u.y, u.hp)  # every enemy, in the same place


def test_the_teacher_decides_suite_cases_among_their_candidates_by_rollout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiplanner.combat as combat
    from aiplanner.evaluation import Case, make_planner
    from aiplanner.heuristic import HeuristicPlanner
    from aiplanner.scenarios import load_scenarios

    by_name = {s.name: s for s in load_scenarios()}
    # In the open, trading shots with an enemy who sits in cover: the rules shoot back; the
    # rollouts see that a covered shooter takes half damage and go for the cover point first.
    scenario = by_name["tactical-open-duel-against-covered-enemy"]
    candidates = tuple(HeuristicPlanner().candidates(scenario.snapshot, 4))
    assert _first(candidates[0]) == "Attack"
    case = Case(scenario, candidates)
    [decision] = make_planner("teacher").decide([case])
    assert decision.plan in candidates
    assert decision.plan is not None and _first(decision.plan) == "TakeCover"
    # It is the rule of the game that decides: were cover no protection, shooting back wins.
    monkeypatch.setattr(combat, "COVER_DAMAGE", 1.0)
    [decision] = make_planner("teacher").decide([case])
    assert decision.plan is not None and _first(decision.plan) == "Attack"


# --- weights, round rules ----------------------------------------------------------------------

ROUND = TeacherConfig(
    horizon_s=10.0,
    round_rules=True,
    weights=parse_weights("hold=20,win=200,loss=200"),
)


def test_weights_parse_from_text_and_bad_ones_are_refused() -> None:
    w = parse_weights(" death=300 , kill=80,discount_per_s=0.9")
    assert (w.death, w.kill, w.discount_per_s) == (300.0, 80.0, 0.9)
    assert w.taken == OutcomeWeights().taken  # the others keep their defaults
    assert parse_weights("") == OutcomeWeights()
    for bad in ("deaths=3", "death", "death=x", "death=nan", "discount_per_s=0"):
        with pytest.raises(ConfigError):
            parse_weights(bad)
    with pytest.raises(ConfigError):
        TeacherConfig(hold_s=0)


def _on_objective(enemy_x: int) -> Situation:
    field = Battlefield(30, 20, frozenset(), (), (10, 10))
    me = UnitSpec(team=0, role="tactical", x=10, y=10)
    enemy = UnitSpec(team=1, role="tactical", x=enemy_x, y=10, perception=1.0)
    return Situation(seed=4, kind="hand", field=field, me=me, enemies=(enemy,))


def test_holding_the_objective_alone_long_enough_wins_the_round_and_ends_the_rollout() -> None:
    sit = _on_objective(enemy_x=28)  # far away, and it sees nobody: it never comes
    stay = Plan((Step("Wait", (40,)),))
    out = OutcomeTeacher(ROUND).rollout(sit, stay)
    assert out.result == 1 and not out.died and out.dealt == 0
    # won after hold_s of holding, then nothing more is scored: the same as a horizon of hold_s
    short = OutcomeTeacher(replace(ROUND, horizon_s=ROUND.hold_s)).rollout(sit, stay)
    assert short.result == 1 and out.score == pytest.approx(short.score)
    assert out.score > 200 * 0.85**ROUND.hold_s  # the win, discounted, and the holding
    # without the round rules the round never ends: the rollout goes on (the rules then send
    # the agent after the enemy) and holding is worth nothing
    plain = OutcomeTeacher(replace(ROUND, round_rules=False)).rollout(sit, stay)
    assert plain.result == 0 and plain.dealt > 0
    plain_short = OutcomeTeacher(replace(ROUND, round_rules=False, horizon_s=ROUND.hold_s))
    assert plain_short.rollout(sit, stay).score == pytest.approx(0.0)


def test_eliminating_the_enemies_in_sight_wins_and_dying_loses() -> None:
    me = UnitSpec(team=0, role="tactical", x=10, y=10)
    weak = UnitSpec(team=1, role="tactical", x=14, y=10, hp=20, ammo=0)
    sit = Situation(seed=3, kind="hand", field=OPEN, me=me, enemies=(weak,))
    snap, _ = situation_snapshot(sit)
    out = OutcomeTeacher(ROUND).rollout(sit, Plan((Step("Attack", (snap.enemies[0].id,)),)))
    assert out.kills == 1 and out.result == 1
    dying = _three_on_one()
    lost = OutcomeTeacher(ROUND).rollout(dying, Plan((Step("Wait", (40,)),)))
    assert lost.died and lost.result == -1


def test_nobody_in_sight_is_not_a_win_by_elimination() -> None:
    me = UnitSpec(team=0, role="tactical", x=3, y=3)
    field = Battlefield(30, 20, frozenset(), (), (20, 10))
    sit = Situation(seed=5, kind="hand", field=field, me=me)
    label = OutcomeTeacher(ROUND).label(sit)
    outs = [OutcomeTeacher(ROUND).rollout(sit, c) for c in label.candidates]
    assert all(o.result == 0 for o in outs)
    assert len({round(o.score, 6) for o in outs}) > 1 or len(outs) == 1  # progress still counts


def _three_on_one() -> Situation:
    me = UnitSpec(team=0, role="tactical", x=10, y=10, hp=10)
    enemies = tuple(UnitSpec(team=1, role="tactical", x=17, y=9 + i) for i in range(3))
    return Situation(seed=1, kind="hand", field=OPEN, me=me, enemies=enemies)


@pytest.mark.parametrize(
    "config",
    [TeacherConfig(), ROUND, replace(ROUND, horizon_s=20.0)],
    ids=["default", "round-h10", "round-h20"],
)
def test_every_teacher_sends_a_nearly_dead_soldier_facing_three_back(
    config: TeacherConfig,
) -> None:
    label = OutcomeTeacher(config).label(_three_on_one())
    assert _first(label.candidates[label.best]) == "Retreat" and label.margin > 0


def test_round_rule_rollouts_are_deterministic(world: str) -> None:
    sits = generate_situations(5, seed=12)
    a = OutcomeTeacher(ROUND).label_all(sits)
    assert a == OutcomeTeacher(ROUND).label_all(sits)
    assert esper.current_world == world


def test_teacher_settings_come_from_the_command_line() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_teacher_arguments(parser, prefix="teacher-")
    args = parser.parse_args(
        ["--teacher-horizon-s", "10", "--teacher-round-rules", "--teacher-weights", "win=5"]
    )
    cfg = teacher_config_from(args, prefix="teacher-")
    assert (cfg.horizon_s, cfg.round_rules, cfg.weights.win) == (10.0, True, 5.0)
    assert teacher_config_from(parser.parse_args([]), prefix="teacher-") == TeacherConfig()
    assert cfg.to_dict()["weights"] == asdict(cfg.weights)


def test_a_game_snapshot_with_two_units_on_one_cell_is_separated_on_request() -> None:
    from aiplanner.training.situations import situation_from_snapshot

    me = UnitSpec(team=0, role="tactical", x=10, y=10)
    a = UnitSpec(team=1, role="tactical", x=14, y=10)
    b = UnitSpec(team=1, role="tactical", x=15, y=10)
    snap, _ = situation_snapshot(Situation(seed=6, kind="hand", field=OPEN, me=me, enemies=(a, b)))
    moved = dataclasses.replace(snap.enemies[1], x=14)  # as two game units rounding to one cell
    clash = dataclasses.replace(snap, enemies=(snap.enemies[0], moved))
    with pytest.raises(ConfigError):
        situation_from_snapshot(clash)
    sit = situation_from_snapshot(clash, separate=True)
    cells = [(u.x, u.y) for u in sit.units()]
    assert len(set(cells)) == 3 and cells[:2] == [(10, 10), (14, 10)]
    assert max(abs(cells[2][0] - 14), abs(cells[2][1] - 10)) == 1  # the nearest free cell
