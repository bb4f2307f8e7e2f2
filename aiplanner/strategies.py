"""Batching strategies: how a batch of agents meets a backend.

* ``sequential``: one agent per call, one call at a time (the baseline).
* ``packed``: all agents of the batch in one prompt; the model answers one JSON array with one
  element per agent, parsed as it streams (each plan is released when its element closes).
* ``concurrent``: one call per agent, up to the backend's concurrency limit at once, all sharing the
  same system prefix (for engines with continuous batching).
* ``auto``: ``concurrent`` where the backend batches concurrent calls, else ``sequential``.

Every strategy reports each agent on its own, as soon as its plan is known, through ``emit``; a
failure of one agent (malformed element, missing or duplicated id) never fails the others. Agents
that fail the first tier are retried once with the simplified prompt when time allows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import anyio
from anyio import CancelScope

from aiplanner.actions import ActionRegistry
from aiplanner.backends.base import Backend, CompletionRequest, Finished, TextDelta, Usage
from aiplanner.breaker import CircuitBreaker
from aiplanner.codec import ElementError, PlanCodec
from aiplanner.components import Tier
from aiplanner.errors import (
    BackendError,
    CircuitOpen,
    ParseError,
    PlannerError,
    PlanRejected,
    ResponseTooLarge,
)
from aiplanner.metrics import Metrics
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.stream_parser import JsonArrayStream
from aiplanner.validation import validate_plan

__all__ = ["STRATEGY_NAMES", "Batch", "PlanContext", "resolve_strategy", "run_batch"]

STRATEGY_NAMES: tuple[str, ...] = ("sequential", "packed", "concurrent")
_MIN_RETRY_BUDGET_S = 0.15
_SIMPLE_CANDIDATES = 2


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as submitted: the agents and the settings in force when it was formed."""

    requests: tuple[PlanRequest, ...]
    strategy: str
    mode: str
    prompt_tier: str
    simplified_retry: bool
    tick: int


@dataclass(slots=True)
class PlanContext:
    """What the strategies need; lives on the event loop thread.

    ``wanted(entity)`` says whether a plan is still needed; ``scope(entities)`` gives the cancel
    scope of one call (the bridge cancels it once none of them is wanted). The defaults suit a
    caller outside the bridge (CLI, benchmarks): everything wanted, nothing cancelled from outside.
    """

    backend: Backend
    registry: ActionRegistry
    metrics: Metrics
    breaker: CircuitBreaker
    emit: Callable[[PlanOutcome], None]
    wanted: Callable[[int], bool] = lambda _entity: True
    scope: Callable[[frozenset[int]], AbstractContextManager[CancelScope]] = lambda _entities: (
        CancelScope()
    )
    max_response_bytes: int = 65_536
    temperature: float = 0.0
    seed: int = 0
    _builders: dict[tuple[str, str], PromptBuilder] = field(default_factory=dict)
    _codecs: dict[str, PlanCodec] = field(default_factory=dict)

    def builder(self, tier: str, mode: str) -> PromptBuilder:
        b = self._builders.get((tier, mode))
        if b is None:
            b = self._builders[(tier, mode)] = PromptBuilder(self.registry, tier=tier, mode=mode)
        return b

    def codec(self, mode: str) -> PlanCodec:
        c = self._codecs.get(mode)
        if c is None:
            c = self._codecs[mode] = PlanCodec(self.registry, mode=mode)
        return c


def resolve_strategy(name: str, backend: Backend) -> str:
    """Map ``auto`` to a concrete strategy for ``backend``; pass the others through."""
    if name != "auto":
        return name
    info = backend.info
    return "concurrent" if info.parallel and info.max_concurrency > 1 else "sequential"


async def run_batch(ctx: PlanContext, batch: Batch) -> None:
    """Plan every agent of ``batch``, emitting one outcome per agent as soon as it is known.

    Never raises for a backend or model failure: those become error outcomes (the game thread then
    applies the fallback tier). Cancellation propagates.
    """
    strategy = resolve_strategy(batch.strategy, ctx.backend)
    reqs = [r for r in batch.requests if ctx.wanted(r.entity)]
    if strategy == "packed" and len(reqs) > 1:
        await _packed(ctx, batch, reqs)
    elif strategy == "concurrent":
        limit = anyio.Semaphore(max(1, ctx.backend.info.max_concurrency))

        async def one(req: PlanRequest) -> None:
            async with limit:
                await _single_with_retry(ctx, batch, req, strategy)

        async with anyio.create_task_group() as tg:
            for req in reqs:
                tg.start_soon(one, req)
    else:
        for req in reqs:
            await _single_with_retry(
                ctx, batch, req, "sequential" if strategy != "packed" else strategy
            )


