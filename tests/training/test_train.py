"""``python -m aiplanner train --quick``: the loss falls, the adapter loads in llama.cpp and
changes the model's scores; the packing scores phrases exactly as separate evaluation does."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from aiplanner.cli import main
from aiplanner.training.train import REQUIRED

_MISSING = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        bool(_MISSING),
        reason=f"the train extra is not installed (missing {', '.join(_MISSING)}): "
        "pip install 'aiplanner[train,embedded]'",
    ),
]


@pytest.mark.timeout(300)
def test_quick_training_learns_and_writes_a_loadable_adapter(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--quick", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    curve = report["loss"]["curve"]
    assert len(curve) == report["settings"]["steps"] >= 2
    assert curve[-1] < curve[0]  # the same small batch every step: the loss must fall
    adapter = out / "adapter.gguf"
    assert report["adapter"]["sha256"] == hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert (
        report["data"]["labels_sha256"]
        == hashlib.sha256((out / "labels.jsonl").read_bytes()).hexdigest()
    )
    assert report["settings"]["seed"] == 0 and report["settings"]["quick"] is True
    # llama.cpp loaded the adapter (the after-pass ran with it) and it changed the scores
    before = report["before"]["first_example_scores"]
    after = report["after"]["first_example_scores"]
    assert len(before) == len(after) >= 2
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) > 1e-3
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sha256" in (out / "report.md").read_text()


def test_missing_labels_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["train", "--quick", "--out", str(tmp_path), "--labels", str(tmp_path / "nope")])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
