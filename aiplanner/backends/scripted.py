"""ScriptedBackend: a programmable test double that speaks the text-level backend protocol.

Public API, like httpx's ``MockTransport``: our tests, the demo's offline mode and users' own
tests use it. By default it answers like a sensible model would (the top-ranked candidate in
guided mode, the best candidate as a compact plan in free mode, one element per agent for packed
calls), streamed in small chunks. Everything else is programmable: a ``responder`` that returns
any text or error per request, latency (real or virtual), seeded random failures, stalls, and a
``gate`` that holds every answer until the test opens it. With ``scoring=True`` it also scores
continuations (:class:`~aiplanner.backends.base.ScoringBackend`): a ``scorer`` returns the
log-probabilities, by default 0.0 for every continuation (a tie the rules' rank prior decides).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from aiplanner.backends.base import (
    BackendInfo,
    CompletionRequest,
    Finished,
    ScoreRequest,
    ScoreResult,
    StreamEvent,
    TextDelta,
    Usage,
)
from aiplanner.codec import PlanCodec
from aiplanner.errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError

__all__ = ["ScriptedBackend", "ScriptedReply"]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One scripted answer. ``text=None`` means "the default answer"; ``error`` is raised instead of
    answering (after ``delay_s``); ``stall`` never answers (until the deadline or cancellation)."""

    text: str | None = None
    error: BackendError | None = None
    delay_s: float = 0.0
    stall: bool = False


Responder = Callable[[CompletionRequest], ScriptedReply | str | None]
Scorer = Callable[[ScoreRequest], Sequence[float] | ScriptedReply]


