"""Per-tick cost of SnapshotSystem: the O(n) index rebuild plus snapshots for 10% of the agents.

Agents wander a map at a fixed density (so each sees about the same number of others whatever
the population), and a different 10% of them ask for a snapshot each tick, as agents needing a
plan would. Prints median, 95th-percentile and best milliseconds per tick for each population.

    python benchmarks/snapshot_cost.py [--ticks 200] [--sizes 100 1000 5000]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import esper

from aiplanner.components import Agent, Ammo, Battlefield, Health, Perception, Position, Team
from aiplanner.snapshot_system import SnapshotSystem

DENSITY = 0.05  # agents per map cell: about 10 others within the default perception radius of 8


def build_world(n: int, rng: random.Random) -> tuple[list[int], int]:
    side = max(16, int(math.sqrt(n / DENSITY)))
    cells = [(x, y) for x in range(side) for y in range(side)]
    blocked = frozenset(rng.sample(cells, len(cells) // 20))
    free = [c for c in cells if c not in blocked]
    cover = tuple(rng.sample(free, max(1, len(free) // 100)))
    esper.create_entity(Battlefield(side, side, blocked, cover, (side // 2, side // 2)))
    agents = []
    for i in range(n):
        x, y = rng.choice(free)
        agents.append(
            esper.create_entity(
                Agent("tactical"),
                Position(float(x), float(y)),
                Team(i % 2),
                Health(100),
                Ammo(6),
                Perception(8.0),
            )
        )
    return agents, side


def measure(n: int, ticks: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    world = f"bench-snapshot-{n}"
    esper.switch_world(world)
    try:
        agents, side = build_world(n, rng)
        positions = [esper.component_for_entity(e, Position) for e in agents]
        system = SnapshotSystem()
        share = max(1, n // 10)
        process_ns: list[int] = []
        snapshot_ns: list[int] = []
        seen = 0
        for tick in range(ticks):
            for p in positions:  # everyone drifts a little, as if walking
                p.x = min(side - 1.0, max(0.0, p.x + rng.uniform(-0.05, 0.05)))
                p.y = min(side - 1.0, max(0.0, p.y + rng.uniform(-0.05, 0.05)))
            start = time.perf_counter_ns()
            system.process(1 / 60)
            mid = time.perf_counter_ns()
            first = (tick * share) % n
            for i in range(first, first + share):
                snap = system.snapshot(agents[i % n])
                if snap is not None:
                    seen += len(snap.enemies) + len(snap.allies)
            end = time.perf_counter_ns()
            process_ns.append(mid - start)
            snapshot_ns.append(end - mid)
        total = [a + b for a, b in zip(process_ns, snapshot_ns, strict=True)]
        return {
            "agents": n,
            "map": side,
            "process_ms": statistics.median(process_ns) / 1e6,
            "snapshots_ms": statistics.median(snapshot_ns) / 1e6,
            "total_ms": statistics.median(total) / 1e6,
            "total_p95_ms": statistics.quantiles(total, n=20)[-1] / 1e6,
            "total_best_ms": min(total) / 1e6,
            "per_snapshot_us": statistics.median(snapshot_ns) / share / 1e3,
            "units_seen": seen / (ticks * share),
        }
    finally:
        esper.switch_world("default")
        esper.delete_world(world)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    args = parser.parse_args()
    print(
        f"{'agents':>7} {'map':>9} {'process ms':>11} {'10% snaps ms':>13} {'total ms':>9} "
        f"{'p95 ms':>7} {'best ms':>8} {'us/snap':>8} {'units seen':>11}"
    )
    for n in args.sizes:
        r = measure(n, args.ticks)
        print(
            f"{r['agents']:>7.0f} {r['map']:>4.0f}x{r['map']:<4.0f} {r['process_ms']:>11.2f} "
            f"{r['snapshots_ms']:>13.2f} {r['total_ms']:>9.2f} {r['total_p95_ms']:>7.2f} "
            f"{r['total_best_ms']:>8.2f} "
            f"{r['per_snapshot_us']:>8.1f} {r['units_seen']:>11.1f}"
        )
    print(
        f"median over {args.ticks} ticks each (best: the quickest tick, a floor on a busy "
        "machine); 10% of agents ask for a snapshot every tick"
    )


if __name__ == "__main__":
    main()
