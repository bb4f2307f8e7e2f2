"""What the HTTP backends share: one lazily created ``httpx.AsyncClient``, a concurrency bound,
the per-call deadline, retries with backoff, the response size bound, and the mapping of every
``httpx`` failure into the :mod:`aiplanner.errors` tree.

The wire formats differ only in how a line of the body becomes text: each backend supplies a
:class:`LineDecoder` (SSE for OpenAI-compatible servers, NDJSON for Ollama).

Deadline
    ``CompletionRequest.timeout_s`` bounds the whole call, retries and backoff included. It is
    enforced with ``anyio.fail_after`` around every single await of the stream (waiting for a
    slot, sending, each read) rather than one scope around the whole generator: a cancel scope
    must never stay open across a ``yield`` of an async generator, or the deadline would cancel
    whatever the *consumer* happens to be awaiting between two events.

Retries
    Only for failures where trying again may help and the caller has seen nothing yet: refused or
    reset connections (:class:`BackendUnavailable`), 429 (honouring ``Retry-After``) and 5xx
    (:class:`BackendHTTPError` with ``retryable``). A backoff that would end past the deadline is
    not slept: the retryable error is raised at once. When the deadline passes after the backoff,
    while the retry still waits for the server's status, that same error is raised too: the
    retry learnt nothing new, so the caller sees the server's last answer (say the 502) whichever
    side of the backoff the budget ran out, never a :class:`BackendTimeout` that hides it. A
    retry that got a status line and then ran out of time did learn something: an error status
    is raised as such (its body cut short), a 2xx stream that stalls as :class:`BackendTimeout`.
    Once text has been yielded nothing is retried, because the caller already acted on the
    partial output.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from aiplanner.backends.base import CompletionRequest, Finished, StreamEvent, TextDelta
from aiplanner.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ResponseTooLarge,
)

__all__ = [
    "HttpSettings",
    "HttpStreamer",
    "LineDecoder",
    "check_base_url",
    "error_detail",
    "map_httpx_error",
    "optional_count",
    "parse_retry_after",
]

_log = logging.getLogger("aiplanner.backends")

# Error answers are read only this far: enough for a message, never a whole hostile body.
_MAX_ERROR_BODY = 4096
_MAX_DETAIL_CHARS = 200
# A server asking for more than an hour is treated as asking for an hour: the deadline decides.
_MAX_RETRY_AFTER_S = 3600.0
_CLOSE_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Timeouts, retries and bounds of one HTTP backend.

    Raises :class:`ConfigError` from ``__post_init__`` for out-of-range values.
    """

    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    max_retries: int = 2
    max_response_bytes: int = 65_536
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ConfigError("connect_timeout_s and read_timeout_s must be positive")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_response_bytes < 256:
            raise ConfigError(
                f"max_response_bytes must be at least 256, got {self.max_response_bytes}"
            )
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise ConfigError("need 0 <= backoff_base_s <= backoff_max_s")


class LineDecoder(Protocol):
    """Turns the lines of one response body into text. A fresh decoder serves each attempt."""

    @property
    def done(self) -> bool:
        """True once the stream's end marker was seen; no more lines are read after it."""
        ...

    def feed(self, line: bytes) -> str:
        """Take one line (without its line break); return its text, or "" when it has none.

        Raises :class:`BackendError` for malformed lines or an error reported in the stream.
        """
        ...

    def finish(self) -> Finished:
        """Called once the body ended or ``done`` became true; token counts in ``usage``.

        Raises :class:`BackendError` when the stream ended before its end marker.
        """
        ...


def check_base_url(url: str, what: str) -> str:
    """Return ``url`` without trailing slashes.

    Raises :class:`ConfigError` unless it is an absolute http(s) URL with a host.
    """
    url = url.strip().rstrip("/")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsing the port is what validates it
    except ValueError as exc:
        raise ConfigError(f"invalid {what} URL {url!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} URL must look like http://host:port, got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} URL must not carry a query or fragment, got {url!r}")
    return url


