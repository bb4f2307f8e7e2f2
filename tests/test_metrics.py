from __future__ import annotations

from aiplanner.metrics import Histogram, Metrics


def test_histogram_percentiles_nearest_rank_and_bounded_window() -> None:
    h = Histogram(window=100)
    for v in range(1, 201):  # only the last 100 (101..200) are kept
        h.add(float(v))
    assert h.percentile(50) == 150.0
    assert h.percentile(99) == 199.0
    assert h.percentile(100) == 200.0
    assert h.count == 200
    assert Histogram().percentile(50) is None


def test_stats_reports_tiers_rates_and_tokens() -> None:
    now = [100.0]
    m = Metrics(clock=lambda: now[0], rate_window_s=5.0)
    m.record_plan("llm", 0.2)
    m.record_plan("heuristic", 0.0)
    now[0] = 104.0
    m.record_plan("llm", 0.4)
    m.record_tokens(100, 10, agents=2)
    m.record_invalid("bad_target")
    now[0] = 106.0  # the first two plans are now outside the 5 s window
    s = m.stats()
    assert s["tiers"] == {"llm": 2, "heuristic": 1}
    assert s["plans_per_s"] == 1 / 5.0
    assert s["in_tokens_per_plan"] == 50.0 and s["out_tokens_per_plan"] == 5.0
    assert s["invalid"] == {"bad_target": 1}
    assert s["latency_p50_ms"] == 200.0


def test_the_models_plans_have_their_own_latency() -> None:
    m = Metrics()
    for tier, latency in (("llm", 0.5), ("llm_simple", 1.5), ("heuristic", 4.0), ("cache", 0.0)):
        m.record_plan(tier, latency)
    s = m.stats()
    assert s["model_latency_p50_ms"] == 500.0 and s["model_latency_p99_ms"] == 1500.0
    assert s["latency_p99_ms"] == 4000.0  # every tier
