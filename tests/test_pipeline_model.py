"""The planning pipeline with the real embedded model (SmolLM2-135M): packed batches stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import esper
import pytest
from scenario import spawn_battle

from aiplanner import DEFAULT_REGISTRY, HeuristicPlanner, SnapshotSystem, Tier
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


def _real_requests(world: str, n: int) -> list[PlanRequest]:
    ents = spawn_battle(2 * n, seed=5)
    snaps = SnapshotSystem()
    snaps.process(0.0)
    planner = HeuristicPlanner()
    out = []
    for i, e in enumerate(ents[:n]):
        snap = snaps.snapshot(e)
        assert snap is not None
        out.append(PlanRequest(e, i + 1, snap, planner.candidates(snap, 4), 0, 0.0, 120.0, 120.0))
    return out


@pytest.mark.parametrize("mode", ["guided", "free"])
def test_packed_batch_of_five_real_snapshots_streams_valid_plans(world: str, mode: str) -> None:
    reqs = _real_requests(world, 5)
    backend = CountingBackend(EmbeddedBackend(n_threads=2))
    out: list[PlanOutcome] = []
    chunks_at_emit: list[int] = []

    def emit(o: PlanOutcome) -> None:
        out.append(o)
        chunks_at_emit.append(backend.chunks)

    @contextlib.contextmanager
    def scope(_: frozenset[int]) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as s:
            yield s

    async def main() -> None:
        ctx = PlanContext(
            backend, DEFAULT_REGISTRY, Metrics(), CircuitBreaker(), emit, lambda _e: True, scope
        )
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
