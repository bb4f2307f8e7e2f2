"""Batching strategies side by side: the same agents' snapshots planned by each strategy.

Run: python benchmarks/strategies.py [--backend embedded|openai|ollama] [--agents 10]
                                     [--mode guided|free] [--base-url URL] [--threads N]
                                     [--baseline]

For each strategy prints: wall time for the whole batch (and its speed-up over the first row),
time to the first plan, plans that passed validation at the LLM tier (vs. retried at the
simplified tier or failed), backend calls, and mean prompt / completion tokens per agent.
The snapshots come from the test scenario's ECS world, so they are real SnapshotSystem output.
One warm-up call on a spare agent runs first (model load, system prompt cached).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import anyio
import esper

from aiplanner import DEFAULT_REGISTRY, OpenAIBackend, create_backend
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Tier
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scenario import real_requests


def bench_requests(n: int) -> list[PlanRequest]:
    """``n`` agents' requests from a fresh world of their own."""
    esper.switch_world("bench-strategies")
    try:
        return real_requests(n, seed=3)  # type: ignore[return-value]
    finally:
        esper.switch_world("default")
        esper.delete_world("bench-strategies")


async def run(
    backend: Backend, reqs: list[PlanRequest], strategy: str, mode: str, prompt: str
) -> tuple[float, float | None, list[PlanOutcome], Metrics]:
    out: list[PlanOutcome] = []
    first: list[float] = []
    metrics = Metrics()
    started = time.monotonic()

    def emit(o: PlanOutcome) -> None:
        if not first:
            first.append(time.monotonic() - started)
        out.append(o)

    ctx = PlanContext(backend, DEFAULT_REGISTRY, metrics, CircuitBreaker(100), emit)
    await run_batch(ctx, Batch(tuple(reqs), strategy, mode, prompt, True, 0))
    return time.monotonic() - started, first[0] if first else None, out, metrics


async def main_async(args: argparse.Namespace) -> None:
    backend: Backend | None
    if args.backend == "openai" and args.concurrency:
        backend = OpenAIBackend(
            args.base_url,
            model=args.model or "default",
            max_concurrency=args.concurrency,
            read_timeout_s=60.0,
        )
    else:
        backend = create_backend(
            args.backend, base_url=args.base_url, n_threads=args.threads, model=args.model
        )
    assert backend is not None
    n = args.agents
    everyone = bench_requests(n * args.repeat + 1)
    spare = everyone[-1]
    # Each repetition plans other agents (other snapshots, the same system prompt): a server
    # that cached the exact previous request would otherwise look faster than it is.
    agent_sets = [everyone[i * n : (i + 1) * n] for i in range(args.repeat)]
    rows = [
        (f"{s}#{i + 1}" if args.repeat > 1 else s, s, args.mode, "compressed", i)
        for s in args.strategies
        for i in range(args.repeat)
    ]
    if args.baseline:
        # The original design: one agent per call, verbose prompt, the model writes the plan.
        rows.insert(0, ("baseline", "sequential", "free", "full", 0))
    try:
        await run(backend, [spare], "sequential", args.mode, "compressed")  # load, warm the cache
        print(f"backend={backend.info.name} model={backend.info.model} agents={n} mode={args.mode}")
        base_wall: float | None = None
        for label, strategy, mode, prompt, agents in rows:
            reqs = agent_sets[agents]
            wall, ttfp, out, metrics = await run(backend, reqs, strategy, mode, prompt)
            base_wall = wall if base_wall is None else base_wall
            s = metrics.stats()
            llm = sum(1 for o in out if o.tier is Tier.LLM)
            simple = sum(1 for o in out if o.tier is Tier.LLM_SIMPLE)
            failed = sum(1 for o in out if not o.ok)
            print(
                f"{label:<13} wall={wall:6.2f}s (x{base_wall / wall:4.2f}) "
                f"first_plan={ttfp or 0:5.2f}s llm={llm:2d} simple={simple:2d} "
                f"failed={failed:2d} calls={s['requests']:2d} "
                f"in_tok/agent={s['in_tokens_per_plan'] or 0:6.1f} "
                f"out_tok/agent={s['out_tokens_per_plan'] or 0:5.1f} invalid={s['invalid']}"
            )
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each strategy N times, each on other agents (a server's slots warm up)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=0, help="openai: requests in flight (server slots)"
    )
    parser.add_argument("--mode", default="guided", choices=("guided", "free"))
    parser.add_argument("--strategies", nargs="*", default=["sequential", "packed", "concurrent"])
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run the original design (sequential, full prompt, free plans); "
        "ratios are against it",
    )
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
