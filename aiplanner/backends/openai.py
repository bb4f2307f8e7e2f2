"""OpenAIBackend: any server speaking OpenAI's streaming ``/v1/chat/completions`` (Server-Sent
Events): llama.cpp's ``llama-server``, ``python -m llama_cpp.server``, vLLM, OpenAI itself.

Timeouts, retries and fault handling are those of :mod:`aiplanner.backends._http`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any, Literal

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

__all__ = ["DEFAULT_OPENAI_BASE_URL", "OpenAIBackend"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com"
_BASE_URL_ENV = "OPENAI_BASE_URL"
_API_KEY_ENV = "OPENAI_API_KEY"
_CHAT_PATH = "/v1/chat/completions"

ResponseFormatStyle = Literal["json_schema", "json_object"]


class _SseDecoder:
    """Server-Sent Events carrying OpenAI ``chat.completion.chunk`` objects.

    An event's ``data:`` lines are joined and dispatched at the blank line that ends it (an
    unterminated event at the end of the body is dropped, as the SSE spec says). ``[DONE]`` ends
    the stream; a chunk with ``usage`` (``stream_options.include_usage``) records token counts.
    """

    __slots__ = ("_data", "_done", "_finish_reason", "_usage")

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._done = False
        self._finish_reason: str | None = None
        self._usage = Usage()

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, line: bytes) -> str:
        if not line:
            if not self._data:
                return ""
            data = b"\n".join(self._data)
            self._data.clear()
            return self._dispatch(data)
        if line.startswith(b":"):
            return ""  # comment: servers send these as keep-alive pings
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value.removeprefix(b" "))
        return ""

    def _dispatch(self, data: bytes) -> str:
        if data.strip() == b"[DONE]":
            self._done = True
            return ""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BackendError(f"openai: malformed stream event ({exc})") from exc
        if not isinstance(chunk, dict):
            raise BackendError("openai: stream event is not a JSON object")
        if "error" in chunk:
            raise BackendError(f"openai: error in stream: {error_detail(data)}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = Usage(
                prompt_tokens=optional_count(usage.get("prompt_tokens")),
                completion_tokens=optional_count(usage.get("completion_tokens")),
            )
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self._finish_reason = reason[:32]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str):
                return content
        return ""

    def finish(self) -> Finished:
        # A server that closes right after the finish_reason chunk without "[DONE]" did send the
        # whole answer; one that stops before either did not.
        if not self._done and self._finish_reason is None:
            raise BackendError("openai: stream ended before [DONE]", retryable=True)
        return Finished(usage=self._usage, finish_reason=self._finish_reason or "stop")


def _openai_root(url: str) -> str:
    root = check_base_url(url, "OpenAI base")
    # Accept both "http://host:port" and the SDK-style "http://host:port/v1".
    return root.removesuffix("/v1")


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible server.

    * ``base_url``: from the argument or ``$OPENAI_BASE_URL``, with or without ``/v1``; defaults
      to OpenAI's own API like the official SDK.
    * ``api_key``: from the argument or ``$OPENAI_API_KEY``; sent as a Bearer token and never
      logged, shown in ``repr`` or put in an error message.
    * ``response_format_style``: how ``CompletionRequest.schema`` is sent. ``"json_schema"``
      (OpenAI, llama-server, vLLM) sends ``{"type": "json_schema", "json_schema": {...}}``;
      ``"json_object"`` sends ``{"type": "json_object", "schema": ...}``, the only form that
      llama-cpp-python's ``llama_cpp.server`` accepts.
    * ``parallel``: whether the server batches concurrent requests (llama-server ``-np N``: yes;
      ``llama_cpp.server``: no, it serialises them).

    Raises :class:`ConfigError` for a malformed URL or out-of-range numbers. ``stream`` raises
    subclasses of :class:`BackendError` (see :mod:`aiplanner.backends._http`).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        model: str = "default",
        max_concurrency: int = 4,
        parallel: bool = True,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 10.0,
        max_retries: int = 2,
        max_response_bytes: int = 65_536,
        response_format_style: ResponseFormatStyle = "json_schema",
        backoff_base_s: float = 0.1,
    ) -> None:
        if response_format_style not in ("json_schema", "json_object"):
            raise ConfigError(
                f"response_format_style must be 'json_schema' or 'json_object', "
                f"got {response_format_style!r}"
            )
        chosen = base_url or os.environ.get(_BASE_URL_ENV) or DEFAULT_OPENAI_BASE_URL
        self._root = _openai_root(chosen)
        key = api_key if api_key is not None else os.environ.get(_API_KEY_ENV)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._model = model
        self._style: ResponseFormatStyle = response_format_style
        self._info = BackendInfo(
            name="openai",
            model=model,
            max_concurrency=max_concurrency,
            parallel=parallel,
            structured=True,
        )
        self._http = HttpStreamer(
            name="openai",
            base_url=self._root,
            headers=headers,
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
        return f"OpenAIBackend(base_url={self._root!r}, model={self._model!r})"

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def base_url(self) -> str:
        """The server root, without ``/v1``."""
        return self._root

    def _payload(self, request: CompletionRequest) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if request.schema is not None:
            if self._style == "json_schema":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "plan", "schema": request.schema, "strict": True},
                }
            else:
                payload["response_format"] = {"type": "json_object", "schema": request.schema}
        return payload

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamEvent, None]:
        """Stream the completion (an async generator): TextDelta events, then one Finished.

        Raises subclasses of :class:`BackendError` while iterated; :class:`ConfigError` for a
        schema that is not JSON serialisable. Close it (``aclose``, or ``contextlib.aclosing``)
        when abandoning it early, so that the connection is released at once.
        """
        return self._http.stream(_CHAT_PATH, self._payload(request), request, _SseDecoder)

    async def aclose(self) -> None:
        """Close the HTTP client. A later ``stream`` opens a new one."""
        await self._http.aclose()
