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
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from engine import agent_requests, context, planned  # the engine benchmark's round

from aiplanner import EmbeddedBackend

SIDES = (0, 8)  # kept_prefixes


async def _main(agents: int, rounds: int, threads: int) -> None:
    backends = {
        k: EmbeddedBackend(n_threads=threads, engine="serial", kept_prefixes=k) for k in SIDES
    }
    contexts = {k: context(b, "score") for k, b in backends.items()}
    try:
        for k in SIDES:
            await backends[k].load()
            # Warm calibration, as in a running game.
            await planned(contexts[k], agent_requests(agents, 10_000), "sequential", "guided")
        wall = dict.fromkeys(SIDES, 0.0)
        tokens = dict.fromkeys(SIDES, 0)
        restores = dict.fromkeys(SIDES, 0)
        same = 0
        for r in range(rounds):
            reqs = agent_requests(agents, r)
            decided: dict[int, list[tuple[int, str]]] = {}
            for k in SIDES if r % 2 == 0 else SIDES[::-1]:
                before = backends[k].stats()
                done = await planned(contexts[k], reqs, "sequential", "guided")
                after = backends[k].stats()
                wall[k] += done.wall
                tokens[k] += after.prompt_tokens - before.prompt_tokens
                restores[k] += after.prefix_restores - before.prefix_restores
                decided[k] = sorted((o.entity, repr(o.plan)) for o in done.outcomes)
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
