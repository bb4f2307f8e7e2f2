"""The batched engine (many sequences in one llama.cpp context) against the serial one.

Engine-level tests drive :class:`BatchedEngine` step by step on the test thread, so what happens in
which pass is deterministic; backend-level tests go through ``EmbeddedBackend(engine="batched")``
as the planner does. Waits are bounded only to turn a hang into a failure; nothing here asserts
how fast anything is (benchmarks/engine.py measures that).
"""

from __future__ import annotations

import dataclasses
import gc
import resource
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import orjson
import pytest
from embedded_threads import no_worker_left

from aiplanner.backends import batched as batched_module
from aiplanner.backends import cpu_buffers
from aiplanner.backends.base import (
    CompletionRequest,
    Finished,
    Message,
    ScoreRequest,
    ScoreResult,
    TextDelta,
)
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
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.backends.factory import create_backend
from aiplanner.backends.weights import Weights
from aiplanner.errors import BackendBusy, BackendTimeout, ConfigError
from aiplanner.model_path import resolve_model_path
from aiplanner.schema import choice_schema

HANG_GUARD_S = 120.0
# llama.cpp's CPU kernels are not bit-reproducible across KV-cache layouts: the same sequence in
# other cells of a unified cache (or with its last token in a batch of another size) gets logits
# that differ by up to ~0.6, whatever the other cells hold: tiny float differences flip the
# rounding of the 8-bit quantized activations. Measured on summed 2-6 token scores against the
# serial engine: at most 0.53 nats, mostly under 0.2. So each score must be within TOLERANCE and
# the mean difference within MEAN_TOLERANCE; a sequence that read another request's cells moves
# its scores by nats (and the canary test below catches it outright).
TOLERANCE = 1.0
MEAN_TOLERANCE = 0.3
SYSTEM = (
    "You are a soldier in a grid shooter game. You read your situation and say what you do next."
)
PHRASES = ("shoot enemy 91", "reload my weapon", "run to cover", "heal ally 8")


def _situation(i: int) -> tuple[Message, ...]:
    lines = [
        f"I am a tactical soldier. Health {30 + 7 * i}/100, ammo {i % 4}/6, in the open.",
        f"Enemy 91: {2 + i} steps, {'in my range' if i % 3 else 'out of range'}.",
        f"Ally 8: {1 + i % 5} steps, health {20 + 9 * i}.",
    ]
    return (Message("system", SYSTEM), Message("user", "\n".join(lines[: 1 + i % 3 + 1])))


def _score_request(i: int, **kw: Any) -> ScoreRequest:
    kw.setdefault("timeout_s", HANG_GUARD_S)
    return ScoreRequest(_situation(i), PHRASES[: 2 + i % 3], lead="I should", **kw)


# --- engine level ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama() -> Iterator[Any]:
    from llama_cpp import Llama

    with cpu_buffers.loading():  # no AMX buffers where they crash
        model = Llama(model_path=str(resolve_model_path()), n_ctx=64, n_threads=1, verbose=False)
    try:
        yield model
    finally:
        model.close()


def _tokens(llama: Any, text: str) -> tuple[int, ...]:
    return tuple(llama.tokenize(text.encode(), add_bos=False, special=False))


def _engine(llama: Any, **kw: Any) -> BatchedEngine:
    """An engine on the test model. A test that gives ``chunk_tokens`` cuts its scoring passes
    into chunks of that size (``chunk_scoring``; by default only generation is chunked)."""
    kw.setdefault("n_threads", 1)
    kw.setdefault("prefix_cache", 0)  # (the default) every sequence and cell freed at its end
    if "chunk_tokens" in kw:
        kw.setdefault("chunk_scoring", True)
    return BatchedEngine(llama.model, EngineSettings(**kw))


class _Results:
    """Collects each work's outcome, in the order the engine hands them over."""

    def __init__(self) -> None:
        self.done: dict[str, Any] = {}
        self.order: list[str] = []

    def sink(self, name: str) -> Callable[[Any], None]:
        def done(result: Any) -> None:
            assert name not in self.done, "done is called once"
            self.done[name] = result
            self.order.append(name)

        return done


def _score_work(llama: Any, results: _Results, name: str, user: str, **kw: Any) -> ScoreWork:
    prompt = _tokens(llama, f"{SYSTEM}\n{user}\nI should")
    conts = tuple(_tokens(llama, " " + p) for p in PHRASES)
    return ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, results.sink(name), **kw)


def _generate_work(
    prompt: tuple[int, ...],
    gbnf: str | None,
    max_tokens: int,
    done: Callable[[Any], None],
    *,
    temperature: float = 0.0,
    seed: int = 0,
    on_token: Callable[[int], None] = lambda _token: None,
    forced: tuple[int, ...] = (),
) -> GenerateWork:
    """A generation with the tests' hang guard as its deadline."""
    deadline = time.monotonic() + HANG_GUARD_S
    return GenerateWork(
        prompt, gbnf, max_tokens, temperature, seed, deadline, on_token, done, forced=forced
    )


def _score_alone(
    engine: BatchedEngine, llama: Any, results: _Results, name: str, user: str
) -> None:
    """One scoring request, run until it is answered (a pass of its own)."""
    engine.add(_score_work(llama, results, name, user))
    _run(engine, lambda: name in results.done)


def _run(engine: BatchedEngine, until: Callable[[], bool], limit: int = 10_000) -> None:
    for _ in range(limit):
        if until():
            return
        engine.step()
    raise AssertionError("the engine did not get there")


def _kv_empty(engine: BatchedEngine, llama: Any, n_seq: int) -> bool:
    """No sequence but the root holds a cell."""
    import llama_cpp

    mem = llama_cpp.llama_get_memory(engine._ctx)
    return all(llama_cpp.llama_memory_seq_pos_max(mem, s) == -1 for s in range(1, n_seq))


@pytest.mark.model
def test_a_request_joining_mid_pass_is_served_in_the_next_pass(llama: Any) -> None:
    # Small batches: the first pass takes several decodes, and the newcomer arrives during it.
    engine = _engine(llama, n_batch=16, n_seq_max=16)
    results = _Results()
    try:
        for i in range(3):
            engine.add(_score_work(llama, results, f"first{i}", f"Situation number {i}."))
        engine.step()
        assert engine.stats.passes == 1 and not results.done, "the pass is still running"
        engine.add(_score_work(llama, results, "late", "A late situation."))
        _run(engine, lambda: "late" in results.done)
        assert engine.stats.passes == 2 and results.order[-1] == "late"
        assert all(isinstance(r, ScoreOutcome) for r in results.done.values())
        # The late request scores as it does alone on a fresh engine.
        late = _score_work(llama, _Results(), "late", "A late situation.")
        _close_to(results.done["late"].logprobs, _alone(llama, late.prompt, late.continuations))
        assert _kv_empty(engine, llama, 16)
        assert engine.free_sequences == 15
    finally:
        engine.close()