class ScriptedBackend:
    """A backend whose answers are scripted.

    * ``responder(request)`` returns a :class:`ScriptedReply`, a text, or None for the default
      answer.
    * ``latency_s``: a fixed delay or a ``(low, high)`` range drawn per call from a seeded RNG.
    * ``failure_rate``: probability (seeded, per call) of a :class:`BackendUnavailable` error.
    * ``virtual_time``: do not sleep; stamp ``Finished.ready_at = requested_at + latency``
      instead, for ``PlannerConfig(lockstep=True)`` runs that must be reproducible.
    * ``gate``: every call waits until this event is set (tests of "the frame never waits").
    * ``keep_calls``: how many of the latest requests :attr:`calls` and :attr:`score_calls` keep
      (0: none, for soaks).
    * ``scoring``: also implement ``score``; ``scorer(request)`` returns one log-probability per
      continuation, or a :class:`ScriptedReply` whose ``error``/``delay_s``/``stall`` apply
      (None: 0.0 for each). Latency, failures and the gate apply to scoring calls too.

    Raises :class:`ConfigError` for a failure rate outside 0..1, a chunk size below 1 or a
    negative ``keep_calls``.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency_s: float | tuple[float, float] = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        chunk_size: int = 3,
        virtual_time: bool = False,
        gate: threading.Event | None = None,
        max_concurrency: int = 4,
        parallel: bool = True,
        name: str = "scripted",
        scoring: bool = False,
        scorer: Scorer | None = None,
        keep_calls: int = 10_000,
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ConfigError(f"failure_rate must be within 0..1, got {failure_rate}")
        if chunk_size <= 0:
            raise ConfigError("chunk_size must be positive")
        if keep_calls < 0:
            raise ConfigError(f"keep_calls must be >= 0, got {keep_calls}")
        self._responder = responder
        self._latency = latency_s
        self._failure_rate = failure_rate
        self._seed = seed
        self._chunk = chunk_size
        self._virtual = virtual_time
        self._gate = gate
        self._scorer = scorer
        self._info = BackendInfo(
            name=name,
            model="scripted",
            max_concurrency=max_concurrency,
            parallel=parallel,
            scoring=scoring,
        )
        self.score_calls: deque[ScoreRequest] = deque(maxlen=keep_calls)
        self._codecs: dict[str, PlanCodec] = {}
        self.calls: deque[CompletionRequest] = deque(maxlen=keep_calls)
        self.closed = False

    @property
    def info(self) -> BackendInfo:
        return self._info

    async def aclose(self) -> None:
        self.closed = True

    def default_text(self, request: CompletionRequest) -> str:
        """The answer a sensible model would give: candidate 0 for every agent asked."""
        mode = str(request.tag.get("mode", "guided"))
        codec = self._codecs.get(mode)
        if codec is None:
            codec = self._codecs[mode] = PlanCodec(mode=mode)
        reqs = request.tag.get("requests", ())
        if request.tag.get("shape") == "packed":
            parts = [
                codec.encode_element(r.entity, 0 if mode == "guided" else r.candidates[0])
                for r in reqs
            ]
            return "[" + ",".join(parts) + "]"
        if not reqs:
            return codec.encode_choice(0)
        return codec.encode_choice(0) if mode == "guided" else codec.encode(reqs[0].candidates[0])

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Scripted scores for ``request`` (see the class docstring).

        Raises :class:`ConfigError` when scoring is off, there are no continuations or the
        scorer returns the wrong number of scores; otherwise as :meth:`stream` does.
        """
        if not self._info.scoring:
            raise ConfigError("this ScriptedBackend was made with scoring=False")
        if not request.continuations:
            raise ConfigError("a score request needs at least one continuation")
        self.score_calls.append(request)
        started = time.monotonic()
        raw = self._scorer(request) if self._scorer is not None else None
        reply = raw if isinstance(raw, ScriptedReply) else ScriptedReply()
        latency = await self._wait(request.agents, request.tag, request.timeout_s, reply)
        scores: Sequence[float] = (
            [0.0] * len(request.continuations)
            if raw is None or isinstance(raw, ScriptedReply)
            else raw
        )
        if len(scores) != len(request.continuations):
            raise ConfigError(
                f"the scorer gave {len(scores)} scores for {len(request.continuations)} options"
            )
        requested_at = float(request.tag.get("requested_at", 0.0))
        return ScoreResult(
            logprobs=tuple(float(x) for x in scores),
            tokens=tuple(max(1, len(c) // 4) for c in request.continuations),
            usage=Usage(
                prompt_tokens=sum(len(m.content) for m in request.messages) // 4,
                completion_tokens=0,
                total_s=time.monotonic() - started,
            ),
            ready_at=requested_at + latency if self._virtual else None,
        )

    async def _wait(
        self,
        agents: tuple[int, ...],
        tag: Mapping[str, Any],
        timeout_s: float,
        reply: ScriptedReply,
    ) -> float:
        """Gate, latency, stall, scripted error and seeded failure of one call; its latency."""
        rng = random.Random(f"{self._seed}:{agents}:{tag.get('tick', 0)}")
        latency = rng.uniform(*self._latency) if isinstance(self._latency, tuple) else self._latency
        failed = rng.random() < self._failure_rate
        # fail_after raises when its block exits: the try must enclose the whole block.
        try:
            with anyio.fail_after(timeout_s) if not self._virtual else _nullcontext():
                if self._gate is not None:
                    while not self._gate.is_set():
                        await anyio.sleep(0.002)
                delay = reply.delay_s + (0.0 if self._virtual else latency)
                if delay > 0:
                    await anyio.sleep(delay)
                if reply.stall:
                    await anyio.sleep_forever()
        except TimeoutError as exc:
            raise BackendTimeout(f"scripted call passed its {timeout_s:.2f}s budget") from exc
        if reply.error is not None:
            raise reply.error
        if failed:
            raise BackendUnavailable("scripted failure")
        return latency

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.calls.append(request)
        started = time.monotonic()
        raw = self._responder(request) if self._responder is not None else None
        reply = raw if isinstance(raw, ScriptedReply) else ScriptedReply(text=raw)
        latency = await self._wait(request.agents, request.tag, request.timeout_s, reply)
        text = reply.text if reply.text is not None else self.default_text(request)
        first: float | None = None
        for i in range(0, len(text), self._chunk):
            if first is None:
                first = time.monotonic() - started
            yield TextDelta(text[i : i + self._chunk])
            await anyio.sleep(0)
        requested_at = float(request.tag.get("requested_at", 0.0))
        yield Finished(
            usage=Usage(
                prompt_tokens=sum(len(m.content) for m in request.messages) // 4,
                completion_tokens=max(1, len(text) // 3),
                ttft_s=first,
                total_s=time.monotonic() - started,
            ),
            ready_at=requested_at + latency if self._virtual else None,
        )


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
