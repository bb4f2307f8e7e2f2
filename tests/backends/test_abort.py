"""Closing the embedded backend ends the decode under way (aiplanner/backends/abort.py)."""

from __future__ import annotations

import importlib.util
import threading
import time
from typing import Any

import anyio
import pytest
from embedded_threads import no_worker_left

from aiplanner.backends.abort import AbortFlag, abort_callback
from aiplanner.backends.base import Message, ScoreRequest
from aiplanner.backends.batched import BatchedEngine, EngineSettings, ScoreWork
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.errors import BackendUnavailable
from aiplanner.model_path import resolve_model_path

HANG_GUARD_S = 120.0
needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python"
)


def _callback() -> Any:
    import llama_cpp

    callback = abort_callback(llama_cpp)
    if callback is None:
        pytest.skip("no C abort callback on this platform")
    return callback


@needs_llama
def test_the_callback_says_true_once_the_flag_is_set_and_false_before() -> None:
    # The C function llama.cpp calls, called through ctypes as a bool (void *) the same way.
    callback = _callback()
    flag, other = AbortFlag(), AbortFlag()
    assert callback(flag.data) is False
    assert not flag.is_set
    flag.set()
    assert flag.is_set
    assert callback(flag.data) is True
    assert callback(other.data) is False, "each flag is its own"
    flag.set()  # setting it again changes nothing
    assert callback(flag.data) is True


class _Decodes:
    """llama_decode wrapped: once armed, the next decode tells ``entered`` and waits for
    ``release`` before it runs; every return code is kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import llama_cpp
        import llama_cpp.llama_cpp as low

        self.armed = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.codes: list[int] = []
        decode = low.llama_decode

        def decoding(ctx: Any, batch: Any) -> int:
            if self.armed.is_set() and not self.entered.is_set():
                self.entered.set()
                self.release.wait(HANG_GUARD_S)
            rc = int(decode(ctx, batch))
            self.codes.append(rc)
            return rc

        monkeypatch.setattr(llama_cpp, "llama_decode", decoding)  # the batched engine's
        monkeypatch.setattr(low, "llama_decode", decoding)  # llama-cpp-python's own (serial)


def _request(i: int) -> ScoreRequest:
    lines = "\n".join(f"Enemy {k}: {'close' if (i + k) % 2 else 'far'}." for k in range(9))
    return ScoreRequest(
        (Message("system", "You are a soldier."), Message("user", f"Round {i}.\n{lines}")),
        (" shoot enemy 1", " run to cover", " reload my weapon"),
        lead="I should",
        timeout_s=HANG_GUARD_S,
    )


@pytest.mark.model
@pytest.mark.parametrize("engine", ["batched", "serial"])
def test_closing_ends_the_decode_under_way_quietly(
    engine: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Without the abort the decode released after the close runs to its end (return code 0)
    # and the close waits for it; with it, llama.cpp ends it at its first graph node (2).
    _callback()
    decodes = _Decodes(monkeypatch)
    backend = EmbeddedBackend(n_threads=1, engine=engine)
    failed: list[BaseException] = []

    async def ask(i: int) -> None:
        try:
            await backend.score(_request(i))
        except BackendUnavailable as exc:
            failed.append(exc)

    async def main() -> None:
        await backend.load()
        decodes.armed.set()
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(ask, i)
            with anyio.fail_after(HANG_GUARD_S):
                await anyio.to_thread.run_sync(decodes.entered.wait, HANG_GUARD_S)
            backend.close(timeout_s=0)  # the flag is set; the decode has not started computing
            decodes.release.set()

    anyio.run(main)
    assert no_worker_left(HANG_GUARD_S)
    assert decodes.codes[-1] == 2, decodes.codes
    assert len(failed) == 4, "every caller hears of the close"
    err = capfd.readouterr().err
    assert "removing memory module entries" not in err, "llama.cpp's warnings stay quiet"


@pytest.mark.model
def test_an_engine_whose_flag_is_set_fails_its_work_as_closed_and_still_closes() -> None:
    from llama_cpp import Llama

    llama = Llama(model_path=str(resolve_model_path()), n_ctx=64, n_threads=1, verbose=False)
    flag = AbortFlag()
    engine = BatchedEngine(llama.model, EngineSettings(n_threads=1), abort=flag)
    outcome: list[Any] = []
    try:
        tokens = tuple(llama.tokenize(b"I am a soldier. I should", add_bos=False))
        phrases = tuple(
            tuple(llama.tokenize(p.encode(), add_bos=False)) for p in (" shoot", " hide")
        )
        flag.set()
        engine.add(ScoreWork(tokens, phrases, time.monotonic() + HANG_GUARD_S, outcome.append))
        for _ in range(20):
            if outcome:
                break
            engine.step()
        stats = engine.stats
    finally:
        engine.close()
        llama.close()
    # The aborted decode took its time in llama_decode but evaluated no row to count.
    assert (stats.decodes, stats.rows, stats.shared_rows) == (1, 0, 0)
    assert stats.decode_s > 0.0
    assert len(outcome) == 1
    assert isinstance(outcome[0], BackendUnavailable)
    assert "aborted" in str(outcome[0])