def _one_pass(
    llama: Any, users: list[str], chunk_tokens: int, **kw: Any
) -> tuple[int, int, tuple[tuple[float, ...], ...]]:
    """Rows and decodes of one pass of these requests (on a fresh engine, in chunks of
    ``chunk_tokens``), and their scores."""
    engine = _engine(llama, n_seq_max=32, chunk_tokens=chunk_tokens, **kw)
    results = _Results()
    try:
        works = [_score_work(llama, results, str(i), u) for i, u in enumerate(users)]
        _pass(engine, works, results)
        scores = tuple(results.done[str(i)].logprobs for i in range(len(users)))
        return engine.stats.rows, engine.stats.decodes, scores
    finally:
        engine.close()


@pytest.mark.model
def test_a_pass_short_last_part_rides_on_the_decode_before_it(llama: Any) -> None:
    user = "Enemy 91 is close and in range. Ally 8 is hurt. Cover is near."
    rows, decodes, (whole,) = _one_pass(llama, [user], 10_000)
    assert decodes == 1
    # One row past a chunk is not a decode of its own; half the rows past one (more than half a
    # chunk) is. The same rows either way, and the same scores.
    assert _one_pass(llama, [user], rows - 1)[:2] == (rows, 1)
    got_rows, got_decodes, (halves,) = _one_pass(llama, [user], rows // 2)
    assert (got_rows, got_decodes) == (rows, 2)
    _close_to(halves, whole)


@pytest.mark.model
def test_a_scoring_pass_goes_in_a_chunk_then_as_few_decodes_as_n_batch_allows(llama: Any) -> None:
    users = [_situation(i)[1].content for i in range(3)]
    rows, decodes, chunked = _one_pass(llama, users, 16)
    assert decodes >= 3  # chunks of 16 rows
    # The default: a first chunk alone, then, nothing generating, one decode of the rest.
    got_rows, got_decodes, whole = _one_pass(llama, users, 16, chunk_scoring=False)
    assert (got_rows, got_decodes) == (rows, 2)
    for a, b in zip(whole, chunked, strict=True):
        _close_to(a, b)
    # n_batch still bounds a decode.
    rest = -(-(rows - 16) // 64)
    assert _one_pass(llama, users, 16, chunk_scoring=False, n_batch=64)[1] == 1 + rest


@pytest.mark.model
def test_a_pass_joining_a_generation_is_chunked_so_the_generation_goes_on(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=16, chunk_tokens=8, chunk_scoring=False)
    results = _Results()
    tokens: list[int] = []
    try:
        prompt = _tokens(llama, f"{SYSTEM}\nCount from one to fifty in words:")
        engine.add(_generate_work(prompt, None, 40, results.sink("gen"), on_token=tokens.append))
        _run(engine, lambda: len(tokens) >= 1)
        engine.add(_score_work(llama, results, "score", _situation(2)[1].content))
        # Each decode now holds the generation's next token and at most a chunk of the pass:
        # the generation writes a token a decode while the pass's rows go through.
        while "score" not in results.done:
            before_rows, before_tokens = engine.stats.rows, len(tokens)
            engine.step()
            if "gen" in results.done:
                break
            assert engine.stats.rows - before_rows <= 8 + 8 // 2 + 1
            assert len(tokens) == before_tokens + 1
        assert "score" in results.done, "the pass ended before the generation did"
        _run(engine, lambda: len(results.done) == 2)
        assert isinstance(results.done["score"], ScoreOutcome)
        alone = _score_work(llama, _Results(), "x", _situation(2)[1].content)
        _close_to(results.done["score"].logprobs, _alone(llama, alone.prompt, alone.continuations))
    finally:
        engine.close()


@pytest.mark.model
def test_waiting_requests_start_their_pass_in_the_last_decode_of_the_running_one(
    llama: Any,
) -> None:
    first = [_situation(i)[1].content for i in range(3)]
    rows, decodes, _ = _one_pass(llama, first, 10_000, kept_branches=0)
    assert decodes == 1
    # Chunks of 60% of the first pass's rows: its second decode would hold the other 40% alone.
    engine = _engine(llama, n_seq_max=32, chunk_tokens=rows * 6 // 10, kept_branches=0)
    results = _Results()
    try:
        works = [_score_work(llama, results, f"first{i}", u) for i, u in enumerate(first)]
        for work in works:
            engine.add(work)
        engine.step()
        assert engine.stats.decodes == 1 and engine.stats.rows < rows
        # One of them ends mid-pass: its sequences are free for the newcomer, which must not
        # lose its own rows to the ones the pass skips for it.
        works[2].cancelled.set()
        engine.add(_score_work(llama, results, "late", "A late situation."))
        # and one with nothing to score: answered at once, its rows skipped
        nothing = _tokens(llama, f"{SYSTEM}\nNothing to say.\nI should")
        engine.add(ScoreWork(nothing, ((),), time.monotonic() + 60, results.sink("nothing")))
        engine.step()
        # The first pass ends in this decode, and the late request's first rows fill it.
        assert engine.stats.passes == 2 and engine.stats.decodes == 2
        assert {"first0", "first1", "first2"} <= results.done.keys()
        assert isinstance(results.done["first2"], WorkCancelled)
        assert results.done["nothing"].logprobs == (0.0,)
        assert engine.stats.rows > rows * 6 // 10 + 1
        _run(engine, lambda: "late" in results.done)
        late = _score_work(llama, _Results(), "late", "A late situation.")
        _close_to(results.done["late"].logprobs, _alone(llama, late.prompt, late.continuations))
        for i, user in enumerate(first[:2]):
            alone = _score_work(llama, _Results(), "x", user)
            _close_to(
                results.done[f"first{i}"].logprobs,
                _alone(llama, alone.prompt, alone.continuations),
            )
        assert _kv_empty(engine, llama, 32) and engine.free_sequences == 31
    finally:
        engine.close()


@pytest.mark.model
@pytest.mark.parametrize("kind", ["root", "branch"])
def test_a_pass_joins_only_once_the_cells_it_copies_from_are_written(llama: Any, kind: str) -> None:
    # The first pass writes the cells a late request starts from: the root (one request's
    # prompt, kept warm) or a kept branch (two long role-B prompts, laid out last, beside three
    # short ones of role A). Across chunk sizes the pass's last decode sometimes still writes
    # them: the late request must wait for the end of the pass then, not copy them half-written.
    conts = (_tokens(llama, " yes"), _tokens(llama, " no"))
    road = "The road ahead is long and the bridge is down, so we wait by the old mill for orders"
    if kind == "root":
        first = [("one", "Enemy 91 is close and in range. Ally 8 is hurt. Cover is near.")]
        late_user = "Enemy 91 is close and in range. Ally 8 is hurt. Cover is far."
        conts = tuple(_tokens(llama, " " + p) for p in PHRASES)  # rows past the root's
        chunks = range(6, 18, 3)
    else:
        first = [(f"a{i}", f"{ROLE_A} x{i}.") for i in range(3)]
        first += [(f"b{i}", f"{ROLE_B} {road} {word}.") for i, word in enumerate(["one", "two"])]
        late_user = f"{ROLE_B} {road} three."
        chunks = range(8, 48, 4)

    def work(results: _Results, name: str, user: str) -> ScoreWork:
        prompt = _tokens(llama, f"{SYSTEM}\n{user}\nI should")
        return ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, results.sink(name))

    late = work(_Results(), "late", late_user)
    want = _alone(llama, late.prompt, late.continuations)
    joined = []
    for chunk in chunks:
        engine = _engine(llama, n_seq_max=32, chunk_tokens=chunk)
        results = _Results()
        try:
            for name, user in first:
                engine.add(work(results, name, user))
            engine.step()
            assert kind == "root" or engine.kept_branches == 1
            engine.add(work(results, "late", late_user))
            while len(results.done) < len(first):
                engine.step()
            # joined: the decode that ended the first pass held the late request's first rows
            joined.append(engine.stats.passes == 2)
            _run(engine, lambda done=results.done: "late" in done)
            assert isinstance(results.done["late"], ScoreOutcome), (chunk, results.done["late"])
            _close_to(results.done["late"].logprobs, want)
        finally:
            engine.close()
    assert any(joined)  # the joining path is taken at some sizes


@pytest.mark.model
def test_a_cancelled_request_frees_its_sequences_at_once(llama: Any) -> None:
    engine = _engine(llama, n_batch=16, n_seq_max=16)
    results = _Results()
    try:
        cancel = threading.Event()
        engine.add(_score_work(llama, results, "keep", "Keep me."))
        engine.add(_score_work(llama, results, "drop", "Drop me.", cancelled=cancel))
        engine.step()
        assert engine.free_sequences < 15
        cancel.set()
        engine.step()
        assert isinstance(results.done["drop"], WorkCancelled)
        assert "keep" not in results.done
        _run(engine, lambda: "keep" in results.done)
        assert isinstance(results.done["keep"], ScoreOutcome)
        assert engine.free_sequences == 15 and _kv_empty(engine, llama, 16)
    finally:
        engine.close()


@pytest.mark.model
def test_a_passed_deadline_ends_the_request_with_backend_busy(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=8)
    results = _Results()
    try:
        work = _score_work(llama, results, "late", "Too late.")
        engine.add(ScoreWork(work.prompt, work.continuations, time.monotonic() - 1, work.done))
        engine.step()
        # Busy, not a fault: the circuit breaker must not open because the engine is full.
        assert isinstance(results.done["late"], BackendBusy)
        assert isinstance(results.done["late"], BackendTimeout)
        assert engine.free_sequences == 7
    finally:
        engine.close()


@pytest.mark.model
def test_a_request_the_rows_ahead_cannot_reach_in_time_is_shed_and_frees_the_rest(
    llama: Any,
) -> None:
    # At an assumed 2 rows/s a 100 s deadline allows ~200 rows: a request whose answer is 300+
    # rows away cannot make it; the short ones (~50 rows each) before and after it can, once
    # the long one's own rows no longer count.
    engine = _engine(llama, n_seq_max=16, assumed_rate=2.0)
    results = _Results()
    long_user = " ".join(f"word{i}" for i in range(150))
    deadline = time.monotonic() + 100.0
    try:
        for name, user in (("a", "Short one."), ("long", long_user), ("c", "Short two.")):
            w = _score_work(llama, results, name, user)
            engine.add(ScoreWork(w.prompt, w.continuations, deadline, w.done))
        engine.step()  # the pass starts; shedding is decided before its first decode
        assert isinstance(results.done.get("long"), BackendBusy)
        assert "shed" in str(results.done["long"])
        assert engine.stats.shed == 1
        _run(engine, lambda: "a" in results.done and "c" in results.done)
        assert isinstance(results.done["a"], ScoreOutcome)
        assert isinstance(results.done["c"], ScoreOutcome)
        c = _score_work(llama, _Results(), "c", "Short two.")
        _close_to(results.done["c"].logprobs, _alone(llama, c.prompt, c.continuations))
        assert engine.free_sequences == 15 and _kv_empty(engine, llama, 16)
    finally:
        engine.close()


@pytest.mark.model
def test_the_shortest_request_of_a_pass_is_answered_first(llama: Any) -> None:
    engine = _engine(llama, n_batch=32, n_seq_max=16)  # a pass of several decodes
    results = _Results()
    try:
        engine.add(_score_work(llama, results, "long", " ".join(f"w{i}" for i in range(40))))
        engine.add(_score_work(llama, results, "short", "Short."))
        _run(engine, lambda: len(results.done) == 2)
        assert engine.stats.passes == 1 and results.order == ["short", "long"]
        assert all(isinstance(r, ScoreOutcome) for r in results.done.values())
    finally:
        engine.close()


@pytest.mark.model
def test_a_kept_prompt_spares_the_rows_a_later_request_shares_with_it(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=16, prefix_cache=4)
    results = _Results()
    shared = "Me: badly hurt, one bullet, in the open. Enemy 91: 3 steps. Enemy 17: 5 steps."
    try:
        _score_alone(engine, llama, results, "first", f"{shared}\nAlly 8: far.")
        _score_alone(engine, llama, results, "other", "Something else, to move the warm root.")
        assert engine.kept_prompts == 2
        rows_before = engine.stats.rows
        _score_alone(engine, llama, results, "again", f"{shared}\nAlly 8: close.")
        # Its situation's first lines came from the first request's kept cells, not the root.
        assert engine.stats.reused_rows >= len(_tokens(llama, shared)) - 2
        again = _score_work(llama, _Results(), "again", f"{shared}\nAlly 8: close.")
        evaluated = engine.stats.rows - rows_before
        assert evaluated < len(again.prompt) - len(_tokens(llama, shared)) + 4 * 4
        _close_to(results.done["again"].logprobs, _alone(llama, again.prompt, again.continuations))
        engine.drop_kept()
        assert engine.kept_prompts == 0 and engine.free_sequences == 15
        assert _kv_empty(engine, llama, 16)
    finally:
        engine.close()


@pytest.mark.model
def test_kept_prompts_are_bounded_and_give_way_to_a_request_that_needs_their_sequences(
    llama: Any,
) -> None:
    engine = _engine(llama, n_seq_max=8, prefix_cache=3)
    results = _Results()
    try:
        for i in range(5):
            _score_alone(engine, llama, results, f"s{i}", f"Situation number {i} here.")
        assert engine.kept_prompts == 3 and engine.free_sequences == 7
        # Six branches need six sequences; four are free: two kept prompts give way.
        system = _tokens(llama, "You are a soldier.")
        wide = tuple((100 + j, 7) for j in range(6))
        engine.add(ScoreWork(system, wide, time.monotonic() + HANG_GUARD_S, results.sink("wide")))
        _run(engine, lambda: "wide" in results.done)
        assert isinstance(results.done["wide"], ScoreOutcome)
        assert len(results.done["wide"].logprobs) == 6
        assert engine.kept_prompts <= 3 and engine.free_sequences == 7
    finally:
        engine.close()


OTHER_SYSTEM = (
    "You are a field medic in a grid shooter game. You keep your squad alive and say whom you "
    "help next."
)


def _passes_by_system(llama: Any, kept_roots: int) -> tuple[list[int], list[int], Any]:
    """Three passes of two scoring requests: under SYSTEM, then OTHER_SYSTEM, then SYSTEM
    again. Rows evaluated and rows spared by kept prompts per pass; the last pass's outcomes."""
    engine = _engine(llama, n_seq_max=16, kept_roots=kept_roots)
    results = _Results()
    rows: list[int] = []
    spared: list[int] = []
    try:
        for n, system in enumerate((SYSTEM, OTHER_SYSTEM, SYSTEM)):
            before = engine.stats
            names = [f"{n}-{i}" for i in range(2)]
            for i, name in enumerate(names):
                prompt = _tokens(llama, f"{system}\n{_situation(i)[1].content}\nI should")
                conts = tuple(_tokens(llama, " " + p) for p in PHRASES)
                engine.add(
                    ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, results.sink(name))
                )
            _run(engine, lambda names=names: all(x in results.done for x in names))
            rows.append(engine.stats.rows - before.rows)
            spared.append(engine.stats.reused_rows - before.reused_rows)
        assert engine.kept_roots == min(kept_roots, 1)
        engine.drop_kept()
        assert engine.kept_roots == 0 and engine.free_sequences == 15
        assert _kv_empty(engine, llama, 16)
        return rows, spared, [results.done[f"2-{i}"] for i in range(2)]
    finally:
        engine.close()


@pytest.mark.model
def test_a_root_given_up_is_kept_for_the_prompts_that_come_back_to_it(llama: Any) -> None:
    rows, spared, last = _passes_by_system(llama, kept_roots=1)
    plain_rows, plain_spared, plain_last = _passes_by_system(llama, kept_roots=0)
    system_tokens = len(_tokens(llama, SYSTEM))
    # Back to the first system prompt: it is not evaluated again.
    assert plain_spared == [0, 0, 0]
    assert spared[:2] == [0, 0] and spared[2] >= system_tokens - 4
    assert rows[2] <= plain_rows[2] - (system_tokens - 4)
    assert rows[:2] == plain_rows[:2]
    for got, want in zip(last, plain_last, strict=True):
        assert isinstance(got, ScoreOutcome) and isinstance(want, ScoreOutcome)
        _close_to(got.logprobs, want.logprobs)


@pytest.mark.model
def test_one_requests_prompt_as_the_root_is_not_kept(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=16, kept_roots=1)
    results = _Results()
    try:
        _score_alone(engine, llama, results, "alone", _situation(2)[1].content)
        assert engine.root_tokens > len(_tokens(llama, SYSTEM))  # its whole prompt, kept warm
        for i in range(2):
            prompt = _tokens(llama, f"{OTHER_SYSTEM}\n{_situation(i)[1].content}\nI should")
            conts = tuple(_tokens(llama, " " + p) for p in PHRASES)
            engine.add(
                ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, results.sink(str(i)))
            )
        _run(engine, lambda: len(results.done) == 3)
        assert engine.kept_roots == 0 and engine.free_sequences == 15
    finally:
        engine.close()


