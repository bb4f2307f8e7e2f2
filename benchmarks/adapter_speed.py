"""Does the LoRA adapter slow the embedded model down? A 10-agent scored guided round, with and
without the adapter, in one run.

Run: python benchmarks/adapter_speed.py [--agents 10] [--repeat 5] [--threads 1] [--engine serial]

Each round scores the rules' candidates of ``--agents`` different situations (the scenario
suite's first ones) through ``EmbeddedBackend.score``, all submitted at once, as the planner
does. The two backends (adapter off / the shipped adapter; ``$AIPLANNER_ADAPTER`` is ignored)
are loaded side by side and their rounds alternate, so both see the same machine load; the
figures are medians over ``--repeat`` rounds, and the ratio is of those medians. Prompts are
warmed first (one round each, not counted), since the planner's system prompt is always warm.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.adapters import default_adapter
from aiplanner.backends.base import ScoreRequest
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.phrasing import LEAD, decision_prompt
from aiplanner.scenarios import load_scenarios


def _requests(agents: int) -> list[ScoreRequest]:
    rules = HeuristicPlanner()
    out = []
    for scenario in load_scenarios()[:agents]:
        snap = scenario.snapshot
        cands = rules.candidates(snap, 4)
        messages, phrases = decision_prompt(snap, cands, DEFAULT_REGISTRY)
        out.append(ScoreRequest(messages, phrases, lead=LEAD, timeout_s=600.0))
    return out


async def _round(backend: EmbeddedBackend, requests: list[ScoreRequest]) -> float:
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(backend.score, request)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engine", choices=("serial", "batched"), default="serial")
    args = parser.parse_args()
    requests = _requests(args.agents)
    backends = {
        "base": EmbeddedBackend(n_threads=args.threads, engine=args.engine, adapter=None),
        "adapter": EmbeddedBackend(
            n_threads=args.threads, engine=args.engine, adapter=default_adapter()
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in backends}

    async def run() -> None:
        for backend in backends.values():
            await _round(backend, requests)  # load + warm the system prompt
        for _ in range(args.repeat):
            for name, backend in backends.items():
                times[name].append(await _round(backend, requests))

    try:
        anyio.run(run)
    finally:
        for backend in backends.values():
            backend.close()
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.agents}-agent scored round, engine {args.engine}, {args.threads} thread(s)")
    for name, t in times.items():
        print(f"  {name:8s} median {med[name]:.2f} s  (rounds: {', '.join(f'{v:.2f}' for v in t)})")
    print(f"  adapter / base: {med['adapter'] / med['base']:.3f}")


if __name__ == "__main__":
    main()
