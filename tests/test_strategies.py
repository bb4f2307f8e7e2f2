"""Batching strategies at the event-loop level: per-agent isolation and streaming."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from scenario import make_request

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends.base import BackendInfo, CompletionRequest, Finished, StreamEvent, TextDelta
from aiplanner.backends.scripted import ScriptedBackend, ScriptedReply
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Tier
from aiplanner.errors import BackendBusy, BackendTimeout, BackendUnavailable
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import (
    Batch,
    Ladder,
    PlanContext,
    Rung,
    ladder,
    resolve_strategy,
    run_batch,
)


def _ctx(backend: Any, out: list[PlanOutcome], metrics: Metrics | None = None) -> PlanContext:
    return PlanContext(
        backend=backend,
        registry=DEFAULT_REGISTRY,
        metrics=metrics or Metrics(),
        breaker=CircuitBreaker(100, 1.0),
        emit=out.append,
    )


def _batch(reqs: list[Any], strategy: str, mode: str = "guided", retry: bool = True) -> Batch:
    return Batch(tuple(reqs), strategy, mode, "compressed", retry, tick=1)


def _by_entity(out: list[PlanOutcome]) -> dict[int, PlanOutcome]:
    return {o.entity: o for o in out}


@pytest.mark.parametrize("strategy", ["sequential", "packed", "concurrent"])
@pytest.mark.parametrize("mode", ["guided", "free"])
def test_every_strategy_plans_every_agent(strategy: str, mode: str) -> None:
    reqs = [make_request(e) for e in (3, 1, 2)]
    backend = ScriptedBackend()
    out: list[PlanOutcome] = []
    anyio.run(run_batch, _ctx(backend, out), _batch(reqs, strategy, mode))
    got = _by_entity(out)
    assert sorted(got) == [1, 2, 3] and len(out) == 3
    for r in reqs:
        assert isinstance(r, PlanRequest)
        assert got[r.entity].tier is Tier.LLM
        assert got[r.entity].plan == r.candidates[0]  # the scripted model picks the top candidate
    expected_calls = 1 if strategy == "packed" else 3
    assert len(backend.calls) == expected_calls


def test_packed_bad_element_affects_only_its_agent() -> None:
    reqs = [make_request(e) for e in (1, 2, 3, 4)]

    def responder(call: CompletionRequest) -> ScriptedReply | None:
        if call.tag["shape"] == "packed":
            # 2: choice out of range; 3: duplicated (first wins); 99: never asked; 4: missing.
            return ScriptedReply(
                '[{"id":1,"c":1},{"id":2,"c":7},{"id":3,"c":0},{"id":3,"c":1},{"id":99,"c":0}]'
            )
        return None  # the simplified retry answers normally

    backend = ScriptedBackend(responder)
    metrics = Metrics()
    out: list[PlanOutcome] = []
    anyio.run(run_batch, _ctx(backend, out, metrics), _batch(reqs, "packed"))
    got = _by_entity(out)
    assert len(out) == 4
    assert got[1].tier is Tier.LLM and got[1].plan == reqs[0].candidates[1]  # type: ignore[attr-defined]
    assert got[3].tier is Tier.LLM and got[3].plan == reqs[2].candidates[0]  # type: ignore[attr-defined]
    assert got[2].tier is Tier.LLM_SIMPLE and got[4].tier is Tier.LLM_SIMPLE
    invalid = metrics.stats()["invalid"]
    assert isinstance(invalid, dict)
    assert invalid.get("duplicate_id") == 1 and invalid.get("missing_id") == 1
    assert sum(invalid.values()) >= 4  # bad choice and unknown id were counted too
    retried = [c for c in backend.calls if c.tag["shape"] == "single"]
    assert sorted(c.agents[0] for c in retried) == [2, 4]


def test_packed_without_retry_reports_failures_per_agent() -> None:
    reqs = [make_request(e) for e in (1, 2)]
    backend = ScriptedBackend(lambda c: ScriptedReply('[{"id":1,"c":0},{"id":2,"c":'))
    out: list[PlanOutcome] = []
    anyio.run(run_batch, _ctx(backend, out), _batch(reqs, "packed", retry=False))
    got = _by_entity(out)
    assert got[1].ok and got[1].tier is Tier.LLM
    assert not got[2].ok and got[2].error is not None


class StepwiseBackend:
    """Yields the first element, then waits until the test has seen its plan come out."""

    def __init__(self, first_seen: anyio.Event) -> None:
        self.first_seen = first_seen

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("stepwise", max_concurrency=1)

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        yield TextDelta('[{"id":1,"c":0},')
        with anyio.fail_after(5):  # deadlock guard: the plan for 1 must be out before we go on
            await self.first_seen.wait()
        yield TextDelta('{"id":2,"c":0}]')
        yield Finished()

    async def aclose(self) -> None:
        pass


def test_packed_streams_each_plan_before_the_last_is_generated() -> None:
    reqs = [make_request(e) for e in (1, 2)]
    out: list[PlanOutcome] = []

    async def main() -> None:
        first_seen = anyio.Event()

        def emit(o: PlanOutcome) -> None:
            out.append(o)
            first_seen.set()

        ctx = _ctx(StepwiseBackend(first_seen), out)
        ctx.emit = emit
        await run_batch(ctx, _batch(reqs, "packed"))

    anyio.run(main)
    assert [o.entity for o in out] == [1, 2]
    assert all(o.tier is Tier.LLM for o in out)


def test_backend_failure_becomes_error_outcomes_and_feeds_the_breaker() -> None:
    reqs = [make_request(e) for e in (1, 2, 3)]
    backend = ScriptedBackend(lambda c: ScriptedReply(error=BackendUnavailable("down")))
    out: list[PlanOutcome] = []
    ctx = _ctx(backend, out)
    ctx.breaker = CircuitBreaker(failures=2, cooldown_s=60)
    anyio.run(run_batch, ctx, _batch(reqs, "sequential", retry=False))
    assert [o.ok for o in out] == [False, False, False]
    assert ctx.breaker.state == "open"
    assert len(backend.calls) == 2  # the third agent never reached the dead backend


def test_auto_picks_by_what_the_backend_declares() -> None:
    assert (
        resolve_strategy("auto", ScriptedBackend(parallel=True, max_concurrency=4)) == "concurrent"
    )
    assert (
        resolve_strategy("auto", ScriptedBackend(parallel=False, max_concurrency=1)) == "sequential"
    )
    assert resolve_strategy("packed", ScriptedBackend()) == "packed"


# -- the fallback ladder: one path for every strategy, with the budget checked at every step ----


class FakeClock:
    """The budget clock, moved only by the test's backend: no stopwatch anywhere."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _agent_1_served_first(
    strategy: str, spend_s: float
) -> tuple[dict[int, PlanOutcome], list[CompletionRequest]]:
    """Agents 1 and 2 (5 s budgets): each first-tier call takes ``spend_s`` of the budget clock
    and serves only agent 1; the simplified retry answers at once. Returns the outcomes (exactly
    one per agent, checked) and the retry calls made."""
    clock = FakeClock()

    def responder(call: CompletionRequest) -> ScriptedReply | None:
        if call.tag["tier"] != Tier.LLM.value:
            return None
        clock.now += spend_s
        if call.tag["shape"] == "packed":
            return ScriptedReply('[{"id":1,"c":0}]')  # agent 2 missing
        return None if call.agents == (1,) else ScriptedReply('{"c":9}')  # out of range

    backend = ScriptedBackend(responder, max_concurrency=1)
    out: list[PlanOutcome] = []
    ctx = _ctx(backend, out)
    ctx.clock = clock
    reqs = [make_request(e, budget_s=5.0) for e in (1, 2)]
    anyio.run(run_batch, ctx, _batch(reqs, strategy))
    assert sorted(o.entity for o in out) == [1, 2]
    retries = [c for c in backend.calls if c.tag["tier"] == Tier.LLM_SIMPLE.value]
    return _by_entity(out), retries


