"""create_backend: each name builds its backend, and options that only the embedded backend reads
are refused for the others instead of being dropped."""

from __future__ import annotations

import anyio
import pytest

from aiplanner import ConfigError, OllamaBackend, OpenAIBackend, ScriptedBackend
from aiplanner.backends.batched import EngineSettings
from aiplanner.backends.factory import BACKEND_NAMES, create_backend


def _close(backend: object) -> None:
    aclose = getattr(backend, "aclose", None)
    if aclose is not None:
        anyio.run(aclose)


def test_heuristic_is_no_backend() -> None:
    assert create_backend("heuristic") is None


def test_scripted_and_http_backends_are_built_with_their_options() -> None:
    scripted = create_backend("scripted")
    assert isinstance(scripted, ScriptedBackend)
    openai = create_backend("openai", model="m1", base_url="http://127.0.0.1:9/v1")
    ollama = create_backend("ollama", model="m2", base_url="http://127.0.0.1:9")
    try:
        assert isinstance(openai, OpenAIBackend)
        assert openai.base_url == "http://127.0.0.1:9"
        assert openai.info.model == "m1"
        assert isinstance(ollama, OllamaBackend)
        assert ollama.info.model == "m2"
    finally:
        _close(openai)
        _close(ollama)


def test_threads_are_the_embedded_engines_and_other_backends_take_them() -> None:
    backend = create_backend("openai", base_url="http://127.0.0.1:9", n_threads=2)
    try:
        assert isinstance(backend, OpenAIBackend)
    finally:
        _close(backend)


def test_unknown_name_lists_the_names() -> None:
    with pytest.raises(ConfigError) as err:
        create_backend("vllm")
    assert all(name in str(err.value) for name in BACKEND_NAMES)


@pytest.mark.parametrize("name", [n for n in BACKEND_NAMES if n != "embedded"])
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"engine": "batched"}, ["engine"]),
        ({"engine": "serial"}, ["engine"]),
        ({"weights": "f16"}, ["weights"]),
        ({"engine_settings": EngineSettings()}, ["engine_settings"]),
        (
            {"engine": "batched", "weights": "q8_0", "engine_settings": EngineSettings()},
            ["engine", "weights", "engine_settings"],
        ),
    ],
)
def test_embedded_only_options_are_refused_elsewhere(
    name: str, options: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        create_backend(name, base_url="http://127.0.0.1:9", **options)  # type: ignore[arg-type]
    message = str(err.value)
    assert all(option in message for option in named)
    assert repr(name) in message
    assert "embedded" in message


def test_defaults_of_the_embedded_only_options_pass_for_other_backends() -> None:
    backend = create_backend("scripted", engine="auto", weights="auto", engine_settings=None)
    assert isinstance(backend, ScriptedBackend)
