"""OllamaBackend against a loopback server speaking Ollama's documented ``/api/chat`` NDJSON."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fakeservers import (
    FakeServer,
    collect,
    ndjson_reply,
    ollama_chat_objects,
    status_reply,
)

from aiplanner.backends.base import Backend, CompletionRequest, Message
from aiplanner.backends.ollama import OllamaBackend, ollama_base_url
from aiplanner.errors import BackendError, BackendHTTPError, ConfigError

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"c": {"enum": [0, 1, 2]}},
    "required": ["c"],
    "additionalProperties": False,
}


def _request(**kw: Any) -> CompletionRequest:
    kw.setdefault("messages", (Message("system", "You plan."), Message("user", "Pick c.")))
    kw.setdefault("timeout_s", 10.0)
    return CompletionRequest(**kw)


def _backend(url: str | None, **kw: Any) -> OllamaBackend:
    kw.setdefault("backoff_base_s", 0.01)
    return OllamaBackend(url, **kw)


def _run(backend: OllamaBackend, request: CompletionRequest, texts: list[str] | None = None) -> Any:
    async def main() -> Any:
        try:
            return await collect(backend.stream(request), texts)
        finally:
            await backend.aclose()

    return anyio.run(main)


def test_streams_deltas_then_usage_from_the_done_object() -> None:
    reply = ndjson_reply(ollama_chat_objects(['{"c"', ": ", "1}"], prompt_eval_count=26))
    with FakeServer(reply) as srv:
        texts: list[str] = []
        text, finished = _run(_backend(srv.url), _request(schema=SCHEMA), texts)
    assert texts == ['{"c"', ": ", "1}"]
    assert text == '{"c": 1}'
    assert finished.finish_reason == "stop"
    assert finished.usage.prompt_tokens == 26
    assert finished.usage.completion_tokens == 3
    assert finished.usage.ttft_s is not None and finished.usage.total_s is not None
    assert 0 <= finished.usage.ttft_s <= finished.usage.total_s
    assert len(srv.requests) == 1


def test_sends_the_documented_chat_request() -> None:
    with FakeServer(ndjson_reply(ollama_chat_objects(["x"]))) as srv:
        backend = _backend(srv.url, model="smollm2:135m", keep_alive="10m", num_ctx=1024)
        _run(backend, _request(schema=SCHEMA, max_tokens=12, temperature=0.5, seed=7))
    (req,) = srv.requests
    assert (req.method, req.path) == ("POST", "/api/chat")
    assert req.headers["content-type"] == "application/json"
    assert "authorization" not in req.headers
    body = req.json()
    assert body["model"] == "smollm2:135m"
    assert body["stream"] is True
    assert body["format"] == SCHEMA
    assert body["keep_alive"] == "10m"
    assert body["options"] == {"num_predict": 12, "temperature": 0.5, "seed": 7, "num_ctx": 1024}
    assert body["messages"] == [
        {"role": "system", "content": "You plan."},
        {"role": "user", "content": "Pick c."},
    ]


def test_no_schema_and_no_seed_are_left_out() -> None:
    with FakeServer(ndjson_reply(ollama_chat_objects(["x"]))) as srv:
        _run(_backend(srv.url), _request(seed=None))
    body = srv.requests[0].json()
    assert "format" not in body
    assert "seed" not in body["options"]


def test_done_reason_length_is_the_finish_reason() -> None:
    reply = ndjson_reply(ollama_chat_objects(["a"], done_reason="length"))
    with FakeServer(reply) as srv:
        _, finished = _run(_backend(srv.url), _request())
    assert finished.finish_reason == "length"


def test_stream_cut_off_mid_object_raises_after_the_text_it_had() -> None:
    objs = ollama_chat_objects(['{"c"', ": 1}"])
    with FakeServer(ndjson_reply(objs, cut_mid_object=True)) as srv:
        texts: list[str] = []
        with pytest.raises(BackendError, match="truncated") as info:
            _run(_backend(srv.url), _request(), texts)
    assert texts == ['{"c"', ": 1}"]  # the cut object was the final "done" one
    assert len(srv.requests) == 1  # text was seen: never retried
    assert info.value.__cause__ is not None


def test_cut_off_in_the_first_object_is_not_retried() -> None:
    objs = ollama_chat_objects(["hello"])
    with (
        FakeServer(ndjson_reply(objs[:1], cut_mid_object=True)) as srv,
        pytest.raises(BackendError),
    ):
        _run(_backend(srv.url, max_retries=2), _request())
    assert len(srv.requests) == 1  # a malformed line is the server's fault, not transient


def test_final_object_without_done_raises() -> None:
    objs = ollama_chat_objects(["a", "b"], done=False)
    with FakeServer(ndjson_reply(objs)) as srv:
        texts: list[str] = []
        with pytest.raises(BackendError, match="without its final done"):
            _run(_backend(srv.url), _request(), texts)
    assert texts == ["a", "b"]
    assert len(srv.requests) == 1


def test_empty_body_without_done_is_retried_then_raises() -> None:
    with (
        FakeServer(ndjson_reply([])) as srv,
        pytest.raises(BackendError, match="without its final done") as info,
    ):
        _run(_backend(srv.url, max_retries=1), _request())
    assert info.value.retryable
    assert len(srv.requests) == 2  # nothing was seen, so one retry


def test_error_object_in_the_stream_is_a_backend_error() -> None:
    objs = [*ollama_chat_objects(["a"], done=False), {"error": "model runner has crashed"}]
    with (
        FakeServer(ndjson_reply(objs)) as srv,
        pytest.raises(BackendError, match="model runner has crashed") as info,
    ):
        _run(_backend(srv.url), _request())
    assert not info.value.retryable


def test_http_error_carries_ollamas_message_and_is_not_retried() -> None:
    reply = status_reply(404, {"error": "model 'nope' not found, try pulling it first"})
    with (
        FakeServer(reply) as srv,
        pytest.raises(BackendHTTPError, match="not found") as info,
    ):
        _run(_backend(srv.url, model="nope"), _request())
    assert info.value.status == 404
    assert not info.value.retryable
    assert len(srv.requests) == 1


def test_a_line_that_is_not_json_is_a_backend_error() -> None:
    with (
        FakeServer(ndjson_reply([b"<html>proxy error</html>"])) as srv,
        pytest.raises(BackendError, match="malformed"),
    ):
        _run(_backend(srv.url), _request())


def test_a_json_line_that_is_not_an_object_is_a_backend_error() -> None:
    with (
        FakeServer(ndjson_reply([b"[1, 2]"])) as srv,
        pytest.raises(BackendError, match="not a JSON object"),
    ):
        _run(_backend(srv.url), _request())


def test_hostile_fields_are_ignored_not_trusted() -> None:
    objs: list[dict[str, Any]] = [
        {"message": {"content": 42}, "done": False},  # wrong type: no text
        {"message": "not a dict", "done": False},
        {"message": {"content": "ok"}, "done": "yes"},  # truthy but not true: not the end
        {"done": True, "prompt_eval_count": -5, "eval_count": True},
    ]
    with FakeServer(ndjson_reply(objs)) as srv:
        text, finished = _run(_backend(srv.url), _request())
    assert text == "ok"
    assert finished.usage.prompt_tokens is None
    assert finished.usage.completion_tokens is None


def test_lines_after_done_are_not_read() -> None:
    objs: list[dict[str, Any] | bytes] = [*ollama_chat_objects(["a"]), b"not json"]
    with FakeServer(ndjson_reply(objs)) as srv:
        text, _ = _run(_backend(srv.url), _request())
    assert text == "a"


def test_is_a_backend_with_serial_info() -> None:
    backend = OllamaBackend("127.0.0.1:1", model="m")
    assert isinstance(backend, Backend)
    assert backend.info.name == "ollama"
    assert backend.info.model == "m"
    assert backend.info.max_concurrency == 1
    assert backend.info.parallel is False
    assert "127.0.0.1:1" in repr(backend)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:9999", "http://127.0.0.1:9999"),
        ("http://example.internal", "http://example.internal:11434"),
        ("https://example.internal", "https://example.internal:443"),
        ("http://[::1]:7000/", "http://[::1]:7000"),
        ("http://gpu:11434/ollama", "http://gpu:11434/ollama"),
    ],
)
def test_host_forms_are_read_like_ollama_does(host: str, expected: str) -> None:
    assert ollama_base_url(host) == expected


def test_host_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert OllamaBackend().base_url == "http://127.0.0.1:11434"
    with FakeServer(ndjson_reply(ollama_chat_objects(["env"]))) as srv:
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{srv.port}")  # no scheme, as Ollama allows
        text, _ = _run(_backend(None), _request())
    assert text == "env"


@pytest.mark.parametrize("host", ["ftp://x", "http://", "http://h:notaport", "http://h/?q=1"])
def test_bad_hosts_are_config_errors(host: str) -> None:
    with pytest.raises(ConfigError):
        OllamaBackend(host)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_concurrency": 0},
        {"num_ctx": 0},
        {"max_retries": -1},
        {"max_response_bytes": 10},
        {"read_timeout_s": 0},
    ],
)
def test_bad_numbers_are_config_errors(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        OllamaBackend("127.0.0.1", **kw)


def test_usable_again_after_aclose_from_a_new_event_loop() -> None:
    with FakeServer(ndjson_reply(ollama_chat_objects(["again"]))) as srv:
        backend = _backend(srv.url)
        first, _ = _run(backend, _request())  # _run closes the backend at the end
        second, _ = _run(backend, _request())
    assert first == second == "again"
    assert len(srv.requests) == 2
