"""How long closing the embedded backend takes with requests in flight.

Run (timings go under the bench lock; the load average is printed at the start and end):

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/shutdown.py
        [--engines batched serial] [--rounds 8] [--requests 24] [--threads 2] [--seed 0]

Each round loads the default model, asks ``--requests`` scored decisions at once (prompts of ~120
tokens each: the batched engine cuts them into decodes of up to 512 rows), waits a random moment
(0.3-2 s, seeded) and closes with ``aclose()``: the figure is that call's wall time. Two ways take
turns round by round, so a change in the machine's speed falls on both alike: ``abort``, the
backend as it is (closing ends the decode under way, :mod:`aiplanner.backends.abort`), and
``wait``, the same backend with no abort callback installed (closing waits for the decode under
way to end, as before the abort existed). Prints min / median / max per engine and way, and the
ratio of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Literal

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from engine import load  # the load average as the engine benchmark prints it

from aiplanner.backends import abort
from aiplanner.backends.base import Message, ScoreRequest
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.errors import PlannerError

WAYS = ("abort", "wait")


def _request(rng: random.Random, i: int) -> ScoreRequest:
    words = " ".join(
        f"Enemy {k} is {rng.choice(['close', 'near', 'far'])} and "
        f"{rng.choice(['hurt', 'healthy'])}."
        for k in range(12)
    )
    return ScoreRequest(
        (Message("system", "You are a soldier."), Message("user", f"Situation {i}: {words}")),
        (" shoot enemy 1", " run to cover", " reload my weapon"),
        lead="I should",
        timeout_s=120.0,
    )


def close_once(
    engine: Literal["serial", "batched"],
    threads: int,
    requests: int,
    delay: float,
    rng: random.Random,
) -> float:
    """Seconds ``aclose()`` took, ``delay`` s after ``requests`` decisions were asked."""
    backend = EmbeddedBackend(n_threads=threads, engine=engine)
    took: list[float] = []

    async def ask(i: int) -> None:
        with contextlib.suppress(PlannerError):  # the close ends it: expected
            await backend.score(_request(rng, i))

    async def main() -> None:
        await backend.load()
        async with anyio.create_task_group() as tg:
            for i in range(requests):
                tg.start_soon(ask, i)
            await anyio.sleep(delay)
            started = time.perf_counter()
            await backend.aclose()
            took.append(time.perf_counter() - started)

    anyio.run(main)
    return took[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--engines", nargs="+", choices=("batched", "serial"), default=["batched", "serial"]
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"load average at start: {load()}")
    rng = random.Random(args.seed)
    installed = abort.AbortFlag.install
    for engine in args.engines:
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            delay = rng.uniform(0.3, 2.0)
            for way in WAYS:
                if way == "wait":  # as before: no callback on any context
                    abort.AbortFlag.install = lambda self, lib, ctx: False  # type: ignore[method-assign]
                try:
                    took = close_once(engine, args.threads, args.requests, delay, rng)
                finally:
                    abort.AbortFlag.install = installed  # type: ignore[method-assign]
                times[way].append(took)
                print(f"{engine:8} {way:6} after {delay:.2f} s: close {took * 1000:7.1f} ms")
        for way in WAYS:
            ms = sorted(t * 1000 for t in times[way])
            print(
                f"{engine:8} {way:6} close ms: min {ms[0]:.1f}  median "
                f"{statistics.median(ms):.1f}  max {ms[-1]:.1f}  ({len(ms)} rounds)"
            )
        ratio = statistics.median(times["wait"]) / statistics.median(times["abort"])
        print(f"{engine:8} median close, wait / abort: {ratio:.1f}x")
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
