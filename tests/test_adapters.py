"""The shipped adapter: present, the one the training report names, and it loads in llama.cpp."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import aiplanner.adapters as adapters
from aiplanner.errors import ModelNotFoundError
from aiplanner.training.teacher import file_sha256

REPORT = Path(adapters.__file__).with_name("training-report.json")


def test_the_shipped_adapter_is_the_trained_one() -> None:
    path = adapters.default_adapter()
    report = json.loads(REPORT.read_text())
    assert file_sha256(path) == report["adapter"]["sha256"]
    assert path.stat().st_size == report["adapter"]["bytes"] <= 10_000_000
    text = Path(adapters.__file__).with_name("TRAINING.md").read_text()
    assert report["adapter"]["sha256"] in text and report["data"]["labels_sha256"] in text


def test_missing_or_broken_adapter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "DEFAULT_ADAPTER_NAME", "no-such-adapter.gguf")
    with pytest.raises(ModelNotFoundError, match="shipped with aiplanner not found"):
        adapters.default_adapter()
    monkeypatch.setattr(adapters, "DEFAULT_ADAPTER_NAME", "__init__.py")
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        adapters.default_adapter()


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_the_adapter_loads_and_changes_the_scores() -> None:
    from aiplanner.backends.base import Message
    from aiplanner.model_path import resolve_model_path
    from aiplanner.training.evaluate import LlamaScorer

    messages = (
        Message("system", "You are a soldier in a grid shooter game."),
        Message("user", "Health 10/100, nearly dead, ammo 6/6.\nEnemy 91: 7 steps, out of range."),
    )
    phrases = (" shoot enemy 91", " fall back, away from them")
    scores = {}
    for name, lora in (("base", None), ("adapter", adapters.default_adapter())):
        scorer = LlamaScorer(resolve_model_path(None), lora, n_threads=1)
        try:
            scores[name] = scorer.phrase_scores(messages, phrases)
        finally:
            scorer.close()
    assert max(abs(a - b) for a, b in zip(scores["base"], scores["adapter"], strict=True)) > 1e-3


# --- which adapter the embedded backend applies -------------------------------------------------


def _gguf(path: Path) -> Path:
    path.write_bytes(b"GGUF" + b"\0" * 28)
    return path


def test_default_means_the_shipped_adapter_for_the_default_model_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from aiplanner.model_path import default_model_path

    monkeypatch.delenv(adapters.ADAPTER_ENV_VAR, raising=False)
    try:
        default_model = default_model_path()
    except ModelNotFoundError:
        pytest.skip("the default model is not installed")
    monkeypatch.setattr(adapters, "APPLIED_BY_DEFAULT", True)
    assert adapters.resolve_adapter("default", default_model) == adapters.default_adapter()
    monkeypatch.setattr(adapters, "APPLIED_BY_DEFAULT", False)
    assert adapters.resolve_adapter("default", default_model) is None
    monkeypatch.setattr(adapters, "APPLIED_BY_DEFAULT", True)
    # An adapter trained for SmolLM2-135M would garble any other model: none by default.
    other = _gguf(tmp_path / "other-model.gguf")
    assert adapters.resolve_adapter("default", other) is None
    assert adapters.resolve_adapter(None, default_model) is None
    assert adapters.resolve_adapter("none", default_model) is None


def test_the_embedded_backend_applies_the_shipped_adapter_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No setting at all: the default model gets the shipped adapter (it beats the base model,
    TRAINING.md); None or ``$AIPLANNER_ADAPTER=none`` turns it off."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python")
    from aiplanner.backends.embedded import EmbeddedBackend
    from aiplanner.model_path import default_model_path

    monkeypatch.delenv(adapters.ADAPTER_ENV_VAR, raising=False)
    monkeypatch.delenv("AIPLANNER_MODEL", raising=False)
    try:
        default_model_path()
    except ModelNotFoundError:
        pytest.skip("the default model is not installed")
    paths = {}
    for name, kwargs in (("default", {}), ("off", {"adapter": None})):
        backend = EmbeddedBackend(n_threads=1, **kwargs)  # type: ignore[arg-type]
        try:
            paths[name] = backend.adapter_path
        finally:
            backend.close()
    monkeypatch.setenv(adapters.ADAPTER_ENV_VAR, "none")
    backend = EmbeddedBackend(n_threads=1)
    try:
        paths["env none"] = backend.adapter_path
    finally:
        backend.close()
    assert paths == {"default": adapters.default_adapter(), "off": None, "env none": None}


def test_an_explicit_or_environment_adapter_is_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = _gguf(tmp_path / "m.gguf")
    mine = _gguf(tmp_path / "mine.gguf")
    assert adapters.resolve_adapter(mine, model) == mine
    monkeypatch.setenv(adapters.ADAPTER_ENV_VAR, str(mine))
    assert adapters.resolve_adapter("default", model) == mine
    monkeypatch.setenv(adapters.ADAPTER_ENV_VAR, "none")
    assert adapters.resolve_adapter("default", model) is None
    with pytest.raises(ModelNotFoundError, match="not found"):
        adapters.resolve_adapter(tmp_path / "missing.gguf", model)
    text = tmp_path / "notes.txt"
    text.write_text("not an adapter")
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        adapters.resolve_adapter(text, model)


def _embedded_scores(engine: str, adapter: object) -> tuple[float, ...]:
    import anyio

    from aiplanner.backends.base import Message, ScoreRequest
    from aiplanner.backends.embedded import EmbeddedBackend

    backend = EmbeddedBackend(n_threads=1, engine=engine, adapter=adapter)  # type: ignore[arg-type]
    request = ScoreRequest(
        messages=(
            Message("system", "You are a soldier in a grid shooter game."),
            Message("user", "Me: nearly dead, in the open. Enemy 1: close, in range."),
        ),
        continuations=(" shoot enemy 1", " run to cover", " fall back"),
        lead="I should",
        timeout_s=60.0,
    )

    async def run() -> tuple[float, ...]:
        with anyio.fail_after(120):
            return (await backend.score(request)).logprobs

    try:
        return anyio.run(run)
    finally:
        backend.close()


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_both_embedded_engines_apply_the_adapter_alike() -> None:
    lora = adapters.default_adapter()
    base = _embedded_scores("serial", None)
    serial = _embedded_scores("serial", lora)
    batched = _embedded_scores("batched", lora)
    assert max(abs(a - b) for a, b in zip(base, serial, strict=True)) > 1e-3
    # The batched engine puts the adapter on its own context: the same scores as the serial one
    # (within the engines' agreement, one KV layout against another).
    assert max(abs(a - b) for a, b in zip(serial, batched, strict=True)) < 0.5


@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
@pytest.mark.parametrize("engine", ["serial", "batched"])
def test_a_broken_adapter_is_a_clear_error_at_load(engine: str, tmp_path: Path) -> None:
    from aiplanner.backends.embedded import EmbeddedBackend
    from aiplanner.errors import BackendError

    broken = _gguf(tmp_path / "broken.gguf")
    backend = EmbeddedBackend(n_threads=1, engine=engine, adapter=broken)  # type: ignore[arg-type]
    try:
        with pytest.raises(BackendError, match="adapter"):
            backend.load_sync()
    finally:
        backend.close()
