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
    with pytest.raises(ModelNotFoundError, match="missing"):
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
