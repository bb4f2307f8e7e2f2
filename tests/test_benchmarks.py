"""The benchmark scripts stay runnable: each one imports and parses its options (``--help``), and a
bad setting is a usage error reported before any model loads.

The benchmarks themselves are measurements, run by hand (README, *Benchmarks and tuning*); what is
checked here is that a refactor of the package has not broken one of them without a word.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_every_benchmark_is_found() -> None:
    names = {s.stem for s in SCRIPTS}
    assert {"engine", "demo_share", "whole_tick", "tick_cost", "decisions", "soak"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.stem)
def test_benchmark_parses_its_options(script: Path) -> None:
    result = _run(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_engine_benchmark_refuses_a_bad_setting_before_loading() -> None:
    result = _run(ROOT / "benchmarks" / "engine.py", "--engine-setting", "bogus=1")
    assert result.returncode == 2
    assert "bogus" in result.stderr
    assert "prefill" not in result.stdout  # nothing was measured


def test_demo_share_refuses_a_bad_setting_before_running() -> None:
    result = _run(ROOT / "benchmarks" / "demo_share.py", "--engine-settings", "chunk_tokens=lots")
    assert result.returncode == 2
    assert "chunk_tokens" in result.stderr
    assert "frames=" not in result.stdout  # no demo ran