@pytest.mark.parametrize("strategy", ["sequential", "packed", "concurrent"])
def test_the_retry_gets_only_the_time_left(strategy: str) -> None:
    got, retries = _agent_1_served_first(strategy, 1.5)
    assert got[1].tier is Tier.LLM and got[2].tier is Tier.LLM_SIMPLE
    assert [c.agents for c in retries] == [(2,)]
    spent = 1.5 * (1 if strategy == "packed" else 2)  # one packed call, or one call per agent
    assert retries[0].timeout_s == pytest.approx(5.0 - spent)
    assert len(retries[0].tag["requests"][0].candidates) == 2  # the simplified tier's two best


@pytest.mark.parametrize("strategy", ["sequential", "packed", "concurrent"])
def test_no_retry_once_the_time_is_spent(strategy: str) -> None:
    # A packed retry with no time left used to go ahead on the original budget.
    got, retries = _agent_1_served_first(strategy, 4.95)
    assert got[1].ok
    assert not got[2].ok and got[2].tier is None and got[2].error is not None
    assert retries == []


def test_a_sequential_agent_whose_budget_went_on_earlier_calls_makes_no_call() -> None:
    reqs = [make_request(1, budget_s=5.0), make_request(2, budget_s=5.0)]
    clock = FakeClock()

    def responder(call: CompletionRequest) -> None:
        clock.now += 6.0  # agent 1's call outlives agent 2's whole budget

    backend = ScriptedBackend(responder)
    out: list[PlanOutcome] = []
    ctx = _ctx(backend, out)
    ctx.clock = clock
    anyio.run(run_batch, ctx, _batch(reqs, "sequential"))
    got = _by_entity(out)
    assert got[1].ok
    assert isinstance(got[2].error, BackendTimeout) and "no time left" in str(got[2].error)
    assert [c.agents for c in backend.calls] == [(1,)]


