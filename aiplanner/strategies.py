"""Batching strategies and the fallback ladder: how a batch of agents meets a backend.

* ``sequential``: one agent per call, one call at a time (the baseline).
* ``packed``: all agents of the batch in one prompt; the model answers one JSON array with one
  element per agent, parsed as it streams (each plan is released when its element closes).
* ``concurrent``: one call per agent, up to the backend's concurrency limit at once, all sharing the
  same system prefix (for engines with continuous batching).
* ``auto``: ``concurrent`` where the backend batches concurrent calls, else ``sequential``.

Every agent goes down one ladder of model tiers (:func:`ladder`, the one place they are decided):
the LLM with the batch's prompt, then, if ``simplified_retry``, the LLM with the simplified prompt
and the two best candidates (not after :class:`~aiplanner.errors.BackendBusy`: a backend too full
to answer in time is not asked again). Each rung is one :data:`Attempt` for one agent. A rung
starts only while the agent's budget lasts (``budget_s`` counted from the batch's submission, on
``PlanContext.clock``) and its call gets what is left; the first plan ends the climb, and every
agent still wanted gets exactly one outcome, through ``emit``, as soon as it is known. A strategy
only decides how the first rung is reached: one call per agent, or one packed call for them all
whose failed agents climb the rest of the ladder alone. A failure of one agent (malformed element,
missing or duplicated id) never fails the others. The tiers below the model (plan cache,
heuristic, emergency) are the game thread's, in :mod:`aiplanner.planning_system`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from anyio import CancelScope

from aiplanner.actions import ActionRegistry, Step
from aiplanner.backends.base import Backend, CompletionRequest, Finished, TextDelta, Usage
from aiplanner.breaker import CircuitBreaker
from aiplanner.codec import ElementError, PlanCodec
from aiplanner.components import Tier
from aiplanner.decision import (
    DEFAULT_RANK_PRIOR,
    CalibrationCache,
    ScoreMemo,
    can_score,
    decide,
)
from aiplanner.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    ParseError,
    PlannerError,
    PlanRejected,
    ResponseTooLarge,
)
from aiplanner.free_first import choose_first_step
from aiplanner.metrics import Metrics
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.schema import with_first_step
from aiplanner.stream_parser import JsonArrayStream
from aiplanner.validation import validate_plan

__all__ = [
    "STRATEGY_NAMES",
    "Attempt",
    "Batch",
    "Generation",
    "Ladder",
    "PlanContext",
    "Rung",
    "ScoredFirst",
    "Scoring",
    "ladder",
    "resolve_strategy",
    "run_batch",
]

_N = TypeVar("_N", int, float)

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
    ``clock`` measures the agents' budgets. ``lockstep``: the game waits for whole batches
    anyway, so a packed call's plans are released together at its end, each with its share of
    the call's usage and the call's ``ready_at`` (virtual-time latency).
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
    clock: Callable[[], float] = time.monotonic
    lockstep: bool = False
    # Guided decisions (aiplanner.decision): "score" the candidates' phrases where the backend
    # can, else "generate" an index; the rules' rank prior per step; calibration on/off and the
    # content-free scores it keeps per phrase.
    guided_decision: str = "score"
    rank_prior: float = DEFAULT_RANK_PRIOR
    calibrated: bool = True
    calibration: CalibrationCache = field(default_factory=CalibrationCache)
    # The model's scores of phrases after situations it has scored before (None: every
    # decision calls the backend). The plugin keeps one unless PlannerConfig.score_memo is off.
    memo: ScoreMemo | None = None
    # Free mode (aiplanner.free_first): "generate" the whole plan, or "score-first": the first
    # step scored (rank_prior and calibrated as above) and the rest generated after it.
    free_decision: str = "generate"
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


Attempt = Callable[[PlanContext, PlanRequest, Tier, float], Awaitable[PlanOutcome]]
"""One try at one tier for one agent: ``await attempt(ctx, req, tier, budget_s)``.

