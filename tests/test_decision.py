"""Guided decisions by scoring: the choice rule, calibration, order invariance, the call path."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace

import anyio
import pytest
from scenario import make_request

from aiplanner.actions import DEFAULT_REGISTRY, Plan, Step
from aiplanner.backends.base import ScoreRequest
from aiplanner.backends.scripted import ScriptedBackend, ScriptedReply
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Tier
from aiplanner.decision import CalibrationCache, ScoreMemo, can_score, choose, decide
from aiplanner.errors import BackendUnavailable, CircuitOpen, ConfigError
from aiplanner.metrics import Metrics
from aiplanner.phrasing import CONTENT_FREE, plan_phrase
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.snapshot import SeenUnit
from aiplanner.strategies import PlanContext


def test_choose_combines_calibrated_score_and_rank_prior() -> None:
    raw = [-5.0, -4.0, -6.0]
    base = [-5.0, -5.0, -9.0]  # calibrated: 0, 1, 3
    assert choose(raw, base, rank_prior=0.0).index == 2
    assert choose(raw, base, rank_prior=1.0).index == 2  # 0, 0, 1
    assert choose(raw, base, rank_prior=2.0).index == 0  # 0, -1, -1
    assert choose(raw, None, rank_prior=0.0).index == 1  # uncalibrated: the raw maximum
    c = choose(raw, base, rank_prior=1.0)
    assert c.calibrated == (0.0, 1.0, 3.0) and c.combined == (0.0, 0.0, 1.0)


def test_ties_go_to_the_better_ranked_candidate() -> None:
    assert choose([0.0, 0.0, 0.0], None, rank_prior=0.0).index == 0
    assert choose([-1.0, 0.0, 0.0], None, rank_prior=0.0).index == 1


def test_choose_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        choose([], None, rank_prior=0.0)
    with pytest.raises(ConfigError):
        choose([1.0], [1.0, 2.0], rank_prior=0.0)
    with pytest.raises(ConfigError):
        choose([1.0], None, rank_prior=-1.0)


def test_calibration_cache_is_a_bounded_lru() -> None:
    cache = CalibrationCache(2)
    cache.put("a", 1.0)
    cache.put("b", 2.0)
    assert cache.get("a") == 1.0  # a is now the most recent
    cache.put("c", 3.0)
    assert cache.get("b") is None and cache.get("a") == 1.0 and len(cache) == 2
    with pytest.raises(ConfigError):
        CalibrationCache(0)


def _ctx(backend: ScriptedBackend, **changes: object) -> PlanContext:
    ctx = PlanContext(backend, DEFAULT_REGISTRY, Metrics(), CircuitBreaker(3, 60.0), lambda o: None)
    return replace(ctx, **changes)  # type: ignore[arg-type]


def _req(enemies: int = 2) -> PlanRequest:
    req = make_request(3, enemies=enemies)
    assert isinstance(req, PlanRequest) and len(req.candidates) >= 3
    return req


def _random_scores(
    phrases: list[str], seed: int
) -> tuple[dict[str, float], Callable[[ScoreRequest], list[float]]]:
    """Seeded scores for ``phrases`` (-9 for any other) and a scorer that gives them, with the
    same content-free score for every phrase."""
    rng = random.Random(seed)
    scores = {p: rng.uniform(-8, -1) for p in phrases}

    def scorer(request: ScoreRequest) -> list[float]:
        if request.messages[-1].content == CONTENT_FREE:
            return [-3.0] * len(request.continuations)
        return [scores.get(c, -9.0) for c in request.continuations]

    return scores, scorer


def _decide(ctx: PlanContext, req: PlanRequest) -> PlanOutcome:
    async def run() -> PlanOutcome:
        return await decide(ctx, req, Tier.LLM, 5.0)

    return anyio.run(run)


def _scorer_preferring(phrase_part: str, calibration: float = 0.0) -> object:
    def scorer(request: ScoreRequest) -> list[float]:
        if request.messages[-1].content == CONTENT_FREE:
            return [calibration] * len(request.continuations)
        return [0.0 if phrase_part in c else -4.0 for c in request.continuations]

    return scorer


def test_decide_picks_the_candidate_the_model_scores_best() -> None:
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    target = 2
    backend = ScriptedBackend(scoring=True, scorer=_scorer_preferring(phrases[target]))  # type: ignore[arg-type]
    out = _decide(_ctx(backend, rank_prior=1.0), req)
    assert out.ok and out.tier is Tier.LLM and out.plan == req.candidates[target]
    assert out.raw.startswith(f"pick {target}")
    # The situation went out with the candidates' phrases, and one calibration call.
    sent = [c for c in backend.score_calls if c.messages[-1].content != CONTENT_FREE]
    assert len(sent) == 1 and sent[0].continuations == tuple(phrases) and sent[0].lead == "I should"
    assert len(backend.score_calls) == 2


def test_a_candidate_naming_a_unit_past_the_nearest_few_sends_its_description() -> None:
    req = _req()
    snap = req.snapshot
    allies = tuple(
        SeenUnit(200 + i, 1, 1 + i, 30 if i == 4 else 100, False, 1.0 + i) for i in range(5)
    )
    snap = replace(snap, allies=allies)
    heal = Plan((Step("Heal", (allies[4].id,)),))  # "heal ally 5": the situation lists 1-3 alone
    req = replace(req, snapshot=snap, candidates=(*req.candidates[:2], heal))
    backend = ScriptedBackend(scoring=True, scorer=_scorer_preferring("zzz"))  # type: ignore[arg-type]
    out = _decide(_ctx(backend), req)
    assert out.ok
    (sent,) = [c for c in backend.score_calls if c.messages[-1].content != CONTENT_FREE]
    assert sent.continuations[2] == " heal ally 5"
    assert "\nAlly 5: near, badly hurt.\n" in sent.messages[-1].content
    assert "Ally 4" not in sent.messages[-1].content  # named by no candidate: not described


def test_the_outcome_carries_the_models_next_choices_best_first() -> None:
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    ranks = [-5.0, -1.0, -3.0, -2.0][: len(phrases)]  # the model prefers 1, then 3, 2, 0

    def scorer(request: ScoreRequest) -> list[float]:
        if request.messages[-1].content == CONTENT_FREE:
            return [0.0] * len(request.continuations)
        return [ranks[phrases.index(c)] for c in request.continuations]

    backend = ScriptedBackend(scoring=True, scorer=scorer)
    out = _decide(_ctx(backend, rank_prior=0.0), req)
    order = sorted(range(len(phrases)), key=lambda i: -ranks[i])
    assert out.plan == req.candidates[order[0]]
    assert out.alternatives == tuple(req.candidates[i] for i in order[1:])
    assert choose(ranks, None, rank_prior=0.0).ranking() == tuple(order)
    # Ties keep the rules' order, as the choice itself does.
    assert choose([0.0, 0.0, -1.0], None, rank_prior=0.0).ranking() == (0, 1, 2)


def test_a_strong_prior_keeps_the_rules_first_choice() -> None:
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    backend = ScriptedBackend(scoring=True, scorer=_scorer_preferring(phrases[2]))  # type: ignore[arg-type]
    out = _decide(_ctx(backend, rank_prior=5.0), req)
    assert out.plan == req.candidates[0]


def test_calibration_scores_are_cached_per_phrase() -> None:
    req = _req()
    backend = ScriptedBackend(scoring=True)
    ctx = _ctx(backend)
    _decide(ctx, req)
    _decide(ctx, req)
    free = [c for c in backend.score_calls if c.messages[-1].content == CONTENT_FREE]
    assert len(free) == 1 and len(ctx.calibration) == len(req.candidates)
    uncalibrated = ScriptedBackend(scoring=True)
    _decide(_ctx(uncalibrated, calibrated=False), req)
    assert all(c.messages[-1].content != CONTENT_FREE for c in uncalibrated.score_calls)


def _situations(backend: ScriptedBackend) -> list[ScoreRequest]:
    return [c for c in backend.score_calls if c.messages[-1].content != CONTENT_FREE]


def test_a_situation_scored_before_is_decided_from_the_memo_without_a_call() -> None:
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    backend = ScriptedBackend(scoring=True, scorer=_scorer_preferring(phrases[2]))  # type: ignore[arg-type]
    ctx = _ctx(backend, rank_prior=0.0, memo=ScoreMemo())
    first = _decide(ctx, req)
    again = _decide(ctx, req)
    assert first.plan == again.plan == req.candidates[2]
    assert again.alternatives == first.alternatives
    assert len(_situations(backend)) == 1  # the second decision made no call
    assert ctx.metrics.stats()["remembered"] == 1
    assert again.usage is not None and again.usage.prompt_tokens == 0
    # Without a memo (the context's default) the same situation is asked again.
    plain = ScriptedBackend(scoring=True, scorer=_scorer_preferring(phrases[2]))  # type: ignore[arg-type]
    ctx_plain = _ctx(plain, rank_prior=0.0)
    _decide(ctx_plain, req)
    _decide(ctx_plain, req)
    assert len(_situations(plain)) == 2 and ctx_plain.metrics.stats()["remembered"] == 0


def test_the_memo_asks_only_for_phrases_not_scored_after_that_situation() -> None:
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    scores, scorer = _random_scores(phrases, 7)
    backend = ScriptedBackend(scoring=True, scorer=scorer)
    ctx = _ctx(backend, rank_prior=0.0, memo=ScoreMemo())
    _decide(ctx, replace(req, candidates=req.candidates[:2]))
    out = _decide(ctx, req)
    asked = _situations(backend)
    assert asked[1].continuations == tuple(phrases[2:])  # the first two came from the memo
    best = max(range(len(phrases)), key=lambda i: scores[phrases[i]])
    assert out.plan == req.candidates[best]
    # Another situation (the agent moved: other words) is not answered from the memo.
    _decide(ctx, _req(enemies=3))
    assert len(_situations(backend)) == 3


def test_the_order_candidates_come_in_does_not_change_the_models_choice() -> None:
    """With no prior the decision is a property of the plans, not of their positions."""
    req = _req()
    phrases = [plan_phrase(c, req.snapshot, DEFAULT_REGISTRY) for c in req.candidates]
    _, scorer = _random_scores(phrases, 4)
    picks = set()
    for seed in range(6):
        order = list(req.candidates)
        random.Random(seed).shuffle(order)
        shuffled = replace(req, candidates=tuple(order))
        backend = ScriptedBackend(scoring=True, scorer=scorer)
        out = _decide(_ctx(backend, rank_prior=0.0), shuffled)
        picks.add(out.plan)
    assert len(picks) == 1


def test_failures_become_outcomes_and_open_the_breaker() -> None:
    req = _req()
    backend = ScriptedBackend(
        scoring=True, scorer=lambda r: ScriptedReply(error=BackendUnavailable("down"))
    )
    ctx = _ctx(backend)
    errors = [_decide(ctx, req).error for _ in range(4)]
    assert all(e is not None for e in errors)
    assert isinstance(errors[0], BackendUnavailable) and isinstance(errors[-1], CircuitOpen)


def test_a_backend_that_cannot_score_is_refused_per_agent() -> None:
    backend = ScriptedBackend()
    assert not can_score(backend) and can_score(ScriptedBackend(scoring=True))
    out = _decide(_ctx(backend), _req())
    assert not out.ok and isinstance(out.error, ConfigError)


def test_a_single_candidate_needs_no_call() -> None:
    req = _req()
    one = replace(req, candidates=req.candidates[:1])
    backend = ScriptedBackend(scoring=True)
    out = _decide(_ctx(backend), one)
    assert out.plan == one.candidates[0] and out.tier is Tier.HEURISTIC
    assert not backend.score_calls


def test_wrong_number_of_scores_is_an_error_not_a_pick() -> None:
    backend = ScriptedBackend(scoring=True, scorer=lambda r: [0.0])
    out = _decide(_ctx(backend), _req())
    assert not out.ok and isinstance(out.error, ConfigError)


@pytest.mark.parametrize("parallel", [True, False])
def test_calibration_goes_out_with_the_situation_only_where_calls_run_together(
    parallel: bool,
) -> None:
    req = _req()
    gate = threading.Event()
    backend = ScriptedBackend(scoring=True, gate=gate, parallel=parallel)
    got: list[PlanOutcome] = []

    async def run() -> None:
        async def one() -> None:
            got.append(await decide(_ctx(backend), req, Tier.LLM, 30.0))

        async with anyio.create_task_group() as group:
            group.start_soon(one)
            with anyio.fail_after(10.0):  # a hang guard, not a timing
                while len(backend.score_calls) < 1:
                    await anyio.sleep(0.002)
                await anyio.sleep(0.05)  # room for a second call, if it is going out now
            gated = len(backend.score_calls)
            gate.set()
        # A batched engine evaluates both in one pass; a serial one gets them one after another.
        assert gated == (2 if parallel else 1)

    anyio.run(run)
    assert got[0].ok and len(backend.score_calls) == 2


def test_a_failed_calibration_call_is_the_agents_error_not_an_exception_group() -> None:
    req = _req()

    def scorer(request: ScoreRequest) -> object:
        if request.messages[-1].content == CONTENT_FREE:
            return ScriptedReply(error=BackendUnavailable("calibration down"))
        return [0.0] * len(request.continuations)

    backend = ScriptedBackend(scoring=True, scorer=scorer, parallel=True)  # type: ignore[arg-type]
    out = _decide(_ctx(backend), req)
    assert isinstance(out.error, BackendUnavailable) and "calibration down" in str(out.error)
