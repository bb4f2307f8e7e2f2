"""The scorer, on hand-made planners over a tiny suite whose answers are known by construction."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence

import orjson
import pytest

from aiplanner import evaluation
from aiplanner.actions import Plan, Step
from aiplanner.backends.base import CompletionRequest
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.errors import ConfigError
from aiplanner.evaluation import (
    OTHER,
    Case,
    Decision,
    PipelinePlanner,
    PositionPlanner,
    RandomPlanner,
    RulesPlanner,
    audit_suite,
    evaluate,
    make_planner,
    plan_text,
)
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.scenarios import Scenario, parse_scenarios
from aiplanner.scenarios.author import Situation, Unit, ok, snapshot_dict

# Four situations: the rules are right in the first and the last; in the second a candidate
# (TakeCover) fixes them; in the third no candidate does (the weak enemy is not the nearest).
SITUATIONS = (
    Situation(
        name="in-cover-enemy-in-range", role="tactical", at=(5, 7), cover=((5, 7),),
        enemies=(Unit(91, 9, 7, 60),), accept=(ok("Attack", 91),), why="shoot",
    ),
    Situation(
        name="nearly-dead-in-the-open", role="tactical", at=(6, 8), hp=15,
        cover=((5, 10),), enemies=(Unit(91, 10, 8), Unit(92, 11, 9)),
        accept=(ok("TakeCover"), ok("Retreat", away_from=(10, 8))), why="hide",
    ),
    Situation(
        name="weak-enemy-behind-strong", role="tactical", at=(5, 7), cover=((5, 7), (8, 7)),
        enemies=(Unit(91, 8, 7), Unit(92, 10, 8, 15)), accept=(ok("Attack", 92),), why="weak",
    ),
    Situation(
        name="support-hurt-ally", role="support", at=(5, 7), allies=(Unit(10, 6, 9, 30),),
        accept=(ok("Heal", 10),), why="heal",
    ),
)  # fmt: skip


def _suite() -> tuple[Scenario, ...]:
    data = {
        "scenarios": [
            {"name": s.name, "why": s.why, "snapshot": snapshot_dict(s), "accept": list(s.accept)}
            for s in SITUATIONS
        ]
    }
    return parse_scenarios(data, "tiny.json")


SUITE = _suite()
RULES = HeuristicPlanner()
CANDS = {s.name: RULES.candidates(s.snapshot, 4) for s in SUITE}


def test_the_tiny_suite_is_what_the_tests_below_assume() -> None:
    audit = audit_suite(SUITE)
    assert audit.rules_wrong == ("nearly-dead-in-the-open", "weak-enemy-behind-strong")
    assert audit.fixable == ("nearly-dead-in-the-open",)
    assert audit.unfixable == ("weak-enemy-behind-strong",)
    assert all(len(c) >= 2 for c in CANDS.values())


def test_rules_planner_agrees_with_itself_and_is_right_where_the_audit_says() -> None:
    report = evaluate(RulesPlanner(), SUITE)
    f = report.overall
    right = sum(audit_suite(SUITE).rules_sensible.values())
    assert (f.decisions, f.valid, f.sensible, f.agree) == (
        len(SUITE),
        len(SUITE),
        right,
        len(SUITE),
    )
    assert (f.overrides, f.override_accuracy, f.fixes, f.breaks) == (0, None, 0, 0)
    assert f.positions == {"0": len(SUITE)}
    assert f.max_position_share == 1.0
    assert f.rules_wrong == len(SUITE) - right


@pytest.mark.parametrize("k", [0, 1, 2, 3, 7])
def test_constant_position_planner_figures_follow_from_the_data(k: int) -> None:
    report = evaluate(PositionPlanner(k), SUITE)
    picks = {s.name: CANDS[s.name][min(k, len(CANDS[s.name]) - 1)] for s in SUITE}
    judged = {s.name: s.judge(picks[s.name]) for s in SUITE}
    agree = {s.name: picks[s.name].steps[0] == CANDS[s.name][0].steps[0] for s in SUITE}
    rules_ok = {s.name: s.judge(CANDS[s.name][0]).sensible for s in SUITE}
    f = report.overall
    assert report.planner == f"position-{k}"
    assert f.valid == len(SUITE)
    assert f.sensible == sum(j.sensible for j in judged.values())
    assert f.action_ok == sum(j.action_ok for j in judged.values())
    assert f.agree == sum(agree.values())
    overrides = [n for n in agree if not agree[n]]
    assert f.overrides == len(overrides)
    assert f.overrides_right == sum(judged[n].sensible for n in overrides)
    assert f.fixes == sum(judged[n].sensible and not rules_ok[n] for n in overrides)
    assert f.breaks == sum(rules_ok[n] and not judged[n].sensible for n in overrides)
    positions = Counter(str(min(k, len(CANDS[n]) - 1)) for n in CANDS)
    assert f.positions == dict(sorted(positions.items()))
    assert f.max_position_share == max(positions.values()) / len(SUITE)
    actions = Counter(p.steps[0].action for p in picks.values())
    assert f.actions == dict(sorted(actions.items()))
    assert f.max_action_share == max(actions.values()) / len(SUITE)


def test_random_planner_is_the_seeded_draw_pooled_over_draws() -> None:
    draws, seed = 5, 11
    report = evaluate(RandomPlanner(seed), SUITE, draws=draws)
    rng = random.Random(seed)
    picks = [
        (s, CANDS[s.name][rng.randrange(len(CANDS[s.name]))]) for _ in range(draws) for s in SUITE
    ]
    assert report.draws == draws
    assert [r.plan for r in report.records] == [plan_text(p) for _, p in picks]
    assert report.overall.decisions == draws * len(SUITE)
    assert report.overall.sensible == sum(s.judge(p).sensible for s, p in picks)
    expected_rate = sum(s.judge(p).sensible for s, p in picks) / len(picks)
    assert report.overall.sensible_rate == expected_rate


def test_per_role_figures_split_the_overall_ones() -> None:
    report = evaluate(PositionPlanner(1), SUITE)
    assert set(report.roles) == {"tactical", "support"}
    assert report.roles["support"].decisions == 1
    for field in ("decisions", "valid", "sensible", "agree", "overrides"):
        assert sum(getattr(f, field) for f in report.roles.values()) == getattr(
            report.overall, field
        )


class Scripted:
    """A planner answering fixed plans (None: no plan), recording every case it was given."""

    name = "scripted"

    def __init__(self, plans: Sequence[Plan | None]) -> None:
        self.plans = list(plans)
        self.seen: list[list[Case]] = []

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        self.seen.append(list(cases))
        return [Decision(plan=p, error="" if p else "gave up") for p in self.plans]


def test_invalid_missing_and_off_list_plans_are_judged_as_such() -> None:
    fix = next(p for p in CANDS["nearly-dead-in-the-open"] if p.steps[0].action == "TakeCover")
    plans: list[Plan | None] = [
        Plan((Step("Attack", (12345,)),)),  # no such enemy: invalid
        fix,  # an override that fixes the rules
        Plan((Step("Attack", (92,)),)),  # not a candidate, but legal and right
        None,  # no plan at all
    ]
    report = evaluate(Scripted(plans), SUITE)
    r = {rec.scenario: rec for rec in report.records}
    bad = r["in-cover-enemy-in-range"]
    assert (bad.valid, bad.sensible, bad.position) == (False, False, "")
    assert "bad_target" in bad.error
    assert r["nearly-dead-in-the-open"].position == str(CANDS["nearly-dead-in-the-open"].index(fix))
    off = r["weak-enemy-behind-strong"]
    assert (off.valid, off.sensible, off.position, off.agrees) == (True, True, OTHER, False)
    assert (r["support-hurt-ally"].valid, r["support-hurt-ally"].error) == (False, "gave up")
    f = report.overall
    assert (f.valid, f.sensible, f.overrides, f.overrides_right, f.fixes, f.breaks) == (
        2,
        2,
        2,
        2,
        2,
        0,
    )
    assert f.override_accuracy == 1.0
    assert f.valid_rate == 2 / len(SUITE)


def test_an_override_that_breaks_a_right_rule_is_counted() -> None:
    wrong = next(p for p in CANDS["support-hurt-ally"] if p.steps[0].action != "Heal")
    plans = [CANDS[s.name][0] for s in SUITE[:3]] + [wrong]
    f = evaluate(Scripted(plans), SUITE).overall
    assert (f.overrides, f.overrides_right, f.fixes, f.breaks) == (1, 0, 0, 1)
    assert f.override_accuracy == 0.0


def test_target_rate_counts_only_judged_targets_of_acceptable_actions() -> None:
    plans = [
        Plan((Step("Attack", (91,)),)),  # right target
        CANDS["nearly-dead-in-the-open"][0],  # wrong action: not in the target figures
        Plan((Step("Attack", (91,)),)),  # acceptable action, wrong target
        Plan((Step("Heal", (10,)),)),  # right target
    ]
    f = evaluate(Scripted(plans), SUITE).overall
    assert (f.target_checked, f.target_ok) == (3, 2)
    assert f.target_rate == 2 / 3
    assert f.action_ok == 3 and f.sensible == 2


def test_order_check_shuffles_and_counts_changed_decisions() -> None:
    picker = PositionPlanner(0)
    seen: list[list[Case]] = []

    class Recording:
        name = "recording"

        def decide(self, cases: Sequence[Case]) -> list[Decision]:
            seen.append(list(cases))
            return picker.decide(cases)

    report = evaluate(Recording(), SUITE, order_seed=3)
    first, shuffled = seen
    for a, b in zip(first, shuffled, strict=True):
        assert sorted(map(repr, a.candidates)) == sorted(map(repr, b.candidates))
        assert a.candidates != b.candidates  # never left in rank order
    changed = [a.scenario.name for a, b in zip(first, shuffled, strict=True)
               if a.candidates[0] != b.candidates[0]]  # fmt: skip
    assert report.order is not None
    assert report.order.changed == len(changed) and list(report.order.scenarios) == changed
    assert report.order.compared == len(SUITE)
    # The shuffle is not a rank: the records still judge against the rules' own first choice.
    assert report.overall.agree == len(SUITE)


def test_rules_ignore_the_order_of_candidates() -> None:
    report = evaluate(RulesPlanner(), SUITE, order_seed=5)
    assert report.order is not None and report.order.changed == 0


def test_report_is_json_ready() -> None:
    report = evaluate(RandomPlanner(1), SUITE, draws=2, order_seed=1)
    data = orjson.loads(orjson.dumps(report.to_dict()))
    assert data["planner"] == "random" and data["draws"] == 2
    assert len(data["records"]) == 2 * len(SUITE)
    assert data["overall"]["decisions"] == 2 * len(SUITE)
    assert set(data["roles"]) == {"tactical", "support"}
    assert data["order"]["compared"] == len(SUITE)


def test_evaluate_refuses_bad_arguments_and_miscounting_planners() -> None:
    with pytest.raises(ConfigError):
        evaluate(RulesPlanner(), [])
    with pytest.raises(ConfigError):
        evaluate(RulesPlanner(), SUITE, draws=0)
    with pytest.raises(ConfigError, match="gave 1 decisions for 4 cases"):
        evaluate(Scripted([None]), SUITE)


def test_make_planner_by_name() -> None:
    assert make_planner("rules").name == "rules"
    assert make_planner("position-2").name == "position-2"
    with pytest.raises(ConfigError, match="unknown planner"):
        make_planner("oracle")
    with pytest.raises(ConfigError, match="needs a backend"):
        make_planner("free")
    with pytest.raises(ConfigError):
        PositionPlanner(-1)


def test_pipeline_planner_goes_through_run_batch_and_reports_usage() -> None:
    def answer(request: CompletionRequest) -> str:
        return '{"c":1}'

    backend = ScriptedBackend(answer)
    planner = PipelinePlanner(backend, guided_decision="generate", name="gen")
    report = evaluate(planner, SUITE)
    assert [r.position for r in report.records] == ["1"] * len(SUITE)
    assert [r.plan for r in report.records] == [plan_text(CANDS[s.name][1]) for s in SUITE]
    assert all(r.tier == "llm" for r in report.records)
    assert len(backend.calls) == len(SUITE)


def test_pipeline_planner_refuses_a_setting_its_pipeline_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @dataclasses.dataclass
    class OlderContext:
        temperature: float = 0.0
        seed: int = 0

    monkeypatch.setattr(evaluation, "PlanContext", OlderContext)
    PipelinePlanner(ScriptedBackend())  # nothing asked beyond what it has
    with pytest.raises(ConfigError, match="has no calibrated, rank_prior"):
        PipelinePlanner(ScriptedBackend(), rank_prior=0.0, calibrated=True)


@pytest.mark.model
def test_real_model_decisions_through_the_pipeline_are_valid() -> None:
    backend = EmbeddedBackend(n_threads=2)
    names = ["guided-generate", "free"] + (["model-alone"] if backend.info.scoring else [])
    try:
        for name in names:
            report = evaluate(make_planner(name, backend), SUITE[:3])
            assert (report.planner, report.scenarios, len(report.records)) == (name, 3, 3)
            for r in report.records:
                assert r.valid != bool(r.error), r  # a plan that passed validation, or why not
                assert r.seconds is not None and r.seconds > 0
            if name != "free":  # a guided answer is one of the candidates, always
                assert report.overall.valid == 3
                assert all(r.position in {"0", "1", "2", "3"} for r in report.records)
    finally:
        backend.close()
