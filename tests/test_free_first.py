"""Free mode, scored first: the legal first steps, the choice among them, and the pipeline that
scores the first step and generates the rest after it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import orjson
import pytest
from scenario import make_request

from aiplanner import DEFAULT_REGISTRY, Tier
from aiplanner.actions import Plan, Step
from aiplanner.backends.base import CompletionRequest, ScoreRequest
from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.breaker import CircuitBreaker
from aiplanner.codec import PlanCodec
from aiplanner.errors import ConfigError
from aiplanner.free_first import FirstStep, first_steps, pick_first
from aiplanner.metrics import Metrics
from aiplanner.phrasing import CONTENT_FREE, step_phrase
from aiplanner.places import free_options
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, Generation, PlanContext, ScoredFirst, ladder, run_batch
from aiplanner.validation import validate_plan


def _req() -> PlanRequest:
    req = make_request(3, enemies=2)
    assert isinstance(req, PlanRequest) and len(req.candidates) >= 3
    return req


def test_first_steps_are_exactly_the_legal_ones_one_per_phrase() -> None:
    req = _req()
    snap = req.snapshot
    options = free_options(snap)
    steps = first_steps(req, DEFAULT_REGISTRY)
    phrases = [s.phrase for s in steps]
    assert len(set(phrases)) == len(phrases)
    cells = {p.cell for p in options.places}
    for s in steps:
        assert s.phrase == step_phrase(s.step, snap, DEFAULT_REGISTRY)
        validate_plan(Plan((s.step,)), snap, DEFAULT_REGISTRY)  # every option is legal
        if s.step.action == "Attack":
            assert s.values == s.step.args and s.step.args[0] in {u.id for u in options.enemies}
        if s.step.action == "Heal":
            assert s.step.args[0] in options.heal_ids
        if s.step.action in ("MoveTo", "TakeCover", "Retreat"):
            (index,) = s.values  # a place index, as the free grammar writes it
            assert options.places[index].cell == s.step.args and s.step.args in cells
    # Every enemy in view can be shot, and every action the grammar offers is there.
    shots = {s.step.args[0] for s in steps if s.step.action == "Attack"}
    assert shots == {u.id for u in options.enemies}
    schema = PlanCodec(DEFAULT_REGISTRY, mode="free").schema(req)
    codes = {
        item["prefixItems"][0]["const"] for item in schema["properties"]["plan"]["items"]["anyOf"]
    }
    assert {DEFAULT_REGISTRY.spec(s.step.action).code for s in steps} == codes


def test_first_steps_carry_the_rules_rank_and_the_rules_step_represents_its_phrase() -> None:
    req = _req()
    snap = req.snapshot
    steps = first_steps(req, DEFAULT_REGISTRY)
    firsts = [c.steps[0] for c in req.candidates]
    for i, step in enumerate(firsts):
        phrase = step_phrase(step, snap, DEFAULT_REGISTRY)
        option = next(s for s in steps if s.phrase == phrase)
        # The best-ranked candidate with that phrase gives the rank and, where it is one of the
        # enumerated steps, the step itself.
        expected = min(
            j for j, f in enumerate(firsts) if step_phrase(f, snap, DEFAULT_REGISTRY) == phrase
        )
        assert option.rank == expected <= i
    outside = [
        s
        for s in steps
        if s.step not in firsts
        and all(s.phrase != step_phrase(f, snap, DEFAULT_REGISTRY) for f in firsts)
    ]
    assert outside and all(s.rank == len(firsts) for s in outside)


def _option(rank: int, n: int = 0) -> FirstStep:
    return FirstStep(Step("Wait", (n + 1,)), (n + 1,), f"option {n}", rank)


def test_pick_first_combines_calibrated_score_and_rank_prior() -> None:
    options = [_option(0, 0), _option(1, 1), _option(4, 2)]
    raw = [-3.0, -1.0, 0.0]
    base = [-1.0, -1.0, -1.0]
    assert pick_first(options, raw, base, rank_prior=0.0)[0] == 2
    index, calibrated, combined = pick_first(options, raw, base, rank_prior=1.0)
    assert calibrated == (-2.0, 0.0, 1.0) and combined == (-2.0, -1.0, -3.0) and index == 1
    assert pick_first(options, raw, base, rank_prior=5.0)[0] == 0
    # Uncalibrated: the raw scores; ties go to the better rank, then the earlier option.
    assert pick_first(options, raw, None, rank_prior=0.0)[1] == tuple(raw)
    tied = [_option(2, 0), _option(1, 1), _option(1, 2)]
    assert pick_first(tied, [0.0, 0.0, 0.0], None, rank_prior=0.0)[0] == 1


@pytest.mark.parametrize(
    ("raw", "base", "prior"),
    [([], None, 0.0), ([0.0], None, 0.0), ([0.0, 0.0], [0.0], 0.0), ([0.0, 0.0], None, -1.0)],
)
def test_pick_first_refuses_bad_input(
    raw: list[float], base: list[float] | None, prior: float
) -> None:
    options = [] if not raw else [_option(0, 0), _option(1, 1)]
    with pytest.raises(ConfigError):
        pick_first(options, raw, base, rank_prior=prior)


def _fixed_first(request: CompletionRequest) -> str:
    """What a model under the schema writes when it stops after the fixed first step."""
    assert request.schema is not None
    plan: dict[str, Any] = request.schema["properties"]["plan"]
    (fixed,) = plan["prefixItems"]
    return orjson.dumps({"plan": [[item["const"] for item in fixed["prefixItems"]]]}).decode()


def _run(ctx: PlanContext, req: PlanRequest) -> PlanOutcome:
    out: list[PlanOutcome] = []
    ctx = replace(ctx, emit=out.append)

    async def main() -> None:
        await run_batch(ctx, Batch((req,), "sequential", "free", "compressed", False, 0))

    anyio.run(main)
    (outcome,) = out
    return outcome


def _ctx(backend: ScriptedBackend, **changes: object) -> PlanContext:
    ctx = PlanContext(backend, DEFAULT_REGISTRY, Metrics(), CircuitBreaker(3, 60.0), lambda o: None)
    return replace(ctx, free_decision="score-first", **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("wanted", ["shoot enemy 2", "heal", "look around", "run to cover"])
def test_score_first_starts_the_plan_with_the_best_scored_step(wanted: str) -> None:
    req = _req()

    def scorer(request: ScoreRequest) -> list[float]:
        if request.messages[-1].content == CONTENT_FREE:
            return [-2.0] * len(request.continuations)
        return [0.0 if wanted in c else -5.0 for c in request.continuations]

    backend = ScriptedBackend(_fixed_first, scoring=True, scorer=scorer)
    options = first_steps(req, DEFAULT_REGISTRY)
    expected = next(o for o in options if wanted in o.phrase)
    outcome = _run(_ctx(backend, rank_prior=0.0), req)
    assert outcome.ok and outcome.tier is Tier.LLM, outcome.error
    assert outcome.plan is not None and outcome.plan.steps[0] == expected.step
    # One situation call scored every option's phrase; the generation was asked for the rest
    # with the first step fixed and the free grammar's steps after it.
    (situation,) = [c for c in backend.score_calls if c.messages[-1].content != CONTENT_FREE]
    assert situation.continuations == tuple(" " + o.phrase for o in options)
    (call,) = backend.calls
    assert call.schema is not None
    free = PlanCodec(DEFAULT_REGISTRY, mode="free").schema(req)
    assert call.schema["properties"]["plan"]["items"] == free["properties"]["plan"]["items"]
    assert orjson.loads(outcome.raw) == orjson.loads(_fixed_first(call))  # the generated plan


def test_score_first_rank_prior_keeps_the_rules_choice_unless_the_model_is_sure() -> None:
    req = _req()
    options = first_steps(req, DEFAULT_REGISTRY)
    top = next(o for o in options if o.rank == 0)
    other = next(o for o in options if o.rank == len(req.candidates))

    def scorer_by(margin: float) -> Any:
        def scorer(request: ScoreRequest) -> list[float]:
            if request.messages[-1].content == CONTENT_FREE:
                return [0.0] * len(request.continuations)
            return [margin if c == " " + other.phrase else 0.0 for c in request.continuations]

        return scorer

    prior = 1.0
    needed = prior * len(req.candidates)
    for margin, first in ((needed - 0.5, top), (needed + 0.5, other)):
        backend = ScriptedBackend(_fixed_first, scoring=True, scorer=scorer_by(margin))
        outcome = _run(_ctx(backend, rank_prior=prior), req)
        assert outcome.plan is not None and outcome.plan.steps[0] == first.step


def test_ladder_scores_the_first_step_only_when_asked_and_able() -> None:
    batch = Batch((_req(),), "sequential", "free", "compressed", False, 0)
    scoring = ScriptedBackend(scoring=True)
    assert isinstance(ladder(_ctx(scoring), batch, "sequential").rungs[0].attempt, ScoredFirst)
    generate = replace(_ctx(scoring), free_decision="generate")
    assert isinstance(ladder(generate, batch, "sequential").rungs[0].attempt, Generation)
    # A backend that cannot score generates the whole plan, as before.
    plain = _ctx(ScriptedBackend())
    assert isinstance(ladder(plain, batch, "sequential").rungs[0].attempt, Generation)
    guided = replace(batch, mode="guided")
    assert not isinstance(ladder(_ctx(scoring), guided, "sequential").rungs[0].attempt, ScoredFirst)


def test_score_first_failure_is_an_error_outcome_not_an_exception() -> None:
    def scorer(request: ScoreRequest) -> list[float]:
        return [0.0]  # one score whatever the number of phrases: the backend refuses

    backend = ScriptedBackend(_fixed_first, scoring=True, scorer=scorer)
    outcome = _run(_ctx(backend), _req())
    assert not outcome.ok and outcome.plan is None and isinstance(outcome.error, ConfigError)
    assert not backend.calls  # nothing generated after a failed choice


@pytest.mark.model
def test_real_model_first_steps_depend_on_the_situation() -> None:
    """With the embedded model, a hurt ally in a quiet spot and an empty goal get plans that
    start differently (plain generation began 65 of 66 suite plans with Scan), each valid
    at the LLM tier, its first step one of the agent's legal ones, and no copy of the prompt."""
    from embedded_runs import plan_free_one_by_one

    from aiplanner.codec import json_values
    from aiplanner.heuristic import HeuristicPlanner
    from aiplanner.prompts import PromptBuilder
    from aiplanner.scenarios import load_scenarios

    names = ("support-hurt-ally-quiet", "exploration-on-the-goal")
    by_name = {s.name: s for s in load_scenarios()}
    reqs = [
        PlanRequest(
            i + 1, i + 1, snap, HeuristicPlanner().candidates(snap, 4), 0, 0.0, 120.0, 120.0
        )
        for i, snap in enumerate(by_name[n].snapshot for n in names)
    ]
    out = plan_free_one_by_one(reqs, n_threads=2, free_decision="score-first")
    builder = PromptBuilder(DEFAULT_REGISTRY, mode="free")
    for req, o in zip(reqs, out, strict=True):
        assert o.ok and o.tier is Tier.LLM and o.plan is not None, (o.error, o.raw)
        legal = {f.step for f in first_steps(req, DEFAULT_REGISTRY)}
        assert o.plan.steps[0] in legal
        prompt = "\n".join(m.content for m in builder.messages(req))
        assert orjson.loads(o.raw) not in json_values(prompt)
    assert len({o.plan.steps[0].action for o in out if o.plan is not None}) >= 2