def optional_count(value: object) -> int | None:
    """A token count from untrusted JSON: a non-negative int, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def error_detail(body: bytes) -> str:
    """A short, printable message from an error body: ``{"error": "..."}``,
    ``{"error": {"message": "..."}}``, or the start of the text. Never echoes a whole body."""
    text: str | None = None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail"))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str):
            text = err
    if text is None:
        text = body.decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text[: _MAX_DETAIL_CHARS * 2])
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 3] + "..."
    return text or "(empty body)"


def map_httpx_error(exc: httpx.HTTPError, what: str) -> BackendError:
    """The :class:`BackendError` for an ``httpx`` failure (the caller raises it ``from exc``).

    Refused, reset or closed connections and connect timeouts become the retryable
    :class:`BackendUnavailable`; read/write/pool timeouts :class:`BackendTimeout`; anything else
    a non-retryable :class:`BackendError`.
    """
    detail = str(exc)[:_MAX_DETAIL_CHARS] or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return BackendUnavailable(f"{what}: connection timed out ({detail})")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"{what}: {type(exc).__name__} ({detail})")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return BackendUnavailable(f"{what}: connection failed ({detail})")
    return BackendError(f"{what}: {type(exc).__name__} ({detail})")


@contextmanager
def _within(deadline: float, what: str) -> Iterator[None]:
    """Bound the awaits inside by the call's deadline (an ``anyio.current_time()`` value).

    Raises :class:`BackendTimeout` when the deadline passes.
    """
    try:
        with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
            yield
    except BackendError:
        raise
    except TimeoutError as exc:
        raise BackendTimeout(f"deadline passed while {what}") from exc


async def _close_response(response: httpx.Response, chunks: AsyncIterator[bytes] | None) -> None:
    # Shielded: when the consumer was cancelled, the connection must still be released now
    # rather than left for the garbage collector, and a server stalling the close cannot hold
    # the caller for more than the grace period.
    with anyio.move_on_after(_CLOSE_GRACE_S, shield=True):
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
        await response.aclose()


class _LineReader:
    """Splits a streamed body into lines, bounding its total size and every read's wait."""

    __slots__ = ("_buf", "_chunks", "_deadline", "_eof", "_limit", "_received", "_what")

    def __init__(self, chunks: AsyncIterator[bytes], deadline: float, limit: int, what: str):
        self._chunks = chunks
        self._deadline = deadline
        self._limit = limit
        self._what = what
        self._buf = bytearray()
        self._received = 0
        self._eof = False

    async def next_line(self) -> bytes | None:
        """The next line without its line break; a last unterminated line as is; None at the end.

        Raises :class:`ResponseTooLarge`, :class:`BackendTimeout` or the mapped httpx error.
        """
        while True:
            newline = self._buf.find(b"\n")
            if newline >= 0:
                line = bytes(self._buf[:newline])
                del self._buf[: newline + 1]
                return line.removesuffix(b"\r")
            if self._eof:
                if not self._buf:
                    return None
                line = bytes(self._buf)
                self._buf.clear()
                return line.removesuffix(b"\r")
            try:
                with _within(self._deadline, f"reading the answer of {self._what}"):
                    chunk = await anext(self._chunks, None)
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, f"{self._what} stream") from exc
            if chunk is None:
                self._eof = True
                continue
            self._received += len(chunk)
            if self._received > self._limit:
                raise ResponseTooLarge(
                    f"{self._what}: answer passed max_response_bytes={self._limit}"
                )
            self._buf += chunk


