"""The serial engine's kept prefixes, on against off, on the same guided rounds in one run.

Run (timings go under the bench lock; the load average is printed at the start and the end):

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/kept_prefixes.py
        [--agents 10] [--rounds 6] [--threads 2]

Two serial ``EmbeddedBackend`` instances, one with ``kept_prefixes=0`` (each role line evaluated
again whenever the previous prompt was another role's) and one with the default, decide the
same rounds of real agents' requests (guided by score, one agent after another, as the plugin
sends them to the serial engine), alternating which goes first. Calibration scores are warmed
first, as in a running game. Prints each side's wall time, prompt tokens evaluated per agent,
restores, and in how many rounds both made the same decisions.
"""

from __future__ import annotations

import argparse
import os
import time

import anyio

from aiplanner import DEFAULT_REGISTRY, EmbeddedBackend
from aiplanner.bench.world import real_requests
from aiplanner.breaker import CircuitBreaker
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch

SIDES = (0, 8)  # kept_prefixes


async def _round(ctx: PlanContext, reqs: list[PlanRequest]) -> tuple[float, list[PlanOutcome]]:
    out: list[PlanOutcome] = []
    ctx.emit = out.append
    started = time.monotonic()
    await run_batch(ctx, Batch(tuple(reqs), "sequential", "guided", "compressed", False, 0))
    return time.monotonic() - started, out


async def _main(agents: int, rounds: int, threads: int) -> None:
    backends = {k: EmbeddedBackend(n_threads=threads, kept_prefixes=k) for k in SIDES}
    contexts = {
        k: PlanContext(
            b,
            DEFAULT_REGISTRY,
            Metrics(),
            CircuitBreaker(100),
            lambda _outcome: None,
            guided_decision="score",
        )
        for k, b in backends.items()
    }
    try:
        for k in SIDES:
            await backends[k].load()
            await _round(contexts[k], real_requests(agents, seed=10_000))  # warm calibration
        wall = dict.fromkeys(SIDES, 0.0)
        tokens = dict.fromkeys(SIDES, 0)
        restores = dict.fromkeys(SIDES, 0)
        same = 0
        for r in range(rounds):
            reqs = real_requests(agents, seed=r)
            decided: dict[int, list[tuple[int, str]]] = {}
            for k in SIDES if r % 2 == 0 else SIDES[::-1]:
                before = backends[k].stats()
                spent, outcomes = await _round(contexts[k], reqs)
                after = backends[k].stats()
                wall[k] += spent
                tokens[k] += after.prompt_tokens - before.prompt_tokens
                restores[k] += after.prefix_restores - before.prefix_restores
                decided[k] = sorted((o.entity, repr(o.plan)) for o in outcomes)
            same += decided[SIDES[0]] == decided[SIDES[1]]
        for k in SIDES:
            print(
                f"kept_prefixes={k}: {wall[k]:.2f} s for {rounds} rounds of {agents} agents, "
                f"{tokens[k] / (rounds * agents):.1f} prompt tokens evaluated per agent, "
                f"{restores[k]} restores"
            )
        print(
            f"kept/none: wall x{wall[SIDES[0]] / wall[SIDES[1]]:.2f} faster, tokens "
            f"{tokens[SIDES[1]] / tokens[SIDES[0]]:.2f}x; same decisions in {same} of {rounds} "
            "rounds"
        )
    finally:
        for b in backends.values():
            await b.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print(f"load {os.getloadavg()}", flush=True)
    anyio.run(_main, args.agents, args.rounds, args.threads)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
