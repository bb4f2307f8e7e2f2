"""Suite ``tick``: what the plugin costs the game thread per ``esper.process``, by agent count.

The backend is a :class:`~aiplanner.backends.scripted.ScriptedBackend` answering at once through
the real bridge thread, whatever ``--backend`` says: this suite measures the game-thread work
(SnapshotSystem + PlanningSystem, and ActionExecutionSystem apart), not the model. Each
repetition is a fresh battle; its figure is the median (or p99) over its ticks after a warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import esper

from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.stats import Metric, metric, percentile
from aiplanner.bench.world import fresh_world, make_field, spawn_battle
from aiplanner.config import PlannerConfig
from aiplanner.plugin import PlannerPlugin

__all__ = ["measure_ticks", "run"]


def _timed(proc: esper.Processor, spent: dict[str, float], key: str) -> None:
    """Wrap ``proc.process`` so each call stores its duration (ms) under ``key``."""
    inner: Callable[[float], None] = proc.process

    def timed(dt: float) -> None:
        t0 = time.perf_counter()
        inner(dt)
        spent[key] = (time.perf_counter() - t0) * 1000.0

    proc.process = timed  # type: ignore[method-assign]


def measure_ticks(
    agents: int, ticks: int, seed: int = 1, warmup: int = 30
) -> tuple[list[float], list[float]]:
    """Per-tick ms of (snapshot + planning, execution) for ``ticks`` ticks after ``warmup``."""
    side = max(40, int((agents * 12) ** 0.5))  # keep density roughly constant
    with fresh_world(f"aiplanner-bench-tick-{agents}"):
        spawn_battle(agents, seed=seed, field=make_field(side, side, seed=seed))
        plugin = PlannerPlugin(PlannerConfig(max_batch_size=16), ScriptedBackend()).install()
        spent: dict[str, float] = {}
        assert plugin.snapshot_system and plugin.planning_system and plugin.execution_system
        _timed(plugin.snapshot_system, spent, "snapshot")
        _timed(plugin.planning_system, spent, "planning")
        _timed(plugin.execution_system, spent, "execution")
        plan_ms: list[float] = []
        exec_ms: list[float] = []
        try:
            for t in range(ticks + warmup):
                esper.process(1 / 30)
                if t >= warmup:
                    plan_ms.append(spent["snapshot"] + spent["planning"])
                    exec_ms.append(spent["execution"])
        finally:
            plugin.close()
    return plan_ms, exec_ms


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    counts = (25, 100) if opts.quick else (100, 500, 1000)
    ticks, warmup = (40, 10) if opts.quick else (300, 30)
    jobs = [(n, i) for n in counts for i in range(opts.repeat)]
    p50: dict[int, list[float]] = {n: [] for n in counts}
    p99: dict[int, list[float]] = {n: [] for n in counts}
    ex50: dict[int, list[float]] = {n: [] for n in counts}
    for n, i in progress.track(jobs, "tick cost", len(jobs)):
        plan_ms, exec_ms = measure_ticks(n, ticks, seed=opts.seed + i + 1, warmup=warmup)
        p50[n].append(statistics.median(plan_ms))
        p99[n].append(percentile(plan_ms, 99))
        ex50[n].append(statistics.median(exec_ms))
    metrics: dict[str, Metric] = {}
    for n in counts:
        metrics[f"snapshot+planning p50 ms, {n} agents"] = metric(p50[n], "ms")
        metrics[f"snapshot+planning p99 ms, {n} agents"] = metric(p99[n], "ms")
        metrics[f"execution p50 ms, {n} agents"] = metric(ex50[n], "ms")
    xs: list[float | str] = [float(n) for n in counts]
    plot = Plot(
        name="tick_cost",
        kind="line",
        title="Game-thread cost per tick against agent count",
        xlabel="agents",
        ylabel="ms per tick (median of repetitions)",
        series={
            "snapshot+planning p50": Series(x=xs, y=[statistics.median(p50[n]) for n in counts]),
            "snapshot+planning p99": Series(x=xs, y=[statistics.median(p99[n]) for n in counts]),
            "execution p50": Series(x=xs, y=[statistics.median(ex50[n]) for n in counts]),
        },
    )
    return {"metrics": metrics, "plots": [plot], "info": {"ticks": ticks}}
