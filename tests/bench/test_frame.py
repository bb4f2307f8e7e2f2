"""The frame suite's child run of the demo: its options reach the demo, engine settings as text."""

from __future__ import annotations

import pytest

from aiplanner.bench.errors import BenchError
from aiplanner.bench.frame import demo_frames

pytest.importorskip("pygame")

_QUICK = {"backend": "scripted", "lockstep": True, "headless": True, "frames": 3, "fps": 0}


def test_the_demo_runs_in_a_child_and_reports_its_frames() -> None:
    ms, stats = demo_frames({**_QUICK, "engine_settings": ["chunk_tokens=64"]}, timeout_s=120)
    assert len(ms) == 3 and all(m >= 0.0 for m in ms)
    assert isinstance(stats, dict) and "tiers" in stats
    seconds = stats["run_seconds"]  # the loop's wall time holds every frame's time
    assert isinstance(seconds, float) and seconds >= sum(ms) / 1000.0


def test_engine_settings_are_read_in_the_child() -> None:
    # Read there with EngineSettings.parse: a bad one is the child's error, reported.
    with pytest.raises(BenchError, match="unknown engine setting 'bogus'"):
        demo_frames({**_QUICK, "engine_settings": ["bogus=1"]}, timeout_s=120)
