"""Suite ``strategies``: one planning round of ``--agents`` agents per batching strategy.

Each strategy plans the same number of agents ``repeat`` times, each time other agents (other
snapshots, the same system prompt: a server that cached the exact previous request would otherwise
look faster than it is). Figures: the round's wall time, time to the first plan, plans per second,
the share planned by the model. Without ``--quick`` a ``baseline`` row comes first: the original
design (one agent per call, the full prompt, the model writing the plan). Then plans per second
against batch size for ``packed`` and ``concurrent``. One warm-up call first (model load, system
prompt in the KV cache). ``--quick`` measures each figure twice at most, and leaves out
``concurrent`` on an engine that serves one call at a time (there it is ``sequential``).
"""

from __future__ import annotations

from statistics import median

import anyio

from aiplanner.backends.base import Backend
from aiplanner.bench.options import BenchOptions, Plot, Series, SuiteResult
from aiplanner.bench.progress import Progress
from aiplanner.bench.rounds import RoundResult, plan_round
from aiplanner.bench.stats import Metric, metric
from aiplanner.bench.world import real_requests
from aiplanner.requests import PlanRequest

__all__ = ["STRATEGIES", "run"]

STRATEGIES: tuple[str, ...] = ("sequential", "packed", "concurrent")
# label -> (strategy, mode, prompt tier)
_ROWS: dict[str, tuple[str, str, str]] = {s: (s, "guided", "compressed") for s in STRATEGIES}
_BASELINE = ("sequential", "free", "full")
_SWEEP_STRATEGIES: tuple[str, ...] = ("packed", "concurrent")


def batch_sizes(agents: int, quick: bool) -> list[int]:
    """Batch sizes of the sweep: powers of two up to ``agents`` (up to 4 when quick)."""
    top = min(agents, 4 if quick else 16)
    sizes = [b for b in (1, 2, 4, 8, 16) if b <= top]
    return sizes if top in sizes else [*sizes, top]


def run(opts: BenchOptions, progress: Progress) -> SuiteResult:
    """Measure each strategy; skipped for the ``heuristic`` backend (no model to call)."""
    backend = opts.make_backend()
    if backend is None:
        return {"skipped": "the heuristic backend makes no model calls"}
    return anyio.run(_measure, backend, opts, progress)


async def _measure(backend: Backend, opts: BenchOptions, progress: Progress) -> SuiteResult:
    n = opts.agents
    repeat = min(opts.repeat, 2) if opts.quick else opts.repeat
    sizes = batch_sizes(n, opts.quick)
    serial = not backend.info.parallel or backend.info.max_concurrency <= 1
    rows = _ROWS if opts.quick else {"baseline": _BASELINE, **_ROWS}
    sweep_strategies = _SWEEP_STRATEGIES
    if opts.quick and serial:
        rows = {k: v for k, v in rows.items() if k != "concurrent"}
        sweep_strategies = tuple(s for s in sweep_strategies if s != "concurrent")
    sweep_sets = len(sizes) * len(sweep_strategies)
    everyone = real_requests(n * len(rows) * repeat + sum(sizes) * 2 + 1, seed=opts.seed)
    spare, pool = everyone[-1], everyone[:-1]

    def take(k: int) -> list[PlanRequest]:
        nonlocal pool
        got, pool = pool[:k], pool[k:]
        return got

    metrics: dict[str, Metric] = {}
    latencies: dict[str, Series] = {}
    try:
        await plan_round(backend, [[spare]], "sequential")  # load, warm the prefix cache
        runs = [label for label in rows for _ in range(repeat)]
        results: dict[str, list[RoundResult]] = {label: [] for label in rows}
        for label in progress.track(runs, "strategies", len(runs)):
            strategy, mode, prompt = rows[label]
            results[label].append(
                await plan_round(backend, [take(n)], strategy, mode=mode, prompt_tier=prompt)
            )
        for strategy, rounds in results.items():
            metrics[f"round wall s, {strategy}"] = metric([r.wall_s for r in rounds], "s")
            metrics[f"first plan s, {strategy}"] = metric([r.first_s or 0.0 for r in rounds], "s")
            metrics[f"plans per s, {strategy}"] = metric(
                [n / r.wall_s for r in rounds], "plans/s", "higher"
            )
            metrics[f"model share, {strategy}"] = metric(
                [r.on_time_share(float("inf"), n) for r in rounds], "share", "higher"
            )
            latencies[strategy] = Series(
                x=[], y=[d.seconds * 1000.0 for r in rounds for d in r.deliveries]
            )
        sweep: dict[str, Series] = {}
        jobs = [(s, b) for s in sweep_strategies for b in sizes]
        rates: dict[tuple[str, int], list[float]] = {}
        for strategy, b in progress.track(jobs, "batch sizes", sweep_sets):
            r = await plan_round(backend, [take(b)], strategy)
            rates.setdefault((strategy, b), []).append(b / r.wall_s)
        for strategy in sweep_strategies:
            ys = [median(rates[(strategy, b)]) for b in sizes]
            sweep[strategy] = Series(x=[float(b) for b in sizes], y=ys)
            for b, y in zip(sizes, ys, strict=True):
                metrics[f"plans per s, {strategy} batch {b}"] = metric([y], "plans/s", "higher")
    finally:
        await backend.aclose()
    plots = [
        Plot(
            name="strategies_latency",
            kind="hist",
            title=f"Time to each agent's plan, {n}-agent round ({backend.info.name})",
            xlabel="ms from the start of the round",
            ylabel="agents",
            series=latencies,
        ),
        Plot(
            name="strategies_batch_size",
            kind="line",
            title=f"Plans per second against batch size ({backend.info.name})",
            xlabel="agents per batch",
            ylabel="plans per second",
            series=sweep,
        ),
    ]
    info: dict[str, object] = {"backend": backend.info.name, "model": backend.info.model}
    return {"metrics": metrics, "plots": plots, "info": info}