def _json_default(obj: object) -> object:
    # Schemas arrive as read-only Mappings (e.g. MappingProxyType); orjson only knows dicts.
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class HttpStreamer:
    """One HTTP endpoint streamed line by line, with the deadline, retry and bound rules above.

    The ``httpx.AsyncClient`` is created on first use inside the running event loop and closed by
    :meth:`aclose` (a later call creates a new one). Use one instance from one event loop.
    ``headers`` may hold credentials: they are kept in an ``httpx.Headers`` (whose repr masks
    ``Authorization``) and never logged.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        headers: Mapping[str, str],
        settings: HttpSettings,
        max_concurrency: int,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._name = name
        self._base_url = base_url
        self._headers = httpx.Headers(headers)
        self._settings = settings
        self._max_concurrency = max_concurrency
        self._client: httpx.AsyncClient | None = None
        self._slots: anyio.Semaphore | None = None
        # Jitter only; a private generator keeps no module-level state and lets tests seed it.
        self._rng = random.Random()

    @property
    def settings(self) -> HttpSettings:
        return self._settings

    def _ensure_client(self) -> tuple[httpx.AsyncClient, anyio.Semaphore]:
        if self._client is None or self._client.is_closed:
            s = self._settings
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                timeout=httpx.Timeout(
                    connect=s.connect_timeout_s,
                    read=s.read_timeout_s,
                    write=s.read_timeout_s,
                    pool=s.connect_timeout_s,
                ),
                limits=httpx.Limits(
                    max_connections=self._max_concurrency,
                    max_keepalive_connections=self._max_concurrency,
                ),
                follow_redirects=False,
            )
        if self._slots is None:
            self._slots = anyio.Semaphore(self._max_concurrency)
        return self._client, self._slots

    async def aclose(self) -> None:
        """Close the client and its connections. Streams still open then fail."""
        client, self._client = self._client, None
        # A fresh semaphore too, so the backend can be used again from another event loop;
        # streams still running release the old one they hold.
        self._slots = None
        if client is not None:
            await client.aclose()

    def _backoff(self, attempt: int, error: BackendError) -> float:
        if isinstance(error, BackendHTTPError) and error.retry_after is not None:
            return float(error.retry_after)
        s = self._settings
        base = min(s.backoff_max_s, s.backoff_base_s * 2.0**attempt)
        # "Equal jitter": half fixed, half random, so that many agents that failed together
        # do not come back together, yet each still waits a while.
        return base * (0.5 + 0.5 * self._rng.random())

    async def _open(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: bytes,
        deadline: float,
        previous: BackendError | None,
    ) -> httpx.Response:
        """Send the request and return the streaming response once its status is 2xx.

        Raises :class:`BackendHTTPError` (with ``Retry-After`` parsed; also when the deadline
        cuts its error body short), :class:`BackendTimeout`, or the mapped httpx error. When
        this is a retry and the deadline passes before the status arrives, raises ``previous``,
        the error the retry was made for.
        """
        what = f"{self._name} request"
        request = client.build_request(
            "POST",
            path,
            content=body,
            # identity: a compressed stream would defeat the size bound and the line reader.
            headers={"content-type": "application/json", "accept-encoding": "identity"},
        )
        try:
            with _within(deadline, f"connecting to {self._name}"):
                response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, what) from exc
        except BackendTimeout:
            if previous is None:
                raise
            raise previous  # noqa: B904 -- the deadline stays visible as __context__
        if response.is_success:
            return response
        chunks = response.aiter_bytes()
        error_body = bytearray()
        try:
            with _within(deadline, f"reading an error answer of {self._name}"):
                async for chunk in chunks:
                    error_body += chunk
                    if len(error_body) >= _MAX_ERROR_BODY:
                        break
        except (httpx.HTTPError, BackendTimeout):
            pass  # The status says enough; a broken or late error body adds nothing.
        finally:
            await _close_response(response, chunks)
        raise BackendHTTPError(
            response.status_code,
            f"{self._name}: {error_detail(bytes(error_body[:_MAX_ERROR_BODY]))}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    async def stream(
        self,
        path: str,
        payload: Mapping[str, Any],
        request: CompletionRequest,
        decoder_factory: Callable[[], LineDecoder],
    ) -> AsyncGenerator[StreamEvent, None]:
        """POST ``payload`` as JSON to ``path`` and stream the decoded text, then one Finished.

        ``Finished.usage`` gets ``ttft_s`` and ``total_s`` measured here, from the start of the
        call (retries included). Raises :class:`ConfigError` if ``payload`` is not JSON
        serialisable, else subclasses of :class:`BackendError` (see the module docstring).
        """
        try:
            body = orjson.dumps(payload, default=_json_default)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise ConfigError(f"request for {self._name} is not JSON serialisable: {exc}") from exc
        started = time.perf_counter()
        deadline = anyio.current_time() + request.timeout_s
        client, slots = self._ensure_client()
        with _within(deadline, f"waiting for a free {self._name} request slot"):
            await slots.acquire()
        try:
            attempt = 0
            previous: BackendError | None = None
            ttft: float | None = None
            while True:
                decoder = decoder_factory()
                response: httpx.Response | None = None
                chunks: AsyncIterator[bytes] | None = None
                try:
                    response = await self._open(client, path, body, deadline, previous)
                    chunks = response.aiter_bytes()
                    reader = _LineReader(
                        chunks, deadline, self._settings.max_response_bytes, self._name
                    )
                    while not decoder.done:
                        line = await reader.next_line()
                        if line is None:
                            break
                        text = decoder.feed(line)
                        if text:
                            if ttft is None:
                                ttft = time.perf_counter() - started
                            yield TextDelta(text)
                    finished = decoder.finish()
                except BackendError as exc:
                    if ttft is not None or not exc.retryable:
                        raise
                    if attempt >= self._settings.max_retries:
                        raise
                    delay = self._backoff(attempt, exc)
                    if delay >= deadline - anyio.current_time():
                        raise
                    attempt += 1
                    previous = exc
                    _log.info(
                        "%s: retry %d/%d in %.2fs after: %s",
                        self._name,
                        attempt,
                        self._settings.max_retries,
                        delay,
                        exc,
                    )
                    await anyio.sleep(delay)
                    continue
                finally:
                    if response is not None:
                        await _close_response(response, chunks)
                total = time.perf_counter() - started
                yield replace(finished, usage=replace(finished.usage, ttft_s=ttft, total_s=total))
                return
        finally:
            slots.release()
