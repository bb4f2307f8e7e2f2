"""Guided decisions by scoring, not by generating.

The rules propose a few legal candidates, best first. Asked to *generate* the number of the best
one, the default 135M model answered the same index for every situation. Here the model instead
scores each candidate: the summed log-probability of its plain-words phrase
(:func:`aiplanner.phrasing.plan_phrase`) as the continuation of the situation
(:func:`aiplanner.phrasing.situation_messages`) after "I should". No token is generated.

Raw phrase likelihoods mostly measure how common a phrase is ("shoot" wins everywhere), so each
score is *calibrated* by subtracting the same phrase's score after a content-free context
(Zhao et al. 2021, "contextual calibration"; Holtzman et al. 2021, "domain-conditional PMI"): what
remains is how much the situation raised the phrase. Those content-free scores do not depend on
the agent, so :class:`CalibrationCache` keeps them per phrase.

The rules' ranking enters only as an explicit prior: candidate ``i`` (0 = the rules' first
choice) pays ``rank_prior * i``. The prompt holds no candidate list, so the order the candidates
are given in cannot sway the model; with the prior at 0 the decision is the model's alone. The
combined score's arg-max wins; ties go to the better-ranked candidate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

import anyio

from aiplanner.backends.base import (
    Backend,
    Message,
    ScoreRequest,
    ScoreResult,
    ScoringBackend,
    Usage,
)
from aiplanner.components import Tier
from aiplanner.errors import BackendError, ConfigError, PlannerError
from aiplanner.phrasing import LEAD, content_free_messages, decision_prompt
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.validation import validate_plan

if TYPE_CHECKING:
    from aiplanner.snapshot import WorldSnapshot
    from aiplanner.strategies import PlanContext

_A = TypeVar("_A")
_B = TypeVar("_B")
_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

__all__ = [
    "DECISION_METHODS",
    "CalibrationCache",
    "ScoreCache",
    "ScoreMemo",
    "ScoredChoice",
    "can_score",
    "choose",
    "decide",
    "role_instruction",
    "score_phrases",
]

DECISION_METHODS: Final = ("score", "generate")
"""How guided mode decides: ``score`` the candidates' phrases, or ``generate`` an index."""

DecisionMethod = Literal["score", "generate"]


@dataclass(frozen=True, slots=True)
class ScoredChoice:
    """A decision and the numbers behind it, one entry per candidate in rank order."""

    index: int
    raw: tuple[float, ...]
    calibrated: tuple[float, ...]
    combined: tuple[float, ...]

    def ranking(self) -> tuple[int, ...]:
        """Candidate indices best first by combined score (ties: the rules' order), so
        ``ranking()[0] == index``."""
        return tuple(sorted(range(len(self.combined)), key=lambda i: (-self.combined[i], i)))

    def describe(self) -> str:
        """A short trace for logs and ``PlanOutcome.raw``: ``pick 2 | 0:-3.1 1:-2.0 2:-0.4``."""
        parts = " ".join(f"{i}:{c:.2f}" for i, c in enumerate(self.combined))
        return f"pick {self.index} | {parts}"


def choose(
    raw: Sequence[float],
    baseline: Sequence[float] | None,
    *,
    rank_prior: float,
) -> ScoredChoice:
    """Pick among candidates given in rank order (0 = the rules' first choice).

    ``baseline`` holds each phrase's content-free score (None: no calibration). Raises
    :class:`ConfigError` for no candidates, mismatched lengths or a negative prior.
    """
    if not raw:
        raise ConfigError("a scored decision needs at least one candidate")
    if baseline is not None and len(baseline) != len(raw):
        raise ConfigError(f"{len(raw)} scores but {len(baseline)} baseline scores")
    if rank_prior < 0:
        raise ConfigError(f"rank_prior must be >= 0, got {rank_prior}")
    calibrated = tuple(
        r - b
        for r, b in zip(raw, baseline if baseline is not None else [0.0] * len(raw), strict=True)
    )
    combined = tuple(c - rank_prior * i for i, c in enumerate(calibrated))
    best = max(range(len(combined)), key=lambda i: (combined[i], -i))
    return ScoredChoice(best, tuple(raw), calibrated, combined)


DEFAULT_RANK_PRIOR: Final = 0.5
"""Score points per rank step, chosen on held-out game situations with the previous shipped
adapter (``aiplanner/adapters/TRAINING.md``: 156 of 200 right at 0.5, 151 at 1.0; A/B 37 of 40
rounds at 0.5, 35 at 1.0; kept for its retrained successor, not re-swept). The base model is
indifferent to it (43 to 45 of 66 on the suite for any prior from 0 to 3)."""


