"""A planning round measured from the outside: when does each agent get its plan?

Shared by the ``strategies`` suite and by ``tune``. A round is a list of batches handed to
:func:`~aiplanner.strategies.run_batch` as the plugin would: one batch at a time for an engine that
serves one call at a time, all batches at once for one that batches concurrent calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Tier
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch

__all__ = ["Delivery", "RoundResult", "plan_round", "split"]

_LLM_TIERS = (Tier.LLM, Tier.LLM_SIMPLE)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One agent's outcome: seconds from the start of the round, and whether the model planned."""

    entity: int
    seconds: float
    by_model: bool


@dataclass(frozen=True, slots=True)
class RoundResult:
    """Every agent's delivery (in arrival order), the round's wall time and the backend's stats."""

    deliveries: tuple[Delivery, ...]
    wall_s: float
    stats: dict[str, object]

    @property
    def first_s(self) -> float | None:
        return self.deliveries[0].seconds if self.deliveries else None

    def on_time_share(self, deadline_s: float, agents: int) -> float:
        """Share of ``agents`` whose model plan came within ``deadline_s`` of the round's start."""
        good = sum(1 for d in self.deliveries if d.by_model and d.seconds <= deadline_s)
        return good / agents if agents else 0.0


def split(reqs: Sequence[PlanRequest], size: int) -> list[tuple[PlanRequest, ...]]:
    """``reqs`` in batches of at most ``size``, in order."""
    return [tuple(reqs[i : i + size]) for i in range(0, len(reqs), size)]


async def plan_round(
    backend: Backend,
    batches: Sequence[Sequence[PlanRequest]],
    strategy: str,
    *,
    mode: str = "guided",
    prompt_tier: str = "compressed",
    overlap: bool | None = None,
    cutoff_s: float | None = None,
) -> RoundResult:
    """Plan every batch with ``strategy``; batches overlap when ``overlap`` (default: when the
    backend batches concurrent calls), else they run one after another. After ``cutoff_s``
    seconds the calls still running are cancelled (their agents have no delivery)."""
    metrics = Metrics()
    deliveries: list[Delivery] = []
    started = time.monotonic()

    def emit(o: PlanOutcome) -> None:
        deliveries.append(Delivery(o.entity, time.monotonic() - started, o.tier in _LLM_TIERS))

    ctx = PlanContext(backend, DEFAULT_REGISTRY, metrics, CircuitBreaker(1000), emit)
    todo = [Batch(tuple(b), strategy, mode, prompt_tier, True, 0) for b in batches]
    parallel = backend.info.parallel if overlap is None else overlap
    with anyio.move_on_after(cutoff_s):
        if parallel:
            async with anyio.create_task_group() as tg:
                for batch in todo:
                    tg.start_soon(run_batch, ctx, batch)
        else:
            for batch in todo:
                await run_batch(ctx, batch)
    return RoundResult(tuple(deliveries), time.monotonic() - started, metrics.stats())
