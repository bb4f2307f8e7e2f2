"""OpenAIBackend: the SSE wire format against a loopback fake, and a real ``llama_cpp.server``."""

from __future__ import annotations

from typing import Any

import anyio
import orjson
import pytest
from fakeservers import FakeServer, collect, openai_chat_chunks, sse_reply, status_reply

from aiplanner.backends.base import Backend, CompletionRequest, Message
from aiplanner.backends.openai import DEFAULT_OPENAI_BASE_URL, OpenAIBackend
from aiplanner.errors import BackendError, BackendHTTPError, ConfigError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"c": {"enum": [0, 1, 2]}},
    "required": ["c"],
    "additionalProperties": False,
}


def _request(**kw: Any) -> CompletionRequest:
    kw.setdefault(
        "messages",
        (
            Message("system", "You answer with JSON only."),
            Message("user", 'Pick a number c from 0, 1 or 2. Answer as {"c": <number>}.'),
        ),
    )
    kw.setdefault("timeout_s", 10.0)
    return CompletionRequest(**kw)


def _backend(url: str | None, **kw: Any) -> OpenAIBackend:
    kw.setdefault("backoff_base_s", 0.01)
    return OpenAIBackend(url, **kw)


def _run(backend: OpenAIBackend, request: CompletionRequest, texts: list[str] | None = None) -> Any:
    async def main() -> Any:
        try:
            return await collect(backend.stream(request), texts)
        finally:
            await backend.aclose()

    return anyio.run(main)


def test_streams_deltas_and_records_usage() -> None:
    reply = sse_reply(openai_chat_chunks(['{"c"', ":", " 2}"], usage=(31, 5)))
    with FakeServer(reply) as srv:
        texts: list[str] = []
        text, finished = _run(_backend(srv.url), _request(schema=SCHEMA), texts)
    assert texts == ['{"c"', ":", " 2}"]
    assert text == '{"c": 2}'
    assert finished.finish_reason == "stop"
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (31, 5)
    assert finished.usage.ttft_s is not None and finished.usage.total_s is not None
    assert 0 <= finished.usage.ttft_s <= finished.usage.total_s


def test_sends_a_streaming_chat_request_with_a_strict_json_schema() -> None:
    with FakeServer(sse_reply(openai_chat_chunks(["x"]))) as srv:
        backend = _backend(srv.url, api_key="k-123", model="smol")
        _run(backend, _request(schema=SCHEMA, max_tokens=9, temperature=0.25, seed=3))
    (req,) = srv.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer k-123"
    assert req.headers["content-type"] == "application/json"
    body = req.json()
    assert body["model"] == "smol"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 9
    assert body["temperature"] == 0.25
    assert body["seed"] == 3
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "plan", "schema": SCHEMA, "strict": True},
    }
    assert body["messages"][1]["role"] == "user"


def test_json_object_style_sends_the_schema_inline() -> None:
    with FakeServer(sse_reply(openai_chat_chunks(["x"]))) as srv:
        backend = _backend(srv.url, response_format_style="json_object")
        _run(backend, _request(schema=SCHEMA))
    assert srv.requests[0].json()["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_no_schema_no_seed_no_key_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeServer(sse_reply(openai_chat_chunks(["x"]))) as srv:
        _run(_backend(srv.url), _request(seed=None))
    (req,) = srv.requests
    assert "authorization" not in req.headers
    body = req.json()
    assert "response_format" not in body
    assert "seed" not in body


def test_read_only_schema_mappings_are_serialised() -> None:
    from types import MappingProxyType

    frozen = MappingProxyType({"type": "object", "properties": MappingProxyType({})})
    with FakeServer(sse_reply(openai_chat_chunks(["x"]))) as srv:
        _run(_backend(srv.url), _request(schema=frozen))
    schema = srv.requests[0].json()["response_format"]["json_schema"]["schema"]
    assert schema == {"type": "object", "properties": {}}


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_base_url_with_or_without_v1(suffix: str) -> None:
    with FakeServer(sse_reply(openai_chat_chunks(["ok"]))) as srv:
        backend = _backend(srv.url + suffix)
        assert backend.base_url == srv.url
        text, _ = _run(backend, _request())
    assert text == "ok"
    assert srv.requests[0].path == "/v1/chat/completions"


def test_base_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeServer(sse_reply(openai_chat_chunks(["env"]))) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "env-key")
        text, _ = _run(_backend(None), _request())
    assert text == "env"
    assert srv.requests[0].headers["authorization"] == "Bearer env-key"


