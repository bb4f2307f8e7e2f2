"""Per-tick cost of SnapshotSystem: the O(n) index rebuild plus snapshots for 10% of the agents.

Agents wander a map at a fixed density (so each sees about the same number of others whatever
the population), and a different 10% of them ask for a snapshot each tick, as agents needing a
plan would. Prints median, 95th-percentile and best milliseconds per tick for each population.

``--adapter`` measures what reading the components through a ComponentMap costs: the system as
shipped (aiplanner's own components through DEFAULT_COMPONENTS) against a copy whose per-tick
loop and unit scan read those components' attributes directly, as the system did before the map
existed. Both run on the same world, alternately, ``--repeat`` times; the cost is the median
per-tick difference over the direct time, in the thread's CPU time (a shared machine's load
inflates wall time far more than the difference measured).

    python benchmarks/snapshot_cost.py [--ticks 200] [--sizes 100 1000 5000]
    python benchmarks/snapshot_cost.py --adapter [--ticks 200] [--sizes 100 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import esper

from aiplanner import (
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    Position,
    SeenUnit,
    SnapshotSystem,
    Team,
)
from aiplanner.bench.world import fresh_world
from aiplanner.snapshot import new_seen_unit
from aiplanner.spatial import UniformGrid, to_cell

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


class DirectSnapshotSystem(SnapshotSystem):
    """The reference for ``--adapter``: SnapshotSystem's two per-agent loops (reading the agents
    each tick, ``_read_agents``, and the scan for seen units, ``_nearest``) reading aiplanner's
    components' attributes directly instead of through the ComponentMap's getters. Rows are kept
    in the map's order (Agent, Position, Team, Health), so the rest of the system is shared. The
    two loops are copies of the shipped ones: when those change, change these with them
    (``--adapter`` first checks that both give the same snapshots)."""

    def _read_agents(self, by_team: dict[Any, tuple[list[int], list[float], list[float]]]) -> None:
        agents = self._agents
        placed = self._team_of
        isfinite = math.isfinite
        for ent, row in esper.get_components(Agent, Position, Team, Health):
            _, pos, team_c, health = row
            x = pos.x
            y = pos.y
            if health.hp > 0 and isfinite(x) and isfinite(y):
                team = team_c.team
                columns = by_team.get(team)
                if columns is None:
                    columns = by_team[team] = ([], [], [])
                columns[0].append(ent)
                columns[1].append(x)
                columns[2].append(y)
                agents[ent] = row
                placed[ent] = team

    def _nearest(
        self, grids: Sequence[UniformGrid], entity: int, x: float, y: float, radius: float
    ) -> tuple[SeenUnit, ...]:
        cap = self.max_units
        index = self._index
        assert index is not None
        agents = self._agents
        exists = esper.entity_exists
        in_cover = index.in_cover
        placed = self._placed
        make = new_seen_unit
        area = max(1, index.field.width * index.field.height)
        crowd = sum(len(g) for g in grids) * math.pi * radius * radius / area
        reach = radius * 0.5 if crowd > 2 * cap else radius
        while True:
            found: list[SeenUnit] = []
            last = 0.0
            for dist, other, ox, oy in self._near(grids, x, y, reach):
                if other == entity:
                    continue
                health = agents[other][3]
                other_hp = health.hp
                if other_hp <= 0 or not exists(other):
                    continue
                where = placed.get(other)
                if where is None:
                    cx, cy = to_cell(ox, oy)
                    where = placed[other] = (cx, cy, in_cover(ox, oy))
                found.append(
                    make(
                        other, where[0], where[1], other_hp, where[2], round(dist, 1), health.max_hp
                    )
                )
                last = dist
                if len(found) >= cap:
                    break
            if reach >= radius or (len(found) >= cap and last < reach):
                return tuple(found)
            reach = radius


def _drifter(agents: list[int], side: int, rng: random.Random) -> Callable[[], None]:
    """A step that moves every agent a little, as if walking (kept on the map)."""
    positions = [esper.component_for_entity(e, Position) for e in agents]
    top = side - 1.0

    def drift() -> None:
        for p in positions:
            p.x = min(top, max(0.0, p.x + rng.uniform(-0.05, 0.05)))
            p.y = min(top, max(0.0, p.y + rng.uniform(-0.05, 0.05)))

    return drift


def measure(
    n: int, ticks: int, seed: int = 0, system_type: type[SnapshotSystem] = SnapshotSystem
) -> dict[str, float]:
    rng = random.Random(seed)
    with fresh_world(f"bench-snapshot-{n}"):
        agents, side = build_world(n, rng)
        drift = _drifter(agents, side, rng)
        system = system_type()
        share = max(1, n // 10)
        process_ns: list[int] = []
        snapshot_ns: list[int] = []
        cpu_ns: list[int] = []
        seen = 0
        for tick in range(ticks):
            drift()
            cpu = time.thread_time_ns()
            start = time.perf_counter_ns()
            system.process(1 / 60)
            mid = time.perf_counter_ns()
            first = (tick * share) % n
            for i in range(first, first + share):
                snap = system.snapshot(agents[i % n])
                if snap is not None:
                    seen += len(snap.enemies) + len(snap.allies)
            end = time.perf_counter_ns()
            cpu_ns.append(time.thread_time_ns() - cpu)
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
            "cpu_ms": statistics.median(cpu_ns) / 1e6,
            "cpu_best_ms": min(cpu_ns) / 1e6,
            "per_snapshot_us": statistics.median(snapshot_ns) / share / 1e3,
            "units_seen": seen / (ticks * share),
        }


def check_reference(n: int, ticks: int = 5, seed: int = 0) -> None:
    """Raise SystemExit unless the reference and the shipped system give equal snapshots of
    every agent over ``ticks`` ticks of one world (a stale copy would measure something else)."""
    rng = random.Random(seed)
    with fresh_world(f"bench-snapshot-check-{n}"):
        agents, side = build_world(n, rng)
        drift = _drifter(agents, side, rng)
        shipped, direct = SnapshotSystem(), DirectSnapshotSystem()
        for _ in range(ticks):
            drift()
            shipped.process(1 / 60)
            direct.process(1 / 60)
            for e in agents:
                if shipped.snapshot(e) != direct.snapshot(e):
                    raise SystemExit(f"the direct-read reference is stale: agent {e} differs")
        if all(shipped.snapshot(e) is None for e in agents):
            raise SystemExit("no snapshot was built: the check compared nothing")


def adapter_cost(sizes: list[int], ticks: int, repeat: int) -> None:
    for n in sizes:
        check_reference(n)
    print(
        f"{'agents':>7} {'direct ms':>10} {'mapped ms':>10} {'cost':>7} "
        f"{'direct best':>12} {'mapped best':>12} {'cost (best)':>12}"
    )
    for n in sizes:
        direct: list[float] = []
        mapped: list[float] = []
        direct_best: list[float] = []
        mapped_best: list[float] = []
        measure(n, ticks // 4 + 1, system_type=DirectSnapshotSystem)  # warm-up, discarded
        measure(n, ticks // 4 + 1)
        for _ in range(repeat):  # alternate, so drifting machine load hits both alike
            d = measure(n, ticks, system_type=DirectSnapshotSystem)
            m = measure(n, ticks)
            direct.append(d["cpu_ms"])
            mapped.append(m["cpu_ms"])
            direct_best.append(d["cpu_best_ms"])
            mapped_best.append(m["cpu_best_ms"])
        dm, mm = statistics.median(direct), statistics.median(mapped)
        db, mb = min(direct_best), min(mapped_best)
        print(
            f"{n:>7} {dm:>10.3f} {mm:>10.3f} {(mm - dm) / dm:>+7.1%} "
            f"{db:>12.3f} {mb:>12.3f} {(mb - db) / db:>+12.1%}"
        )
    print(
        f"CPU time of this thread per tick (time spent descheduled on a busy machine is left "
        f"out): process + 10% snapshots; medians of {repeat} alternating runs of {ticks} ticks "
        "(best: the quickest tick of all runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--adapter", action="store_true", help="cost of the ComponentMap")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.adapter:
        adapter_cost(args.sizes, args.ticks, args.repeat)
        return
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
