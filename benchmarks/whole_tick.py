"""Whole-tick cost of a fighting battle: every processor, the real bridge, 60 fps pacing.

What a player sees as stutter is the whole ``esper.process`` tick, so that is what is timed:
SnapshotSystem + PlanningSystem + ActionExecutionSystem together, with the ScriptedBackend
answering through the real bridge thread after 0.05-0.3 s (seeded), while the game loop sleeps
out the rest of each 1/60 s frame as a game would. Two teams of N/2, each spread over its own half
of a 64x48 map with 150 walls and 40 cover points (1000 agents: one per three cells), fight from
the first tick; the dead are deleted by the execution system and replaced at random cells of their
team's half between ticks (not timed), so the fight never ends.

Prints per run the whole tick's p50/p99/max (ms), each processor's p50/p99, the longest tick's
breakdown by processor, the planner's counters, and (unless ``--no-profile``) a cProfile of
the slowest 1% (``--profile-share``) of the ticks of a second, profiled pass: profiling slows every
tick, so the timed figures come from the unprofiled pass only.

    python benchmarks/whole_tick.py                          # 100 and 1000 agents
    python benchmarks/whole_tick.py --agents 1000 --ticks 600
    python benchmarks/whole_tick.py --switch-interval 0.005 0.001   # sys.setswitchinterval
    python benchmarks/whole_tick.py --tick-budget-ms 0 2          # planning budget off / 2 ms
    python benchmarks/whole_tick.py --gc default freeze idle      # as is / frozen / between frames
    python benchmarks/whole_tick.py --agents 100 --between-ms 0 8 14   # planning between frames

``--gc freeze`` (the default) calls ``gc.freeze()`` once the world is built, as a game does after
loading a level: the objects of the imports, the map and the first agents then never go through
the cycle collector again, so a full collection walks only what the game made since (measured at
1000 agents: about 65,000 objects and up to 57 ms of CPU per full collection unfrozen). Each run
prints the collections during the timed ticks, per generation, with their CPU time. Beside each
wall-clock figure the game thread's CPU time (``time.thread_time``) is shown: on a shared machine
the difference is time spent waiting for a core or for the GIL; the CPU time of the process's
other threads during each tick (the bridge's loop, chiefly) is printed too: while one of them
runs Python, the game thread waits for the GIL. ``--gc idle`` uses
:class:`aiplanner.gc_pacing.FrameCollector`: frozen, automatic collection off, and a collection
after each tick in the frame's idle time (not part of the tick; printed apart, with the frames
whose tick and collection together overran 1/60 s). ``--between-ms N`` gives the plugin up to N ms
of each frame's idle time for planning (:meth:`aiplanner.PlannerPlugin.between_frames`, before
the collection; never past the frame's end less a 2 ms reserve), as a game that calls it does:
printed apart too, with the agents' work done there, and counted in the frames' overruns.

Single runs on a shared machine: write ``uptime``'s load beside every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import heapq
import io
import math
import pstats
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import esper

from aiplanner import (
    ROLES,
    ActionExecutionSystem,
    Battlefield,
    FrameCollector,
    Health,
    PlannerConfig,
    PlannerPlugin,
    PlanningSystem,
    PlanState,
    PlanStatus,
    ScriptedBackend,
    SnapshotSystem,
    Team,
    queries,
)
from aiplanner.bench.world import spawn_agent as standard_agent

PROCESSORS = (SnapshotSystem.__name__, PlanningSystem.__name__, ActionExecutionSystem.__name__)


def make_battlefield(
    width: int = 64, height: int = 48, walls: int = 150, cover: int = 40, seed: int = 1
) -> Battlefield:
    """A seeded map: ``walls`` blocked cells and ``cover`` cover points in the middle band (the
    two edge bands where teams spawn stay open), objective in the centre."""
    rng = random.Random(seed)
    blocked: set[tuple[int, int]] = set()
    while len(blocked) < walls:
        blocked.add((rng.randrange(6, width - 6), rng.randrange(0, height)))
    points: list[tuple[int, int]] = []
    while len(points) < cover:
        c = (rng.randrange(4, width - 4), rng.randrange(1, height - 1))
        if c not in blocked and c not in points:
            points.append(c)
    return Battlefield(width, height, frozenset(blocked), tuple(points), (width // 2, height // 2))


def spawn_agent(rng: random.Random, team: int, band: tuple[int, int], field_: Battlefield) -> int:
    """One armed agent of ``team`` at a random open cell of the column band ``[lo, hi)``."""
    while True:
        x = rng.randrange(*band)
        y = rng.randrange(0, field_.height)
        if (x, y) not in field_.blocked:
            break
    return standard_agent(float(x), float(y), team, rng.choice(ROLES))


class Battle:
    """Two teams of ``n // 2`` agents, kept at strength by respawning in the team's half."""

    def __init__(self, n: int, field_: Battlefield, seed: int) -> None:
        self.per_team = (n // 2, n - n // 2)
        self.field = field_
        self.rng = random.Random(seed)
        self.respawned = 0
        esper.create_entity(field_)
        mid = field_.width // 2
        # Each team holds its half, the front lines within sight: the fight begins at once.
        self._half = ((0, mid - 2), (mid + 2, field_.width))
        for team, count in enumerate(self.per_team):
            for _ in range(count):
                spawn_agent(self.rng, team, self._half[team], field_)

    def top_up(self) -> None:
        """Replace the agents deleted since the last call (outside the timed tick)."""
        alive = [0, 0]
        # Through aiplanner.queries, not esper's cached query: esper would free its copy inside
        # the next tick (its first query after a change clears its caches), charging the
        # benchmark's own bookkeeping to the timed tick.
        for _, (side, health) in queries.components(Team, Health):
            if health.hp > 0:
                alive[side.team] += 1
        for team, count in enumerate(self.per_team):
            for _ in range(count - alive[team]):
                spawn_agent(self.rng, team, self._half[team], self.field)
                self.respawned += 1


_RESERVE_MS = 2.0
"""Of a frame's idle time, what ``--between-ms`` planning leaves unused: the collection after it
(``--gc idle``) and the pacing sleep's wake-up."""


def _timed(proc: object, spent: dict[str, float]) -> None:
    """Wrap ``proc.process`` so each call stores its duration (ms) in ``spent``."""
    inner = proc.process  # type: ignore[attr-defined]
    name = type(proc).__name__
    clock = time.perf_counter

    def timed(dt: float) -> None:
        t0 = clock()
        inner(dt)
        spent[name] = (clock() - t0) * 1000.0

    proc.process = timed  # type: ignore[attr-defined]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100.0 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Run:
    agents: int
    ticks: list[float] = field(default_factory=list)  # whole tick, ms
    cpu: list[float] = field(default_factory=list)  # whole tick, game-thread CPU ms
    others: list[float] = field(default_factory=list)  # other threads' CPU ms during the tick
    gc_ms: dict[int, list[float]] = field(default_factory=dict)  # generation -> CPU ms each
    parts: dict[str, list[float]] = field(default_factory=dict)  # per processor, ms
    longest: dict[str, float] = field(default_factory=dict)
    longest_tick: int = -1
    overruns: int = 0  # ticks longer than one 60 fps frame
    idle_share: list[float] = field(default_factory=list)  # agents idle (no plan) after a tick
    idle_waits: list[int] = field(default_factory=list)  # ticks an agent stood idle, each time
    between: list[float] = field(default_factory=list)  # --gc idle: collection after a tick, ms
    frame_overruns: int = 0  # tick + work between frames (collection, planning) > a frame
    planned: list[float] = field(default_factory=list)  # --between-ms: planning after a tick, ms
    served_between: int = 0  # --between-ms: agents' work done between frames
    stats: dict[str, object] = field(default_factory=dict)
    respawned: int = 0
    profile: str = ""


def run(
    n: int,
    ticks: int,
    *,
    warmup: int,
    fps: float,
    seed: int,
    tick_budget_ms: float | None,
    profile_share: float = 0.0,
    gc_mode: str = "freeze",
    between_ms: float = 0.0,
) -> Run:
    """One battle of ``n`` agents for ``warmup + ticks`` paced ticks.

    With ``profile_share > 0`` every tick is profiled and the slowest ``profile_share`` of them
    are merged into ``Run.profile`` (their timings are then inflated by the profiler).
    """
    world = f"whole-tick-{n}"
    esper.switch_world(world)
    battle = Battle(n, make_battlefield(seed=seed), seed)
    extra: dict[str, object] = {}
    if tick_budget_ms is not None:
        extra["tick_budget_ms"] = tick_budget_ms or None
    cfg = PlannerConfig(max_batch_size=16, seed=seed, **extra)  # type: ignore[arg-type]
    backend = ScriptedBackend(latency_s=(0.05, 0.3), seed=seed)
    plugin = PlannerPlugin(cfg, backend).install()
    spent: dict[str, float] = {}
    for proc in (plugin.snapshot_system, plugin.planning_system, plugin.execution_system):
        _timed(proc, spent)
    out = Run(n, parts={p: [] for p in PROCESSORS}, gc_ms={0: [], 1: [], 2: []})
    collecting = _GcLog(out.gc_ms)
    pacer = FrameCollector() if gc_mode == "idle" else None
    if gc_mode == "freeze":
        gc.collect()
        gc.freeze()
    elif pacer is not None:
        pacer.start()
    keep = max(1, math.ceil(ticks * profile_share)) if profile_share > 0 else 0
    slowest: list[tuple[float, int, cProfile.Profile]] = []  # min-heap of the slowest ticks
    dt = 1.0 / fps
    clock = time.perf_counter
    cpu_clock = time.thread_time
    process_clock = time.process_time  # every thread's CPU: the rest is the bridge's (the GIL)
    next_frame = clock()
    idle_since: dict[int, int] = {}
    try:
        for t in range(warmup + ticks):
            battle.top_up()
            spent.clear()
            prof = cProfile.Profile() if keep and t >= warmup else None
            collecting.on = t >= warmup
            p0 = process_clock()
            c0 = cpu_clock()
            t0 = clock()
            if prof is not None:
                prof.enable()
            esper.process(dt)
            if prof is not None:
                prof.disable()
            ms = (clock() - t0) * 1000.0
            cpu_ms = (cpu_clock() - c0) * 1000.0
            others_ms = max(0.0, (process_clock() - p0) * 1000.0 - cpu_ms)
            collecting.on = False
            if t >= warmup:
                out.ticks.append(ms)
                out.cpu.append(cpu_ms)
                out.others.append(others_ms)
                for p in PROCESSORS:
                    out.parts[p].append(spent.get(p, 0.0))
                if ms > dt * 1000.0:
                    out.overruns += 1
                _count_idle(t, idle_since, out)
                if ms > max(out.ticks[:-1], default=-1.0):
                    out.longest = dict(spent)
                    out.longest_tick = t - warmup
                if prof is not None:
                    item = (ms, t, prof)
                    if len(slowest) < keep:
                        heapq.heappush(slowest, item)
                    elif ms > slowest[0][0]:
                        heapq.heapreplace(slowest, item)
            after_ms = 0.0
            if between_ms > 0:
                # The frame's idle time, as a game offers it: at most --between-ms, and never
                # past the frame's end less a reserve (the collection, the sleep's wake-up).
                p0 = clock()
                idle_ms = min(between_ms, (next_frame + dt - p0) * 1000.0 - _RESERVE_MS)
                served = plugin.between_frames(idle_ms)
                planned_ms = (clock() - p0) * 1000.0
                after_ms += planned_ms
                if t >= warmup:
                    out.planned.append(planned_ms)
                    out.served_between += served
            if pacer is not None:
                g0 = clock()
                pacer.between_frames()
                gc_ms = (clock() - g0) * 1000.0
                after_ms += gc_ms
                if t >= warmup:
                    out.between.append(gc_ms)
            if t >= warmup and (between_ms > 0 or pacer is not None) and ms + after_ms > dt * 1e3:
                out.frame_overruns += 1
            # 60 fps pacing: sleep out the frame; a late frame starts the next one at once.
            next_frame = max(next_frame + dt, clock())
            time.sleep(max(0.0, next_frame - clock()))
        out.stats = plugin.stats()
        out.respawned = battle.respawned
    finally:
        collecting.close()
        if pacer is not None:
            pacer.stop()
        gc.unfreeze()
        plugin.close()
        esper.switch_world("default")
        esper.delete_world(world)
    if slowest:
        merged = pstats.Stats(slowest[0][2])
        for _, _, prof in slowest[1:]:
            merged.add(prof)
        buf = io.StringIO()
        merged.stream = buf  # type: ignore[attr-defined]
        merged.sort_stats("tottime").print_stats(22)
        buf.write("\n")
        merged.sort_stats("cumulative").print_stats(22)
        lo = min(s[0] for s in slowest)
        out.profile = (
            f"cProfile of the {len(slowest)} slowest ticks (>= {lo:.1f} ms profiled) of "
            f"{ticks}:\n" + _trim(buf.getvalue())
        )
    return out


class _GcLog:
    """Logs the CPU time of each collection on the game thread while ``on`` (during ticks)."""

    def __init__(self, into: dict[int, list[float]]) -> None:
        self.on = False
        self._into = into
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "start":
            self._started = time.thread_time()
        else:
            self._into[info["generation"]].append((time.thread_time() - self._started) * 1000)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)


