"""The planning pipeline with the real embedded model (SmolLM2-135M): packed batches stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import esper
import pytest
from scenario import real_requests

from aiplanner import DEFAULT_REGISTRY, Tier
from aiplanner.backends.base import BackendInfo, CompletionRequest, StreamEvent, TextDelta
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.breaker import CircuitBreaker
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch
from aiplanner.validation import validate_plan

pytestmark = pytest.mark.model


class CountingBackend:
    """Wraps a backend and counts the text chunks it has produced so far."""

    def __init__(self, inner: EmbeddedBackend) -> None:
        self.inner = inner
        self.chunks = 0

    @property
    def info(self) -> BackendInfo:
        return self.inner.info

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        async for event in self.inner.stream(request):
            if isinstance(event, TextDelta):
                self.chunks += 1
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("mode", ["guided", "free"])
def test_packed_batch_of_five_real_snapshots_streams_valid_plans(world: str, mode: str) -> None:
    reqs: list[PlanRequest] = real_requests(5)  # type: ignore[assignment]
    backend = CountingBackend(EmbeddedBackend(n_threads=2))
    out: list[PlanOutcome] = []
    chunks_at_emit: list[int] = []

    def emit(o: PlanOutcome) -> None:
        out.append(o)
        chunks_at_emit.append(backend.chunks)

    async def main() -> None:
        ctx = PlanContext(backend, DEFAULT_REGISTRY, Metrics(), CircuitBreaker(), emit)
        try:
            await run_batch(ctx, Batch(tuple(reqs), "packed", mode, "compressed", False, 0))
        finally:
            await backend.aclose()

    anyio.run(main)
    assert sorted(o.entity for o in out) == sorted(r.entity for r in reqs)
    by_id = {r.entity: r for r in reqs}
    for o in out:
        assert o.ok and o.tier is Tier.LLM, o.error
        assert o.plan is not None
        validate_plan(o.plan, by_id[o.entity].snapshot)  # raises if not valid
    # Streamed: the first plan was released while the model was still writing the others.
    assert chunks_at_emit[0] < backend.chunks
    assert esper.current_world == world


def test_one_real_snapshot_gives_a_valid_plan_deterministically(world: str) -> None:
    """Default model, guided mode, temperature 0, fixed seed: parses, validates, repeats."""
    req: PlanRequest = real_requests(1, seed=9)[0]  # type: ignore[assignment]

    async def plan_twice() -> list[PlanOutcome]:
        out: list[PlanOutcome] = []
        backend = EmbeddedBackend(n_threads=2, seed=0)
        ctx = PlanContext(backend, DEFAULT_REGISTRY, Metrics(), CircuitBreaker(), out.append)
        try:
            for _ in range(2):
                await run_batch(ctx, Batch((req,), "sequential", "guided", "compressed", False, 0))
        finally:
            await backend.aclose()
        return out

    first, second = anyio.run(plan_twice)
    assert first.tier is Tier.LLM and first.plan is not None, first.error
    assert validate_plan(first.plan, req.snapshot) == first.plan
    assert first.plan in req.candidates
    assert (second.plan, second.raw) == (first.plan, first.raw)