async def _single_with_retry(
    ctx: PlanContext, batch: Batch, req: PlanRequest, strategy: str
) -> None:
    if not ctx.wanted(req.entity):
        return
    started = time.monotonic()
    outcome = await _single(ctx, req, Tier.LLM, batch.prompt_tier, batch.mode, strategy, batch.tick)
    if not outcome.ok and batch.simplified_retry:
        left = req.budget_s - (time.monotonic() - started)
        if left > _MIN_RETRY_BUDGET_S and ctx.wanted(req.entity):
            simple = dataclasses.replace(
                req, candidates=req.candidates[:_SIMPLE_CANDIDATES], budget_s=left
            )
            outcome = await _single(
                ctx, simple, Tier.LLM_SIMPLE, "compressed", "guided", strategy, batch.tick
            )
    ctx.emit(outcome)


async def _single(
    ctx: PlanContext,
    req: PlanRequest,
    tier: Tier,
    prompt_tier: str,
    mode: str,
    strategy: str,
    tick: int,
) -> PlanOutcome:
    """One call for one agent at one tier. Returns an outcome; never raises PlannerError."""
    if mode == "guided" and len(req.candidates) == 1:
        # Nothing to choose: the rules' only legal plan is the answer, and no call is made.
        return PlanOutcome(
            req.entity, req.plan_id, req.candidates[0], Tier.HEURISTIC, strategy=strategy
        )
    codec = ctx.codec(mode)
    text = ""
    try:
        call = CompletionRequest(
            messages=ctx.builder(prompt_tier, mode).messages(req),
            schema=codec.schema(req),  # ConfigError for a guided request without candidates
            max_tokens=codec.max_tokens(1),
            temperature=ctx.temperature,
            seed=ctx.seed,
            timeout_s=req.budget_s,
            agents=(req.entity,),
            tag={
                "shape": "single",
                "mode": mode,
                "requests": (req,),
                "tick": tick,
                "requested_at": req.requested_at,
                "tier": tier.value,
            },
        )
        with ctx.scope(frozenset(call.agents)) as scope:
            text, usage, ready_at = await _call(ctx, call, None)
        if scope.cancelled_caught:  # nobody waits for this plan: not a backend failure
            ctx.metrics.record_error("cancelled")
            return PlanOutcome(
                req.entity,
                req.plan_id,
                None,
                None,
                BackendError("cancelled: the plan is no longer needed"),
                strategy=strategy,
            )
        plan = validate_plan(codec.decode(text, req), req.snapshot, ctx.registry)
    except PlannerError as exc:
        _count_failure(ctx, exc)
        return PlanOutcome(req.entity, req.plan_id, None, None, exc, raw=text, strategy=strategy)
    return PlanOutcome(
        req.entity, req.plan_id, plan, tier, None, text[:512], usage, ready_at, strategy
    )


