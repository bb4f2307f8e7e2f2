"""BatchedEngine: many requests decoded together in one llama.cpp context (low-level API).

On two cores the cost of a decision is prompt evaluation, so the engine evaluates as few tokens
as it can, in as few ``llama_decode`` calls as it can:

* One context, a unified KV cache, ``n_seq_max`` sequences. Sequence 0 is the *root*: the prefix
  that the last pass's prompts shared (the system prompt, usually), kept warm between passes.
  A request's sequences start as copies of the root's cells (``llama_memory_seq_cp``: in a
  unified cache a copy only adds the sequence id to the cells, nothing is evaluated).
* A *pass* takes every request waiting at its start. Their tokens beyond the root, and every
  continuation to score on its own branch sequence, are merged into one token tree
  (:mod:`aiplanner.backends.prefix_tree`): text shared by several requests is one batch row for
  all their sequences. The rows go to ``llama_decode`` with logits only where a score or a
  first token needs them: a pass's first ``chunk_tokens`` rows alone (its shortest requests,
  laid out first, are answered sooner), the rest in as few decodes as ``n_batch`` allows (rows
  cost less in larger decodes); in chunks of ``chunk_tokens`` throughout while a sequence
  generates (a large join then does not hold it for long) and on fewer threads than configured
  (the thread governor's choice is looked at again after each chunk). A pass's last part of at
  most half a chunk rides on the chunk before it (a few rows alone run at half the rate of a
  full chunk here). A scoring request is answered, and its sequences freed, as soon as the
  decode holding its last row is evaluated (requests are laid out one after another in the
  tree).
* Generation: every live sequence advances one token per ``llama_decode``, all in the same batch
  (next to the current pass's rows), each with its own sampler and grammar. What the grammar
  forces every answer to begin with (``GenerateWork.forced``, e.g. ``{"plan":[["``) comes with
  the prompt's rows instead of one decode per token. Greedy decoding (temperature 0, the
  planner's default) takes the likeliest token when the grammar allows it, else the likeliest
  the grammar allows among the 32 likeliest, then the 1024 likeliest, and filters the whole
  vocabulary (~13 ms a token here) only when none passes; sampling checks the sampled token
  first and filters the whole vocabulary when the grammar rejects it. Jump forward
  (``EngineSettings.jump_forward``): an answer whose grammar allows only one ending is handed
  over with it at once, and under greedy decoding the other text a grammar forces is drafted
  into the next decode and kept where the model confirms it, so the answers are the model's
  own in fewer decodes. A sequence is handed back the moment it ends, and its cells are freed
  at once.
* Requests that arrive during a pass join the next one (continuous batching), which starts in
  the running pass's last decode when that decode has room: the new pass's first rows fill it
  behind the old one's last (``_joinable``: not while those last rows still write the root or a
  kept branch, which the new requests copy from). Cancellation and
  deadlines are checked before every decode; a cancelled request's rows are dropped from the
  rest of its pass. A scoring request whose answer the rows ahead of it cannot reach before its
  deadline, at the rate recent decodes measured, is shed at once (:class:`BackendBusy`, which
  the circuit breaker does not count as a fault), so that the requests behind it finish sooner
  instead of all of them being late.

Everything here runs on the one thread that owns the engine (llama.cpp contexts are not
thread-safe); results go back through each work's callbacks, on that thread.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

from aiplanner.backends.abort import AbortFlag
from aiplanner.backends.decode_threads import ThreadGovernor
from aiplanner.backends.lora import apply_adapter, free_adapter
from aiplanner.backends.prefix_tree import Entry, Path, common_prefix, plan_pass, shared_prefix
from aiplanner.errors import BackendBusy, BackendError, BackendUnavailable, ConfigError
from aiplanner.grammar import grammar_alphabet

__all__ = [
    "BatchedEngine",
    "EngineSettings",
    "EngineStats",
    "GenerateOutcome",
    "GenerateWork",
    "ScoreOutcome",
    "ScoreWork",
    "WorkCancelled",
]

# Sampling settings for temperature > 0 (llama.cpp's defaults, as in the serial engine).
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_ROOT = 0
# Decodes of at least this many rows measure the prefill rate that shedding estimates with.
_RATE_MIN_ROWS = 32
# A root that loses fewer tokens than this in a switch is not worth a sequence of its own.
_MIN_KEPT_ROOT = 16
# A branch that spares fewer tokens than this beyond the root is not worth a sequence.
_MIN_BRANCH = 8
# Rows of passes joined one behind the other before one starts afresh (a bound on the list).
_JOINED_ROWS_MAX = 16_384
# Greedy decoding under a grammar takes the likeliest token if the grammar allows it (an argmax,
# ~6 us here, against ~120 us to partition out the 32 likeliest of 49,152 logits and filter
# them), else looks for the likeliest token
# the grammar allows among this many likeliest tokens, then this many, and only then in the
# whole vocabulary: one grammar pass over 49,152 tokens costs ~13 ms here, over 32 a few
# microseconds.
_GREEDY_WIDTHS = (1, 32, 1024)
# Most characters one jump forward drafts (``EngineSettings.jump_forward``), and most
# (token, character) pairs whose spelling as one token is remembered.
_JUMP_MAX_CHARS = 32
_RUN_ON_MEMO = 4096


class WorkCancelled(Exception):
    """Given to ``done`` of a work whose ``cancelled`` event was set: nobody waits for it."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """``n_ctx``: KV cells shared by all sequences; ``n_batch``: most rows per ``llama_decode``;
    ``chunk_tokens``: rows of a pass's first decode, and of every decode while a sequence
    generates (it waits for each decode) or on fewer threads than configured (a pass's last
    part of at most half a chunk rides on the decode before it, up to ``n_batch``);
    ``chunk_scoring``: chunk all of a pass with no sequence generating too, instead of decoding
    its rows after the first chunk in as few decodes as ``n_batch`` allows."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_seq_max: int = 128
    n_threads: int = 2
    chunk_tokens: int = 128
    # Rows cost less in larger decodes (fresh rows here, 3 December: 445-448 rows/s in decodes
    # of 128, 475-504 in 256, 504-530 in 512); past its first chunk a scoring pass gains
    # nothing from more chunks but earlier answers for a few, at the others' price.
    # benchmarks/RESULTS.md, "A pass in two decodes".
    chunk_scoring: bool = False
    adapter: FilePath | None = None  # a LoRA applied on the engine's context
    adapter_scale: float = 1.0
    adaptive_threads: bool = True  # n_threads only where measured faster (decode_threads)
    # llama.cpp's flash attention. Every row of a decode attends over the whole shared cache
    # (other sequences' cells masked out), so rows cost more as the cache fills: a 10-agent
    # free round's 128-row prefill chunks went from 335 to 533 ms without it, 303 to 469 ms
    # with it. Its sums depend a little on how many rows share a decode (scores within 0.52
    # nats of one-at-a-time with it, against 0.35 without; the same decisions).
    flash_attn: bool = True
    # Rows/s assumed for shedding late requests until decodes measure it; None: no shedding
    # before the first prompt-sized decode.
    assumed_rate: float | None = None
    # Finished prompts kept in the KV cache (their own sequences, least recently used dropped
    # first) for later requests to start from: an agent asking again, or another one whose
    # situation begins the same way, evaluates only what differs. 0 (the default): none.
    # Every row attends over the whole cache (benchmarks/kept_cells.py, three runs): 128 rows of
    # a fresh prompt took 216-298 ms beside no other cells and 251-348 ms beside 3,000 with
    # flash attention, 233-299 against 711-896 ms without it (when 32 kept prompts lost on the
    # 10-agent round: ~100 against ~240 rows/s). With flash attention, in the live 10v10 demo
    # (one sitting, 5 seeds a pair): 8 kept prompts spared 12-25% of the rows but served them
    # at 270-305 against 320-350 rows/s; 90.7% against 86.3% of the plans from the model in one
    # pair of runs, 89.2% against 89.7% in the other (with the score memo): inside the noise.
    prefix_cache: int = 0
    # Roots given up when a pass's prompts begin otherwise (another mode's system prompt: free
    # plans after guided ones), kept on sequences of their own for prompts that come back to
    # them; the least recently used goes first, and they give way to requests like kept
    # prompts. Only a root several prompts shared is kept (not one request's whole prompt).
    kept_roots: int = 1
    # Branches kept: where several prompts of a pass run on together past the warm root (the
    # role line after the system prompt), that prefix is kept on a sequence of its own (its
    # rows are evaluated with theirs, the sequence only shares their cells), least recently
    # used dropped first, so later requests that start the same way evaluate only what differs.
    # A branch holds only cells beyond the root that others shared (tens, not a whole prompt's
    # hundred), so unlike kept prompts it barely adds to what every row attends over. In the
    # live 10v10 demo (one sitting, alternated with 0, RESULTS.md "Kept branches"): 8 spared 8% of
    # the rows a scored request evaluates. Any count is valid: branches are made from free
    # sequences only and give way to requests like kept prompts.
    kept_branches: int = 8
    # Jump forward: after each generated token, ask (a copy of) the grammar about every
    # character it can write (when they are all printable ASCII,
    # :func:`aiplanner.grammar.grammar_alphabet`). An answer whose grammar allows only one
    # ending (``]]}`` after a plan's last argument) ends at once with it: its text is known,
    # whatever the model would pick, so no decode is spent on it or on the end token. Under
    # greedy decoding, other text the grammar forces (``["`` after ``],``, ``",`` after a code)
    # is drafted as the tokenizer spells it (less a last token that a longer one could run on
    # from, as ``]`` into ``],``) and fed with the sampled token in the next decode; each
    # drafted token the model picks itself at its row is kept, a decode saved, and the first
    # it would not pick ends the draft (its cells dropped, the model's own token taken): the
    # text is the one the model writes without drafts.
    jump_forward: bool = True

    @classmethod
    def parse(cls, pairs: Iterable[str]) -> EngineSettings:
        """Settings from ``key=value`` strings, as a command line gives them
        (``chunk_tokens=64``, ``flash_attn=off``, ``assumed_rate=none``), the others at their
        defaults. Booleans read ``true/false``, ``on/off``, ``yes/no`` or ``1/0``. The thread
        count and the adapter are the backend's own (see ``EmbeddedBackend``), not set here.

        Raises :class:`ConfigError` for text without ``=``, an unknown or backend-owned key, a
        key given twice, a value of the wrong kind, or settings :meth:`check` refuses.
        """
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"engine setting {pair!r} is not key=value")
            if key in _BACKEND_OWNED:
                raise ConfigError(f"engine setting {key!r} is the backend's own, not the engine's")
            annotation = known.get(key)  # text here (postponed annotations)
            kind = annotation if isinstance(annotation, str) else ""
            reading = _SETTING_READERS.get(kind)
            if reading is None:
                settable = sorted(k for k in known if k not in _BACKEND_OWNED)
                raise ConfigError(f"unknown engine setting {key!r}; one of {settable}")
            if key in values:
                raise ConfigError(f"engine setting {key!r} given twice")
            reader, expected = reading
            try:
                values[key] = reader(text.strip())
            except ValueError:
                raise ConfigError(f"engine setting {key}={text!r}: expected {expected}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raises :class:`ConfigError` for a setting llama.cpp or the engine cannot use."""
        if self.n_ctx < 64:
            raise ConfigError(f"n_ctx must be at least 64, got {self.n_ctx}")
        if not 2 <= self.n_seq_max <= 256:
            raise ConfigError(f"n_seq_max must be in [2, 256], got {self.n_seq_max}")
        if self.n_batch < 1 or self.chunk_tokens < 1 or self.n_threads < 1:
            raise ConfigError("n_batch, chunk_tokens and n_threads must be positive")
        if self.assumed_rate is not None and not self.assumed_rate > 0.0:
            raise ConfigError(f"assumed_rate must be positive, got {self.assumed_rate}")
        if not 0 <= self.prefix_cache < self.n_seq_max:
            raise ConfigError(f"prefix_cache must be in [0, n_seq_max), got {self.prefix_cache}")
        if self.kept_roots < 0 or self.prefix_cache + self.kept_roots >= self.n_seq_max:
            raise ConfigError(
                f"kept_roots ({self.kept_roots}) must be at least 0 and leave, with "
                f"prefix_cache ({self.prefix_cache}), sequences for requests"
            )
        if self.kept_branches < 0:
            raise ConfigError(f"kept_branches must be at least 0, got {self.kept_branches}")
        if self.n_batch < self.n_seq_max:
            # llama.cpp keeps room for one output per sequence in every batch (an assertion).
            raise ConfigError(f"n_batch ({self.n_batch}) must be at least n_seq_max")


_BACKEND_OWNED = frozenset({"n_threads", "adapter", "adapter_scale"})
_TRUE = frozenset({"true", "on", "yes", "1"})
_FALSE = frozenset({"false", "off", "no", "0"})


def _read_bool(text: str) -> bool:
    low = text.lower()
    if low in _TRUE or low in _FALSE:
        return low in _TRUE
    raise ValueError(text)


def _read_int(text: str) -> int:
    return int(text, 10)  # int("1.5") and int("") raise ValueError


def _read_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _read_optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else _read_float(text)


# EngineSettings.parse: how each field's text is read, by the field's annotation, and what an
# error says it expected.
_SETTING_READERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "int": (_read_int, "a whole number"),
    "bool": (_read_bool, "true/false, on/off, yes/no or 1/0"),
    "float": (_read_float, "a finite number"),
    "float | None": (_read_optional_float, "a finite number or none"),
}


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters since construction. ``rows`` are tokens evaluated (prompt rows and generated
    tokens fed back); ``shared_rows`` those evaluated once for several requests;
    ``decodes`` the ``llama_decode`` calls and ``decode_s`` the seconds spent in them (a decode
    that failed or was aborted counts there only: it evaluated nothing);
    ``passes`` the passes started; ``one_thread_decodes`` the decodes the thread governor ran on
    one thread; ``shed`` the scoring requests ended early because the rows ahead of them
    outlasted their deadline; ``reused_rows`` prompt rows not evaluated because a kept prompt
    (``prefix_cache``) held them, beyond what the root held; ``vocab_passes`` the times a
    grammar filtered the whole vocabulary (its sampled or likeliest tokens all rejected);
    ``jumped`` the tokens a grammar forced that cost no decode of their own
    (``EngineSettings.jump_forward``): drafts the model confirmed, and the endings of
    ``ended_early`` generations (whose grammar allowed only one ending, handed over without
    decoding it); ``drafts_lost`` the drafted tokens the model did not confirm (rows evaluated
    for nothing). Fed drafts are counted in ``generated`` too."""

    passes: int = 0
    decodes: int = 0
    rows: int = 0
    shared_rows: int = 0
    generated: int = 0
    scored: int = 0
    decode_s: float = 0.0
    one_thread_decodes: int = 0
    shed: int = 0
    reused_rows: int = 0
    vocab_passes: int = 0
    jumped: int = 0
    drafts_lost: int = 0
    ended_early: int = 0


@dataclass(frozen=True, slots=True)
class ScoreOutcome:
    """Summed natural-log probabilities, one per continuation, and the prompt tokens evaluated
    for this request (rows shared with others counted as a share)."""

    logprobs: tuple[float, ...]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ScoreWork:
    """Score each continuation (token ids) after ``prompt``. ``done`` gets a
    :class:`ScoreOutcome` or the exception that ended the work, exactly once."""

    prompt: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]
    deadline: float  # time.monotonic()
    done: Callable[[ScoreOutcome | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class GenerateOutcome:
    finish_reason: str  # "stop" (end of generation) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int
    first_token_at: float | None  # time.monotonic()


@dataclass(frozen=True, slots=True)
class GenerateWork:
    """Generate after ``prompt``. ``on_token`` gets each token (never the end-of-generation
    one); if it raises, the work ends with that exception. ``done`` gets a
    :class:`GenerateOutcome` or the exception, exactly once. ``gbnf`` constrains the output.
    ``forced``: the last tokens of ``prompt``, the beginning of the answer that the grammar
    forces (:func:`aiplanner.grammar.forced_prefix`): evaluated with the prompt rather than
    generated one decode each; the grammar takes them before the first generated token."""

    prompt: tuple[int, ...]
    gbnf: str | None
    max_tokens: int
    temperature: float
    seed: int
    deadline: float  # time.monotonic()
    on_token: Callable[[int], None]
    done: Callable[[GenerateOutcome | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    forced: tuple[int, ...] = ()


Work = ScoreWork | GenerateWork


class _Scoring:
    """A scoring work inside a pass: one sequence per distinct path (prompt plus all but the last
    token of a continuation); ``parts[j]`` the (row, token) pairs whose log-probabilities make
    continuation ``j``'s score."""

    __slots__ = ("cost", "parts", "pending", "seqs", "values", "work")

    def __init__(self, work: ScoreWork) -> None:
        self.work = work
        self.seqs: list[int] = []
        self.parts: list[list[tuple[int, int]]] = []
        self.pending: set[int] = set()
        self.values: dict[tuple[int, int], float] = {}
        self.cost = 0.0


