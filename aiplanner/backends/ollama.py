"""OllamaBackend: Ollama's streaming ``/api/chat`` (newline-delimited JSON).

Each line of the body is one JSON object: ``{"message": {"content": "..."}, "done": false}``
while the model writes, then a final ``{"done": true, "prompt_eval_count": ..., "eval_count":
..., "total_duration": ..., "eval_duration": ...}`` (durations in nanoseconds). An object with
``"error"`` reports a failure in the middle of the stream. Timeouts, retries and fault handling
are those of :mod:`aiplanner.backends._http`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import orjson

from aiplanner.backends._http import (
    HttpSettings,
    HttpStreamer,
    check_base_url,
    error_detail,
    optional_count,
)
from aiplanner.backends.base import (
    BackendInfo,
    CompletionRequest,
    Finished,
    StreamEvent,
    Usage,
)
from aiplanner.errors import BackendError, ConfigError

__all__ = ["DEFAULT_OLLAMA_HOST", "OllamaBackend", "ollama_base_url"]

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
_HOST_ENV = "OLLAMA_HOST"
_DEFAULT_PORT = 11434
_CHAT_PATH = "/api/chat"


def ollama_base_url(host: str | None = None) -> str:
    """The server URL for ``host`` (or ``$OLLAMA_HOST``, or the default), as Ollama reads it.

    Accepts ``host``, ``host:port`` and full URLs; no port means 11434 (443 for https); the bind
    addresses ``0.0.0.0`` / ``::`` (``OLLAMA_HOST`` also configures the server) mean this host.
    Raises :class:`ConfigError` for anything else.
    """
    raw = (host or os.environ.get(_HOST_ENV) or DEFAULT_OLLAMA_HOST).strip()
    if "://" not in raw:
        raw = f"http://{raw}"
    url = check_base_url(raw, "Ollama host")
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    if hostname in ("0.0.0.0", "::"):
        hostname = "127.0.0.1"
    if ":" in hostname:
        hostname = f"[{hostname}]"
    port = parts.port or (443 if parts.scheme == "https" else _DEFAULT_PORT)
    return f"{parts.scheme}://{hostname}:{port}{parts.path}"


class _NdjsonDecoder:
    """Ollama's chat stream: one JSON object per line, ended by an object with ``done: true``."""

    __slots__ = ("_done", "_finish_reason", "_usage")

    def __init__(self) -> None:
        self._done = False
        self._finish_reason = "stop"
        self._usage = Usage()

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, line: bytes) -> str:
        if not line.strip():
            return ""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            # Also what a stream cut off in the middle of an object looks like.
            raise BackendError(f"ollama: malformed or truncated stream line ({exc})") from exc
        if not isinstance(obj, dict):
            raise BackendError("ollama: stream line is not a JSON object")
        if "error" in obj:
            raise BackendError(f"ollama: error in stream: {error_detail(line)}")
        text = ""
        message = obj.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                text = content
        if obj.get("done") is True:
            self._done = True
            reason = obj.get("done_reason")
            if isinstance(reason, str) and reason:
                self._finish_reason = reason[:32]
            # total_duration / eval_duration are the server's own view; Usage carries the
            # client-side times (measured by the streamer) so all backends compare alike.
            self._usage = Usage(
                prompt_tokens=optional_count(obj.get("prompt_eval_count")),
                completion_tokens=optional_count(obj.get("eval_count")),
            )
        return text

    def finish(self) -> Finished:
        if not self._done:
            raise BackendError("ollama: stream ended without its final done object", retryable=True)
        return Finished(usage=self._usage, finish_reason=self._finish_reason)


class OllamaBackend:
    """Streams chat completions from an Ollama server.

    * ``host``: from the argument or ``$OLLAMA_HOST`` (see :func:`ollama_base_url`).
    * ``CompletionRequest.schema`` is sent as ``format`` (Ollama's structured outputs);
      ``max_tokens``, ``temperature``, ``seed`` and ``num_ctx`` go in ``options``.
    * ``max_concurrency`` / ``parallel``: Ollama serves one request per model at a time unless
      started with ``OLLAMA_NUM_PARALLEL``; raise both to match such a server.

    Raises :class:`ConfigError` for a malformed host or out-of-range numbers. ``stream`` raises
    subclasses of :class:`BackendError` (see :mod:`aiplanner.backends._http`).
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        model: str = "smollm2:135m",
        max_concurrency: int = 1,
        parallel: bool = False,
        keep_alive: str = "5m",
        num_ctx: int = 2048,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        max_retries: int = 2,
        max_response_bytes: int = 65_536,
        backoff_base_s: float = 0.1,
    ) -> None:
        if num_ctx < 1:
            raise ConfigError(f"num_ctx must be positive, got {num_ctx}")
        self._base = ollama_base_url(host)
        self._model = model
        self._keep_alive = keep_alive
        self._num_ctx = num_ctx
        self._info = BackendInfo(
            name="ollama",
            model=model,
            max_concurrency=max_concurrency,
            parallel=parallel,
            structured=True,
        )
        self._http = HttpStreamer(
            name="ollama",
            base_url=self._base,
            headers={},
            settings=HttpSettings(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_retries=max_retries,
                max_response_bytes=max_response_bytes,
                backoff_base_s=backoff_base_s,
                backoff_max_s=max(2.0, backoff_base_s),
            ),
            max_concurrency=max_concurrency,
        )

    def __repr__(self) -> str:
        return f"OllamaBackend(host={self._base!r}, model={self._model!r})"

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def base_url(self) -> str:
        return self._base

    def _payload(self, request: CompletionRequest) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_predict": request.max_tokens,
            "temperature": request.temperature,
            "num_ctx": self._num_ctx,
        }
        if request.seed is not None:
            options["seed"] = request.seed
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "options": options,
            "keep_alive": self._keep_alive,
        }
        if request.schema is not None:
            payload["format"] = request.schema
        return payload

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream the completion (an async generator): TextDelta events, then one Finished.

        Raises subclasses of :class:`BackendError` while iterated: a stream that ends without
        its ``done`` object or is cut off mid-object raises, it never passes as a success.
        Close it (``aclose``) when abandoning it early, so the connection is released at once.
        """
        return self._http.stream(_CHAT_PATH, self._payload(request), request, _NdjsonDecoder)

    async def aclose(self) -> None:
        """Close the HTTP client. A later ``stream`` opens a new one."""
        await self._http.aclose()