ROLE_A = "I am a sniper: keep my distance, pick off enemies from cover, never rush in."
ROLE_B = "I am a medic: keep my squad alive, heal the hurt, stay behind the front line."


def _role_work(llama: Any, results: _Results, name: str, role: str, i: int) -> ScoreWork:
    return _score_work(llama, results, name, f"{role}\n{_situation(i)[1].content}")


def _pass(engine: BatchedEngine, works: list[ScoreWork], results: _Results) -> None:
    for work in works:
        engine.add(work)
    _run(engine, lambda: len(results.done) == len(works))


def _branch_passes(llama: Any, kept_branches: int) -> tuple[int, int, ScoreOutcome, Any]:
    """A pass of three role-A and two role-B requests (the root keeps system + role A), then a
    pass of one new role-B request. Rows and reused rows of the second pass, its outcome, and
    the engine's kept branches after it."""
    engine = _engine(llama, n_seq_max=32, kept_branches=kept_branches)  # one pass for five
    try:
        first = _Results()
        works = [_role_work(llama, first, f"a{i}", ROLE_A, i) for i in range(3)]
        works += [_role_work(llama, first, f"b{i}", ROLE_B, i) for i in range(2)]
        _pass(engine, works, first)
        assert engine.stats.passes == 1
        assert all(isinstance(r, ScoreOutcome) for r in first.done.values())
        kept = engine.kept_branches
        before = engine.stats
        second = _Results()
        _pass(engine, [_role_work(llama, second, "b", ROLE_B, 5)], second)
        outcome = second.done["b"]
        assert isinstance(outcome, ScoreOutcome)
        rows = engine.stats.rows - before.rows
        reused = engine.stats.reused_rows - before.reused_rows
        engine.drop_kept()
        assert engine.kept_branches == 0 and engine.free_sequences == 31
        assert _kv_empty(engine, llama, 32)
        return rows, reused, outcome, kept
    finally:
        engine.close()