class _Generating:
    """A generation: prompt rows in a pass, then one token per decode until it ends."""

    __slots__ = (
        "chain",
        "cost",
        "first_at",
        "grammar",
        "greedy",
        "max_tokens",
        "next_pos",
        "pending",
        "probe",
        "produced",
        "seq",
        "work",
    )

    def __init__(self, work: GenerateWork, seq: int, chain: Any, grammar: Any) -> None:
        self.work = work
        self.seq = seq
        self.chain = chain
        self.grammar = grammar
        self.greedy = work.temperature <= 0.0
        self.max_tokens = work.max_tokens
        self.next_pos = len(work.prompt)
        # The sampled token and the text the grammar forces after it, to feed next decode.
        self.pending: tuple[int, ...] = ()
        # Jump forward: the single-character tokens of the grammar's alphabet, then an end
        # token, as llama_token_data candidates (None: no jumping for this work).
        self.probe: Any = None
        self.produced = 0
        self.first_at: float | None = None
        self.cost = 0.0

    @property
    def seqs(self) -> list[int]:
        return [self.seq]


_Active = _Scoring | _Generating


class BatchedEngine:
    """The engine over one loaded model (``model``: a ``llama_model`` pointer). Not
    thread-safe: construct, use and :meth:`close` it on one thread; only ``abort``, a flag set
    from any thread, reaches it from another (it ends the decode under way and every later one:
    :mod:`aiplanner.backends.abort`).

    Raises :class:`BackendError` if llama.cpp cannot make the context.
    """

    def __init__(
        self, model: Any, settings: EngineSettings, *, abort: AbortFlag | None = None
    ) -> None:
        import llama_cpp
        import numpy as np

        settings.check()
        self._lib = llama_cpp
        self._np = np
        self._settings = settings
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = settings.n_ctx
        params.n_batch = settings.n_batch
        params.n_ubatch = settings.n_batch
        params.n_seq_max = settings.n_seq_max
        params.n_threads = settings.n_threads
        params.n_threads_batch = settings.n_threads
        params.kv_unified = True  # one cell serves every sequence that shares it
        params.no_perf = True
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if settings.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            raise BackendError("llama.cpp could not create the batched context", retryable=False)
        self._ctx = ctx
        self._abort = abort  # kept: llama.cpp holds only the flag's address
        if abort is not None:  # set (at close), it ends the running decode
            abort.install(llama_cpp, ctx)
        self._adapter: Any = None
        if settings.adapter is not None:
            try:
                self._adapter = apply_adapter(model, ctx, settings.adapter, settings.adapter_scale)
            except BackendError:
                llama_cpp.llama_free(ctx)
                raise
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._governor = ThreadGovernor(settings.n_threads)
        self._threads = settings.n_threads
        self._batch = llama_cpp.llama_batch_init(settings.n_batch, 0, settings.n_seq_max)
        # Candidates for a grammar that rejected the sampled token: ids never change.
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self._candidates = np.zeros(self._n_vocab, dtype=dtype)
        self._candidates["id"] = np.arange(self._n_vocab, dtype=np.int32)
        self._one: Any = llama_cpp.llama_token_data(0, 0.0, 0.0)
        self._dtype = dtype
        self._run_on: dict[tuple[int, str], bool] = {}
        # Jump forward: the token of each printable ASCII character spelt alone (and back), and
        # the end token a finished grammar accepts.
        self._char_token = self._single_char_tokens() if settings.jump_forward else {}
        self._token_char = {t: c for c, t in self._char_token.items()}
        eos = int(llama_cpp.llama_vocab_eos(self._vocab))
        self._eog = eos if eos >= 0 else int(llama_cpp.llama_vocab_eot(self._vocab))
        self._closed = False
        self._root: tuple[int, ...] = ()
        self._root_shared = False  # whether the root is what several prompts shared
        self._free = list(range(settings.n_seq_max - 1, _ROOT, -1))  # pop() gives the lowest
        # Kept prompts: seq -> the tokens its cells hold (positions 0..), least recent first.
        self._cache: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._roots: set[int] = set()  # those of them that were the root (kept_roots)
        self._branches: set[int] = set()  # those of them that are branches (kept_branches)
        self._waiting: deque[Work] = deque()
        self._active: list[_Active] = []
        self._gens: list[_Generating] = []  # past their prompt: one token per decode
        self._reserved: dict[int, int] = {}  # id(active) -> KV cells reserved
        self._owner: dict[int, _Active] = {}  # seq -> its request
        # The current pass: rows still to evaluate, and who reads which row's logits.
        self._rows: tuple[Entry, ...] = ()
        self._next_row = 0
        self._readers: dict[int, list[_Active]] = {}
        self._dead: set[int] = set()  # sequences freed while their pass still has rows
        # While a pass joining the running one admits its requests, what it frees (kept
        # prompts, roots, branches given up) is named by no row left (_joinable): not dead.
        self._joining = False
        self._stats = EngineStats()
        self._rate = settings.assumed_rate  # rows/s of recent prompt-sized decodes (shedding)

    # --- public -------------------------------------------------------------------------------

    @property
    def stats(self) -> EngineStats:
        return self._stats

    @property
    def busy(self) -> bool:
        """Whether :meth:`step` has work to do."""
        return bool(self._waiting or self._active)

    @property
    def root_tokens(self) -> int:
        """Tokens kept warm on the root sequence."""
        return len(self._root)

    @property
    def free_sequences(self) -> int:
        """Sequences no request holds (kept prompts count: they are given up on demand)."""
        return len(self._free) + len(self._cache)

    @property
    def kept_prompts(self) -> int:
        """Finished prompts kept for later requests to start from (kept roots and branches
        apart)."""
        return len(self._cache) - len(self._roots) - len(self._branches)

    @property
    def kept_roots(self) -> int:
        """Roots given up and kept for prompts that come back to them."""
        return len(self._roots)

    @property
    def kept_branches(self) -> int:
        """Prefixes several prompts shared past the root, kept for prompts that start so."""
        return len(self._branches)

    def drop_kept(self) -> None:
        """Give up every kept prompt (their sequences and cells)."""
        while self._cache:
            self._evict()

    def add(self, work: Work) -> None:
        """Queue ``work`` for the next pass. Raises :class:`ConfigError` for a request the
        engine can never serve (nothing to score, ``max_tokens`` < 1)."""
        if isinstance(work, ScoreWork) and not work.continuations:
            raise ConfigError("a score request needs at least one continuation")
        if not work.prompt:
            raise ConfigError("an empty prompt")
        if isinstance(work, GenerateWork) and work.max_tokens < 1:
            raise ConfigError(f"max_tokens must be at least 1, got {work.max_tokens}")
        self._waiting.append(work)

    def step(self) -> None:
        """Drop cancelled and late work, start a pass if none is running and work waits, then
        evaluate one batch (at most one ``llama_decode``) and hand out what it finished."""
        self._reap()
        if self._next_row >= len(self._rows):
            self._end_pass()
            if self._waiting:
                self._start_pass()
        elif self._waiting and self._joinable():
            self._start_pass(join=True)
        self._shed(time.monotonic())
        self._decode_once()

    def close(self) -> None:
        """Fail what is left with ``error`` nowhere: the works are dropped as cancelled; free
        every sampler, the batch and the context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for active in list(self._active):
            self._finish(active, WorkCancelled())
        for work in self._waiting:
            _call(work.done, WorkCancelled())
        self._waiting.clear()
        lib = self._lib
        lib.llama_batch_free(self._batch)
        lib.llama_free(self._ctx)
        if self._adapter is not None:
            free_adapter(self._adapter)
            self._adapter = None

    def fail_all(self, error: BaseException) -> None:
        """End every queued and running work with ``error`` (the engine stays usable)."""
        for active in list(self._active):
            self._finish(active, error)
        for work in self._waiting:
            _call(work.done, error)
        self._waiting.clear()

    # --- passes -------------------------------------------------------------------------------

    def _joinable(self) -> bool:
        """Whether waiting requests may start their pass now, behind the rows left of this one:
        those fit the next decode with room to spare (the new pass's first rows fill it), name
        no sequence a new pass may change (the root, a kept branch: the cells of each are whole
        before others are copied from them), and the joined rows stay bounded."""
        if len(self._rows) - self._next_row >= self._chunk(self._threads):
            return False
        if len(self._rows) >= _JOINED_ROWS_MAX:
            return False  # a long chain of joins ends; the next pass starts afresh
        fixed = self._branches | {_ROOT}
        return not any(
            q in fixed and q not in self._dead
            for i in range(self._next_row, len(self._rows))
            for q in self._rows[i].seqs
        )

    def _chunk(self, threads: int) -> int:
        """Most pass rows for a decode on ``threads`` threads: ``chunk_tokens`` for a pass's
        first decode (its shortest requests, laid out first, are answered sooner), while a
        sequence generates, on fewer threads than configured (the thread governor's choice
        while others want the cores, looked at again after each decode: a whole pass on one
        thread took 1.40 s where two took ~0.85) and with ``chunk_scoring``; else ``n_batch``.
        """
        s = self._settings
        if s.chunk_scoring or self._gens or threads < s.n_threads or self._next_row == 0:
            return min(s.n_batch, s.chunk_tokens)
        return s.n_batch

    def _forget_dead(self) -> None:
        """Take the sequences freed during this pass out of its rows still ahead, and forget
        them: a pass joining this one may be given them."""
        dead = self._dead
        if not dead:
            return
        rows = list(self._rows)
        for i in range(self._next_row, len(rows)):
            entry = rows[i]
            if any(q in dead for q in entry.seqs):
                rows[i] = dataclasses.replace(
                    entry, seqs=tuple(q for q in entry.seqs if q not in dead)
                )
        self._rows = tuple(rows)
        dead.clear()

    def _start_pass(self, *, join: bool = False) -> None:
        """Admit waiting requests, in order, as far as sequences and cells allow, and lay out
        their rows. ``join``: behind the rows left of the running pass (:meth:`_joinable`),
        not in place of them."""
        if join:
            self._forget_dead()
            self._joining = True
        try:
            self._admit(join)
        finally:
            self._joining = False

    def _admit(self, join: bool) -> None:
        lib = self._lib
        s = self._settings
        admitted: list[tuple[Work, list[tuple[int, ...]]]] = []
        needs: dict[int, int] = {}  # id(work) -> KV cells it needs (its rows, about)
        seqs_left = len(self._free)
        cells_left = (
            s.n_ctx
            - len(self._root)
            - sum(self._reserved.values())
            - sum(len(t) for t in self._cache.values())  # at most: some cells are shared
        )
        while self._waiting:
            work = self._waiting[0]
            paths = _paths_of(work)
            need = _cells(work, paths, self._root, s.n_ctx)
            while self._cache and (len(paths) > seqs_left or need > cells_left):
                cells_left += self._evict()  # a kept prompt gives way to a request
                seqs_left += 1
            alone = s.n_ctx - _reach(self._root, work.prompt)
            if need > alone and not (admitted or self._active):
                self._waiting.popleft()
                _call(
                    work.done,
                    BackendError(
                        f"the request needs {need} KV cells; the context holds {s.n_ctx}",
                        retryable=False,
                    ),
                )
                continue
            if need > cells_left and not (admitted or self._active):
                # The warm root is all that stands in the way: give up what this one cannot use.
                self._truncate_root(common_prefix(self._root, work.prompt))
                cells_left = s.n_ctx - len(self._root)
            if len(paths) > seqs_left or need > cells_left:
                break  # waits for a later pass, in order
            self._waiting.popleft()
            admitted.append((work, paths))
            needs[id(work)] = need
            seqs_left -= len(paths)
            cells_left -= need
        if not admitted:
            return
        # Shortest first: the rows are evaluated in this order, so the most requests are
        # answered soonest, and a short request (an agent's content-free calibration) is never
        # the one left at the end of the pass, shed or late, after its agent's long one was done.
        admitted.sort(key=lambda item: needs[id(item[0])])
        # Keep warm what this pass's prompts share, if that beats what the root holds now; the
        # prompts that a kept prompt serves better than the root do not vote (their rows would
        # not be shared with the root's).
        best = {id(work): self._best_kept(work.prompt) for work, _ in admitted}
        prompts = [
            work.prompt
            for work, _ in admitted
            if best[id(work)][1] <= _reach(self._root, work.prompt)
        ]
        # One request alone: keep its prompt warm (like a single-slot prompt cache).
        length, members = (
            (len(prompts[0]) - 1, [0]) if len(prompts) == 1 else shared_prefix(prompts)
        )
        kept = sum(_reach(self._root, p) for p in prompts)
        all_paths: list[Path] = []
        if prompts and length * len(members) > kept:
            new_root = prompts[members[0]][:length]
            common = common_prefix(self._root, new_root)
            spare = len(self._free) - sum(len(p) for _, p in admitted)
            self._keep_root(common, spare, {base for base, n in best.values() if n})
            self._truncate_root(common)
            self._root_shared = len(members) > 1
            k = len(self._root)
            if length > k:
                all_paths.append(Path(_ROOT, new_root, k))
        else:
            new_root = self._root
        readers: dict[int, list[_Active]] = {}
        # (request, its paths, the position they start from, the sequence copied up to it)
        planned: list[tuple[_Active, list[tuple[int, ...]], int, int]] = []
        reused = 0
        for work, paths in admitted:
            last = len(work.prompt) - 1  # always evaluated here, for its logits
            start = from_root = _reach(self._root, work.prompt)
            base, n = best[id(work)]  # kept prompts do not change with the root
            if n > start:
                start = n
            else:
                base = _ROOT
            active = self._activate(work, paths)
            if active is None:
                continue
            if base != _ROOT:
                self._cache.move_to_end(base)
                reused += start - from_root
            for seq, tokens in zip(active.seqs, paths, strict=True):
                if start:
                    lib.llama_memory_seq_cp(self._mem, base, seq, 0, start)
                all_paths.append(Path(seq, tokens, start, last, len(tokens), base))
            planned.append((active, paths, start, base))
        if reused:
            self._stats = _bump(self._stats, reused_rows=reused)
        self._root = new_root
        all_paths.extend(self._branch_paths(planned))
        plan = plan_pass(all_paths)
        offset = len(self._rows) if join else 0  # the rows left of the running pass come first
        outputs = {key: row + offset for key, row in plan.outputs.items()}
        for active, paths, _, _ in planned:
            if isinstance(active, _Generating):
                row = outputs[(active.seq, len(active.work.prompt) - 1)]
                readers.setdefault(row, []).append(active)
                continue
            work = active.work
            by_path = {tokens: seq for seq, tokens in zip(active.seqs, paths, strict=True)}
            p = len(work.prompt)
            for cont in work.continuations:
                seq = by_path[work.prompt + cont[:-1]] if cont else -1
                part = [(outputs[(seq, p - 1 + i)], tok) for i, tok in enumerate(cont)]
                active.parts.append(part)
                for row, _ in part:
                    if row not in active.pending:
                        active.pending.add(row)
                        readers.setdefault(row, []).append(active)
        if join:
            self._rows += plan.entries
            self._readers.update(readers)
        else:
            self._rows = plan.entries
            self._next_row = 0
            self._readers = readers
        self._joining = False  # rows of this pass name what is freed from now on
        self._stats = _bump(self._stats, passes=1)
        # A scoring request with only empty continuations needs no row at all.
        for active, _, _, _ in planned:
            if isinstance(active, _Scoring) and not active.pending:
                self._complete_scoring(active)

    def _activate(self, work: Work, paths: list[tuple[int, ...]]) -> _Active | None:
        active: _Active
        if isinstance(work, ScoreWork):
            active = _Scoring(work)
            active.seqs = [self._free.pop() for _ in paths]
        else:
            try:
                chain, grammar = self._samplers(work)
            except ConfigError as exc:
                _call(work.done, exc)
                return None
            active = _Generating(work, self._free.pop(), chain, grammar)
            if grammar is not None and work.gbnf is not None:
                active.probe = self._probe_for(work.gbnf)
            room = self._settings.n_ctx - len(work.prompt)
            active.max_tokens = max(1, min(work.max_tokens, room))
        for seq in active.seqs:
            self._owner[seq] = active
        self._reserved[id(active)] = _cells(work, paths, self._root, self._settings.n_ctx)
        self._active.append(active)
        return active

    def _end_pass(self) -> None:
        self._rows = ()
        self._next_row = 0
        self._readers = {}
        self._dead.clear()

    # --- decoding -----------------------------------------------------------------------------

    def _decode_once(self) -> None:
        s = self._settings
        threads, limit = s.n_threads, None
        pending = [g for g in self._gens if g.pending]
        left = len(self._rows) - self._next_row  # pass rows still ahead
        if s.adaptive_threads:  # limit: a probe of the thread count, kept small (decode_threads)
            threads, limit = self._governor.plan(sum(len(g.pending) for g in pending) + left)
        cap = s.n_batch if limit is None else min(limit, s.n_batch)
        feeding: list[_Generating] = []
        fed = 0  # rows: a sampled token, and the text its grammar forced after it
        for g in pending:
            if feeding and fed + len(g.pending) > cap:
                break
            feeding.append(g)
            fed += len(g.pending)
        if len(feeding) < len(pending):  # more are generating than this decode holds: take turns
            self._gens = [g for g in self._gens if g not in feeding] + feeding
        # Pass rows as _chunk allows: a decode of a few hundred rows takes about a second here,
        # no generating sequence advances during one, and none of its requests is answered
        # before it ends.
        chunk = self._chunk(threads)
        room = max(0, min(cap - fed, chunk))
        if left - room <= chunk // 2:
            # A pass's short last part rides on this decode: few rows alone run at half the
            # rate of a full chunk, and the requests in them would wait a decode more.
            room = max(0, min(cap - fed, left))
        rows: list[tuple[int, Entry, tuple[int, ...]]] = []
        while self._next_row < len(self._rows) and len(rows) < room:
            i = self._next_row
            entry = self._rows[i]
            self._next_row += 1
            seqs = tuple(q for q in entry.seqs if q not in self._dead)
            if seqs and all(q in self._branches for q in seqs):
                for q in seqs:  # every request it rode on ended: not evaluated for it alone
                    self._release(q)
                continue
            if seqs:
                rows.append((i, entry, seqs))
        if not feeding and not rows:
            return
        batch = self._batch
        n = 0
        first: list[int] = []  # the batch row of each fed generation's sampled token
        for g in feeding:
            first.append(n)
            for k, token in enumerate(g.pending):  # a draft needs every row's logits
                self._put(n, token, g.next_pos + k, (g.seq,), True)
                n += 1
        for _, entry, seqs in rows:
            self._put(n, entry.token, entry.pos, seqs, entry.logits)
            n += 1
        batch.n_tokens = n
        if threads != self._threads:
            self._lib.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads
        started = time.perf_counter()
        rc = self._lib.llama_decode(self._ctx, batch)
        spent = time.perf_counter() - started
        self._governor.look()  # before anything is handed over (decode_threads)
        if rc != 0:  # its time was spent in llama_decode, but it evaluated nothing to count
            self._stats = _bump(self._stats, decodes=1, decode_s=spent)
            self._decode_failed(rc, feeding, rows)
            return
        self._governor.record(n, threads, spent, probe=limit is not None)
        if n >= _RATE_MIN_ROWS and spent > 0.0:
            sample = n / spent
            self._rate = sample if self._rate is None else 0.7 * self._rate + 0.3 * sample
        shared = 0
        for _, _, seqs in rows:
            mine = [self._owner[q] for q in seqs if q in self._owner]  # not the root, branches
            owners = {id(a) for a in mine}
            if len(owners) > 1:
                shared += 1
            for active in mine:
                active.cost += 1.0 / len(owners) / _n_seqs_of(active, seqs)
        self._stats = _bump(
            self._stats,
            decodes=1,
            rows=n,
            shared_rows=shared,
            generated=fed,
            decode_s=spent,
            one_thread_decodes=int(threads == 1),
        )
        for g, row in zip(feeding, first, strict=True):
            self._verify(g, row)
        for n_out, (i, entry, _) in enumerate(rows, start=fed):
            if not entry.logits:
                continue
            readers = self._readers.pop(i, None)
            if not readers:
                continue
            logits = self._logits(n_out)
            lse: float | None = None
            for active in readers:
                if active not in self._active:
                    continue
                if isinstance(active, _Generating):
                    self._gens.append(active)
                    self._sample(active, n_out)
                    continue
                if lse is None:
                    lse = _logsumexp(self._np, logits)
                for j, part in enumerate(active.parts):
                    for row, token in part:
                        if row == i:
                            active.values[(j, row)] = float(logits[token]) - lse
                active.pending.discard(i)
                if not active.pending:
                    self._complete_scoring(active)

    def _decode_failed(
        self,
        rc: int,
        feeding: list[_Generating],
        rows: list[tuple[int, Entry, tuple[int, ...]]],
    ) -> None:
        """Fail every request the decode held rows of. ``rc`` 1: no KV slot (the reservation
        should prevent it); 2: aborted (the backend is closing: the abort flag, abort.py);
        others: llama.cpp failed."""
        error: BackendError
        if rc == 2:
            error = BackendUnavailable("llama_decode aborted: the engine is closing")
        else:
            error = BackendError(f"llama_decode failed ({rc})", retryable=rc == 1)
        touched: dict[int, _Active] = {id(g): g for g in feeding}
        for _, _, seqs in rows:
            for q in seqs:
                if q in self._owner:
                    touched[id(self._owner[q])] = self._owner[q]
        for failed in touched.values():
            self._finish(failed, error)
        if any(_ROOT in seqs for _, _, seqs in rows):
            self._drop_root()
        for q in {q for _, _, seqs in rows for q in seqs if q in self._branches}:
            self._release(q)  # its cells may not hold what it says

    def _put(self, n: int, token: int, pos: int, seqs: tuple[int, ...], logits: bool) -> None:
        batch = self._batch
        batch.token[n] = token
        batch.pos[n] = pos
        batch.n_seq_id[n] = len(seqs)
        ids = batch.seq_id[n]
        for k, q in enumerate(seqs):
            ids[k] = q
        batch.logits[n] = 1 if logits else 0

    def _logits(self, index: int) -> Any:
        ptr = self._lib.llama_get_logits_ith(self._ctx, index)
        return self._np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    # --- generation ---------------------------------------------------------------------------

    def _samplers(self, work: GenerateWork) -> tuple[Any, Any]:
        """Raises :class:`ConfigError` when llama.cpp rejects the grammar."""
        lib = self._lib
        grammar = None
        if work.gbnf is not None:
            grammar = lib.llama_sampler_init_grammar(self._vocab, work.gbnf.encode(), b"root")
            if not grammar:
                head = work.gbnf[:200].replace("\n", " / ")
                raise ConfigError(f"llama.cpp rejected the grammar: {head}")
            for token in work.forced:  # already in the prompt: the grammar starts after them
                if not self._allowed(grammar, token):  # (accepting it would abort the process)
                    lib.llama_sampler_free(grammar)
                    raise ConfigError("the grammar does not begin with the forced tokens")
                lib.llama_sampler_accept(grammar, token)
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if work.temperature <= 0.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(_TOP_K))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(_TOP_P, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(_MIN_P, 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(work.temperature))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(work.seed & 0xFFFFFFFF))
        return chain, grammar

    def _sample(self, g: _Generating, index: int) -> None:
        lib = self._lib
        if g.greedy:
            token = self._greedy(g, index)
        else:
            token = int(lib.llama_sampler_sample(g.chain, self._ctx, index))
            if g.grammar is not None and not self._allowed(g.grammar, token):
                token = self._constrained(g, index)
        if self._emit(g, token):
            self._next(g, token)

    def _emit(self, g: _Generating, token: int) -> bool:
        """Hand ``token`` over (the grammar takes it); False when that ended the work."""
        lib = self._lib
        if token < 0:
            self._finish(g, BackendError("the grammar allows no token", retryable=False))
            return False
        if g.first_at is None:
            g.first_at = time.monotonic()
        if lib.llama_vocab_is_eog(self._vocab, token):
            self._finish(g, self._generated(g, "stop"))
            return False
        if g.grammar is not None:
            lib.llama_sampler_accept(g.grammar, token)
        if not self._give(g, token):
            return False
        if g.produced >= g.max_tokens:
            self._finish(g, self._generated(g, "length"))
            return False
        return True

    def _give(self, g: _Generating, token: int) -> bool:
        """Count ``token`` and pass it to the caller; False when its callback raised (the work
        then ends with that exception)."""
        g.produced += 1
        try:
            g.work.on_token(token)
        except Exception as exc:
            self._finish(g, exc)
            return False
        return True

    def _next(self, g: _Generating, token: int) -> None:
        """Queue ``token`` for the next decode, with a draft of the text its grammar now forces
        (jump forward, greedy works only); a work its grammar lets say nothing more ends."""
        g.pending = (token,)
        if g.probe is None:
            return
        chars, after = self._forced(g)
        if after is None:  # the grammar allows these characters and then only the end
            self._complete(g, self._tokenize("".join(chars)) if chars else ())
            return
        if chars and g.greedy:
            drafts = self._tokenize("".join(chars))
            # A model picks a token that runs on past the forced text when there is one ("]"
            # forced, then "]," rather than "]" and ","): such a last token is not drafted.
            if drafts and self._runs_on(drafts[-1], after):
                drafts = drafts[:-1]
            g.pending += drafts[: g.max_tokens - g.produced]

    def _complete(self, g: _Generating, rest: tuple[int, ...]) -> None:
        """End g with ``rest``, the tokens of the text its grammar still forces before the end:
        whatever the model would pick, the answer's text is known, so no decode is spent on it."""
        room = g.max_tokens - g.produced
        for token in rest[:room]:
            if not self._give(g, token):
                return
        self._stats = _bump(self._stats, jumped=min(len(rest), room), ended_early=1)
        self._finish(g, self._generated(g, "length" if len(rest) > room else "stop"))

    def _forced(self, g: _Generating) -> tuple[list[str], list[str] | None]:
        """The characters g's grammar forces next (one at a time, while exactly one character
        of its alphabet is allowed), then the characters it allows after them, or None when
        the end token alone is allowed there. Asks a copy of the grammar: the real one takes
        only the tokens the model is seen to choose."""
        lib = self._lib
        np = self._np
        probe = g.probe
        grammar = lib.llama_sampler_clone(g.grammar)
        chars: list[str] = []
        after: list[str] | None = []
        try:
            for _ in range(_JUMP_MAX_CHARS):
                probe["logit"] = 0.0
                self._filter(grammar, probe)
                allowed = np.flatnonzero(np.isfinite(probe["logit"]))
                end = len(probe) - 1
                if len(allowed) != 1 or int(allowed[0]) == end:
                    if len(allowed) == 1:
                        after = None
                    else:
                        after = [self._token_char[int(probe["id"][k])] for k in allowed if k != end]
                    break
                token = int(probe["id"][int(allowed[0])])
                lib.llama_sampler_accept(grammar, token)
                chars.append(self._token_char[token])
        finally:
            lib.llama_sampler_free(grammar)
        return chars, after

    def _runs_on(self, token: int, after: list[str]) -> bool:
        """Whether ``token``'s text followed by one of the characters ``after`` is a single
        token of the vocabulary (memoised; the pairs come from grammars' small alphabets)."""
        for c in after:
            key = (token, c)
            one = self._run_on.get(key)
            if one is None:
                if len(self._run_on) >= _RUN_ON_MEMO:
                    self._run_on.clear()
                one = len(self._tokenize(self._piece(token) + c)) == 1
                self._run_on[key] = one
            if one:
                return True
        return False

    def _piece(self, token: int) -> str:
        buf = ctypes.create_string_buffer(64)
        n = int(self._lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False))
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def _verify(self, g: _Generating, row: int) -> None:
        """After a decode of ``g.pending`` from batch row ``row`` on: keep each drafted token
        the model itself picks there (greedy, under the grammar), drop the rest from the KV
        memory, and go on from the last row kept."""
        fed = g.pending
        g.pending = ()
        pos = g.next_pos
        for k in range(1, len(fed)):
            choice = self._greedy(g, row + k - 1)
            if choice != fed[k]:
                self._lib.llama_memory_seq_rm(self._mem, g.seq, pos + k, -1)
                g.next_pos = pos + k
                self._stats = _bump(self._stats, jumped=k - 1, drafts_lost=len(fed) - k)
                if self._emit(g, choice):
                    self._next(g, choice)
                return
            if not self._emit(g, fed[k]):
                self._stats = _bump(self._stats, jumped=k)
                return
        g.next_pos = pos + len(fed)
        if len(fed) > 1:
            self._stats = _bump(self._stats, jumped=len(fed) - 1)
        self._sample(g, row + len(fed) - 1)

    def _probe_for(self, gbnf: str) -> Any:
        """Candidates for :meth:`_forced` over ``gbnf``'s alphabet, or None when it cannot be
        listed or a character of it has no token of its own."""
        if not self._char_token or self._eog < 0:
            return None
        alphabet = grammar_alphabet(gbnf)
        if alphabet is None or any(c not in self._char_token for c in alphabet):
            return None
        ids = [self._char_token[c] for c in sorted(alphabet)] + [self._eog]
        probe = self._np.zeros(len(ids), dtype=self._dtype)
        probe["id"] = ids
        return probe

    def _single_char_tokens(self) -> dict[str, int]:
        """Printable ASCII characters whose text is one token of its own (a byte-level BPE
        vocabulary has all of them)."""
        table: dict[str, int] = {}
        for code in range(0x20, 0x7F):
            tokens = self._tokenize(chr(code))
            if len(tokens) == 1:
                table[chr(code)] = tokens[0]
        return table

    def _tokenize(self, text: str) -> tuple[int, ...]:
        raw = text.encode()
        size = len(raw) + 8
        out = (self._lib.llama_token * size)()
        n = int(self._lib.llama_tokenize(self._vocab, raw, len(raw), out, size, False, False))
        if n < 0:
            raise BackendError(f"llama.cpp could not tokenize {text!r}", retryable=False)
        return tuple(out[:n])

    def _greedy(self, g: _Generating, index: int) -> int:
        """The likeliest token the grammar allows (the lowest id among equals, as llama.cpp's
        greedy sampler over the whole vocabulary picks), or -1 when it allows none. Looks among
        the likeliest tokens first: the answer is exact once the best allowed one there is
        strictly likelier than every token left out."""
        np = self._np
        logits = self._logits(index)
        if g.grammar is None:
            return int(np.argmax(logits))
        for width in _GREEDY_WIDTHS:
            if width == 1:  # the likeliest token (the lowest id among equals), if allowed
                best = int(np.argmax(logits))
                if self._allowed(g.grammar, best):
                    return best
                continue
            if width >= self._n_vocab:
                break
            top = np.argpartition(logits, -width)[-width:]
            top.sort()  # by id, so that argmax below takes the lowest id among equals
            kept = logits[top]
            cand = self._candidates[:width]
            cand["id"] = top
            cand["logit"] = kept
            cand["p"] = 0.0
            self._filter(g.grammar, cand)
            best = int(np.argmax(cand["logit"]))
            value = float(cand["logit"][best])
            if value > float(kept.min()):  # nothing left out is as likely: exact
                return int(top[best])
            if not math.isinf(value):  # allowed, but may tie with a token left out
                break
        return self._constrained(g, index)

    def _filter(self, grammar: Any, cand: Any) -> Any:
        """Apply ``grammar`` to the candidates ``cand`` in place (disallowed logits -> -inf);
        the ``llama_token_data_array`` over them, for a sampler to go on with."""
        lib = self._lib
        data = cand.ctypes.data_as(lib.llama_token_data_p)
        array = lib.llama_token_data_array(data, len(cand), -1, False)
        lib.llama_sampler_apply(grammar, ctypes.byref(array))
        return array

    def _allowed(self, grammar: Any, token: int) -> bool:
        lib = self._lib
        one = self._one
        one.id = token
        one.logit = 0.0
        one.p = 0.0
        array = lib.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
        lib.llama_sampler_apply(grammar, ctypes.byref(array))
        return not math.isinf(one.logit)

    def _constrained(self, g: _Generating, index: int) -> int:
        """Filter the whole vocabulary through the grammar, then sample with the chain."""
        lib = self._lib
        self._stats = _bump(self._stats, vocab_passes=1)
        cand = self._candidates
        cand["id"] = self._np.arange(self._n_vocab, dtype=self._np.int32)
        cand["logit"] = self._logits(index)
        cand["p"] = 0.0
        array = self._filter(g.grammar, cand)
        lib.llama_sampler_apply(g.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return -1
        chosen = array.data[array.selected]
        if math.isinf(chosen.logit) and chosen.logit < 0:
            return -1
        token = int(chosen.id)
        lib.llama_sampler_accept(g.chain, token)
        return token

    def _generated(self, g: _Generating, reason: str) -> GenerateOutcome:
        return GenerateOutcome(reason, round(g.cost), g.produced, g.first_at)

    # --- endings ------------------------------------------------------------------------------

    def _complete_scoring(self, active: _Scoring) -> None:
        sums = tuple(
            math.fsum(active.values[(j, row)] for row, _ in part)
            for j, part in enumerate(active.parts)
        )
        self._stats = _bump(self._stats, scored=1)
        self._finish(active, ScoreOutcome(sums, round(active.cost)))

    def _finish(self, active: _Active, result: Any) -> None:
        """Free the request's sequences and samplers, then tell its caller."""
        if active not in self._active:
            return
        self._active.remove(active)
        if isinstance(active, _Generating):
            if active in self._gens:
                self._gens.remove(active)
            self._lib.llama_sampler_free(active.chain)
            if active.grammar is not None:
                self._lib.llama_sampler_free(active.grammar)
        keep = None
        if self._settings.prefix_cache and isinstance(result, ScoreOutcome | GenerateOutcome):
            keep = active.seqs[0]  # holds the whole prompt: every row of it was evaluated
        for seq in active.seqs:
            del self._owner[seq]
            if self._next_row < len(self._rows) and not self._joining:
                self._dead.add(seq)
            if seq == keep:
                self._lib.llama_memory_seq_rm(self._mem, seq, len(active.work.prompt), -1)
                self._cache[seq] = active.work.prompt
            else:
                self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                self._free.append(seq)
        while self.kept_prompts > self._settings.prefix_cache:
            self._evict(prompts_only=True)
        self._reserved.pop(id(active), None)
        _call(active.work.done, result)

    def _best_kept(self, prompt: tuple[int, ...]) -> tuple[int, int]:
        """The kept prompt that holds the most of ``prompt`` (its sequence, how many tokens;
        ``(0, 0)`` if none)."""
        best, reach = _ROOT, 0
        for seq, tokens in self._cache.items():
            n = _reach(tokens, prompt)
            if n > reach:
                best, reach = seq, n
        return best, reach

    def _evict(self, *, prompts_only: bool = False) -> int:
        """Give up the least recently used kept sequence (``prompts_only``: kept prompt, not
        a kept root or branch); the cells it was counted for."""
        seq = next(
            q
            for q in self._cache
            if not (prompts_only and (q in self._roots or q in self._branches))
        )
        return self._release(seq)

    def _release(self, seq: int) -> int:
        """Give up kept sequence ``seq``; the cells it was counted for."""
        tokens = self._cache.pop(seq)
        self._roots.discard(seq)
        self._branches.discard(seq)
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        if self._next_row < len(self._rows) and not self._joining:
            self._dead.add(seq)  # rows of this pass may still name it
        self._free.append(seq)
        return len(tokens)

    def _branch_paths(
        self, planned: list[tuple[_Active, list[tuple[int, ...]], int, int]]
    ) -> list[Path]:
        """Paths for new kept branches: the prefixes that two or more prompts of this pass,
        copied from the same sequence up to the same position, share beyond it and beyond the
        root (``kept_branches``). Each rides on its members' rows (no row of its own); the
        shortest come first (the most general: a role line before a situation)."""
        limit = self._settings.kept_branches
        if not limit:
            return []
        groups: dict[tuple[int, int], list[tuple[int, ...]]] = {}
        for active, _, start, base in planned:
            groups.setdefault((base, start), []).append(active.work.prompt)
        found: dict[tuple[int, ...], tuple[int, int]] = {}
        for (base, start), prompts in groups.items():
            prompts.sort()
            for a, b in itertools.pairwise(prompts):
                n = min(common_prefix(a, b), len(a) - 1, len(b) - 1)
                held = max(start, common_prefix(self._root, a[:n]) if base == _ROOT else 0)
                if n - held >= _MIN_BRANCH:
                    found.setdefault(a[:n], (base, start))
        paths: list[Path] = []
        keep = {base for _, _, _, base in planned}  # copied from now; and those made below
        for tokens in sorted(found, key=len):
            if any(held[: len(tokens)] == tokens for held in self._cache.values()):
                continue  # a kept sequence holds it already
            base, start = found[tokens]
            victims = [q for q in self._cache if q in self._branches and q not in keep]
            if len(self._branches) >= limit and victims:
                self._release(victims[0])
            if len(self._branches) >= limit or not self._free:
                break
            seq = self._free.pop()
            if start:
                self._lib.llama_memory_seq_cp(self._mem, base, seq, 0, start)
            self._cache[seq] = tokens
            self._branches.add(seq)
            keep.add(seq)
            paths.append(Path(seq, tokens, start, base=base))
        return paths

    def _keep_root(self, common: int, spare: int, in_use: set[int]) -> None:
        """Before the root gives up its cells past ``common``, keep them on a sequence of
        their own (``kept_roots``), if ``spare`` sequences are left over by the pass and no
        kept root that this pass starts from (``in_use``) has to go for it."""
        s = self._settings
        if not (s.kept_roots and self._root_shared) or len(self._root) - common < _MIN_KEPT_ROOT:
            return  # (one request's prompt as the root is a prompt cache of one: not kept)
        kept = [q for q in self._cache if q in self._roots]  # least recently used first
        excess = len(kept) - (s.kept_roots - 1)
        victims = [q for q in kept if q not in in_use][: max(0, excess)]
        if len(victims) < excess or spare + len(victims) < 1:
            return
        for q in victims:
            self._release(q)
        seq = self._free.pop()
        self._lib.llama_memory_seq_cp(self._mem, _ROOT, seq, 0, len(self._root))
        self._cache[seq] = self._root
        self._roots.add(seq)

    def _truncate_root(self, length: int) -> None:
        if length < len(self._root):
            self._lib.llama_memory_seq_rm(self._mem, _ROOT, length, -1)
            self._root = self._root[:length]

    def _drop_root(self) -> None:
        self._truncate_root(0)
        self._dead.add(_ROOT)

    def _shed(self, now: float) -> None:
        """End, with :class:`BackendBusy`, each scoring request of the pass whose answer the
        rows still ahead of it cannot reach before its deadline at the measured rate: its rows
        are then skipped, so the requests behind it finish sooner instead of all being late.

        Rows are counted as evaluated once for all their sequences; a shed request's own rows
        no longer count for the requests behind it. Generation is not shed (its length is not
        known); its prompt rows count as rows ahead.
        """
        rate = self._rate
        if rate is None or self._next_row >= len(self._rows):
            return
        ends: dict[int, list[_Scoring]] = {}  # row -> requests answered by it
        for active in self._active:
            if isinstance(active, _Scoring) and active.pending:
                ends.setdefault(max(active.pending), []).append(active)
        if not ends:
            return
        last = max(ends)
        ahead = 0
        own: dict[int, int] = {}  # id(request) -> rows ahead that only it needs
        for i in range(self._next_row, last + 1):
            live = [q for q in self._rows[i].seqs if q not in self._dead]
            if not live:
                continue
            ahead += 1
            owners = {id(self._owner[q]) for q in live if q in self._owner}
            if len(owners) == 1 and all(q in self._owner for q in live):
                key = owners.pop()
                own[key] = own.get(key, 0) + 1
            for active in ends.get(i, ()):
                if now + ahead / rate > active.work.deadline:
                    error = BackendBusy(
                        f"shed: {ahead} rows ahead of its answer at {rate:.0f} rows/s outlast "
                        "its deadline"
                    )
                    ahead -= own.get(id(active), 0)
                    self._stats = _bump(self._stats, shed=1)
                    self._finish(active, error)

    def _reap(self) -> None:
        now = time.monotonic()
        for active in list(self._active):
            error = _ended(active.work, now)
            if error is not None:
                self._finish(active, error)
        if any(_ended(w, now) is not None for w in self._waiting):
            keep: deque[Work] = deque()
            for work in self._waiting:
                error = _ended(work, now)
                if error is None:
                    keep.append(work)
                else:
                    _call(work.done, error)
            self._waiting = keep


def _reach(held: tuple[int, ...], prompt: tuple[int, ...]) -> int:
    """How many of ``prompt``'s tokens cells holding ``held`` spare (never its last one, which
    is evaluated for its logits)."""
    return min(common_prefix(held, prompt), len(prompt) - 1)


def _paths_of(work: Work) -> list[tuple[int, ...]]:
    """The distinct token paths a work needs, one sequence each."""
    if isinstance(work, GenerateWork):
        return [work.prompt]
    paths = dict.fromkeys(work.prompt + c[:-1] for c in work.continuations if c)
    return list(paths) or [work.prompt]


def _cells(work: Work, paths: list[tuple[int, ...]], root: tuple[int, ...], n_ctx: int) -> int:
    """KV cells a work may hold at most (shared rows counted once per path: an upper bound)."""
    cells = (
        len(work.prompt) - _reach(root, work.prompt) + sum(len(p) - len(work.prompt) for p in paths)
    )
    if isinstance(work, GenerateWork):
        cells += max(1, min(work.max_tokens, n_ctx - len(work.prompt)))
    return cells


def _n_seqs_of(active: _Active, seqs: tuple[int, ...]) -> int:
    mine = active.seqs
    return sum(1 for q in seqs if q in mine)


def _ended(work: Work, now: float) -> BaseException | None:
    if work.cancelled.is_set():
        return WorkCancelled()
    if now > work.deadline:
        return BackendBusy("the request's deadline passed before the engine reached it")
    return None


def _logsumexp(np: Any, logits: Any) -> float:
    top = float(logits.max())
    return top + math.log(float(np.exp(logits.astype(np.float64) - top).sum()))


def _bump(stats: EngineStats, **changes: float) -> EngineStats:
    return dataclasses.replace(
        stats, **{name: getattr(stats, name) + n for name, n in changes.items()}
    )


def _call(done: Callable[[Any], None], result: Any) -> None:
    # A caller's callback must never take the engine down with it.
    try:
        done(result)
    except Exception:
        return
