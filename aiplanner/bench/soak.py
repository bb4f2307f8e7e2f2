"""Suite ``soak``: the whole plugin running a battle against the chosen backend for a while.

``--agents`` agents fight (with health high enough that nobody dies, so the load stays the same)
for 60 s at 30 ticks per second (with ``--quick``: 20 s, or 5 s for a backend that answers at
once). Figures: plans applied per second, the share of them planned by the model (the rest fell
back to cache, rules or emergency), deadline misses per minute, the p99 and worst tick, and how
much the process's peak memory grew.
"""

from __future__ import annotations

import resource
import time

import esper

from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.stats import metric, percentile
from aiplanner.bench.world import fresh_world, spawn_battle
from aiplanner.components import Health
from aiplanner.config import PlannerConfig
from aiplanner.plugin import PlannerPlugin

__all__ = ["run"]

_TICK_S = 1 / 30
_IMMORTAL_HP = 1_000_000


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    duration = 60.0 if not opts.quick else 5.0 if opts.instant else 20.0
    ticks = int(duration / _TICK_S)
    backend = opts.make_backend()
    tick_ms: list[float] = []
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with fresh_world("aiplanner-bench-soak"):
        spawn_battle(opts.agents, seed=opts.seed)
        for _, health in esper.get_component(Health):
            health.hp = health.max_hp = _IMMORTAL_HP
        with PlannerPlugin(PlannerConfig(), backend) as plugin:  # installs; closes at the end
            started = time.perf_counter()
            for t in progress.track(range(ticks), "soak", ticks):
                t0 = time.perf_counter()
                esper.process(_TICK_S)
                tick_ms.append((time.perf_counter() - t0) * 1000.0)
                # Real-time pacing, as a game would: the bridge answers between ticks.
                time.sleep(max(0.0, started + (t + 1) * _TICK_S - time.perf_counter()))
            stats = plugin.stats()
            elapsed = time.perf_counter() - started
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024.0
    plans = int(stats["plans"])  # type: ignore[call-overload]
    tiers = stats["tiers"]
    assert isinstance(tiers, dict)
    by_model = int(tiers.get("llm", 0)) + int(tiers.get("llm_simple", 0))
    misses = int(stats["deadline_misses"])  # type: ignore[call-overload]
    metrics = {
        "plans per s": metric([plans / elapsed], "plans/s", "higher"),
        "model share": metric([by_model / plans if plans else 0.0], "share", "higher"),
        "deadline misses per min": metric([misses * 60.0 / elapsed], "misses/min"),
        "tick p99 ms": metric([percentile(tick_ms, 99)], "ms"),
        "tick max ms": metric([max(tick_ms)], "ms"),
        "peak memory growth MB": metric([rss_growth_mb], "MB"),
    }
    plot = Plot(
        name="soak_ticks",
        kind="line",
        title=f"Tick time over the soak ({opts.backend}, {opts.agents} agents)",
        xlabel="seconds",
        ylabel="ms per esper.process",
        series={"tick": Series(x=[i * _TICK_S for i in range(len(tick_ms))], y=tick_ms)},
    )
    info: dict[str, object] = {"seconds": round(elapsed, 2), "tiers": tiers, "plans": plans}
    return {"metrics": metrics, "plots": [plot], "info": info}