@pytest.mark.model
def test_a_prefix_several_prompts_of_a_pass_shared_is_kept_for_a_later_request(
    llama: Any,
) -> None:
    rows, reused, outcome, kept = _branch_passes(llama, kept_branches=8)
    plain_rows, plain_reused, plain_outcome, plain_kept = _branch_passes(llama, kept_branches=0)
    role = len(_tokens(llama, ROLE_B))
    # The two role-B prompts' shared text (system, role B, their common first words) was kept:
    # the later role-B request evaluates none of it again.
    assert kept >= 1 and plain_kept == 0
    assert plain_reused == 0 and reused >= role - 2
    assert rows <= plain_rows - (role - 2)
    _close_to(outcome.logprobs, plain_outcome.logprobs)
    again = _role_work(llama, _Results(), "b", ROLE_B, 5)
    _close_to(outcome.logprobs, _alone(llama, again.prompt, again.continuations))


@pytest.mark.model
def test_a_branch_whose_requests_all_ended_is_given_up_not_evaluated(llama: Any) -> None:
    # Small chunks: the pass takes many decodes, and both role-B requests end after its first.
    engine = _engine(llama, n_seq_max=32, chunk_tokens=8)
    results = _Results()
    try:
        works = [_role_work(llama, results, f"a{i}", ROLE_A, i) for i in range(3)]
        works += [_role_work(llama, results, f"b{i}", ROLE_B, i) for i in range(2)]
        for work in works:
            engine.add(work)
        engine.step()
        assert engine.kept_branches == 1  # role B's shared text, riding on its two requests
        for work in works[3:]:
            work.cancelled.set()
        _run(engine, lambda: len(results.done) == 5)
        assert all(isinstance(results.done[f"b{i}"], WorkCancelled) for i in range(2))
        assert all(isinstance(results.done[f"a{i}"], ScoreOutcome) for i in range(3))
        assert engine.kept_branches == 0 and engine.free_sequences == 31
    finally:
        engine.close()


@pytest.mark.model
def test_kept_branches_are_bounded_and_free_their_sequences_when_dropped(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=32, kept_branches=2)  # room for five requests' paths
    roles = [f"I am soldier number {k}: I hold line {k} and watch the road {k}." for k in range(5)]
    try:
        for k, role in enumerate(roles):
            # Three role-A prompts take the root; the two of role k make a branch.
            results = _Results()
            works = [_role_work(llama, results, f"a{k}-{i}", ROLE_A, i) for i in range(3)]
            works += [_role_work(llama, results, f"{k}-{i}", role, i) for i in range(2)]
            _pass(engine, works, results)
            assert all(isinstance(r, ScoreOutcome) for r in results.done.values())
            assert engine.kept_branches <= 2
        assert engine.kept_branches == 2
        engine.drop_kept()
        assert engine.free_sequences == 31 and _kv_empty(engine, llama, 32)
    finally:
        engine.close()