class ScoreCache(Generic[_K, _V]):
    """Scores the model gave, by what was scored; bounded LRU. Used on the event loop thread
    only. Raises :class:`ConfigError` for a size that is not positive."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries <= 0:
            raise ConfigError(f"max_entries must be positive, got {max_entries}")
        self._max = max_entries
        self._entries: OrderedDict[_K, _V] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


CalibrationCache = ScoreCache[str, float]
"""Content-free scores per phrase (the calibration of every decision)."""

ScoreMemo = ScoreCache[tuple[tuple[Message, ...], str, str], tuple[float, int]]
"""The model's score and token count of a phrase after a situation, by (messages, lead, phrase):
a situation seen before (an agent asking again where nothing it is told has changed, or another
agent in the same words) is decided from what the model said then, without a call."""


def can_score(backend: Backend) -> bool:
    """Does ``backend`` score continuations (``info.scoring`` and a ``score`` method)?"""
    return backend.info.scoring and isinstance(backend, ScoringBackend)


async def decide(ctx: PlanContext, req: PlanRequest, tier: Tier, budget_s: float) -> PlanOutcome:
    """Decide among ``req.candidates`` by scoring; one outcome, never raises PlannerError.

    Cancellation propagates (the caller's scope turns it into a "cancelled" outcome).
    """
    backend = ctx.backend
    if not isinstance(backend, ScoringBackend) or not backend.info.scoring:
        exc = ConfigError(f"backend {backend.info.name} cannot score continuations")
        return PlanOutcome(req.entity, req.plan_id, None, None, exc, strategy="score")
    if not req.candidates:
        exc = ConfigError("a guided request needs candidates")
        return PlanOutcome(req.entity, req.plan_id, None, None, exc, strategy="score")
    if len(req.candidates) == 1:
        # Nothing to choose: the rules' only legal plan is the answer, and no call is made.
        return PlanOutcome(
            req.entity, req.plan_id, req.candidates[0], Tier.HEURISTIC, strategy="score"
        )
    snap = req.snapshot
    try:
        messages, phrases = decision_prompt(
            snap, req.candidates, ctx.registry, role_instruction(ctx, snap)
        )
        result, baseline = await score_phrases(ctx, req, messages, phrases, tier, budget_s)
        choice = choose(result.logprobs, baseline, rank_prior=ctx.rank_prior)
        plan = validate_plan(req.candidates[choice.index], snap, ctx.registry)
        ctx.metrics.record_decision(choice.index)
    except PlannerError as exc:
        ctx.metrics.record_error(type(exc).__name__)
        return PlanOutcome(req.entity, req.plan_id, None, None, exc, strategy="score")
    return PlanOutcome(
        req.entity,
        req.plan_id,
        plan,
        tier,
        None,
        choice.describe(),
        result.usage,
        result.ready_at,
        "score",
        # The model's next choices, for an answer that arrives after the world moved on.
        tuple(req.candidates[i] for i in choice.ranking()[1:]),
    )


def role_instruction(ctx: PlanContext, snap: WorldSnapshot) -> str:
    """The role line of ``snap``'s agent in a scored decision (the guided prompts' own)."""
    return ctx.builder("compressed", "guided").role_instruction(snap.me.role)


async def score_phrases(
    ctx: PlanContext,
    req: PlanRequest,
    messages: tuple[Message, ...],
    phrases: tuple[str, ...],
    tier: Tier,
    budget_s: float,
) -> tuple[ScoreResult, tuple[float, ...] | None]:
    """Each of ``phrases`` scored as the continuation of ``messages`` (``req``'s situation) after
    :data:`LEAD`, with their content-free scores when ``ctx.calibrated`` (None otherwise): the
    scoring call of :func:`decide` (candidates' phrases,
    :func:`aiplanner.phrasing.decision_prompt`) and of free mode's first step (its options'
    phrases, which name only the units the situation describes).

    Raises :class:`PlannerError` for a failed call or no time left to calibrate.
    """
    started = time.monotonic()
    backend = ctx.backend
    if not isinstance(backend, ScoringBackend) or not backend.info.scoring:
        raise ConfigError(f"backend {backend.info.name} cannot score continuations")
    request = ScoreRequest(
        messages=messages,
        continuations=phrases,
        lead=LEAD,
        timeout_s=budget_s,
        agents=(req.entity,),
        tag={"shape": "score", "requests": (req,), "tier": tier.value},
    )
    if not ctx.calibrated:
        return await _situation(ctx, backend, request), None
    if not backend.info.parallel:  # one call at a time: the situation first, then what is missing
        result = await _situation(ctx, backend, request)
        left = budget_s - (time.monotonic() - started)
        return result, await _baseline(ctx, backend, phrases, left)
    # A backend serving calls together (the batched engine evaluates both in one pass): the
    # content-free scores of phrases never seen are asked at the same time, not one pass later.
    return await _together(
        lambda: _situation(ctx, backend, request),
        lambda: _baseline(ctx, backend, phrases, budget_s),
    )


async def _together(
    first: Callable[[], Awaitable[_A]], second: Callable[[], Awaitable[_B]]
) -> tuple[_A, _B]:
    """Both awaited at once; the first :class:`PlannerError` raised (the other call is then
    cancelled) is raised as it is, not wrapped in an exception group."""
    a: list[_A] = []
    b: list[_B] = []
    failed: list[PlannerError] = []

    async def run(
        job: Callable[[], Awaitable[_T]], out: list[_T], scope: anyio.CancelScope
    ) -> None:
        try:
            out.append(await job())
        except PlannerError as exc:
            failed.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(run, first, a, group.cancel_scope)
        group.start_soon(run, second, b, group.cancel_scope)
    if failed:
        raise failed[0]
    return a[0], b[0]


async def _situation(
    ctx: PlanContext, backend: ScoringBackend, request: ScoreRequest
) -> ScoreResult:
    """``request`` scored: from ``ctx.memo`` where the model scored the same phrase after the
    same messages and lead before, one call for the phrases it did not (none if it did all)."""
    memo = ctx.memo
    if memo is None:
        return await _score(ctx, backend, request)
    known = {p: memo.get((request.messages, request.lead, p)) for p in request.continuations}
    missing = tuple(p for p, value in known.items() if value is None)
    if not missing:
        ctx.metrics.record_remembered()
        usage, ready_at = Usage(0, 0, 0.0, 0.0), None
    else:
        result = await _score(ctx, backend, replace(request, continuations=missing))
        for phrase, logprob, tokens in zip(missing, result.logprobs, result.tokens, strict=True):
            known[phrase] = (logprob, tokens)
            memo.put((request.messages, request.lead, phrase), (logprob, tokens))
        usage, ready_at = result.usage, result.ready_at
    scored = [v for p in request.continuations if (v := known[p]) is not None]  # all, by now
    return ScoreResult(tuple(v[0] for v in scored), tuple(v[1] for v in scored), usage, ready_at)


async def _baseline(
    ctx: PlanContext, backend: ScoringBackend, phrases: tuple[str, ...], budget_s: float
) -> tuple[float, ...]:
    """Content-free scores for ``phrases``, from the cache or one call for the missing ones."""
    cache = ctx.calibration
    missing = tuple(dict.fromkeys(p for p in phrases if cache.get(p) is None))
    if missing:
        if budget_s <= 0:
            raise BackendError("no time left to calibrate the scores", retryable=False)
        request = ScoreRequest(
            messages=content_free_messages(),
            continuations=missing,
            lead=LEAD,
            timeout_s=budget_s,
            tag={"shape": "calibrate"},
        )
        result = await _score(ctx, backend, request)
        for phrase, value in zip(missing, result.logprobs, strict=True):
            cache.put(phrase, value)
    out: list[float] = []
    for p in phrases:
        known = cache.get(p)
        if known is None:  # evicted by a cache smaller than one request
            raise BackendError("calibration cache too small for one request", retryable=False)
        out.append(known)
    return tuple(out)


async def _score(ctx: PlanContext, backend: ScoringBackend, request: ScoreRequest) -> ScoreResult:
    """One scoring call through the breaker, counted in the metrics; the answer is checked."""
    with ctx.breaker.guard(ctx.backend.info.name):
        ctx.metrics.count_request()
        started = time.monotonic()
        result = await backend.score(request)
        n = len(request.continuations)
        if len(result.logprobs) != n or len(result.tokens) != n:
            raise BackendError(
                f"{len(result.logprobs)} scores and {len(result.tokens)} token counts for {n} "
                "continuations",
                retryable=False,
            )
    total = result.usage.total_s if result.usage.total_s is not None else time.monotonic() - started
    ctx.metrics.record_call(total, total)
    ctx.metrics.record_tokens(result.usage.prompt_tokens, 0, len(request.agents) or 1)
    return ScoreResult(
        result.logprobs,
        result.tokens,
        Usage(result.usage.prompt_tokens, 0, total, total),
        result.ready_at,
    )
