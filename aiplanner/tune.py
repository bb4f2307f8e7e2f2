"""``python -m aiplanner tune``: settings chosen by measurement, for this backend and agent count.

For each strategy and batch size, a round of ``agents`` agents asks for plans at once (as many do
when a fight starts) and the round is timed from outside: which agents got a model plan within
``plan_deadline_s``, and how long they waited. Each setting is measured ``repeat`` times, each
time on the same agents' snapshots (so settings are compared on equal work). The winner has the
largest share of plans delivered before their deadline, then the lowest mean wait, then the
smaller batch. It is printed with the table behind it and written as a TOML file that
:meth:`PlannerConfig.from_toml <aiplanner.config.PlannerConfig.from_toml>` loads.

On an engine that serves one call at a time, ``sequential`` and ``concurrent`` make the same
one-agent calls whatever the batch size, so they are measured once (with one batch of everyone).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from aiplanner.backends.base import Backend
from aiplanner.bench.progress import Progress, make_progress
from aiplanner.bench.rounds import plan_round, split
from aiplanner.bench.world import real_requests
from aiplanner.config import MODES, PlannerConfig
from aiplanner.errors import ConfigError, PlannerError
from aiplanner.strategies import STRATEGY_NAMES

__all__ = ["Trial", "choose", "explain", "measure", "tune_main"]

# What tune decides (and the deadline it decided for); the file leaves every other key out.
_TUNED = ("max_batch_size", "strategy", "mode", "plan_deadline_s")


@dataclass(frozen=True, slots=True)
class Trial:
    """One setting measured: the share of agents planned in time and their mean wait (medians
    over the repetitions)."""

    strategy: str
    batch_size: int
    on_time: float
    mean_wait_s: float

    def key(self) -> tuple[float, float, int]:
        """Sort key: best first (more on time, then less wait, then smaller batches)."""
        return (-round(self.on_time, 6), round(self.mean_wait_s, 3), self.batch_size)


def batch_sizes(agents: int) -> list[int]:
    """Powers of two below ``agents``, then ``agents`` itself (at most 256)."""
    top = min(agents, 256)
    return sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < top} | {top})


def _serial(backend: Backend) -> bool:
    return not backend.info.parallel or backend.info.max_concurrency <= 1


async def measure(
    backend: Backend,
    *,
    agents: int,
    deadline_s: float,
    strategies: Sequence[str] = STRATEGY_NAMES,
    sizes: Sequence[int] | None = None,
    repeat: int = 2,
    mode: str = "guided",
    progress: Progress | None = None,
    seed: int = 0,
) -> list[Trial]:
    """Time one round per (strategy, batch size) ``repeat`` times; rounds stop at 1.5x the
    deadline (later plans count as late whatever they are). Does not close ``backend``."""
    sizes = list(sizes or batch_sizes(agents))
    jobs = [
        (s, b)
        for s in strategies
        for b in (sizes if s == "packed" or not _serial(backend) else [max(sizes)])
    ]
    cutoff = 1.5 * deadline_s
    # Calls are not cut at the deadline (the round is, at ``cutoff``): a late call delays the
    # batches behind it, where the plugin would have given up on it. Shares are a lower bound.
    sets = [real_requests(agents, seed=seed + i, budget_s=2 * cutoff) for i in range(repeat)]
    shares: dict[tuple[str, int], list[float]] = {job: [] for job in jobs}
    waits: dict[tuple[str, int], list[float]] = {job: [] for job in jobs}
    await plan_round(backend, [real_requests(1, seed=seed + repeat)], "sequential", mode=mode)
    runs = [(job, reqs) for reqs in sets for job in jobs]
    track = progress.track(runs, "tune", len(runs)) if progress else iter(runs)
    for (strategy, b), reqs in track:
        r = await plan_round(backend, split(reqs, b), strategy, mode=mode, cutoff_s=cutoff)
        shares[(strategy, b)].append(r.on_time_share(deadline_s, agents))
        got = {d.entity: d.seconds for d in r.deliveries if d.by_model}
        waits[(strategy, b)].append(
            statistics.fmean(min(got.get(q.entity, cutoff), cutoff) for q in reqs)
        )
    return [
        Trial(s, b, statistics.median(shares[(s, b)]), statistics.median(waits[(s, b)]))
        for s, b in jobs
    ]


def choose(trials: Sequence[Trial]) -> Trial:
    """The best trial (see :meth:`Trial.key`). Raises ValueError when there is none."""
    if not trials:
        raise ValueError("no trials to choose from")
    return min(trials, key=Trial.key)


def explain(trials: Sequence[Trial], best: Trial, deadline_s: float, agents: int) -> str:
    """The table of trials, best first, and one sentence on why the winner won."""
    lines = [f"{'strategy':<11} {'batch':>5} {'on time':>8} {'mean wait s':>11}"]
    for t in sorted(trials, key=Trial.key):
        mark = "  <- chosen" if t == best else ""
        lines.append(
            f"{t.strategy:<11} {t.batch_size:>5} {t.on_time:>8.0%} {t.mean_wait_s:>11.3f}{mark}"
        )
    others = [t for t in trials if t != best]
    runner_up = min(others, key=Trial.key) if others else None
    why = (
        f"{best.strategy} with batches of {best.batch_size} delivered {best.on_time:.0%} of "
        f"{agents} agents' plans within the {deadline_s:g} s deadline"
    )
    if runner_up is not None:
        if math.isclose(runner_up.on_time, best.on_time):
            why += (
                f"; {runner_up.strategy}/{runner_up.batch_size} did as well, but agents waited "
                f"{runner_up.mean_wait_s:.3f} s on average against {best.mean_wait_s:.3f} s"
            )
        else:
            why += (
                f"; the next best, {runner_up.strategy}/{runner_up.batch_size}, "
                f"{runner_up.on_time:.0%}"
            )
    return "\n".join([*lines, "", why + "."])


def add_tune_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from aiplanner.bench.cli import add_backend_arguments

    t = sub.add_parser("tune", help="measure batch sizes and strategies; write the best as TOML")
    add_backend_arguments(t)
    t.add_argument(
        "--deadline",
        type=float,
        default=PlannerConfig().plan_deadline_s,
        help="seconds an agent may wait for its plan (plan_deadline_s)",
    )
    t.add_argument("--mode", default="guided", choices=MODES)
    t.add_argument("--repeat", type=int, default=2, help="rounds per setting")
    t.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES))
    t.add_argument("--sizes", nargs="+", type=int, help="batch sizes (default: powers of two)")
    t.add_argument("--out", default="aiplanner.toml", help="TOML file to write")
    t.add_argument("--quiet", action="store_true", help="no progress display")


def tune_main(args: argparse.Namespace, backend: Backend | None = None) -> int:
    """Run ``tune`` with ``backend`` (default: the one the arguments name). Exit status 0 when
    the file was written, 2 on a usage or backend error."""
    from aiplanner.backends.factory import create_backend

    try:
        if args.repeat < 1 or args.agents < 1 or args.deadline <= 0:
            raise ConfigError("--repeat and --agents must be at least 1, --deadline positive")
        unknown = [s for s in args.strategies if s not in STRATEGY_NAMES]
        if unknown:
            raise ConfigError(f"unknown strategies {unknown}; choose among {STRATEGY_NAMES}")
        if backend is None:
            backend = create_backend(
                args.backend, model=args.model, base_url=args.base_url, n_threads=args.threads
            )
        if backend is None:
            raise ConfigError("the heuristic backend has nothing to tune")
        trials = anyio.run(_measure_and_close, backend, args)
    except PlannerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = choose(trials)
    report = explain(trials, best, args.deadline, args.agents)
    config = PlannerConfig(
        max_batch_size=best.batch_size,
        strategy=best.strategy,
        mode=args.mode,
        plan_deadline_s=args.deadline,
    )
    header = (
        f"Written by python -m aiplanner tune --backend {args.backend} --agents {args.agents}\n"
        f"{report}\nLoad with aiplanner.PlannerConfig.from_toml(path)."
    )
    Path(args.out).write_text(config.to_toml(header, only=_TUNED))
    print(report)
    print(f"\nwrote {args.out}")
    return 0


async def _measure_and_close(backend: Backend, args: argparse.Namespace) -> list[Trial]:
    try:
        return await measure(
            backend,
            agents=args.agents,
            deadline_s=args.deadline,
            strategies=args.strategies,
            sizes=args.sizes,
            repeat=args.repeat,
            mode=args.mode,
            progress=make_progress(args.quiet),
        )
    finally:
        await backend.aclose()
