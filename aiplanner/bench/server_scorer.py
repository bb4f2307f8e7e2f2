"""Scoring continuations on llama.cpp's ``llama-server``: the HTTP side of the engine benchmark.

``llama-server`` has no prompt log-probabilities (``echo`` is refused), but its ``/completion``
reports, with ``n_probs``, the probability each generated token had before sampling (the model's
own softmax). :class:`ServerScorer` therefore sends, per continuation, the same prompt tokens the
embedded engine evaluates (given as token ids, so both tokenize alike) and a grammar made of the
continuation's token ids (``root ::= <[id]> <[id]> ...``): the server generates exactly those
tokens, and the sum of their reported log-probabilities is the continuation's score, the number
:meth:`aiplanner.backends.EmbeddedBackend.score` computes in-process. All continuations of a
request go out at once; the server's slots batch them with every other agent's (``-np N``) and
reuse each slot's cached prompt prefix.

Generation (``stream``) is the wrapped :class:`~aiplanner.backends.OpenAIBackend`'s, so one
object serves both guided rounds of the benchmark.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
import httpx
import orjson

from aiplanner.backends.base import (
    BackendInfo,
    CompletionRequest,
    Message,
    ScoreRequest,
    ScoreResult,
    StreamEvent,
    Usage,
)
from aiplanner.backends.openai import OpenAIBackend
from aiplanner.errors import BackendError, BackendTimeout, BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["ChatTokenizer", "ModelTokenizer", "ServerScorer", "token_grammar"]

_MAX_BODY = 1 << 20  # a scoring answer is a few hundred bytes per token
_MAX_TOKENS = 256  # a continuation is a short phrase


class ChatTokenizer(Protocol):
    """Prompt and continuation tokens, as the embedded engine makes them."""

    def prompt(self, messages: Sequence[Message], lead: str) -> list[int]: ...

    def piece(self, text: str) -> list[int]: ...


class ModelTokenizer:
    """The embedded backend's tokenization of a GGUF model (vocabulary only, no weights):
    ChatML from special tokens (or the model's template), the lead and each continuation
    tokenized on their own. Raises :class:`BackendError` if llama.cpp cannot read the file."""

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        import llama_cpp

        from aiplanner.backends.embedded import _PromptFormat

        try:
            self._llama: Llama = llama_cpp.Llama(
                model_path=str(model_path), vocab_only=True, verbose=False
            )
        except ValueError as exc:
            raise BackendError(f"could not read the vocabulary of {model_path}: {exc}") from exc
        vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._format = _PromptFormat(self._llama, "auto", vocab)

    def prompt(self, messages: Sequence[Message], lead: str) -> list[int]:
        tokens = self._format.tokens(messages)
        if lead:
            tokens += self.piece(lead)
        return tokens

    def piece(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=False))

    def close(self) -> None:
        self._llama.close()


def token_grammar(tokens: Sequence[int]) -> str:
    """A GBNF grammar that allows exactly ``tokens``, by id. Raises ConfigError when empty."""
    if not tokens:
        raise ConfigError("a token grammar needs at least one token")
    return "root ::= " + " ".join(f"<[{int(t)}]>" for t in tokens)


class ServerScorer:
    """A backend on ``llama-server`` at ``base_url`` that scores (see the module docstring) and
    generates (through :class:`OpenAIBackend`). ``slots``: the server's ``-np``, used as the
    concurrency limit the planner sees.

    ``score`` raises :class:`BackendTimeout` past ``timeout_s``, :class:`BackendUnavailable` when
    the server cannot be reached, :class:`BackendError` for an answer that is not the forced
    tokens with their log-probabilities, :class:`ConfigError` for a request without continuations.
    """

    def __init__(self, base_url: str, tokenizer: ChatTokenizer, *, slots: int) -> None:
        if slots < 1:
            raise ConfigError(f"slots must be at least 1, got {slots}")
        self._tok = tokenizer
        self._chat = OpenAIBackend(
            base_url, model="default", max_concurrency=slots, read_timeout_s=120.0
        )
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(120.0, connect=2.0),
            limits=httpx.Limits(max_connections=4 * slots),
        )
        self._info = BackendInfo(
            name="llama-server", model="default", max_concurrency=slots, parallel=True, scoring=True
        )
        self.evaluated = 0  # prompt tokens the server evaluated (its cache hits not counted)

    @property
    def info(self) -> BackendInfo:
        return self._info

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        return self._chat.stream(request)

    async def score(self, request: ScoreRequest) -> ScoreResult:
        if not request.continuations:
            raise ConfigError("a score request needs at least one continuation")
        started = time.monotonic()
        prompt = self._tok.prompt(request.messages, request.lead)
        pieces = [self._tok.piece(c) for c in request.continuations]
        if any(len(p) > _MAX_TOKENS for p in pieces):
            raise ConfigError(f"a continuation longer than {_MAX_TOKENS} tokens")
        sums = [0.0] * len(pieces)
        evaluated = [0] * len(pieces)
        failed: list[BackendError] = []

        async def one(j: int, tg: anyio.abc.TaskGroup) -> None:
            try:
                sums[j], evaluated[j] = await self._forced(prompt, pieces[j])
            except BackendError as exc:  # the first failure is the request's; stop the rest
                failed.append(exc)
                tg.cancel_scope.cancel()

        try:
            with anyio.fail_after(request.timeout_s):
                async with anyio.create_task_group() as tg:
                    for j in range(len(pieces)):
                        if pieces[j]:
                            tg.start_soon(one, j, tg)
        except TimeoutError as exc:
            raise BackendTimeout(f"llama-server took over {request.timeout_s} s") from exc
        if failed:
            raise failed[0]
        self.evaluated += sum(evaluated)
        return ScoreResult(
            logprobs=tuple(sums),
            tokens=tuple(len(p) for p in pieces),
            usage=Usage(
                prompt_tokens=sum(evaluated),
                completion_tokens=0,
                total_s=time.monotonic() - started,
            ),
        )

    async def _forced(self, prompt: list[int], piece: list[int]) -> tuple[float, int]:
        """Generate exactly ``piece`` after ``prompt``; its summed log-probability and the
        prompt tokens the server evaluated."""
        body = {
            "prompt": prompt,
            "n_predict": len(piece),
            "grammar": token_grammar(piece),
            "n_probs": 1,
            "temperature": 0.0,
            "cache_prompt": True,
            "stream": False,
        }
        try:
            answer = await self._http.post("/completion", content=orjson.dumps(body))
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"llama-server: {exc}") from exc
        if answer.status_code != 200:
            raise BackendError(f"llama-server answered {answer.status_code}: {answer.text[:200]}")
        if len(answer.content) > _MAX_BODY:
            raise BackendError(f"llama-server's answer passed {_MAX_BODY} bytes")
        return _forced_logprob(answer.content, piece)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._chat.aclose()


def _forced_logprob(raw: bytes, piece: Sequence[int]) -> tuple[float, int]:
    """The sum of the reported log-probabilities of ``piece``'s tokens, and the evaluated prompt
    tokens, from a ``/completion`` answer; BackendError unless it generated exactly ``piece``."""
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BackendError(f"llama-server's answer is not JSON: {raw[:120]!r}") from exc
    probs = data.get("completion_probabilities") if isinstance(data, dict) else None
    if not isinstance(probs, list) or len(probs) != len(piece):
        raise BackendError(f"llama-server did not report {len(piece)} token probabilities")
    total = 0.0
    for want, entry in zip(piece, probs, strict=True):
        if not isinstance(entry, dict) or entry.get("id") != want:
            raise BackendError(f"llama-server generated another token than {want}")
        logprob = entry.get("logprob")
        if not isinstance(logprob, int | float) or logprob > 0.0:
            raise BackendError(f"llama-server reported no valid log-probability for {want}")
        total += float(logprob)
    timings = data.get("timings")
    evaluated = timings.get("prompt_n") if isinstance(timings, dict) else None
    return total, evaluated if isinstance(evaluated, int) and evaluated >= 0 else 0