def test_default_base_url_is_openais(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIBackend().base_url == DEFAULT_OPENAI_BASE_URL


def test_sse_framing_comments_crlf_and_multiline_data() -> None:
    chunk = orjson.dumps({"choices": [{"delta": {"content": "a"}}]})
    events: list[bytes] = [
        b": ping - 2026-11-02 10:00:00\r\n\r\n",
        b"event: message\r\ndata: " + chunk + b"\r\nid: 1\r\n\r\n",
        # one event split over two data lines: joined with "\n" it is still one JSON object
        b'data: {"choices": [{"delta":\ndata: {"content": "b"}, "finish_reason": "stop"}]}\n\n',
        b"data:[DONE]\n\n",  # no space after the colon is valid SSE
    ]
    with FakeServer(sse_reply(events, done=False)) as srv:
        texts: list[str] = []
        _, finished = _run(_backend(srv.url), _request(), texts)
    assert texts == ["a", "b"]
    assert finished.finish_reason == "stop"
    assert finished.usage.prompt_tokens is None  # this server sent no usage


def test_finish_reason_without_done_marker_is_accepted() -> None:
    reply = sse_reply(openai_chat_chunks(["a"], finish_reason="length", usage=None), done=False)
    with FakeServer(reply) as srv:
        _, finished = _run(_backend(srv.url), _request())
    assert finished.finish_reason == "length"


def test_stream_ending_before_done_raises_without_retry_after_text() -> None:
    reply = sse_reply(openai_chat_chunks(["a", "b"], finish_reason=None, usage=None), done=False)
    with FakeServer(reply) as srv:
        texts: list[str] = []
        with pytest.raises(BackendError, match=r"before \[DONE\]"):
            _run(_backend(srv.url), _request(), texts)
    assert texts == ["a", "b"]
    assert len(srv.requests) == 1


def test_error_event_in_the_stream_is_a_backend_error() -> None:
    events = [{"error": {"message": "context length exceeded", "type": "server_error"}}]
    with (
        FakeServer(sse_reply(events, done=False)) as srv,
        pytest.raises(BackendError, match="context length exceeded"),
    ):
        _run(_backend(srv.url), _request())


def test_malformed_event_is_a_backend_error() -> None:
    with (
        FakeServer(sse_reply([b"data: {not json\n\n"], done=False)) as srv,
        pytest.raises(BackendError, match="malformed"),
    ):
        _run(_backend(srv.url), _request())


def test_422_names_the_problem_and_is_not_retried() -> None:
    body = {"detail": "response_format: Input should be 'text' or 'json_object'"}
    with (
        FakeServer(status_reply(422, body)) as srv,
        pytest.raises(BackendHTTPError, match="json_object") as info,
    ):
        _run(_backend(srv.url), _request(schema=SCHEMA))
    assert info.value.status == 422
    assert len(srv.requests) == 1


def test_concurrency_is_bounded_by_max_concurrency() -> None:
    reply = sse_reply(openai_chat_chunks(["a", "b", "c"]), delay_s=0.05)
    with FakeServer(reply) as srv:
        backend = _backend(srv.url, max_concurrency=2)
        texts: list[str] = []

        async def one() -> None:
            text, _ = await collect(backend.stream(_request()))
            texts.append(text)

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
            await backend.aclose()

        anyio.run(main)
    assert texts == ["abc"] * 5
    assert len(srv.requests) == 5
    assert srv.max_active == 2


def test_is_a_backend_and_info_reflects_options() -> None:
    backend = OpenAIBackend("http://127.0.0.1:1", model="m", max_concurrency=8, parallel=False)
    assert isinstance(backend, Backend)
    assert backend.info.name == "openai"
    assert backend.info.model == "m"
    assert backend.info.max_concurrency == 8
    assert backend.info.parallel is False
    assert backend.info.structured is True


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://h", "http://", "http://h?x=1"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        OpenAIBackend(url)


def test_unknown_response_format_style_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        OpenAIBackend("http://127.0.0.1:1", response_format_style="grammar")  # type: ignore[arg-type]


@pytest.mark.server
def test_real_llama_cpp_server_streams_a_schema_valid_answer(llama_server: str) -> None:
    # llama_cpp.server only understands the inline json_object form of a schema.
    backend = OpenAIBackend(
        llama_server, response_format_style="json_object", read_timeout_s=30.0, max_retries=0
    )
    texts: list[str] = []
    text, finished = _run(backend, _request(schema=SCHEMA, max_tokens=16, timeout_s=60.0), texts)
    assert len(texts) > 1, f"expected a streamed answer, got {texts!r}"
    answer = orjson.loads(text)
    assert set(answer) == {"c"}
    assert answer["c"] in (0, 1, 2)
    usage = finished.usage
    assert usage.ttft_s is not None and usage.total_s is not None
    assert 0 < usage.ttft_s <= usage.total_s
