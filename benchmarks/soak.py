"""Soak: does a long battle keep memory and tick cost flat?

1000 agents (two teams, the dead replaced at their team's edge) plan through the real bridge
thread with the ScriptedBackend (0-20 ms latency, 2% seeded failures so the fallback and breaker
paths run too) for ``--ticks`` ticks. The plugin runs on a tick clock (1/60 s per tick, so
deadlines and batching waits are in game time) but the loop never sleeps out a frame: ticks run
back to back, so a run lasts the sum of its tick costs (``--ticks`` to fit the time you have).

Every window of ticks prints one row: the whole ``esper.process`` tick's p50/p99/max (ms), the
process's RSS and (with ``--tracemalloc``, which slows every tick) the bytes Python holds, live
objects, agents alive and plans applied so far. The first window is the warm-up (caches and
queues fill, the first deaths); the verdict compares the second window with the last: memory is
flat when RSS and live objects grew by at most 10%, tick cost when the p50 grew by at most 25%
(plus 0.1 ms of slack for a shared machine).

    python benchmarks/soak.py                       # 1000 agents, 100,000 ticks
    python benchmarks/soak.py --ticks 20000 --windows 10
    python benchmarks/soak.py --agents 200 --ticks 5000 --tracemalloc
    python benchmarks/soak.py --ticks 100000 --windows 200 --seconds 280   # what fits in 5 min

Single runs on a shared machine: write ``uptime``'s load beside every figure.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass

import esper

from aiplanner import (
    ROLES,
    Health,
    PlannerConfig,
    PlannerPlugin,
    ScriptedBackend,
    Team,
    queries,
)
from aiplanner.bench.world import fresh_world, make_field, spawn_agent

FPS = 60.0
MEMORY_GROWTH = 0.10
TICK_GROWTH = 0.25
TICK_SLACK_MS = 0.1


@dataclass(frozen=True, slots=True)
class Window:
    first_tick: int
    last_tick: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mib: float
    traced_mib: float | None
    objects: int
    alive: int
    plans: int


class Armies:
    """Two teams mixed over the whole map, kept at strength: whoever died since the last call is
    replaced by a new entity (new ids, so per-agent bookkeeping that is never freed would show)
    at a random open cell. Spread out from the start, the fight has no approach phase: its load
    is about the same from the first window to the last."""

    def __init__(self, n: int, seed: int) -> None:
        side = max(40, int((n * 6) ** 0.5))  # about the density of the tick-cost benchmark
        self.field = make_field(side * 4 // 3, side, seed=seed)
        esper.create_entity(self.field)
        self.size = (n - n // 2, n // 2)
        self.rng = random.Random(seed)
        self.reinforce()

    def reinforce(self) -> int:
        """Replace the dead; return how many were alive."""
        alive = [0, 0]
        for _, (side, health) in queries.components(Team, Health):  # see whole_tick.top_up
            if health.hp > 0:
                alive[side.team] += 1
        for team, want in enumerate(self.size):
            for _ in range(want - alive[team]):
                self._spawn(team)
        return sum(alive)

    def _spawn(self, team: int) -> None:
        while True:
            x, y = self.rng.randrange(self.field.width), self.rng.randrange(self.field.height)
            if (x, y) not in self.field.blocked:
                break
        spawn_agent(float(x), float(y), team, self.rng.choice(ROLES))


def rss_mib() -> float:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]


def soak(
    agents: int, ticks: int, windows: int, seed: int, traced: bool, seconds: float | None
) -> list[Window]:
    with fresh_world(f"soak-{agents}"):
        return _soak(agents, ticks, windows, seed, traced, seconds)


def _soak(
    agents: int, ticks: int, windows: int, seed: int, traced: bool, seconds: float | None
) -> list[Window]:
    """Rows as the windows end; stops early at the end of the window in which ``seconds`` of
    wall time ran out."""
    armies = Armies(agents, seed)
    tick = 0
    backend = ScriptedBackend(latency_s=(0.0, 0.02), failure_rate=0.02, seed=seed, keep_calls=0)
    plugin = PlannerPlugin(
        PlannerConfig(max_batch_size=16, seed=seed), backend, clock=lambda: tick / FPS
    ).install()
    if traced:
        tracemalloc.start()
    size = max(1, ticks // windows)
    stop_at = math.inf if seconds is None else time.monotonic() + seconds
    out: list[Window] = []
    spent: list[float] = []
    clock = time.perf_counter
    try:
        for tick in range(1, ticks + 1):
            alive = armies.reinforce()
            t0 = clock()
            esper.process(1 / FPS)
            spent.append((clock() - t0) * 1000.0)
            if len(spent) == size or tick == ticks:
                gc.collect()
                stats = plugin.stats()
                out.append(
                    Window(
                        tick - len(spent) + 1,
                        tick,
                        percentile(spent, 50),
                        percentile(spent, 99),
                        max(spent),
                        rss_mib(),
                        tracemalloc.get_traced_memory()[0] / 2**20 if traced else None,
                        len(gc.get_objects()),
                        alive,
                        int(stats["plans"]),  # type: ignore[call-overload]
                    )
                )
                print(_row(out[-1]), flush=True)
                spent = []
                if time.monotonic() >= stop_at:
                    break
    finally:
        if traced:
            tracemalloc.stop()
        plugin.close()
    return out


HEADER = (
    f"{'ticks':>15} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'RSS MiB':>8} "
    f"{'traced MiB':>10} {'objects':>9} {'alive':>6} {'plans':>9}"
)


def _row(w: Window) -> str:
    traced = "-" if w.traced_mib is None else f"{w.traced_mib:.1f}"
    return (
        f"{f'{w.first_tick}-{w.last_tick}':>15} {w.p50_ms:7.2f} {w.p99_ms:7.2f} {w.max_ms:7.1f} "
        f"{w.rss_mib:8.1f} {traced:>10} {w.objects:9d} {w.alive:6d} {w.plans:9d}"
    )


def verdict(rows: Sequence[Window]) -> list[str]:
    """Compare the first window after the warm-up (the first one) with the last one."""
    if len(rows) < 3:
        return ["too few windows for a verdict (need 3: warm-up, first, last)"]
    first, last = rows[1], rows[-1]
    grew_rss = last.rss_mib / first.rss_mib - 1 if first.rss_mib else 0.0
    grew_obj = last.objects / first.objects - 1
    memory_flat = grew_rss <= MEMORY_GROWTH and grew_obj <= MEMORY_GROWTH
    lines = [
        f"memory: RSS {first.rss_mib:.1f} -> {last.rss_mib:.1f} MiB ({grew_rss:+.1%}), "
        f"objects {first.objects} -> {last.objects} ({grew_obj:+.1%}): "
        + ("flat" if memory_flat else "GROWS")
    ]
    if first.traced_mib is not None and last.traced_mib is not None:
        lines[0] += f"; traced {first.traced_mib:.1f} -> {last.traced_mib:.1f} MiB"
    tick_flat = last.p50_ms <= first.p50_ms * (1 + TICK_GROWTH) + TICK_SLACK_MS
    p50s = [w.p50_ms for w in rows[1:]]
    lines.append(
        f"tick cost: p50 {first.p50_ms:.2f} -> {last.p50_ms:.2f} ms "
        f"(windows after the warm-up: {min(p50s):.2f}..{max(p50s):.2f}), "
        f"p99 {first.p99_ms:.2f} -> {last.p99_ms:.2f} ms: " + ("flat" if tick_flat else "GROWS")
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=100_000)
    parser.add_argument("--windows", type=int, default=10, help="rows; the first is the warm-up")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python's heap")
    parser.add_argument(
        "--seconds", type=float, help="stop at the end of the window in which this time ran out"
    )
    args = parser.parse_args()
    print(f"soak: {args.agents} agents, {args.ticks} ticks, load {os.getloadavg()}")
    print(HEADER)
    started = time.monotonic()
    rows = soak(args.agents, args.ticks, args.windows, args.seed, args.tracemalloc, args.seconds)
    print(f"wall {time.monotonic() - started:.0f} s, load {os.getloadavg()}")
    for line in verdict(rows):
        print(line)


if __name__ == "__main__":
    main()
