"""The backend protocol: one async, streaming, text-level interface for every LLM engine.

A backend turns one :class:`CompletionRequest` (chat messages plus an optional JSON Schema that the
engine must enforce) into a stream of :class:`TextDelta` events closed by one :class:`Finished`.
Backends know nothing of esper or of plans: batching strategies (:mod:`aiplanner.strategies`)
build the requests and turn the text back into per-agent plans.

A backend may serve several requests at once: ``info.max_concurrency`` says how many it is worth
sending together (1 for an engine that serialises requests), ``info.parallel`` whether the engine
batches concurrent requests (continuous batching) so that ``concurrent`` is the strategy to use.

Scoring. A backend that can read the model's token log-probabilities also implements
:class:`ScoringBackend` (``info.scoring``): given chat messages and a few short continuations of
the assistant's answer, it returns each continuation's summed log-probability, generating nothing.
Guided decisions use it to score the rules' candidates instead of asking for an index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "BackendInfo",
    "CompletionRequest",
    "Finished",
    "Message",
    "ScoreRequest",
    "ScoreResult",
    "ScoringBackend",
    "StreamEvent",
    "TextDelta",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One call to a model.

    ``schema`` is a JSON Schema the engine should enforce (``response_format`` / ``format`` /
    a GBNF grammar derived from it). ``timeout_s`` is the budget left for the whole call;
    backends must give up (raising :class:`~aiplanner.errors.BackendTimeout`) once it is spent.
    ``agents`` names the entities the call is for; it is never sent to a server, but lets test
    doubles and logs know who asked. ``tag`` is free-form metadata for the same purpose.
    """

    messages: tuple[Message, ...]
    schema: Mapping[str, Any] | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = 0
    timeout_s: float = 10.0
    agents: tuple[int, ...] = ()
    tag: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call cost. Times in seconds; token counts as the engine reports them (or None)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of every successful stream.

    ``ready_at`` is used only by virtual-time test doubles: the plugin-clock time at which the
    answer counts as arrived (see ``PlannerConfig.lockstep``). Real backends leave it None.
    """

    usage: Usage = Usage()
    finish_reason: str = "stop"
    ready_at: float | None = None


StreamEvent = TextDelta | Finished


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    model: str = ""
    max_concurrency: int = 1
    parallel: bool = False  # concurrent requests are batched by the engine
    structured: bool = True  # the engine enforces ``schema``
    scoring: bool = False  # implements ScoringBackend.score


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Score ``continuations`` as the assistant's answer to ``messages``, after ``lead``.

    The prompt is the chat prompt of ``messages`` with the assistant turn opened and ``lead``
    (text the answer starts with, e.g. ``"I should"``) appended; each continuation is tokenized on
    its own (no special tokens) and appended to those tokens. The score of a continuation is the
    sum of its tokens' natural-log probabilities. No token is generated. ``timeout_s``, ``agents``
    and ``tag`` mean what they mean in :class:`CompletionRequest`.
    """

    messages: tuple[Message, ...]
    continuations: tuple[str, ...]
    lead: str = ""
    timeout_s: float = 10.0
    agents: tuple[int, ...] = ()
    tag: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One summed log-probability and one token count per continuation, in request order.

    ``usage.prompt_tokens`` counts the tokens the engine evaluated for this request (shared
    prefixes it reused are not counted); ``ready_at`` is for virtual-time doubles, as in
    :class:`Finished`.
    """

    logprobs: tuple[float, ...]
    tokens: tuple[int, ...]
    usage: Usage = Usage()
    ready_at: float | None = None


@runtime_checkable
class ScoringBackend(Protocol):
    """A backend that scores continuations (``info.scoring`` is True).

    ``score`` raises subclasses of ``BackendError`` (``BackendTimeout`` once ``timeout_s`` is
    spent) and :class:`~aiplanner.errors.ConfigError` for a request without continuations.
    """

    async def score(self, request: ScoreRequest) -> ScoreResult: ...


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. ``stream`` raises subclasses of ``BackendError``."""

    @property
    def info(self) -> BackendInfo: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