Returns the agent's outcome (an error outcome for a failed call or a bad answer; a "cancelled"
one when its call was cancelled); never raises :class:`PlannerError`. ``budget_s`` is the time
left: the attempt's calls must end within it.
"""


@dataclass(frozen=True, slots=True)
class Rung:
    """One tier of the ladder: the tier its plans get, how it is attempted, how many of the rules'
    candidates it keeps (None: all) and the least time left that is worth starting it with."""

    tier: Tier
    attempt: Attempt
    keep: int | None = None
    min_budget_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Ladder:
    """The rungs an agent climbs, and the strategy name its outcomes carry."""

    strategy: str
    rungs: tuple[Rung, ...]

    async def climb(
        self,
        ctx: PlanContext,
        req: PlanRequest,
        ends_at: float,
        tried: PlanOutcome | None = None,
    ) -> None:
        """Try the rungs in order until one gives a plan; emit exactly one outcome for ``req``.

        ``ends_at`` (on ``ctx.clock``) bounds every rung: one starts only while it leaves more than
        nothing and at least the rung's ``min_budget_s``, and gets what is left. ``tried`` is the
        failed outcome of a rung already tried elsewhere (the packed call). An agent that nobody
        wants any more stops climbing; one that was never tried then gets no outcome at all.
        """
        outcome = tried
        for rung in self.rungs:
            if not ctx.wanted(req.entity):
                break
            left = ends_at - ctx.clock()
            if left <= 0.0 or left < rung.min_budget_s:
                if outcome is None:
                    exc = BackendTimeout(f"no time left for a call ({left:.3f}s)")
                    _count_failure(ctx, exc)
                    outcome = _failed(req, exc, self.strategy)
                break
            if rung.keep is not None and len(req.candidates) > rung.keep:
                req = dataclasses.replace(req, candidates=req.candidates[: rung.keep])
            outcome = await rung.attempt(ctx, req, rung.tier, left)
            if outcome.ok or isinstance(outcome.error, BackendBusy):
                break  # a retry on a backend too full to answer in time only adds to its load
        if outcome is not None:
            ctx.emit(outcome)


def ladder(ctx: PlanContext, batch: Batch, strategy: str) -> Ladder:
    """The model tiers for ``batch``'s agents, best first: the one place they are decided.

    In guided mode the first rung scores the candidates (:class:`Scoring`) where the backend
    can and ``guided_decision`` is ``score``; otherwise the model generates its answer.
    """
    first_attempt: Attempt = Generation(batch.prompt_tier, batch.mode, strategy, batch.tick)
    if batch.mode == "guided" and ctx.guided_decision == "score" and can_score(ctx.backend):
        first_attempt = Scoring(strategy)
    elif (
        batch.mode == "free"
        and ctx.free_decision == "score-first"
        and strategy != "packed"  # one packed call for all agents has no per-agent first step
        and can_score(ctx.backend)
    ):
        first_attempt = ScoredFirst(Generation(batch.prompt_tier, "free", strategy, batch.tick))
    first = Rung(Tier.LLM, first_attempt)
    if not batch.simplified_retry:
        return Ladder(strategy, (first,))
    simple = Rung(
        Tier.LLM_SIMPLE,
        Generation("compressed", "guided", strategy, batch.tick),
        keep=_SIMPLE_CANDIDATES,
        min_budget_s=_MIN_RETRY_BUDGET_S,
    )
    return Ladder(strategy, (first, simple))


def resolve_strategy(name: str, backend: Backend) -> str:
    """Map ``auto`` to a concrete strategy for ``backend``; pass the others through."""
    if name != "auto":
        return name
    info = backend.info
    return "concurrent" if info.parallel and info.max_concurrency > 1 else "sequential"


async def run_batch(ctx: PlanContext, batch: Batch, *, started: float | None = None) -> None:
    """Plan every agent of ``batch``, emitting one outcome per agent as soon as it is known.

    ``started`` is when the batch was submitted, on ``ctx.clock`` (default: now): each agent's
    ``budget_s`` counts from there. Never raises for a backend or model failure: those become
    error outcomes (the game thread then applies the fallback tier). Cancellation propagates.
    """
    begun = ctx.clock() if started is None else started
    strategy = resolve_strategy(batch.strategy, ctx.backend)
    steps = ladder(ctx, batch, strategy if strategy in STRATEGY_NAMES else "sequential")
    reqs = [r for r in batch.requests if ctx.wanted(r.entity)]
    first = steps.rungs[0].attempt
    if strategy == "packed" and len(reqs) > 1 and isinstance(first, Generation):
        await _packed(ctx, first, steps, reqs, begun)
    elif strategy == "concurrent":
        limit = anyio.Semaphore(max(1, ctx.backend.info.max_concurrency))

        async def one(req: PlanRequest) -> None:
            async with limit:
                await steps.climb(ctx, req, begun + req.budget_s)

        async with anyio.create_task_group() as tg:
            for req in reqs:
                tg.start_soon(one, req)
    else:
        for req in reqs:
            await steps.climb(ctx, req, begun + req.budget_s)


@dataclass(frozen=True, slots=True)
class Scoring:
    """The :data:`Attempt` that decides by scoring each candidate's phrase
    (:func:`aiplanner.decision.decide`): no token is generated."""

    strategy: str

    async def __call__(
        self, ctx: PlanContext, req: PlanRequest, tier: Tier, budget_s: float
    ) -> PlanOutcome:
        with ctx.scope(frozenset((req.entity,))) as scope:
            outcome = await decide(ctx, req, tier, budget_s)
        if scope.cancelled_caught:  # nobody waits for this plan: not a backend failure
            return _cancelled(ctx, req, self.strategy)
        return dataclasses.replace(outcome, strategy=self.strategy)


@dataclass(frozen=True, slots=True)
class Generation:
    """The :data:`Attempt` that has the model write its answer under a schema: the index of a
    candidate in guided mode, a compact plan in free mode, with ``prompt_tier``'s prompt."""

    prompt_tier: str
    mode: str
    strategy: str
    tick: int

    async def __call__(
        self,
        ctx: PlanContext,
        req: PlanRequest,
        tier: Tier,
        budget_s: float,
        *,
        first: Step | None = None,
        first_values: tuple[int, ...] = (),
    ) -> PlanOutcome:
        """``first`` (free mode): the plan's first step, fixed in the schema with its compact
        values ``first_values`` (:func:`aiplanner.schema.with_first_step`)."""
        if self.mode == "guided" and len(req.candidates) == 1:
            # Nothing to choose: the rules' only legal plan is the answer, and no call is made.
            return PlanOutcome(
                req.entity, req.plan_id, req.candidates[0], Tier.HEURISTIC, strategy=self.strategy
            )
        codec = ctx.codec(self.mode)
        text = ""
        try:
            call = CompletionRequest(
                messages=ctx.builder(self.prompt_tier, self.mode).messages(req),
                schema=codec.schema(req)  # ConfigError for a guided request without candidates
                if first is None
                else with_first_step(
                    codec.schema(req), ctx.registry.spec(first.action), first_values
                ),
                max_tokens=codec.max_tokens(1),
                temperature=ctx.temperature,
                seed=ctx.seed,
                timeout_s=budget_s,
                agents=(req.entity,),
                tag={
                    "shape": "single",
                    "mode": self.mode,
                    "requests": (req,),
                    "tick": self.tick,
                    "requested_at": req.requested_at,
                    "tier": tier.value,
                },
            )
            with ctx.scope(frozenset(call.agents)) as scope:
                text, usage, ready_at = await _call(ctx, call, None)
            if scope.cancelled_caught:  # nobody waits for this plan: not a backend failure
                return _cancelled(ctx, req, self.strategy)
            plan = validate_plan(codec.decode(text, req), req.snapshot, ctx.registry)
        except PlannerError as exc:
            _count_failure(ctx, exc)
            return _failed(req, exc, self.strategy, raw=text)
        if self.mode == "guided" and plan in req.candidates:
            ctx.metrics.record_decision(req.candidates.index(plan))
        return PlanOutcome(
            req.entity, req.plan_id, plan, tier, None, text[:512], usage, ready_at, self.strategy
        )


