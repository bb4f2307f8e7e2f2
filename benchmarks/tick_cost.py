"""Per-tick cost of the plugin's processors at 100 / 1000 / 5000 agents.

Run: python benchmarks/tick_cost.py [--ticks 300] [--agents 100 1000 5000] [--caps 0 16]
         [--tick-budget-ms 0 2]   (0: no time budget; default: the config's default)
         [--gc freeze default idle]  (freeze: gc.freeze() once the world is built, the default;
                                   idle: aiplanner.FrameCollector, collections between frames)
         [--switch-interval 0.005 0.001]   (sys.setswitchinterval seconds; default: as it is)
         [--fps 60]               (pacing: sleep out each 1/fps frame; 0: ticks back to back)
         [--between-ms 0 8]       (planning in each frame's idle time, at most this many ms:
                                   PlannerPlugin.between_frames; 0: off, the default)

The backend is the ScriptedBackend (instant answers through the real bridge thread), so what is
measured is the game-thread cost: SnapshotSystem + PlanningSystem (+ ActionExecutionSystem shown
apart). Figures are milliseconds per tick, median and p99 over the run, after a warm-up; wall
clock, and beside it the game thread's CPU time (``time.thread_time``: on a shared machine the
difference is time spent waiting for a core or for the GIL).

Ticks are paced at 60 fps by default, as a game's are: the bridge thread's Python (prompts,
parsing) then runs in the frame's idle time, as the plugin arranges it (see
:mod:`aiplanner.bridge`). ``--fps 0`` runs ticks back to back, a game that never idles: the
bridge's work then has to land inside ticks.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time

import esper

from aiplanner import (
    ActionExecutionSystem,
    FrameCollector,
    PlannerConfig,
    PlannerPlugin,
    PlanningSystem,
    ScriptedBackend,
    SnapshotSystem,
)
from aiplanner.bench.world import make_field, spawn_battle


def _time_process(proc: object, spent: dict[str, float], cpu: dict[str, float]) -> None:
    """Wrap ``proc.process`` so each call stores its duration (ms) in ``spent``, and the game
    thread's CPU time for it in ``cpu``."""
    inner = proc.process  # type: ignore[attr-defined]
    name = type(proc).__name__

    def timed(dt: float) -> None:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        inner(dt)
        spent[name] = (time.perf_counter() - t0) * 1000.0
        cpu[name] = (time.thread_time() - c0) * 1000.0

    proc.process = timed  # type: ignore[attr-defined]


def measure(
    n: int,
    ticks: int,
    cap: int | None,
    budget_ms: float | None = None,
    gc_mode: str = "freeze",
    fps: float = 60.0,
    between_ms: float = 0.0,
) -> dict[str, float | str]:
    esper.switch_world(f"bench-{n}")
    side = max(40, int((n * 12) ** 0.5))  # keep density roughly constant
    spawn_battle(n, seed=1, field=make_field(side, side, seed=1))
    cfg = PlannerConfig(max_batch_size=16, max_plans_per_tick=cap)
    if budget_ms is not None:
        cfg = dataclasses.replace(cfg, tick_budget_ms=budget_ms or None)
    plugin = PlannerPlugin(cfg, ScriptedBackend()).install()
    spent: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for proc in (plugin.snapshot_system, plugin.planning_system, plugin.execution_system):
        _time_process(proc, spent, cpu)
    plan_ms: list[float] = []
    plan_cpu: list[float] = []
    exec_ms: list[float] = []
    idle_ms: list[float] = []  # planning between frames
    pacer = FrameCollector() if gc_mode == "idle" else None
    if gc_mode == "freeze":  # as a game does once a level is loaded
        gc.collect()
        gc.freeze()
    elif pacer is not None:
        pacer.start()
    frame = 1.0 / fps if fps > 0 else 0.0
    next_frame = time.perf_counter()
    try:
        for t in range(ticks + 30):
            spent.clear()
            esper.process(1 / 30)
            if between_ms > 0:  # the frame's idle time, never past the frame's end less 2 ms
                p0 = time.perf_counter()
                left_ms = (next_frame + frame - p0) * 1000.0 - 2.0 if frame else between_ms
                plugin.between_frames(min(between_ms, left_ms))
                if t >= 30:
                    idle_ms.append((time.perf_counter() - p0) * 1000.0)
            if pacer is not None:
                pacer.between_frames()
            if frame:  # sleep out the frame; a late frame starts the next one at once
                next_frame = max(next_frame + frame, time.perf_counter())
                time.sleep(max(0.0, next_frame - time.perf_counter()))
            if t < 30:
                continue
            plan_ms.append(spent[SnapshotSystem.__name__] + spent[PlanningSystem.__name__])
            plan_cpu.append(cpu[SnapshotSystem.__name__] + cpu[PlanningSystem.__name__])
            exec_ms.append(spent[ActionExecutionSystem.__name__])
        stats = plugin.stats()
    finally:
        if pacer is not None:
            pacer.stop()
        gc.unfreeze()
        plugin.close()
        esper.switch_world("default")
        esper.delete_world(f"bench-{n}")
    plan_ms.sort()
    plan_cpu.sort()
    exec_ms.sort()
    idle_ms.sort()
    p99 = int(0.99 * (len(plan_ms) - 1))
    between: dict[str, float | str] = {"between frames": "off"}
    if idle_ms:
        between = {
            "between frames p50 ms": statistics.median(idle_ms),
            "between frames p99 ms": idle_ms[int(0.99 * (len(idle_ms) - 1))],
        }
    return {
        "agents": n,
        "max_plans_per_tick": str(cap),
        "tick_budget_ms": str(cfg.tick_budget_ms),
        "gc": gc_mode,
        "fps": str(fps or "back to back"),
        **between,
        "snapshot+planning p50 ms": statistics.median(plan_ms),
        "snapshot+planning p99 ms": plan_ms[p99],
        "snapshot+planning CPU p50 ms": statistics.median(plan_cpu),
        "snapshot+planning CPU p99 ms": plan_cpu[p99],
        "execution p50 ms": statistics.median(exec_ms),
        "plans applied": float(stats["plans"]),  # type: ignore[arg-type]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--agents", type=int, nargs="*", default=[100, 1000, 5000])
    parser.add_argument(
        "--caps", type=int, nargs="*", default=[0, 16], help="max_plans_per_tick (0: no limit)"
    )
    parser.add_argument("--tick-budget-ms", type=float, nargs="*", default=[None])
    parser.add_argument(
        "--gc", nargs="*", default=["freeze"], choices=["freeze", "default", "idle"]
    )
    parser.add_argument("--switch-interval", type=float, nargs="*", default=[None])
    parser.add_argument("--fps", type=float, default=60.0, help="pacing (0: back to back)")
    parser.add_argument(
        "--between-ms",
        type=float,
        nargs="*",
        default=[0.0],
        help="planning in each frame's idle time (PlannerPlugin.between_frames); 0: off",
    )
    args = parser.parse_args()
    default_interval = sys.getswitchinterval()
    for n in args.agents:
        for cap in args.caps:
            for budget in args.tick_budget_ms:
                for gc_mode in args.gc:
                    for interval in args.switch_interval:
                        for between in args.between_ms:
                            sys.setswitchinterval(interval or default_interval)
                            try:
                                r = measure(
                                    n, args.ticks, cap or None, budget, gc_mode, args.fps, between
                                )
                            finally:
                                sys.setswitchinterval(default_interval)
                            r["switch_interval_ms"] = (interval or default_interval) * 1000
                            print(
                                "  ".join(
                                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in r.items()
                                ),
                                flush=True,
                            )


if __name__ == "__main__":
    main()