def test_the_budget_counts_from_submission() -> None:
    req = make_request(1, budget_s=2.0)
    clock = FakeClock()
    backend = ScriptedBackend()
    out: list[PlanOutcome] = []
    ctx = _ctx(backend, out)
    ctx.clock = clock

    async def main() -> None:
        await run_batch(ctx, _batch([req], "sequential"), started=clock.now - 0.5)

    anyio.run(main)
    assert out[0].ok
    assert backend.calls[0].timeout_s == pytest.approx(1.5)  # 0.5 s went by in the queue


def test_every_rung_is_a_pluggable_attempt_given_what_is_left() -> None:
    # The ladder knows nothing of prompts: a rung is any attempt (a scored decision, say).
    req = make_request(7, budget_s=3.0)
    assert isinstance(req, PlanRequest)
    clock = FakeClock()
    seen: list[tuple[Tier, float, int]] = []

    async def failing(ctx: PlanContext, r: PlanRequest, tier: Tier, budget_s: float) -> PlanOutcome:
        seen.append((tier, budget_s, len(r.candidates)))
        clock.now += 1.0
        return PlanOutcome(r.entity, r.plan_id, None, None, BackendUnavailable("down"))

    async def choosing(
        ctx: PlanContext, r: PlanRequest, tier: Tier, budget_s: float
    ) -> PlanOutcome:
        seen.append((tier, budget_s, len(r.candidates)))
        return PlanOutcome(r.entity, r.plan_id, r.candidates[-1], tier)

    steps = Ladder(
        "sequential",
        (Rung(Tier.LLM, failing), Rung(Tier.LLM_SIMPLE, choosing, keep=2, min_budget_s=0.5)),
    )
    out: list[PlanOutcome] = []
    ctx = _ctx(ScriptedBackend(), out)
    ctx.clock = clock
    anyio.run(steps.climb, ctx, req, clock.now + 3.0)
    assert seen == [(Tier.LLM, 3.0, len(req.candidates)), (Tier.LLM_SIMPLE, 2.0, 2)]
    assert len(out) == 1 and out[0].tier is Tier.LLM_SIMPLE and out[0].plan == req.candidates[1]

    # With less left than a rung's minimum, the climb stops at the failure it has.
    out.clear()
    seen.clear()
    anyio.run(steps.climb, ctx, req, clock.now + 1.2)
    assert [s[0] for s in seen] == [Tier.LLM]
    assert len(out) == 1 and isinstance(out[0].error, BackendUnavailable)