def test_kept_branches_must_not_be_negative() -> None:
    EngineSettings(n_seq_max=8, prefix_cache=3, kept_roots=1).check()  # branches give way
    with pytest.raises(ConfigError, match="kept_branches"):
        EngineSettings(kept_branches=-1).check()
    assert EngineSettings.parse(["kept_branches=4"]).kept_branches == 4


def test_kept_roots_must_leave_sequences_for_requests() -> None:
    with pytest.raises(ConfigError, match="kept_roots"):
        EngineSettings(n_seq_max=8, prefix_cache=4, kept_roots=4).check()
    with pytest.raises(ConfigError, match="kept_roots"):
        EngineSettings(kept_roots=-1).check()


def test_the_prefix_cache_must_leave_sequences_for_requests() -> None:
    with pytest.raises(ConfigError, match="prefix_cache"):
        EngineSettings(n_seq_max=8, prefix_cache=8).check()


def test_an_assumed_rate_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="assumed_rate"):
        EngineSettings(assumed_rate=0.0).check()


def test_engine_settings_are_read_from_key_value_text() -> None:
    got = EngineSettings.parse(
        [
            "chunk_tokens=64",
            "flash_attn=off",
            "jump_forward=Yes",
            "assumed_rate=250.5",
            " n_ctx = 2048",
        ]
    )
    assert got == EngineSettings(
        chunk_tokens=64, flash_attn=False, jump_forward=True, assumed_rate=250.5, n_ctx=2048
    )
    assert EngineSettings.parse(["assumed_rate=none"]).assumed_rate is None
    assert EngineSettings.parse(["adaptive_threads=0"]).adaptive_threads is False
    assert EngineSettings.parse([]) == EngineSettings()


