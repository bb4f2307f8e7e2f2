"""The backend protocol: one async, streaming, text-level interface for every LLM engine.

A backend turns one :class:`CompletionRequest` (chat messages plus an optional JSON Schema that the
engine must enforce) into a stream of :class:`TextDelta` events closed by one :class:`Finished`.
Backends know nothing of esper or of plans: batching strategies (:mod:`aiplanner.strategies`)
build the requests and turn the text back into per-agent plans.

A backend may serve several requests at once: ``info.max_concurrency`` says how many it is worth
sending together (1 for an engine that serialises requests), ``info.parallel`` whether the engine
batches concurrent requests (continuous batching) so that ``concurrent`` is the strategy to use.
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


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. ``stream`` raises subclasses of ``BackendError``."""

    @property
    def info(self) -> BackendInfo: ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