def _count_idle(tick: int, since: dict[int, int], out: Run) -> None:
    """How many agents stand idle (waiting to be served, no plan at all), and for how long."""
    holders, states = queries.column(PlanState)  # not esper's cached query: see Battle.top_up
    idle = {ent for ent, st in zip(holders, states, strict=True) if st.status is PlanStatus.IDLE}
    out.idle_share.append(len(idle) / max(1, len(states)))
    for ent in idle:
        since.setdefault(ent, tick)
    for ent in [e for e in since if e not in idle]:
        out.idle_waits.append(tick - since.pop(ent))


def _trim(text: str) -> str:
    """Drop pstats' header lines and blank runs; shorten site-packages paths."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or "Ordered by" in line or "List reduced" in line:
            continue
        lines.append(line.replace(sys.prefix, "<venv>"))
    return "\n".join(lines)


def report(r: Run) -> str:
    def fig(values: list[float]) -> str:
        return (
            f"p50 {percentile(values, 50):6.2f}  p99 {percentile(values, 99):6.2f}  "
            f"max {max(values):6.2f}"
        )

    lines = [
        f"== {r.agents} agents, {len(r.ticks)} ticks: whole tick ms  {fig(r.ticks)}  "
        f"(>16.7 ms: {r.overruns})",
        f"   game-thread CPU ms     {fig(r.cpu)}",
        f"   other threads' CPU ms  {fig(r.others)}  (during ticks: the bridge's Python, "
        "which the tick waits for under the GIL)",
    ]
    for p in PROCESSORS:
        lines.append(f"   {p:<22} {fig(r.parts[p])}")
    breakdown = ", ".join(f"{p} {r.longest.get(p, 0.0):.2f}" for p in PROCESSORS)
    lines.append(f"   longest tick (#{r.longest_tick}): {breakdown} ms")
    waits = r.idle_waits or [0]
    lines.append(
        f"   idle agents after a tick: mean {100 * sum(r.idle_share) / len(r.idle_share):.1f}% "
        f"max {100 * max(r.idle_share):.1f}%; idle spells (ticks): p50 {percentile(waits, 50)} "
        f"p99 {percentile(waits, 99)} max {max(waits)}"
    )
    lines.append(
        "   gc during ticks: "
        + ", ".join(
            f"gen{g} {len(v)}x max {max(v, default=0.0):.2f} ms CPU" for g, v in r.gc_ms.items()
        )
    )
    if r.planned:
        lines.append(
            f"   planning between ms    {fig(r.planned)}  ({r.served_between} agents' work "
            "done there: PlannerPlugin.between_frames)"
        )
    if r.between:
        lines.append(f"   gc between ticks ms     {fig(r.between)}")
    if r.planned or r.between:
        lines.append(f"   tick + work between frames > 16.7 ms: {r.frame_overruns}")
    s = r.stats
    lines.append(
        f"   plans {s.get('plans')} tiers {s.get('tiers')} requests {s.get('requests')} "
        f"deadline misses {s.get('deadline_misses')} provisional {s.get('provisional')} "
        f"budget cuts {s.get('budget_cuts')} respawned {r.respawned}"
    )
    return "\n".join(lines)


def _one(
    args: argparse.Namespace, n: int, budget: float | None, gc_mode: str, between: float
) -> None:
    """One configuration: the timed run, then (unless ``--no-profile``) the profiled one."""
    battle = functools.partial(
        run,
        n,
        warmup=args.warmup,
        fps=args.fps,
        seed=args.seed,
        tick_budget_ms=budget,
        gc_mode=gc_mode,
        between_ms=between,
    )
    r = battle(args.ticks)
    print(
        f"switch interval {sys.getswitchinterval() * 1000:.2f} ms, "
        f"tick_budget_ms {'default' if budget is None else budget}, gc {gc_mode}, "
        f"between frames {f'{between:g} ms' if between > 0 else 'off'}"
    )
    print(report(r), flush=True)
    if not args.no_profile:
        print(battle(args.profile_ticks, profile_share=args.profile_share).profile, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--ticks", type=int, default=900, help="timed ticks per run")
    p.add_argument("--warmup", type=int, default=60, help="ticks before timing starts")
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--switch-interval",
        type=float,
        nargs="+",
        default=[None],
        help="sys.setswitchinterval seconds for the run (default: leave it as it is)",
    )
    p.add_argument(
        "--tick-budget-ms",
        type=float,
        nargs="+",
        default=[None],
        help="PlannerConfig.tick_budget_ms (0: no budget; default: the config's default)",
    )
    p.add_argument(
        "--gc",
        nargs="+",
        default=["freeze"],
        choices=["freeze", "default", "idle"],
        help="freeze: gc.freeze() once the world is built (default); default: leave gc as it "
        "is; idle: aiplanner.gc_pacing.FrameCollector (collections between ticks)",
    )
    p.add_argument(
        "--between-ms",
        type=float,
        nargs="+",
        default=[0.0],
        help="planning in each frame's idle time (PlannerPlugin.between_frames), at most this "
        "many ms and never past the frame's end; 0: off (default)",
    )
    p.add_argument("--no-profile", action="store_true", help="skip the profiled pass")
    p.add_argument("--profile-ticks", type=int, default=300)
    p.add_argument(
        "--profile-share",
        type=float,
        default=0.01,
        help="share of the profiled ticks, slowest first, in the profile (1: all of them)",
    )
    args = p.parse_args(argv)
    default_interval = sys.getswitchinterval()
    for n in args.agents:
        for interval in args.switch_interval:
            for budget in args.tick_budget_ms:
                for gc_mode in args.gc:
                    for between in args.between_ms:
                        sys.setswitchinterval(interval or default_interval)
                        try:
                            _one(args, n, budget, gc_mode, between)
                        finally:
                            sys.setswitchinterval(default_interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
