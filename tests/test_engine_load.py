"""The batched engine's load as ``stats()`` reports it: share of wall time in ``llama_decode``
and rows a second there, over a sliding window of samples."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aiplanner import EngineStats, PlannerPlugin, ScriptedBackend
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.engine_load import EngineLoad, EngineStatsSource
from aiplanner.errors import ConfigError


class _Engine:
    """Counters the test moves by hand, and a clock likewise."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stats: EngineStats | None = EngineStats()

    def clock(self) -> float:
        return self.now

    def read(self) -> EngineStats | None:
        return self.stats

    def run(self, wall_s: float, decode_s: float, rows: int) -> None:
        assert self.stats is not None
        self.now += wall_s
        self.stats = EngineStats(
            decode_s=self.stats.decode_s + decode_s, rows=self.stats.rows + rows
        )


def test_busy_and_rate_compare_the_newest_sample_with_the_oldest_in_the_window() -> None:
    e = _Engine()
    load = EngineLoad(e.read, window_s=10.0, clock=e.clock)
    load.sample()
    assert load.busy is None and load.rows_per_s is None  # one sample: no span yet
    e.run(wall_s=4.0, decode_s=3.0, rows=900)
    load.sample()
    assert load.busy == pytest.approx(0.75)
    assert load.rows_per_s == pytest.approx(300.0)
    e.run(wall_s=4.0, decode_s=1.0, rows=400)
    load.sample()
    assert load.busy == pytest.approx(4.0 / 8.0)
    assert load.rows_per_s == pytest.approx(1300.0 / 4.0)


def test_the_window_forgets_what_it_left_behind() -> None:
    e = _Engine()
    load = EngineLoad(e.read, window_s=10.0, clock=e.clock)
    load.sample()
    e.run(wall_s=10.0, decode_s=10.0, rows=3000)  # saturated
    load.sample()
    for _ in range(4):  # then idle, sampled every 5 s
        e.run(wall_s=5.0, decode_s=0.0, rows=0)
        load.sample()
    assert load.busy == 0.0  # the saturated stretch is out of the window
    assert load.rows_per_s is None  # no decode in the window: no rate
    e.run(wall_s=5.0, decode_s=2.5, rows=1000)
    load.sample()
    assert load.busy == pytest.approx(2.5 / 10.0)  # the last 10 s: 5 idle, 5 half busy
    assert load.rows_per_s == pytest.approx(400.0)


def test_samples_closer_than_the_minimum_span_give_no_figure() -> None:
    e = _Engine()
    load = EngineLoad(e.read, window_s=10.0, min_span_s=0.5, clock=e.clock)
    load.sample()
    e.run(wall_s=0.1, decode_s=0.1, rows=30)
    load.sample()
    assert load.busy is None and load.rows_per_s is None
    e.run(wall_s=0.4, decode_s=0.1, rows=30)
    load.sample()
    assert load.busy == pytest.approx(0.2 / 0.5)


def test_no_engine_or_a_new_one_starts_the_samples_afresh() -> None:
    e = _Engine()
    load = EngineLoad(e.read, clock=e.clock)
    load.sample()
    e.run(wall_s=2.0, decode_s=1.0, rows=300)
    load.sample()
    assert load.busy == pytest.approx(0.5)
    e.stats = None  # the serial engine, or a backend without one
    load.sample()
    assert load.busy is None
    e.stats = EngineStats(decode_s=5.0, rows=1000)
    load.sample()
    e.now += 1.0
    e.stats = EngineStats(decode_s=0.5, rows=100)  # counters went back: another engine
    load.sample()
    assert load.busy is None  # its first sample only
    e.run(wall_s=1.0, decode_s=1.0, rows=250)
    load.sample()
    assert load.busy == pytest.approx(1.0) and load.rows_per_s == pytest.approx(250.0)


def test_totals_are_the_engines_counters_as_last_sampled() -> None:
    e = _Engine()
    load = EngineLoad(e.read, window_s=10.0, clock=e.clock)
    assert load.totals is None  # nothing sampled yet
    e.run(wall_s=20.0, decode_s=12.0, rows=4000)
    load.sample()
    e.run(wall_s=20.0, decode_s=3.0, rows=900)  # not sampled yet: not counted
    assert load.totals == (12.0, 4000)
    load.sample()
    assert load.totals == (15.0, 4900)  # the whole run, though the window keeps 10 s
    e.stats = None
    load.sample()
    assert load.totals is None
    e.stats = EngineStats(decode_s=0.5, rows=100)  # another engine: its own counters
    load.sample()
    assert load.totals == (0.5, 100)


@pytest.mark.parametrize(("window_s", "min_span_s"), [(0.0, 0.5), (10.0, 0.0), (1.0, 2.0)])
def test_bad_windows_are_refused(window_s: float, min_span_s: float) -> None:
    with pytest.raises(ConfigError):
        EngineLoad(lambda: None, window_s=window_s, min_span_s=min_span_s)


class _CountingBackend(ScriptedBackend):
    """A scripted backend with an engine's counters: 0.1 s of decoding and 30 rows a read."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def engine_stats(self) -> EngineStats:
        self.calls += 1
        return EngineStats(decode_s=0.1 * self.calls, rows=30 * self.calls)


def test_the_plugin_reports_the_engine_load_of_a_backend_that_counts() -> None:
    backend = _CountingBackend()
    plugin = PlannerPlugin(backend=backend)
    first = plugin.stats()
    assert first["engine_busy"] is None and first["engine_rows_per_s"] is None
    time.sleep(0.55)  # the load needs two samples half a second apart (not a timing assertion)
    second = plugin.stats()
    assert second["engine_rows_per_s"] == pytest.approx(300.0)  # 30 rows in 0.1 s of decoding
    busy = second["engine_busy"]
    assert isinstance(busy, float) and 0.0 < busy <= 0.1 / 0.5
    assert first["engine_rows"] == 30 and first["engine_decode_s"] == pytest.approx(0.1)
    assert second["engine_rows"] == 60 and second["engine_decode_s"] == pytest.approx(0.2)


def test_other_backends_report_no_engine_load(tmp_path: Path) -> None:
    plugin = PlannerPlugin(backend=ScriptedBackend())
    for _ in range(2):
        stats = plugin.stats()
    assert stats["engine_busy"] is None and stats["engine_rows_per_s"] is None
    assert stats["engine_rows"] is None and stats["engine_decode_s"] is None
    assert PlannerPlugin().stats()["engine_busy"] is None  # rules only
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + bytes(64))
    batched = EmbeddedBackend(path, engine="batched")  # nothing loads until a call
    serial = EmbeddedBackend(path, engine="serial")
    assert isinstance(batched, EngineStatsSource) and batched.engine_stats() == EngineStats()
    assert serial.engine_stats() is None