def test_every_engine_setting_but_the_backends_own_can_be_read() -> None:
    # A field added later of a kind parse cannot read fails here, not on a user's command line.
    defaults = EngineSettings()
    for f in dataclasses.fields(EngineSettings):
        if f.name in ("n_threads", "adapter", "adapter_scale"):
            with pytest.raises(ConfigError, match="the backend's own"):
                EngineSettings.parse([f"{f.name}=1"])
            continue
        default = getattr(defaults, f.name)
        text = "none" if default is None else str(default).lower()
        assert getattr(EngineSettings.parse([f"{f.name}={text}"]), f.name) == default


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["chunk_tokens"], "not key=value"),
        (["bogus=1"], "unknown engine setting 'bogus'"),
        (["chunk_tokens=1.5"], "chunk_tokens='1.5': expected a whole number"),
        (["chunk_tokens="], "expected a whole number"),
        (["flash_attn=maybe"], "expected true/false, on/off, yes/no or 1/0"),
        (["assumed_rate=inf"], "expected a finite number or none"),
        (["chunk_tokens=64", "chunk_tokens=32"], "given twice"),
        (["chunk_tokens=0"], "must be positive"),  # check() refuses it
        (["prefix_cache=200"], "prefix_cache must be in"),
    ],
)
def test_bad_engine_setting_text_is_a_config_error(pairs: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EngineSettings.parse(pairs)


@pytest.mark.model
@pytest.mark.timeout(900)
def test_memory_stays_flat_over_two_thousand_passes(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=8, n_batch=64, n_ctx=256)
    gbnf = 'root ::= "[" [0-9] "]"'
    system = _tokens(llama, "You are a soldier.")
    results = _Results()

    def one_pass(i: int) -> None:
        # A scored request with its own two tokens after the warm root; every 20th pass a
        # generation too, so samplers and grammars come and go as well.
        engine.add(
            ScoreWork(
                (*system, 100 + i % 50, 7),
                ((11,), (12, 13)),
                time.monotonic() + HANG_GUARD_S,
                results.sink(f"s{i}"),
            )
        )
        names = [f"s{i}"]
        if i % 20 == 0:
            engine.add(_generate_work((*system, 200 + i % 50), gbnf, 2, results.sink(f"g{i}")))
            names.append(f"g{i}")
        if i % 20 == 10:
            # Two pairs of prompts running on together past the root: one pair takes the root,
            # the other makes a kept branch (a new one most times: kept ones come and go too).
            for group in (400, 500):
                for end in (1, 2):
                    shared = (*system, group + i % 37, *range(30, 40))
                    name = f"b{i}-{group}-{end}"
                    engine.add(
                        ScoreWork(
                            (*shared, end),
                            ((11,), (12,)),
                            time.monotonic() + HANG_GUARD_S,
                            results.sink(name),
                        )
                    )
                    names.append(name)
        passes = engine.stats.passes
        _run(engine, lambda: all(n in results.done for n in names))
        assert engine.stats.passes == passes + 1
        assert all(not isinstance(results.done[n], BaseException) for n in names)
        results.done.clear()

    try:
        for i in range(200):
            one_pass(i)
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(200, 2000):
            one_pass(i)
        gc.collect()
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert engine.stats.passes == 2000
        assert 1 <= engine.kept_branches <= EngineSettings().kept_branches
        engine.drop_kept()
        assert engine.free_sequences == 7 and _kv_empty(engine, llama, 8)
        assert engine.root_tokens <= len(system) + 2
        # A leaked sampler, batch or logits copy per pass would add megabytes here.
        assert grown_kib < 4 * 1024
    finally:
        engine.close()


@pytest.mark.model
def test_generated_tokens_follow_the_grammar_and_end_with_it(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=8)
    results = _Results()
    seen: dict[int, list[int]] = {}
    try:
        for i in range(4):
            seen[i] = []
            engine.add(
                _generate_work(
                    _tokens(llama, f"{SYSTEM}\nPick a number, soldier {i}:"),
                    'root ::= "[" [0-9] ("," [0-9])? "]"',
                    20,
                    results.sink(str(i)),
                    temperature=0.8,
                    seed=i,
                    on_token=seen[i].append,
                )
            )
        _run(engine, lambda: len(results.done) == 4)
        for i in range(4):
            outcome = results.done[str(i)]
            assert isinstance(outcome, GenerateOutcome) and outcome.finish_reason == "stop"
            text = llama.detokenize(seen[i]).decode()
            value = orjson.loads(text)
            assert isinstance(value, list) and 1 <= len(value) <= 2
            assert outcome.completion_tokens == len(seen[i])
        assert engine.free_sequences == 7
    finally:
        engine.close()


PLAN_GBNF = (
    'root ::= "{\\"plan\\":[" item ("," item){0,3} "]}"\n'
    'item ::= "[\\"" [A-Z] "\\"" ("," [0-9] [0-9]?)? "]"'
)


def _greedy_plans(llama: Any, **kw: Any) -> tuple[list[list[int]], Any]:
    """Four greedy generations under PLAN_GBNF in one pass: their tokens, the engine's stats."""
    engine = _engine(llama, n_seq_max=8, **kw)
    results = _Results()
    seen: list[list[int]] = [[] for _ in range(4)]
    try:
        for i in range(4):
            prompt = _tokens(llama, f"{SYSTEM}\nWrite your plan as JSON, soldier {i}:\n")
            engine.add(
                _generate_work(prompt, PLAN_GBNF, 40, results.sink(str(i)), on_token=seen[i].append)
            )
        _run(engine, lambda: len(results.done) == 4)
        for name, outcome in results.done.items():
            assert isinstance(outcome, GenerateOutcome) and outcome.finish_reason == "stop"
            assert outcome.completion_tokens == len(seen[int(name)])
        assert _kv_empty(engine, llama, 8)
        return seen, engine.stats
    finally:
        engine.close()


@pytest.mark.model
def test_forced_tokens_the_grammar_rejects_fail_only_their_own_work(llama: Any) -> None:
    engine = _engine(llama, n_seq_max=8)
    results = _Results()
    try:
        for name, start in (("wrong", '{"x":'), ("right", '{"plan":[["')):
            forced = _tokens(llama, start)
            prompt = _tokens(llama, f"{SYSTEM}\nYour plan as JSON:\n") + forced
            engine.add(_generate_work(prompt, PLAN_GBNF, 30, results.sink(name), forced=forced))
        _run(engine, lambda: len(results.done) == 2)
        assert isinstance(results.done["wrong"], ConfigError)
        assert isinstance(results.done["right"], GenerateOutcome)
        assert results.done["right"].finish_reason == "stop"
        assert engine.free_sequences == 7
    finally:
        engine.close()


@pytest.mark.model
def test_the_thread_governor_looks_after_each_decode_before_handing_anything_over(
    llama: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What it hands over wakes the caller's threads: a look after that would see them as a crowd.
    import llama_cpp

    events: list[str] = []
    decode = llama_cpp.llama_decode

    def decoding(ctx: Any, batch: Any) -> int:
        events.append("decode")
        return int(decode(ctx, batch))

    def look(self: Any) -> None:
        events.append("look")

    monkeypatch.setattr(llama_cpp, "llama_decode", decoding)
    monkeypatch.setattr(batched_module.ThreadGovernor, "look", look)
    engine = _engine(llama, n_seq_max=4, n_threads=2)
    results = _Results()
    try:
        prompt = _tokens(llama, f"{SYSTEM}\nYour plan as JSON:\n")
        engine.add(
            _generate_work(
                prompt,
                PLAN_GBNF,
                12,
                results.sink("plan"),
                on_token=lambda _t: events.append("token"),
            )
        )
        _run(engine, lambda: bool(results.done))
    finally:
        engine.close()
    assert events.count("token") >= 3
    for i, event in enumerate(events):
        if event == "decode":
            assert events[i + 1] == "look", events


@pytest.mark.model
def test_greedy_under_a_grammar_picks_what_the_whole_vocabulary_pass_picks(
    llama: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, fast_stats = _greedy_plans(llama, jump_forward=False)
    monkeypatch.setattr(batched_module, "_GREEDY_WIDTHS", ())  # every token: the whole vocabulary
    slow, slow_stats = _greedy_plans(llama, jump_forward=False)
    assert fast == slow
    for tokens in fast:
        plan = orjson.loads(llama.detokenize(tokens).decode())
        assert isinstance(plan["plan"], list) and 1 <= len(plan["plan"]) <= 4
    assert slow_stats.vocab_passes == sum(len(t) for t in slow) + 4  # each token and each end
    assert fast_stats.vocab_passes < slow_stats.vocab_passes // 4


@pytest.mark.model
def test_jump_forward_writes_the_models_own_answers_in_fewer_decodes(llama: Any) -> None:
    jumping, on = _greedy_plans(llama)
    plain, off = _greedy_plans(llama, jump_forward=False)
    texts = [llama.detokenize(t).decode() for t in jumping]
    assert texts == [llama.detokenize(t).decode() for t in plain]
    assert off.jumped == off.ended_early == 0
    # Every plan ends on "]}" forced after its last step: handed over without a decode.
    assert on.ended_early == 4
    assert on.jumped > 0 and on.decodes < off.decodes


DIGIT_GBNF = 'root ::= "[" [0-9] "]"'


def _digit_prompt(llama: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A prompt for DIGIT_GBNF ending in its forced "[", and that forced part."""
    forced = _tokens(llama, "[")
    return _tokens(llama, f"{SYSTEM}\nPick a number:\n") + forced, forced


@pytest.mark.model
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_an_answer_with_one_ending_left_is_handed_over_without_decoding_it(
    llama: Any, temperature: float
) -> None:
    runs = {}
    for jump in (True, False):
        engine = _engine(llama, n_seq_max=4, jump_forward=jump)
        results = _Results()
        seen: list[int] = []
        try:
            prompt, forced = _digit_prompt(llama)
            engine.add(
                _generate_work(
                    prompt,
                    DIGIT_GBNF,
                    10,
                    results.sink("g"),
                    temperature=temperature,
                    on_token=seen.append,
                    forced=forced,
                )
            )
            done = results.done
            _run(engine, lambda done=done: "g" in done)
            outcome = done["g"]
            assert isinstance(outcome, GenerateOutcome) and outcome.finish_reason == "stop"
            assert outcome.completion_tokens == len(seen)
            assert _kv_empty(engine, llama, 4) and engine.free_sequences == 3
            runs[jump] = (llama.detokenize(seen).decode(), engine.stats.decodes)
        finally:
            engine.close()
    (text, decodes), (text_plain, decodes_plain) = runs[True], runs[False]
    assert len(text) == 2 and text[0].isdigit() and text[1] == "]"
    assert text == text_plain  # the digit comes from the prompt's logits either way
    # The prompt's pass gives the digit; "]" and the end are all the grammar allows after it.
    assert (decodes, decodes_plain) == (1, 3)


class _Refused(Exception):
    pass


@pytest.mark.model
@pytest.mark.parametrize("refuse_at", [1, 2])  # the sampled digit; the "]" the ending hands over
def test_a_caller_raising_on_a_token_ends_only_that_work_with_its_exception(
    llama: Any, refuse_at: int
) -> None:
    engine = _engine(llama, n_seq_max=4)
    results = _Results()
    seen: list[int] = []

    def on_token(token: int) -> None:
        seen.append(token)
        if len(seen) == refuse_at:
            raise _Refused

    try:
        prompt, forced = _digit_prompt(llama)
        engine.add(
            _generate_work(
                prompt, DIGIT_GBNF, 10, results.sink("g"), on_token=on_token, forced=forced
            )
        )
        engine.add(_generate_work(prompt, DIGIT_GBNF, 10, results.sink("other"), forced=forced))
        _run(engine, lambda: len(results.done) == 2)
        assert isinstance(results.done["g"], _Refused)
        assert len(seen) == refuse_at
        assert isinstance(results.done["other"], GenerateOutcome)
        assert _kv_empty(engine, llama, 4) and engine.free_sequences == 3
    finally:
        engine.close()


def _alone(
    llama: Any, prompt: tuple[int, ...], conts: tuple[tuple[int, ...], ...]
) -> tuple[float, ...]:
    """Scores of one request on a fresh engine of its own."""
    alone = _Results()
    fresh = _engine(llama, n_seq_max=16)
    try:
        fresh.add(ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, alone.sink("one")))
        _run(fresh, lambda: bool(alone.done))
    finally:
        fresh.close()
    outcome = alone.done["one"]
    assert isinstance(outcome, ScoreOutcome)
    return outcome.logprobs


def _close_to(got: tuple[float, ...], want: tuple[float, ...]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert abs(a - b) <= TOLERANCE, (got, want)
    # The decision is the same unless the one-at-a-time scores are within the noise.
    ranked = sorted(range(len(want)), key=want.__getitem__, reverse=True)
    if len(want) > 1 and want[ranked[0]] - want[ranked[1]] > 2 * TOLERANCE:
        assert max(range(len(got)), key=got.__getitem__) == ranked[0], (got, want)


@pytest.mark.model
def test_no_sequence_reads_another_requests_cells(llama: Any) -> None:
    # Each prompt names its own word; a request that could see the other's cells would find
    # the other word much likelier than it does alone.
    engine = _engine(llama, n_seq_max=16)
    results = _Results()
    words = ("apple", "river", "candle", "tiger")
    conts = tuple(_tokens(llama, " " + w) for w in words)

    def work(name: str, word: str) -> ScoreWork:
        prompt = _tokens(llama, f"The secret word is {word}. Remember it. The secret word is")
        return ScoreWork(prompt, conts, time.monotonic() + HANG_GUARD_S, results.sink(name))

    try:
        for w in words:
            engine.add(work(w, w))
        _run(engine, lambda: len(results.done) == len(words))
        for i, w in enumerate(words):
            want = _alone(llama, work(w, w).prompt, conts)
            got = results.done[w].logprobs
            _close_to(got, want)
            assert max(range(len(got)), key=got.__getitem__) == i
    finally:
        engine.close()


class _Alternating:
    """A thread governor that gives the second decode two threads and the others one (two
    threads are slow on a busy machine), makes the first a probe of at most 5 rows, and reads
    back the count llama.cpp has after each."""

    def __init__(self, read_back: Callable[[], int]) -> None:
        self.used: list[tuple[int, int]] = []  # (asked, what llama.cpp had for the decode)
        self.rows: list[tuple[int, bool]] = []
        self._read_back = read_back

    def plan(self, ready: int | None = None) -> tuple[int, int | None]:
        n = len(self.used)
        return (2 if n == 1 else 1), (5 if n == 0 else None)

    def look(self) -> None:
        """Nothing to look at: the counts are fixed."""

    def record(self, rows: int, threads: int, seconds: float, *, probe: bool) -> None:
        self.used.append((threads, self._read_back()))
        self.rows.append((rows, probe))


class _Fixed:
    """A thread governor that always asks for ``threads`` and records each decode's rows, and
    the rows the engine said it had ready for it."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.rows: list[int] = []
        self.ready: list[int | None] = []

    def plan(self, ready: int | None = None) -> tuple[int, int | None]:
        self.ready.append(ready)
        return self.threads, None

    def look(self) -> None:
        """Nothing to look at: the count is fixed."""

    def record(self, rows: int, threads: int, seconds: float, *, probe: bool) -> None:
        self.rows.append(rows)


@pytest.mark.model
def test_a_pass_on_fewer_threads_than_configured_is_chunked(llama: Any) -> None:
    # The governor's one thread (others want the cores) is looked at again after each decode:
    # a pass then goes in chunks, not in one long decode on one thread.
    users = [_situation(i)[1].content for i in range(3)]
    decoded: dict[int, list[int]] = {}
    for threads in (2, 1):
        engine = _engine(llama, n_seq_max=32, n_threads=2, chunk_tokens=16, chunk_scoring=False)
        governor = _Fixed(threads)
        engine._governor = governor  # type: ignore[assignment]
        results = _Results()
        try:
            works = [_score_work(llama, results, str(i), u) for i, u in enumerate(users)]
            _pass(engine, works, results)
            decoded[threads] = governor.rows
            # The governor hears how many rows each decode could take (a probe of the thread
            # count begins only where both its halves fit): the rows still ahead of the pass.
            assert governor.ready == [sum(governor.rows[i:]) for i in range(len(governor.rows))]
        finally:
            engine.close()
    # On the configured count: a first chunk, then the rest of the pass in one decode.
    assert len(decoded[2]) == 2 and decoded[2][0] == 16
    assert len(decoded[1]) > 3 and max(decoded[1]) <= 16 + 16 // 2
    assert sum(decoded[1]) == sum(decoded[2])


@pytest.mark.model
def test_the_governors_thread_count_reaches_llama_cpp_and_leaves_scores_alone(llama: Any) -> None:
    import llama_cpp

    engine = _engine(llama, n_seq_max=32, n_threads=2, chunk_tokens=32)
    governor = _Alternating(lambda: int(llama_cpp.llama_n_threads_batch(engine._ctx)))
    engine._governor = governor  # type: ignore[assignment]
    results = _Results()
    try:
        works = [_score_work(llama, results, str(i), _situation(i)[1].content) for i in range(2)]
        for w in works:
            engine.add(w)
        _run(engine, lambda: len(results.done) == len(works))
        assert {asked for asked, _ in governor.used} == {1, 2}
        assert all(asked == had for asked, had in governor.used)
        assert all(rows <= 5 for rows, probe in governor.rows if probe)
        assert any(rows > 5 for rows, probe in governor.rows if not probe)
        assert engine.stats.one_thread_decodes == [a for a, _ in governor.used].count(1)
        for i, w in enumerate(works):
            _close_to(results.done[str(i)].logprobs, _alone(llama, w.prompt, w.continuations))
    finally:
        engine.close()


# --- backend level --------------------------------------------------------------------------------


@pytest.fixture
def batched() -> Iterator[EmbeddedBackend]:
    b = EmbeddedBackend(n_threads=1, engine="batched")
    try:
        yield b
    finally:
        b.close()
    assert no_worker_left(HANG_GUARD_S)


def test_batched_backend_says_it_batches_and_scores(tmp_path: Any) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    backend = EmbeddedBackend(path, engine="batched")
    assert backend.info.parallel and backend.info.scoring
    assert backend.info.max_concurrency >= 16
    assert backend.engine_stats() is not None
    serial = EmbeddedBackend(path, engine="serial")
    assert not serial.info.parallel and serial.info.max_concurrency == 1
    assert serial.engine_stats() is None
    with pytest.raises(ConfigError):
        EmbeddedBackend(path, engine="turbo")  # type: ignore[arg-type]
    backend.close()
    serial.close()


def test_auto_the_default_engine_is_batched_and_the_factory_passes_the_choice(
    tmp_path: Any,
) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    made = [
        EmbeddedBackend(path),
        EmbeddedBackend(path, engine="auto"),
        create_backend("embedded", model=str(path)),
        create_backend("embedded", model=str(path), engine="serial"),
        create_backend("embedded", model=str(path), engine="batched"),
    ]
    try:
        parallel = [b is not None and b.info.parallel for b in made]
        assert parallel == [True, True, True, False, True]
    finally:
        for b in made:
            if isinstance(b, EmbeddedBackend):
                b.close()


@pytest.mark.model
def test_ten_simultaneous_scores_equal_one_at_a_time(batched: EmbeddedBackend) -> None:
    together, alone = _ten_together_and_alone(batched, "auto")
    diffs = [
        abs(a - b)
        for i in range(10)
        for a, b in zip(together[i].logprobs, alone[i].logprobs, strict=True)
    ]
    assert sum(diffs) / len(diffs) <= MEAN_TOLERANCE, diffs
    for i in range(10):
        assert together[i].tokens == alone[i].tokens
        _close_to(together[i].logprobs, alone[i].logprobs)
    assert batched.stats().completed == 10
    # The shared system prompt was not evaluated for every request: fewer tokens in all than ten
    # cold prompts (the serial engine's first request is one).
    engine = batched.engine_stats()
    assert engine is not None and alone[0].usage.prompt_tokens is not None
    assert engine.rows < 10 * alone[0].usage.prompt_tokens


def _ten_together_and_alone(
    batched: EmbeddedBackend, weights: Weights
) -> tuple[dict[int, ScoreResult], list[ScoreResult]]:
    """Ten score requests asked of ``batched`` at once, and the same asked one by one of a
    serial engine on ``weights``."""
    requests = [_score_request(i) for i in range(10)]
    together: dict[int, ScoreResult] = {}

    async def ask(i: int) -> None:
        together[i] = await batched.score(requests[i])

    async def main() -> None:
        await batched.load()
        with anyio.fail_after(HANG_GUARD_S):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(ask, i)

    anyio.run(main)
    serial = EmbeddedBackend(n_threads=1, engine="serial", weights=weights)
    try:

        async def one_by_one() -> list[ScoreResult]:
            with anyio.fail_after(HANG_GUARD_S):
                return [await serial.score(r) for r in requests]

        alone = anyio.run(one_by_one)
    finally:
        serial.close()
    return together, alone


@pytest.mark.model
def test_on_f16_weights_simultaneous_scores_equal_one_at_a_time_to_float_noise() -> None:
    # The default Q8_0 weights round every activation to 8 bits, so a float difference in the
    # order of a sum flips roundings (the tolerances above); F16 weights do not, and there a
    # request's scores depend on its own prompt only (measured: at most 0.013 nats, the
    # scenario suite's 161 requests 0.026), so a sequence that read another's cells, even
    # slightly, shows here.
    batched = EmbeddedBackend(n_threads=1, engine="batched", weights="f16")
    try:
        together, alone = _ten_together_and_alone(batched, "f16")
    finally:
        batched.close()
    for i in range(10):
        assert together[i].tokens == alone[i].tokens
        for a, b in zip(together[i].logprobs, alone[i].logprobs, strict=True):
            assert abs(a - b) <= 0.05, (together[i].logprobs, alone[i].logprobs)


@pytest.mark.model
def test_an_answer_is_counted_in_the_engine_stats_by_the_time_the_caller_has_it(
    batched: EmbeddedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows behind an answer are in ``engine_stats()`` as soon as the caller has the answer,
    though the engine's thread is still inside the step that answered it (held there until the
    test has read the counters)."""
    read = threading.Event()
    step = BatchedEngine.step

    def held_step(self: BatchedEngine) -> None:
        scored = self.stats.scored
        step(self)
        if self.stats.scored > scored:
            read.wait(timeout=HANG_GUARD_S)

    monkeypatch.setattr(BatchedEngine, "step", held_step)

    async def main() -> tuple[EngineStats | None, EngineStats | None]:
        await batched.load()
        before = batched.engine_stats()
        await batched.score(_score_request(1))
        after = batched.engine_stats()
        read.set()
        return before, after

    before, after = anyio.run(main)
    assert before is not None and after is not None
    assert after.scored == before.scored + 1
    assert after.decodes > before.decodes and after.rows > before.rows


@pytest.mark.model
def test_ten_simultaneous_generations_with_a_grammar_are_all_valid(
    batched: EmbeddedBackend,
) -> None:
    texts: dict[int, str] = {}
    firsts: dict[int, str] = {}
    finished: dict[int, Finished] = {}

    async def ask(i: int) -> None:
        request = CompletionRequest(
            messages=(
                Message("system", SYSTEM),
                Message(
                    "user", f'Soldier {i}: pick one of {2 + i % 4} options. Answer {{"c":index}}.'
                ),
            ),
            schema=choice_schema(2 + i % 4),
            max_tokens=12,
            temperature=0.0,
            timeout_s=HANG_GUARD_S,
        )
        deltas: list[str] = []
        async for event in batched.stream(request):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            else:
                finished[i] = event
        texts[i] = "".join(deltas)
        firsts[i] = deltas[0]

    async def main() -> None:
        with anyio.fail_after(HANG_GUARD_S):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(ask, i)

    anyio.run(main)
    for i in range(10):
        value = orjson.loads(texts[i])
        assert set(value) == {"c"} and value["c"] in range(2 + i % 4), texts[i]
        assert firsts[i] == '{"c":'  # what the grammar forces is handed over as it stands
        assert finished[i].finish_reason == "stop"
        assert finished[i].usage.completion_tokens is not None
        # ... and evaluated with the prompt: only the digit and the brace are generated.
        assert 0 < finished[i].usage.completion_tokens <= 2
    assert batched.stats().completed == 10


@pytest.mark.model
def test_a_cancelled_stream_ends_while_the_others_go_on(batched: EmbeddedBackend) -> None:
    # 400 digits: still generating when the test cancels it.
    long = CompletionRequest(
        (Message("system", SYSTEM), Message("user", "List 400 digits.")),
        schema={
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 400,
            "maxItems": 400,
        },
        max_tokens=1500,
        timeout_s=HANG_GUARD_S,
    )

    async def main() -> ScoreResult:
        started = anyio.Event()

        async def consume() -> None:
            async for event in batched.stream(long):
                if isinstance(event, TextDelta):
                    started.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            with anyio.fail_after(HANG_GUARD_S):
                await started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(HANG_GUARD_S):
            return await batched.score(_score_request(2))

    result = anyio.run(main)
    assert len(result.logprobs) == len(_score_request(2).continuations)
    stats = batched.stats()
    assert (stats.completed, stats.cancelled, stats.failed) == (1, 1, 0)


@pytest.mark.model
def test_closing_with_requests_in_flight_fails_them_and_stops_the_thread() -> None:
    backend = EmbeddedBackend(n_threads=1, engine="batched")
    errors: list[BaseException] = []

    async def ask(i: int) -> None:
        try:
            await backend.score(_score_request(i))
        except Exception as exc:
            errors.append(exc)

    async def main() -> None:
        await backend.load()
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(ask, i)
            await anyio.sleep(0.01)
            with anyio.fail_after(HANG_GUARD_S):
                await backend.aclose()

    anyio.run(main)
    stats = backend.stats()
    # Some may have finished before the close; the others heard of it.
    assert stats.completed + len(errors) == 5
    assert no_worker_left(HANG_GUARD_S)
