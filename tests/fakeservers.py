"""Loopback HTTP/1.1 servers with scripted behaviour, for tests of anything that speaks HTTP.

A :class:`FakeServer` listens on 127.0.0.1 (a free port), serves each connection in a background
thread, and answers every request with a :class:`Reply` chosen by its handler: one Reply for all
requests, a sequence (the n-th request gets the n-th Reply, later ones the last), or a callable
taking the :class:`RecordedRequest`. Replies can stream a body in pieces with delays, stop in the
middle (cleanly or by dropping the connection), stall after the headers, or reset the connection.
Every request is logged in ``server.requests``::

    with FakeServer(ndjson_reply(ollama_chat_objects(["a", "b"]))) as srv:
        backend = OllamaBackend(srv.url)
        ...
        assert len(srv.requests) == 1

Stopping is quick even with stalled connections open: every wait polls a stop event.
Each connection serves one request (``Connection: close``), so every call opens a new one and
``client_gone`` counts the clients that hung up on a stream still being served.
"""

from __future__ import annotations

import contextlib
import http
import select
import socket
import struct
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from aiplanner.backends.base import Finished, StreamEvent, TextDelta

__all__ = [
    "FakeServer",
    "Handler",
    "RecordedRequest",
    "Reply",
    "collect",
    "json_reply",
    "ndjson_reply",
    "ollama_chat_objects",
    "openai_chat_chunks",
    "refused_url",
    "reset_reply",
    "sse_reply",
    "stall_reply",
    "status_reply",
]

_POLL_S = 0.02
_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server read it. Header names are lower-case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    received_at: float  # time.monotonic()

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server does with one request.

    * ``chunks`` are sent one by one, ``delay_s`` apart, chunked-encoded (or with a
      Content-Length when ``chunked`` is False).
    * By default the body ends cleanly after the chunks, even when the last one stops in the
      middle of a line (that is how :func:`ndjson_reply` cuts a stream off mid-object).
    * ``abort``: after the chunks, close the connection without ending the chunked body.
    * ``stall``: after the chunks, keep the connection open and silent until the client leaves
      or the server stops.
    * ``reset``: answer nothing; reset the connection (TCP RST) once the request is read.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    chunks: tuple[bytes, ...] = ()
    delay_s: float = 0.0
    chunked: bool = True
    abort: bool = False
    stall: bool = False
    reset: bool = False
    content_type: str = "application/json"


Handler = Reply | Sequence[Reply] | Callable[[RecordedRequest], Reply]


def status_reply(
    status: int, body: bytes | Mapping[str, Any] = b"", headers: Mapping[str, str] | None = None
) -> Reply:
    """A complete, unstreamed answer: ``status_reply(429, headers={"Retry-After": "1"})``."""
    data = body if isinstance(body, bytes) else orjson.dumps(dict(body))
    return Reply(
        status=status,
        headers=tuple((headers or {}).items()),
        chunks=(data,) if data else (),
        chunked=False,
    )


def json_reply(obj: Any, status: int = 200) -> Reply:
    return Reply(status=status, chunks=(orjson.dumps(obj),), chunked=False)