def test_the_ladder_follows_the_batch_settings() -> None:
    ctx = _ctx(ScriptedBackend(), [])
    assert [r.tier for r in ladder(ctx, _batch([], "sequential"), "sequential").rungs] == [
        Tier.LLM,
        Tier.LLM_SIMPLE,
    ]
    only = ladder(ctx, _batch([], "packed", retry=False), "packed")
    assert [r.tier for r in only.rungs] == [Tier.LLM] and only.strategy == "packed"


# -- packed outcomes keep usage and ready_at -------------------------------------------------------


def test_packed_under_lockstep_keeps_ready_at_and_splits_the_usage() -> None:
    reqs = [
        dataclasses.replace(make_request(e), requested_at=at)  # type: ignore[type-var]
        for e, at in ((1, 10.25), (2, 10.0), (3, 10.5))
    ]
    backend = ScriptedBackend(virtual_time=True, latency_s=0.75)
    out: list[PlanOutcome] = []
    ctx = _ctx(backend, out)
    ctx.lockstep = True
    anyio.run(run_batch, ctx, _batch(reqs, "packed"))
    (call,) = backend.calls
    assert sorted(o.entity for o in out) == [1, 2, 3] and all(o.tier is Tier.LLM for o in out)
    # One call for all: its simulated latency counts from the earliest request.
    assert {o.ready_at for o in out} == {10.0 + 0.75}
    prompt = sum(len(m.content) for m in call.messages) // 4  # what the double reports
    assert all(o.usage.prompt_tokens is not None for o in out)
    shares = [o.usage.prompt_tokens or 0 for o in out]
    assert sum(shares) == prompt and max(shares) - min(shares) <= 1
    completion = [o.usage.completion_tokens or 0 for o in out]
    assert sum(completion) > 0 and max(completion) - min(completion) <= 1
    assert all(o.usage.total_s is not None for o in out)


def test_packed_plans_released_while_streaming_carry_their_times() -> None:
    reqs = [make_request(e) for e in (1, 2)]
    out: list[PlanOutcome] = []
    anyio.run(run_batch, _ctx(ScriptedBackend(), out), _batch(reqs, "packed"))
    assert len(out) == 2
    for o in out:
        assert o.usage.ttft_s is not None and o.usage.total_s is not None
        assert o.usage.total_s >= o.usage.ttft_s


@pytest.mark.parametrize("strategy", ["sequential", "concurrent"])
def test_a_backend_too_busy_to_answer_is_not_asked_again_with_the_simplified_prompt(
    strategy: str,
) -> None:
    reqs = [make_request(e) for e in (1, 2)]

    def responder(call: CompletionRequest) -> ScriptedReply | None:
        if call.tag["tier"] != Tier.LLM.value:
            return None  # the simplified retry answers normally
        if call.agents == (1,):  # full of other work: shed
            return ScriptedReply(error=BackendBusy("shed: 400 rows ahead"))
        return ScriptedReply('{"c":9}')  # out of range: a bad answer, worth the retry

    backend = ScriptedBackend(responder)
    out: list[PlanOutcome] = []
    anyio.run(run_batch, _ctx(backend, out), _batch(reqs, strategy))
    got = _by_entity(out)
    assert isinstance(got[1].error, BackendBusy) and got[1].tier is None
    assert got[2].tier is Tier.LLM_SIMPLE
    retried = [c.agents for c in backend.calls if c.tag["tier"] == Tier.LLM_SIMPLE.value]
    assert retried == [(2,)]