@dataclass(frozen=True, slots=True)
class ScoredFirst:
    """The free-mode :data:`Attempt` that scores the first step (:mod:`aiplanner.free_first`)
    and has ``generation`` write the rest after it; the outcome's usage is both calls', its
    ``raw`` the generated plan (which holds the scored first step)."""

    generation: Generation

    async def __call__(
        self, ctx: PlanContext, req: PlanRequest, tier: Tier, budget_s: float
    ) -> PlanOutcome:
        strategy = self.generation.strategy
        started = time.monotonic()
        try:
            with ctx.scope(frozenset((req.entity,))) as scope:
                choice = await choose_first_step(ctx, req, tier, budget_s)
        except PlannerError as exc:
            _count_failure(ctx, exc)
            return _failed(req, exc, strategy)
        if scope.cancelled_caught:
            return _cancelled(ctx, req, strategy)
        if choice.first.rank < len(req.candidates):
            ctx.metrics.record_decision(choice.first.rank)
        left = budget_s - (time.monotonic() - started)
        out = await self.generation(
            ctx, req, tier, left, first=choice.first.step, first_values=choice.first.values
        )
        scored, made = choice.usage, out.usage
        usage = Usage(
            _add(scored.prompt_tokens, made.prompt_tokens),
            made.completion_tokens,
            _add(scored.total_s, made.ttft_s),
            _add(scored.total_s, made.total_s),
        )
        return dataclasses.replace(out, usage=usage)


