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
