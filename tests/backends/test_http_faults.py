"""Fault handling shared by both HTTP backends: refused and reset connections, 5xx and 429,
stalls past the deadline, oversize answers, cancellation, and API keys kept out of sight.

Every test runs against both wire formats. Timing-sensitive tests use generous bounds and rely
on pytest-timeout (not a stopwatch) to prove that nothing hangs.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from fakeservers import (
    FakeServer,
    RecordedRequest,
    Reply,
    collect,
    ndjson_reply,
    ollama_chat_objects,
    openai_chat_chunks,
    refused_url,
    reset_reply,
    sse_reply,
    stall_reply,
    status_reply,
)

from aiplanner.backends.base import Backend, CompletionRequest, Message
from aiplanner.backends.ollama import OllamaBackend
from aiplanner.backends.openai import OpenAIBackend
from aiplanner.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    ResponseTooLarge,
)


@dataclass(frozen=True, slots=True)
class Wire:
    """One backend and how its server answers."""

    name: str
    make: Callable[..., OpenAIBackend | OllamaBackend]
    # (texts, complete=True, **ndjson_reply/sse_reply options) -> Reply; complete=False leaves
    # out the end marker
    stream: Callable[..., Reply]
    first_chunk: Callable[[str], bytes]  # the bytes carrying one delta


def _openai_stream(texts: Sequence[str], *, complete: bool = True, **kw: Any) -> Reply:
    finish = "stop" if complete else None
    chunks = openai_chat_chunks(texts, finish_reason=finish, usage=None)
    return sse_reply(chunks, done=complete, **kw)


def _ollama_stream(texts: Sequence[str], *, complete: bool = True, **kw: Any) -> Reply:
    return ndjson_reply(ollama_chat_objects(texts, done=complete), **kw)


def _openai_partial(text: str) -> bytes:
    return sse_reply(openai_chat_chunks([text], finish_reason=None, usage=None)).chunks[1]


def _ollama_partial(text: str) -> bytes:
    return ndjson_reply(ollama_chat_objects([text], done=False)).chunks[0]


WIRES = [
    Wire("openai", OpenAIBackend, _openai_stream, _openai_partial),
    Wire("ollama", OllamaBackend, _ollama_stream, _ollama_partial),
]


@pytest.fixture(params=WIRES, ids=[w.name for w in WIRES])
def wire(request: pytest.FixtureRequest) -> Wire:
    w: Wire = request.param
    return w


def _request(timeout_s: float = 10.0) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", "go"),), timeout_s=timeout_s)


def _make(wire: Wire, url: str, **kw: Any) -> OpenAIBackend | OllamaBackend:
    kw.setdefault("backoff_base_s", 0.01)
    return wire.make(url, **kw)


def _run(
    backend: Backend, request: CompletionRequest | None = None, texts: list[str] | None = None
) -> tuple[str, Any]:
    async def main() -> tuple[str, Any]:
        try:
            return await collect(backend.stream(request or _request()), texts)  # type: ignore[arg-type]
        finally:
            await backend.aclose()

    return anyio.run(main)


def _run_then_check_closed(
    backend: Backend, srv: FakeServer, request: CompletionRequest, texts: list[str]
) -> tuple[BaseException | None, bool]:
    """Run one stream to its end or error; then, with the backend still open (its pool could
    otherwise close the socket for us), wait for the server to see the client leave."""

    async def main() -> tuple[BaseException | None, bool]:
        error: BaseException | None = None
        try:
            await collect(backend.stream(request), texts)  # type: ignore[arg-type]
        except BackendError as exc:
            error = exc
        try:
            gone = await anyio.to_thread.run_sync(srv.wait_client_gone, 1, 5.0)
        finally:
            await backend.aclose()
        return error, gone

    return anyio.run(main)


# -- connection failures ---------------------------------------------------------------------


def test_connection_refused_is_retried_then_unavailable(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiplanner")
    with pytest.raises(BackendUnavailable) as info:
        _run(_make(wire, refused_url(), max_retries=2))
    assert info.value.retryable
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2


def test_reset_every_time_is_retried_then_unavailable(wire: Wire) -> None:
    with FakeServer(reset_reply()) as srv, pytest.raises(BackendUnavailable) as info:
        _run(_make(wire, srv.url, max_retries=2))
    assert len(srv.requests) == 3
    assert isinstance(info.value.__cause__, httpx.HTTPError)


def test_reset_once_then_success(wire: Wire) -> None:
    with FakeServer([reset_reply(), wire.stream(["ok"])]) as srv:
        text, _ = _run(_make(wire, srv.url))
    assert text == "ok"
    assert len(srv.requests) == 2


def test_connection_dropped_after_text_is_not_retried(wire: Wire) -> None:
    with FakeServer(wire.stream(["a", "b"], complete=False, abort=True)) as srv:
        texts: list[str] = []
        with pytest.raises(BackendError) as info:
            _run(_make(wire, srv.url), texts=texts)
    assert texts == ["a", "b"]
    assert len(srv.requests) == 1
    assert isinstance(info.value.__cause__, httpx.HTTPError)


# -- HTTP status -----------------------------------------------------------------------------


def test_500_is_retried_then_fails_retryable(wire: Wire) -> None:
    with (
        FakeServer(status_reply(500, {"error": "boom"})) as srv,
        pytest.raises(BackendHTTPError, match="boom") as info,
    ):
        _run(_make(wire, srv.url, max_retries=2))
    assert info.value.status == 500
    assert info.value.retryable
    assert len(srv.requests) == 3


def test_503_then_success(wire: Wire) -> None:
    with FakeServer([status_reply(503), wire.stream(["fine"])]) as srv:
        text, _ = _run(_make(wire, srv.url))
    assert text == "fine"
    assert len(srv.requests) == 2


def test_429_waits_for_retry_after_then_succeeds(wire: Wire) -> None:
    replies = [status_reply(429, headers={"Retry-After": "1"}), wire.stream(["later"])]
    with FakeServer(replies) as srv:
        text, _ = _run(_make(wire, srv.url), _request(timeout_s=20.0))
    assert text == "later"
    first, second = srv.requests
    # Retrying earlier than the server asked would be the bug; the upper side is left to the
    # deadline and pytest-timeout.
    assert second.received_at - first.received_at >= 0.9


def test_429_asking_past_the_deadline_fails_now(wire: Wire) -> None:
    with (
        FakeServer(status_reply(429, headers={"Retry-After": "120"})) as srv,
        pytest.raises(BackendHTTPError) as info,
    ):
        _run(_make(wire, srv.url, max_retries=5), _request(timeout_s=5.0))
    assert info.value.status == 429
    assert info.value.retryable
    assert info.value.retry_after == 120.0
    assert len(srv.requests) == 1


def _backoffs_slept(records: Sequence[logging.LogRecord]) -> list[float]:
    """The backoffs the backend chose to sleep, from its "retry n/m in <delay>s" log lines:
    what it decided, not what a stopwatch saw."""
    delays: list[float] = []
    for record in records:
        if "retry" in record.getMessage():
            assert isinstance(record.args, tuple)
            delay = record.args[3]
            assert isinstance(delay, float)
            delays.append(delay)
    return delays


def test_backoff_never_sleeps_past_the_deadline(
    wire: Wire, caplog: pytest.LogCaptureFixture
) -> None:
    # 20 retries with 0.2 s doubling backoff (capped at 2 s) would take half a minute; a 2 s
    # budget allows a few. Whether the budget runs out in a backoff or in the retry after it,
    # the caller gets the server's 502; the first answer has 1.8 s to arrive, so load cannot
    # turn it into a timeout.
    caplog.set_level(logging.INFO, logger="aiplanner")
    budget_s = 2.0
    with (
        FakeServer(status_reply(502, {"error": "bad gateway"})) as srv,
        pytest.raises(BackendHTTPError, match="bad gateway") as info,
    ):
        _run(_make(wire, srv.url, max_retries=20, backoff_base_s=0.2), _request(budget_s))
    assert info.value.status == 502
    slept = _backoffs_slept(caplog.records)
    assert 1 <= len(slept) < 20  # the deadline ended the retries, not their number
    assert sum(slept) < budget_s
    assert len(slept) <= len(srv.requests) <= len(slept) + 1


@pytest.mark.timeout(30)
def test_deadline_during_a_retry_reports_the_server_error(wire: Wire) -> None:
    # The retry (Retry-After: 0) reaches a server that holds it without a status until the
    # client has given up: the retry learnt nothing, so the 502 it was made for is raised.
    release = threading.Event()
    first = status_reply(502, {"error": "bad gateway"}, headers={"Retry-After": "0"})

    def handler(request: RecordedRequest) -> Reply:
        if request is srv.requests[0]:
            return first
        release.wait(30.0)
        return wire.stream(["too late"])

    with FakeServer(handler) as srv:
        try:
            with pytest.raises(BackendHTTPError, match="bad gateway") as info:
                _run(_make(wire, srv.url, max_retries=3), _request(timeout_s=1.0))
        finally:
            release.set()
    assert info.value.status == 502
    assert info.value.retryable
    assert isinstance(info.value.__context__, BackendTimeout)
    assert len(srv.requests) == 2


@pytest.mark.timeout(30)
def test_deadline_cutting_an_error_body_still_reports_the_status(wire: Wire) -> None:
    half_a_body = Reply(status=503, chunks=(b'{"error": "overlo',), stall=True)
    with (
        FakeServer(half_a_body) as srv,
        pytest.raises(BackendHTTPError, match="overlo") as info,
    ):
        _run(_make(wire, srv.url, max_retries=0, read_timeout_s=60.0), _request(timeout_s=0.5))
    assert info.value.status == 503
    assert len(srv.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_fail_fast(wire: Wire, status: int) -> None:
    with (
        FakeServer(status_reply(status, {"error": {"message": "bad request"}})) as srv,
        pytest.raises(BackendHTTPError, match="bad request") as info,
    ):
        _run(_make(wire, srv.url, max_retries=3))
    assert info.value.status == status
    assert not info.value.retryable
    assert len(srv.requests) == 1


def test_huge_error_body_gives_a_short_message(wire: Wire) -> None:
    with (
        FakeServer(status_reply(500, b"x" * 2_000_000)) as srv,
        pytest.raises(BackendHTTPError) as info,
    ):
        _run(_make(wire, srv.url, max_retries=0))
    assert len(str(info.value)) < 300


# -- stalls and deadlines --------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_stall_after_headers_ends_at_the_deadline(wire: Wire) -> None:
    with FakeServer(stall_reply()) as srv:
        backend = _make(wire, srv.url, read_timeout_s=60.0)
        error, gone = _run_then_check_closed(backend, srv, _request(timeout_s=0.5), [])
    assert isinstance(error, BackendTimeout)
    assert "deadline" in str(error)
    assert gone, "the stalled connection was left open"
    assert len(srv.requests) == 1


@pytest.mark.timeout(30)
def test_stall_after_some_text_ends_at_the_deadline(wire: Wire) -> None:
    with FakeServer(stall_reply([wire.first_chunk("half")])) as srv:
        backend = _make(wire, srv.url, read_timeout_s=60.0)
        texts: list[str] = []
        error, gone = _run_then_check_closed(backend, srv, _request(timeout_s=0.5), texts)
    assert isinstance(error, BackendTimeout)
    assert texts == ["half"]
    assert gone, "the stalled connection was left open"


@pytest.mark.timeout(30)
def test_read_timeout_is_a_backend_timeout(wire: Wire) -> None:
    with FakeServer(stall_reply()) as srv, pytest.raises(BackendTimeout) as info:
        _run(_make(wire, srv.url, read_timeout_s=0.3), _request(timeout_s=60.0))
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert not info.value.retryable


def test_no_budget_fails_before_any_request(wire: Wire) -> None:
    with FakeServer(wire.stream(["x"])) as srv, pytest.raises(BackendTimeout):
        _run(_make(wire, srv.url), _request(timeout_s=0.0))
    assert srv.requests == []


@pytest.mark.timeout(30)
def test_waiting_for_a_request_slot_counts_against_the_deadline(wire: Wire) -> None:
    with FakeServer(stall_reply()) as srv:
        backend = _make(wire, srv.url, max_concurrency=1, read_timeout_s=60.0)
        outcome: list[BaseException] = []

        async def hog() -> None:
            await collect(backend.stream(_request(timeout_s=60.0)))

        async def late() -> None:
            try:
                await collect(backend.stream(_request(timeout_s=0.3)))
            except BackendError as exc:
                outcome.append(exc)

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(hog)
                assert await anyio.to_thread.run_sync(srv.wait_requests, 1)
                await late()
                tg.cancel_scope.cancel()
            await backend.aclose()

        anyio.run(main)
    assert len(outcome) == 1
    assert isinstance(outcome[0], BackendTimeout)
    assert "slot" in str(outcome[0])
    assert len(srv.requests) == 1  # the late call never reached the server


# -- size bound ------------------------------------------------------------------------------


def test_many_small_deltas_past_the_bound_are_too_large(wire: Wire) -> None:
    with FakeServer(wire.stream(["word "] * 200)) as srv:
        texts: list[str] = []
        with pytest.raises(ResponseTooLarge):
            _run(_make(wire, srv.url, max_response_bytes=4096), texts=texts)
    assert 0 < len(texts) < 200
    assert len(srv.requests) == 1


def test_one_endless_line_is_too_large(wire: Wire) -> None:
    endless = Reply(chunks=tuple([b"z" * 1024] * 64))  # 64 KiB, never a line break
    with FakeServer(endless) as srv, pytest.raises(ResponseTooLarge):
        _run(_make(wire, srv.url, max_response_bytes=8192))
    assert not ResponseTooLarge("x").retryable


# -- cancellation ----------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_cancelling_the_consumer_closes_the_connection(wire: Wire) -> None:
    with FakeServer(stall_reply([wire.first_chunk("a")])) as srv:
        backend = _make(wire, srv.url)
        got: list[str] = []

        async def consume() -> None:
            await collect(backend.stream(_request(timeout_s=60.0)), got)

        async def main() -> bool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                while not got:
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            try:  # checked before aclose(), which would close every connection anyway
                return await anyio.to_thread.run_sync(srv.wait_client_gone, 1, 5.0)
            finally:
                await backend.aclose()

        assert anyio.run(main), "the connection was left open after cancellation"
        assert got == ["a"]


@pytest.mark.timeout(30)
def test_abandoning_the_stream_closes_it_and_frees_its_slot(wire: Wire) -> None:
    replies = [stall_reply([wire.first_chunk("a")]), wire.stream(["b"])]
    with FakeServer(replies) as srv:
        backend = _make(wire, srv.url, max_concurrency=1)

        async def main() -> tuple[bool, str]:
            events = backend.stream(_request(timeout_s=60.0))
            first = await anext(events)
            assert getattr(first, "text", None) == "a"
            await events.aclose()
            gone = await anyio.to_thread.run_sync(srv.wait_client_gone, 1, 5.0)
            # With one slot, this call could only start if the abandoned one gave it back.
            text, _ = await collect(backend.stream(_request(timeout_s=10.0)))
            await backend.aclose()
            return gone, text

        assert anyio.run(main) == (True, "b")


@pytest.mark.timeout(30)
def test_aclose_with_a_stream_in_flight_ends_that_stream(wire: Wire) -> None:
    with FakeServer(stall_reply([wire.first_chunk("a")])) as srv:
        backend = _make(wire, srv.url, read_timeout_s=60.0)
        errors: list[BaseException] = []

        async def consume(got: list[str]) -> None:
            try:
                await collect(backend.stream(_request(timeout_s=60.0)), got)
            except BackendError as exc:
                errors.append(exc)

        async def main() -> None:
            got: list[str] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, got)
                while not got:
                    await anyio.sleep(0.01)
                await backend.aclose()

        anyio.run(main)
    assert len(errors) == 1


# -- secrets ---------------------------------------------------------------------------------

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c"


def _assert_hidden(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    rendered = "".join(traceback.format_exception(exc))
    assert SECRET not in rendered
    assert SECRET not in repr(exc)
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.args)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_api_key_never_appears_in_logs_reprs_or_errors(
    how: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx's and httpcore's
    kw: dict[str, Any] = {"backoff_base_s": 0.01, "max_retries": 1}
    if how == "argument":
        kw["api_key"] = SECRET
    else:
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeServer([status_reply(500, b"oops"), status_reply(401, b"bad key")]) as srv:
        backend = OpenAIBackend(srv.url, **kw)
        assert SECRET not in repr(backend)
        assert SECRET not in str(backend)
        # what a debugger or ``pytest --showlocals`` would print of its state
        assert SECRET not in repr(vars(backend)) + repr(vars(backend._http))
        with pytest.raises(BackendHTTPError) as info:
            _run(backend)
    assert srv.requests[0].headers["authorization"] == f"Bearer {SECRET}"  # it was used
    _assert_hidden(info.value, caplog)

    refused = OpenAIBackend(refused_url(), **kw)
    with pytest.raises(BackendUnavailable) as info2:
        _run(refused)
    _assert_hidden(info2.value, caplog)
    assert caplog.records, "expected some logging to check"
