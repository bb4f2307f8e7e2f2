"""Batching strategies at the event-loop level: per-agent isolation and streaming."""

from __future__ import annotations

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
from aiplanner.errors import BackendUnavailable
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, resolve_strategy, run_batch


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