def _line(obj: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    return orjson.dumps(dict(obj))


def ndjson_reply(
    objects: Iterable[Mapping[str, Any] | bytes],
    *,
    delay_s: float = 0.0,
    cut_mid_object: bool = False,
    abort: bool = False,
    stall: bool = False,
) -> Reply:
    """An NDJSON stream, one chunk per line. ``cut_mid_object`` replaces the last object by its
    first half and ends the body there (cleanly); ``abort`` / ``stall`` as in :class:`Reply`."""
    lines = [_line(o) for o in objects]
    chunks = [line + b"\n" for line in lines]
    if cut_mid_object and lines:
        chunks[-1] = lines[-1][: max(1, len(lines[-1]) // 2)]
    return Reply(
        chunks=tuple(chunks),
        delay_s=delay_s,
        abort=abort,
        stall=stall,
        content_type="application/x-ndjson",
    )


def sse_reply(
    events: Iterable[Mapping[str, Any] | bytes | str],
    *,
    done: bool = True,
    delay_s: float = 0.0,
    abort: bool = False,
    stall: bool = False,
) -> Reply:
    """A Server-Sent Events stream: ``data: <json>`` per event, then ``data: [DONE]`` if
    ``done``. Raw ``bytes`` events are sent verbatim (for comments and odd framing)."""
    chunks = [e if isinstance(e, bytes) else b"data: " + _line(e) + b"\n\n" for e in events]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return Reply(
        chunks=tuple(chunks),
        delay_s=delay_s,
        abort=abort,
        stall=stall,
        content_type="text/event-stream",
    )


def stall_reply(chunks: Sequence[bytes] = (), content_type: str = "application/json") -> Reply:
    """Send the headers (and ``chunks``), then nothing until the client leaves or the end."""
    return Reply(chunks=tuple(chunks), stall=True, content_type=content_type)


def reset_reply() -> Reply:
    return Reply(reset=True)


def ollama_chat_objects(
    texts: Sequence[str],
    *,
    model: str = "smollm2:135m",
    done: bool = True,
    prompt_eval_count: int = 26,
    done_reason: str = "stop",
) -> list[dict[str, Any]]:
    """Objects as Ollama's streaming ``/api/chat`` sends them (see its API docs)."""
    created = "2026-11-02T10:00:00.000000Z"
    objs: list[dict[str, Any]] = [
        {
            "model": model,
            "created_at": created,
            "message": {"role": "assistant", "content": t},
            "done": False,
        }
        for t in texts
    ]
    if done:
        objs.append(
            {
                "model": model,
                "created_at": created,
                "message": {"role": "assistant", "content": ""},
                "done_reason": done_reason,
                "done": True,
                "total_duration": 4_883_583_458,
                "load_duration": 1_334_875,
                "prompt_eval_count": prompt_eval_count,
                "prompt_eval_duration": 342_546_000,
                "eval_count": len(texts),
                "eval_duration": 4_535_599_000,
            }
        )
    return objs


def openai_chat_chunks(
    texts: Sequence[str],
    *,
    model: str = "default",
    finish_reason: str | None = "stop",
    usage: tuple[int, int | None] | None = (31, None),
) -> list[dict[str, Any]]:
    """``chat.completion.chunk`` objects as OpenAI streams them: a role chunk, one chunk per text,
    a finish chunk, and (``stream_options.include_usage``) a usage chunk with empty ``choices``.
    ``usage=(prompt, completion)``; a None completion count means ``len(texts)``."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    out: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    ]
    out += [
        {**base, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}
        for t in texts
    ]
    if finish_reason is not None:
        out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})
    if usage is not None:
        prompt, completion = usage
        completion = len(texts) if completion is None else completion
        out.append(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )
    return out


def refused_url() -> str:
    """A loopback URL with nothing listening (a port just bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Stopped(Exception):
    """The server is stopping, or the client went away: abandon this connection."""


@dataclass(slots=True)
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    active: int = 0
    max_active: int = 0
    client_gone: int = 0
    handler_errors: list[BaseException] = field(default_factory=list)


class FakeServer:
    """A scripted HTTP/1.1 server on 127.0.0.1; a context manager (see the module docstring).

    Raises ``AssertionError`` on exit if the handler itself raised (a bug in the test).
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._state = _State()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._port = 0

    # -- public view -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._state.requests)

    @property
    def max_active(self) -> int:
        """The most requests ever being answered at the same time."""
        with self._cond:
            return self._state.max_active

    @property
    def client_gone(self) -> int:
        """How many clients hung up while their answer was still being sent or stalled."""
        with self._cond:
            return self._state.client_gone

    def wait_client_gone(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``client_gone`` reaches ``count``; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._state.client_gone >= count, timeout)

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._state.requests) >= count, timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"fakeserver-{self._port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None and self._state.handler_errors:
            raise AssertionError(
                f"fake server handler raised: {self._state.handler_errors[0]!r}"
            ) from self._state.handler_errors[0]

    def stop(self) -> None:
        """Stop accepting, end every connection (stalled ones too) and join the threads."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
        with self._cond:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- serving -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([listener], [], [], _POLL_S)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._cond:
                self._threads.append(t)
            t.start()

    def _reply_for(self, request: RecordedRequest, index: int) -> Reply:
        h = self._handler
        if isinstance(h, Reply):
            return h
        if callable(h):
            return h(request)
        return h[min(index, len(h) - 1)]

    def _serve(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            request = self._read_request(conn)
            with self._cond:
                index = len(self._state.requests)
                self._state.requests.append(request)
                self._state.active += 1
                self._state.max_active = max(self._state.max_active, self._state.active)
                self._cond.notify_all()
            released = False

            def release() -> None:
                nonlocal released
                if not released:
                    released = True
                    with self._cond:
                        self._state.active -= 1

            try:
                try:
                    reply = self._reply_for(request, index)
                except Exception as exc:
                    with self._cond:
                        self._state.handler_errors.append(exc)
                    reply = status_reply(500, b"fake server handler raised")
                self._answer(conn, reply, release)
            finally:
                release()
        except _Stopped:
            pass
        finally:
            conn.close()

    def _wait_readable(self, conn: socket.socket) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            ready, _, _ = select.select([conn], [], [], _POLL_S)
            if ready:
                return

    def _recv(self, conn: socket.socket) -> bytes:
        self._wait_readable(conn)
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            raise _Stopped from exc
        if not data:
            raise _Stopped
        return data

    def _read_request(self, conn: socket.socket) -> RecordedRequest:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv(conn)
            if len(buf) > _MAX_HEAD:
                raise _Stopped
        head, _, body = buf.partition(b"\r\n\r\n")
        received_at = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = min(int(headers.get("content-length", "0")), _MAX_BODY)
        while len(body) < length:
            body += self._recv(conn)
        return RecordedRequest(method, path, headers, body[:length], received_at)

    def _send(self, conn: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                raise _Stopped
            _, ready, _ = select.select([], [conn], [], _POLL_S)
            if not ready:
                continue
            try:
                sent = conn.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self._note_gone()
                raise _Stopped from exc
            view = view[sent:]

    def _note_gone(self) -> None:
        with self._cond:
            self._state.client_gone += 1
            self._cond.notify_all()

    def _pause(self, conn: socket.socket, seconds: float) -> None:
        """Wait ``seconds`` (negative: until the end), unless stopping or the client leaves."""
        end = None if seconds < 0 else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            if self._stop.is_set():
                raise _Stopped
            wait = _POLL_S if end is None else max(0.0, min(_POLL_S, end - time.monotonic()))
            ready, _, _ = select.select([conn], [], [], wait)
            if ready:
                try:
                    data = conn.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._note_gone()
                    raise _Stopped

    def _answer(self, conn: socket.socket, reply: Reply, release: Callable[[], None]) -> None:
        """Send ``reply``. ``release`` runs just before the bytes that complete the answer, so
        that a client that saw its answer end is never counted as still being served."""
        if reply.reset:
            # SO_LINGER with a zero timeout turns close() into a TCP RST.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Unknown"
        head = [f"HTTP/1.1 {reply.status} {phrase}", f"Content-Type: {reply.content_type}"]
        head.append("Connection: close")
        if reply.chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {sum(len(c) for c in reply.chunks)}")
        head += [f"{k}: {v}" for k, v in reply.headers]
        pieces = [("\r\n".join(head) + "\r\n\r\n").encode("latin-1")]
        if reply.chunked:
            pieces += [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in reply.chunks if c]
        else:
            pieces += [c for c in reply.chunks if c]
        complete = not (reply.abort or reply.stall)
        if complete and reply.chunked:
            pieces[-1] += b"0\r\n\r\n"
        for i, piece in enumerate(pieces):
            if i >= 2 and reply.delay_s > 0:
                self._pause(conn, reply.delay_s)
            if complete and i == len(pieces) - 1:
                release()
            self._send(conn, piece)
        if reply.stall:
            self._pause(conn, -1.0)


async def collect(
    events: AsyncGenerator[StreamEvent, None], texts: list[str] | None = None
) -> tuple[str, Finished]:
    """Drain a backend stream: return (the joined text, its Finished event), closing the stream
    however it ends. ``texts`` (if given) receives each delta as it arrives, so that a test can
    see what came before an error. Raises AssertionError if the stream breaks the protocol
    (an event after Finished, or no Finished at all)."""
    seen: list[str] = [] if texts is None else texts
    finished: Finished | None = None
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            assert finished is None, f"event after Finished: {event!r}"
            if isinstance(event, TextDelta):
                seen.append(event.text)
            else:
                finished = event
    assert finished is not None, "stream ended without Finished"
    return "".join(seen), finished
