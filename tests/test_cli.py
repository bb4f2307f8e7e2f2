from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from aiplanner.cli import main, sample_snapshot
from aiplanner.errors import ModelNotFoundError
from aiplanner.snapshot import WorldSnapshot


def test_plan_with_scripted_backend_prints_plan_and_timings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", "--backend", "scripted"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["tier"] == "llm"
    assert report["plan"] == report["candidates"][0]  # the scripted model picks candidate 0
    assert report["call_ms"] > 0 and report["completion_tokens"] > 0


def test_plan_reads_a_snapshot_file(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    snap = sample_snapshot()
    path = Path(str(tmp_path)) / "snap.json"
    path.write_bytes(snap.to_json())
    again = WorldSnapshot.from_dict(orjson.loads(path.read_bytes()))
    assert again.me == snap.me and again.enemies == snap.enemies and again.cover == snap.cover
    assert main(["plan", "--backend", "heuristic", "--snapshot", str(path)]) == 0
    assert orjson.loads(capsys.readouterr().out)["tier"] == "heuristic"


def test_plan_bad_snapshot_and_missing_model_are_clear(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.json"
    bad.write_text("{not json")
    assert main(["plan", "--backend", "heuristic", "--snapshot", str(bad)]) == 2
    assert "cannot read snapshot" in capsys.readouterr().err
    assert main(["plan", "--backend", "embedded", "--model", "/nonexistent/m.gguf"]) == 2
    assert "/nonexistent/m.gguf" in capsys.readouterr().err


def test_doctor_reports_each_backend(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # discard port: nothing listens
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OPENAI_BASE_URL not set" in out
    assert "ollama" in out and "http://127.0.0.1:9/api/tags" in out


def test_doctor_reports_the_adapter_and_a_broken_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import aiplanner.adapters as adapters

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    monkeypatch.setattr(adapters, "APPLIED_BY_DEFAULT", True)
    monkeypatch.delenv(adapters.ADAPTER_ENV_VAR, raising=False)
    try:
        shipped = adapters.default_adapter()
        from aiplanner.model_path import default_model_path

        default_model_path()
    except ModelNotFoundError:
        pytest.skip("the default model is not installed")
    assert main(["doctor"]) == 0
    row = next(r for r in capsys.readouterr().out.splitlines() if "embedded adapter" in r)
    assert "ok" in row and str(shipped) in row
    monkeypatch.setenv(adapters.ADAPTER_ENV_VAR, "none")
    main(["doctor"])
    assert "none ($AIPLANNER_ADAPTER=none)" in capsys.readouterr().out
    broken = tmp_path / "broken.gguf"
    broken.write_text("not a gguf")
    monkeypatch.setenv(adapters.ADAPTER_ENV_VAR, str(broken))
    main(["doctor"])
    row = next(r for r in capsys.readouterr().out.splitlines() if "embedded adapter" in r)
    assert " no " in row and "not a GGUF" in row
