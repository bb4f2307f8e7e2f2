"""The outcome teacher: deterministic rollouts that prefer the obviously better candidate."""

from __future__ import annotations

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
    TeacherConfig,
    file_sha256,
    load_labels,
    save_labels,
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