def _add(a: _N | None, b: _N | None) -> _N | None:
    """The sum of two costs, either of which may be unknown (None when both are)."""
    if a is None:
        return b
    return a if b is None else a + b


async def _packed(
    ctx: PlanContext, gen: Generation, steps: Ladder, reqs: list[PlanRequest], begun: float
) -> None:
    """The first rung for all of ``reqs`` in one call: each element is decoded, validated and
    emitted as it closes; the agents it did not serve climb the rest of the ladder alone."""
    codec = ctx.codec(gen.mode)
    tier = steps.rungs[0].tier
    by_id = {r.entity: r for r in reqs}
    done: set[int] = set()  # agents whose element has been read (the first one wins)
    failed: dict[int, PlanOutcome] = {}  # agent -> why its element was unusable
    held: list[PlanOutcome] = []  # plans, in element order; released up to ``released``
    parser = JsonArrayStream(max_buffer_bytes=ctx.max_response_bytes)
    left = min(r.budget_s for r in reqs) - (ctx.clock() - begun)
    call = CompletionRequest(
        messages=ctx.builder(gen.prompt_tier, gen.mode).packed_messages(reqs),
        schema=codec.packed_schema(reqs),
        max_tokens=codec.max_tokens(len(reqs)),
        temperature=ctx.temperature,
        seed=ctx.seed,
        timeout_s=left,
        agents=tuple(by_id),
        tag={
            "shape": "packed",
            "mode": gen.mode,
            "requests": tuple(reqs),
            "tick": gen.tick,
            "requested_at": min(r.requested_at for r in reqs),
            "tier": tier.value,
        },
    )
    started = time.monotonic()
    first_text: float | None = None

    def reject(req: PlanRequest, exc: PlanRejected) -> None:
        ctx.metrics.record_invalid(exc.reason)
        failed[req.entity] = _failed(req, exc, gen.strategy)

    def on_element(value: object) -> None:
        try:
            entity, plan = codec.decode_element(value, by_id)
        except ElementError as exc:
            if exc.entity is not None and exc.entity in by_id and exc.entity not in done:
                done.add(exc.entity)
                reject(by_id[exc.entity], exc)
            else:
                ctx.metrics.record_invalid(exc.reason)
            return
        if entity in done:
            ctx.metrics.record_invalid("duplicate_id")  # the first answer for an agent wins
            return
        done.add(entity)
        req = by_id[entity]
        try:
            plan = validate_plan(plan, req.snapshot, ctx.registry)
        except PlanRejected as exc:
            reject(req, exc)
            return
        # The call's tokens are known only when it ends: a plan released now carries its times.
        usage = Usage(ttft_s=first_text, total_s=time.monotonic() - started)
        held.append(
            PlanOutcome(entity, req.plan_id, plan, tier, usage=usage, strategy=gen.strategy)
        )

    released = 0

    def on_text(chunk: str) -> None:
        nonlocal first_text, released
        if first_text is None:
            first_text = time.monotonic() - started
        for value in parser.feed(chunk):
            on_element(value)
        if not ctx.lockstep:  # release plans as soon as their element closes
            for o in held[released:]:
                ctx.emit(o)
            released = len(held)

    error: PlannerError | None = None
    usage, ready_at = Usage(), None
    if left <= 0.0:
        error = BackendTimeout(f"no time left for a call ({left:.3f}s)")
        _count_failure(ctx, error)
    else:
        try:
            with ctx.scope(frozenset(call.agents)) as scope:
                _, usage, ready_at = await _call(ctx, call, on_text)
            if scope.cancelled_caught:  # nobody in this batch needs a plan any more
                error = BackendError("cancelled: the plan is no longer needed")
                ctx.metrics.record_error("cancelled")
            else:
                parser.close()
        except PlannerError as exc:
            _count_failure(ctx, exc)
            error = exc
    for i, o in enumerate(held[released:], start=released):
        if ctx.lockstep:
            o = dataclasses.replace(o, usage=_share(usage, len(reqs), i), ready_at=ready_at)
        ctx.emit(o)  # in lockstep all of them; else those the last chunk completed
    if error is None and len(done) < len(reqs):
        ctx.metrics.record_invalid("missing_id")
    rest = Ladder(steps.strategy, steps.rungs[1:])
    for req in reqs:  # the agents the call did not serve, in batch order
        tried = failed.get(req.entity)
        if tried is None and req.entity not in done:
            why = error or PlanRejected("missing_id", "no element for this agent")
            tried = _failed(req, why, gen.strategy)
        if tried is not None:
            await rest.climb(ctx, req, begun + req.budget_s, tried)


def _share(usage: Usage, n: int, i: int) -> Usage:
    """Agent ``i``'s share of a call made for ``n`` agents: the tokens split evenly (the first
    agents take the remainder, so the shares add up to the call); the times are the call's."""

    def part(total: int | None) -> int | None:
        return None if total is None else total // n + (1 if i < total % n else 0)

    return Usage(
        part(usage.prompt_tokens), part(usage.completion_tokens), usage.ttft_s, usage.total_s
    )


def _failed(req: PlanRequest, exc: PlannerError, strategy: str, raw: str = "") -> PlanOutcome:
    return PlanOutcome(req.entity, req.plan_id, None, None, exc, raw=raw, strategy=strategy)


def _cancelled(ctx: PlanContext, req: PlanRequest, strategy: str) -> PlanOutcome:
    ctx.metrics.record_error("cancelled")
    return _failed(req, BackendError("cancelled: the plan is no longer needed"), strategy)


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
    parts: list[str] = []
    size = 0
    started = time.monotonic()
    first: float | None = None
    usage = Usage()
    ready_at: float | None = None
    with ctx.breaker.guard(ctx.backend.info.name):
        ctx.metrics.count_request()
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
