"""The embedded backend's worker for the batched engine: the serial worker's job protocol, many
jobs at once.

:class:`BatchedWorker` is a drop-in for the serial worker of :mod:`aiplanner.backends.embedded`
(``submit``, ``stop``, ``stats``, ``load_s``): one thread owns the model and a
:class:`~aiplanner.backends.batched.BatchedEngine`. Between two ``llama_decode`` calls it takes
every job that has arrived (without waiting when the engine is busy), turns chat messages into
tokens, and hands them to the engine, which serves them in its next pass. Events go back to each
caller exactly as the serial worker sends them (text deltas then ``Finished``, or one scored
answer, or one failure), so :class:`~aiplanner.backends.embedded.EmbeddedBackend` is unchanged
around it.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import queue
import threading
import time
from typing import TYPE_CHECKING

from aiplanner.backends.base import Finished, ScoreResult, TextDelta, Usage
from aiplanner.backends.batched import (
    BatchedEngine,
    EngineSettings,
    EngineStats,
    GenerateOutcome,
    GenerateWork,
    ScoreOutcome,
    ScoreWork,
    WorkCancelled,
)
from aiplanner.backends.embedded import (
    _as_backend_error,
    _Cancelled,
    _emit_quietly,
    _Failed,
    _Job,
    _PromptFormat,
    _Scored,
    _SerialWorker,
    _Settings,
)
from aiplanner.errors import BackendUnavailable, ResponseTooLarge

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["BATCHED_MIN_CTX", "BatchedWorker"]

# The KV cache is shared by every sequence: a context sized for one request is too small.
BATCHED_MIN_CTX = 4096
# How long an idle worker waits for the rest of a batch after its first job arrives.
_GATHER_S = 0.003
# The high-level Llama object is kept for its tokenizer and chat template only.
_TOKENIZER_CTX = 64


def _engine_settings_for(settings: _Settings, engine: EngineSettings | None) -> EngineSettings:
    """The engine's settings for a backend's: ``engine``'s (defaults if None), with the
    backend's thread count and adapter, and at least its ``n_ctx`` (and
    :data:`BATCHED_MIN_CTX` cells when ``engine`` is None). Raises :class:`ConfigError` for a
    bad setting."""
    base = engine or EngineSettings(n_ctx=BATCHED_MIN_CTX)
    merged = dataclasses.replace(
        base,
        n_ctx=max(base.n_ctx, settings.n_ctx),
        n_threads=settings.n_threads,
        adapter=settings.adapter,
        adapter_scale=settings.adapter_scale,
    )
    merged.check()
    return merged


class BatchedWorker(_SerialWorker):
    """Serves :class:`~aiplanner.backends.embedded._Job` s through one batched engine.

    The serial worker's queue, counters and ``submit`` are kept; the thread's loop and ``stop``
    (which must fail every running job, not one) are this class's own.
    Thread-safe: :meth:`submit` and :meth:`stop` may be called from any thread.
    """

    def __init__(self, settings: _Settings, engine: EngineSettings | None = None) -> None:
        super().__init__(settings)
        self._engine_settings = _engine_settings_for(settings, engine)
        self._running: dict[int, _Job] = {}  # id(job) -> job, handed to the engine
        self._engine: BatchedEngine | None = None  # set on the worker thread, once loaded
        self._format: _PromptFormat | None = None  # set with the model, on the worker thread

    @property
    def engine_settings(self) -> EngineSettings:
        """The settings the engine is (or will be) built with."""
        return self._engine_settings

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's counters (passes, decodes, rows evaluated, rows shared), read from the
        engine itself: it replaces its frozen counters whole, and counts a decode before it
        hands over what the decode answered, so a caller that has its answer finds the rows
        behind it counted (a copy taken after each step could lag: the engine benchmark once
        read a round's rows without its last decode's)."""
        engine = self._engine
        return engine.stats if engine is not None else EngineStats()

    def stop(self) -> threading.Thread | None:
        """Fail every queued and running job and tell the thread to exit.

        Returns the thread to wait for (None if it never started). Idempotent.
        """
        thread = super().stop()  # from here on no job reaches the engine
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        closed = BackendUnavailable("the embedded backend was closed", retryable=False)
        for job in running:
            job.cancelled.set()
            _emit_quietly(job, _Failed(closed))
        return thread

    # --- worker thread ------------------------------------------------------------------------

    def _main(self) -> None:
        llama: Llama | None = None
        engine: BatchedEngine | None = None
        try:
            while True:
                jobs = self._take(block=engine is None or not engine.busy)
                if jobs is None:
                    return
                for job in jobs:
                    try:
                        if engine is None:
                            llama, engine = self._load_batched()
                            self._engine = engine
                        self._start(job, llama, engine)
                    except Exception as exc:  # this job's failure only
                        if self._release(job) or job.load_only:
                            self._count(failed=1)
                            _emit_quietly(job, _Failed(_as_backend_error(exc)))
                if engine is not None and engine.busy:
                    try:
                        engine.step()
                    except Exception as exc:  # llama.cpp itself failed: everyone in it hears
                        engine.fail_all(_as_backend_error(exc))
        finally:
            if engine is not None:
                engine.close()
            if llama is not None:
                llama.close()

    def _take(self, *, block: bool) -> list[_Job] | None:
        """The jobs that have arrived (waiting for one if ``block``); None once stopped.

        Woken from idle by one job, it waits ``_GATHER_S`` for more: the agents of a batch are
        submitted one after another by the event loop, and one pass for all of them beats a pass
        for the first one and another for the rest.
        """
        jobs: list[_Job] = []
        try:
            item = self._jobs.get() if block else self._jobs.get_nowait()
            until = time.monotonic() + _GATHER_S if block else 0.0
            while True:
                if item is None:
                    return None
                jobs.append(item)
                left = until - time.monotonic()
                item = self._jobs.get(timeout=left) if left > 0 else self._jobs.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._stopping:
                closed = BackendUnavailable("the embedded backend was closed")
                for job in jobs:
                    _emit_quietly(job, _Failed(closed))
                return []
            for job in jobs:
                if not job.load_only:
                    self._running[id(job)] = job
        return jobs

    def _release(self, job: _Job) -> bool:
        """Take ``job`` off the running ones; False if :meth:`stop` already answered it."""
        with self._lock:
            return self._running.pop(id(job), None) is not None

    def _start(self, job: _Job, llama: Llama | None, engine: BatchedEngine) -> None:
        assert llama is not None and self._format is not None
        if job.load_only:
            job.emit(Finished(Usage(total_s=self.load_s)))
            return
        prompt = self._format.tokens(job.messages)
        if job.continuations:
            if job.lead:
                prompt += llama.tokenize(job.lead.encode(), add_bos=False, special=False)
            branches = tuple(
                tuple(llama.tokenize(c.encode(), add_bos=False, special=False))
                for c in job.continuations
            )
            engine.add(
                ScoreWork(
                    tuple(prompt),
                    branches,
                    job.deadline,
                    lambda result: self._scored(job, branches, result),
                    job.cancelled,
                )
            )
            return
        engine.add(self._generation(job, tuple(prompt), llama))

    def _generation(self, job: _Job, prompt: tuple[int, ...], llama: Llama) -> GenerateWork:
        """The work for a completion. What the grammar forces every answer to begin with goes
        into the prompt (one pass for all, instead of one decode per token) and is handed to
        the caller as the answer's first text."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        lead = job.grammar.prefix if job.grammar is not None else ""
        forced = tuple(llama.tokenize(lead.encode(), add_bos=False, special=False))
        size = len(lead.encode())
        if size > job.max_bytes:
            lead, forced, size = "", (), 0

        def give_lead() -> None:
            nonlocal lead
            if lead:
                text, lead = lead, ""
                job.emit(TextDelta(text))

        def on_token(token: int) -> None:
            nonlocal size
            give_lead()
            piece = llama.detokenize([token])
            size += len(piece)
            if size > job.max_bytes:
                raise ResponseTooLarge(f"the answer passed {job.max_bytes} bytes")
            text = decoder.decode(piece)
            if text:
                job.emit(TextDelta(text))

        def done(result: GenerateOutcome | BaseException) -> None:
            if isinstance(result, BaseException):
                self._ended(job, result)
                return
            if not self._release(job):
                self._count(cancelled=1)
                return
            rest = decoder.decode(b"", final=True)
            try:
                give_lead()
                if rest:
                    job.emit(TextDelta(rest))
                usage = Usage(
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    ttft_s=None
                    if result.first_token_at is None
                    else result.first_token_at - job.submitted_at,
                    total_s=time.monotonic() - job.submitted_at,
                )
                self._count(
                    completed=1,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                )
                job.emit(Finished(usage, finish_reason=result.finish_reason))
            except _Cancelled:
                self._count(cancelled=1)

        return GenerateWork(
            prompt + forced,
            job.grammar.gbnf if job.grammar is not None else None,
            max(1, job.max_tokens - len(forced)),  # the answer's tokens, forced ones included
            job.temperature,
            job.seed,
            job.deadline,
            on_token,
            done,
            job.cancelled,
            forced,
        )

    def _scored(
        self, job: _Job, branches: tuple[tuple[int, ...], ...], result: ScoreOutcome | BaseException
    ) -> None:
        if isinstance(result, BaseException):
            self._ended(job, result)
            return
        if not self._release(job):
            self._count(cancelled=1)
            return
        answer = ScoreResult(
            logprobs=result.logprobs,
            tokens=tuple(len(b) for b in branches),
            usage=Usage(
                prompt_tokens=result.prompt_tokens,
                completion_tokens=0,
                total_s=time.monotonic() - job.submitted_at,
            ),
        )
        self._count(completed=1, prompt_tokens=result.prompt_tokens)
        with contextlib.suppress(_Cancelled):  # the caller's loop is gone: nobody to tell
            job.emit(_Scored(answer))

    def _ended(self, job: _Job, error: BaseException) -> None:
        if not self._release(job) or isinstance(error, WorkCancelled | _Cancelled):
            self._count(cancelled=1)
            return
        self._count(failed=1)
        if isinstance(error, Exception):
            error = _as_backend_error(error)
        _emit_quietly(job, _Failed(error))

    def _load_batched(self) -> tuple[Llama, BatchedEngine]:
        # This Llama only tokenizes; the engine makes its own context on the same model.
        return self._load_model(_TOKENIZER_CTX, _TOKENIZER_CTX, self._build_engine, adapter=False)

    def _build_engine(self, llama: Llama) -> BatchedEngine:
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._format = _PromptFormat(llama, self._settings.chat_format, vocab)
        settings = self._engine_settings
        if self.adapter_merged:  # in the weights already: not applied on the context again
            settings = self._engine_settings = dataclasses.replace(settings, adapter=None)
        return BatchedEngine(llama.model, settings, abort=self._abort)