async def _packed(ctx: PlanContext, batch: Batch, reqs: list[PlanRequest]) -> None:
    """One call for the whole batch; each element is decoded, validated and emitted as it closes."""
    codec = ctx.codec(batch.mode)
    by_id = {r.entity: r for r in reqs}
    done: set[int] = set()
    failed: list[PlanRequest] = []
    held: list[PlanOutcome] = []
    parser = JsonArrayStream(max_buffer_bytes=ctx.max_response_bytes)
    call = CompletionRequest(
        messages=ctx.builder(batch.prompt_tier, batch.mode).packed_messages(reqs),
        schema=codec.packed_schema(reqs),
        max_tokens=codec.max_tokens(len(reqs)),
        temperature=ctx.temperature,
        seed=ctx.seed,
        timeout_s=min(r.budget_s for r in reqs),
        agents=tuple(by_id),
        tag={
            "shape": "packed",
            "mode": batch.mode,
            "requests": tuple(reqs),
            "tick": batch.tick,
            "requested_at": min(r.requested_at for r in reqs),
            "tier": Tier.LLM.value,
        },
    )

    def on_element(value: object) -> None:
        try:
            entity, plan = codec.decode_element(value, by_id)
        except ElementError as exc:
            ctx.metrics.record_invalid(exc.reason)
            if exc.entity is not None and exc.entity in by_id and exc.entity not in done:
                done.add(exc.entity)
                failed.append(by_id[exc.entity])
            return
        if entity in done:
            ctx.metrics.record_invalid("duplicate_id")  # the first answer for an agent wins
            return
        done.add(entity)
        req = by_id[entity]
        try:
            plan = validate_plan(plan, req.snapshot, ctx.registry)
        except PlanRejected as exc:
            ctx.metrics.record_invalid(exc.reason)
            failed.append(req)
            return
        held.append(PlanOutcome(entity, req.plan_id, plan, Tier.LLM, strategy="packed"))

    def on_text(chunk: str) -> None:
        for value in parser.feed(chunk):
            on_element(value)
        # Release plans as soon as their element closes, not at the end of the call.
        for o in held:
            ctx.emit(o)
        held.clear()

    try:
        with ctx.scope(frozenset(call.agents)) as scope:
            await _call(ctx, call, on_text)
        if scope.cancelled_caught:
            return  # nobody in this batch needs a plan any more
        parser.close()
    except PlannerError as exc:
        _count_failure(ctx, exc)
    for o in held:  # elements completed by the last chunk before an error
        ctx.emit(o)
    missing = [r for r in reqs if r.entity not in done]
    if missing:
        ctx.metrics.record_invalid("missing_id")
    for req in failed + missing:
        await _retry_simple(ctx, batch, req)


async def _retry_simple(ctx: PlanContext, batch: Batch, req: PlanRequest) -> None:
    """A packed batch failed this agent alone: retry it on its own with the simplified prompt."""
    if not batch.simplified_retry or not ctx.wanted(req.entity):
        ctx.emit(
            PlanOutcome(
                req.entity,
                req.plan_id,
                None,
                None,
                PlanRejected("missing_id", "no valid element for this agent"),
                strategy="packed",
            )
        )
        return
    simple = dataclasses.replace(req, candidates=req.candidates[:_SIMPLE_CANDIDATES])
    ctx.emit(
        await _single(ctx, simple, Tier.LLM_SIMPLE, "compressed", "guided", "packed", batch.tick)
    )


def _count_failure(ctx: PlanContext, exc: PlannerError) -> None:
    if isinstance(exc, PlanRejected):
        ctx.metrics.record_invalid(exc.reason)
    elif isinstance(exc, ParseError):
        ctx.metrics.record_invalid("parse_error")
    else:
        ctx.metrics.record_error(type(exc).__name__)


async def _call(
    ctx: PlanContext, call: CompletionRequest, on_text: Callable[[str], None] | None
) -> tuple[str, Usage, float | None]:
    """Make one backend call through the circuit breaker; return text, usage and ready_at.

    Raises CircuitOpen, BackendError subclasses, ResponseTooLarge, or what ``on_text`` raises.
    """
    if not ctx.breaker.allow():
        raise CircuitOpen(f"circuit open for backend {ctx.backend.info.name}")
    ctx.metrics.count_request()
    parts: list[str] = []
    size = 0
    started = time.monotonic()
    first: float | None = None
    usage = Usage()
    ready_at: float | None = None
    verdict = False
    try:
        async for event in ctx.backend.stream(call):
            if isinstance(event, TextDelta):
                if first is None:
                    first = time.monotonic() - started
                size += len(event.text)
                if size > ctx.max_response_bytes:
                    raise ResponseTooLarge(f"answer passed {ctx.max_response_bytes} bytes")
                parts.append(event.text)
                if on_text is not None:
                    on_text(event.text)
            elif isinstance(event, Finished):
                usage, ready_at = event.usage, event.ready_at
        ctx.breaker.record_success()
        verdict = True
    except BackendError:
        ctx.breaker.record_failure()
        verdict = True
        raise
    except PlannerError:
        ctx.breaker.record_success()  # the engine answered; the model's text was bad
        verdict = True
        raise
    finally:
        if not verdict:
            ctx.breaker.release_trial()
    total = time.monotonic() - started
    usage = Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        ttft_s=usage.ttft_s if usage.ttft_s is not None else first,
        total_s=usage.total_s if usage.total_s is not None else total,
    )
    ctx.metrics.record_call(usage.total_s, usage.ttft_s)
    ctx.metrics.record_tokens(usage.prompt_tokens, usage.completion_tokens, len(call.agents))
    return "".join(parts), usage, ready_at
