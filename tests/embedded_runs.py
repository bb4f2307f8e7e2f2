"""Requests planned by the real embedded model one at a time (not a test module): what the
real-model tests of the free-mode pipeline share (``test_pipeline_model``, ``test_free_first``)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from aiplanner import DEFAULT_REGISTRY
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.breaker import CircuitBreaker
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch


def plan_free_one_by_one(
    reqs: Sequence[PlanRequest], *, n_threads: int, free_decision: str = "generate"
) -> list[PlanOutcome]:
    """Plan each request in free mode (compressed prompts), one sequential batch each, in order,
    with a fresh :class:`EmbeddedBackend` closed afterwards; the outcomes in the order emitted.

    ``free_decision`` is :attr:`PlanContext.free_decision` ("generate" or "score-first").
    """
    out: list[PlanOutcome] = []

    async def main() -> None:
        backend = EmbeddedBackend(n_threads=n_threads)
        ctx = PlanContext(
            backend,
            DEFAULT_REGISTRY,
            Metrics(),
            CircuitBreaker(),
            out.append,
            free_decision=free_decision,
        )
        try:
            for req in reqs:
                await run_batch(ctx, Batch((req,), "sequential", "free", "compressed", False, 0))
        finally:
            await backend.aclose()

    anyio.run(main)
    return out
