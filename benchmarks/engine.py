"""The batched engine against today's paths, every figure in one run, baselines in the same run.

Run (timings go under the bench lock; write `uptime`'s load beside the figures):

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/engine.py [--agents 10]
        [--threads 2] [--repeat 2] [--no-free] [--llama-server]

Rows (the same agents' snapshots for each; every repetition plans other agents):

* ``prefill``: tokens/s of one fresh 256-token prompt on the batched engine: the rate that sets
  the *prefill limit* of a round (tokens the engine evaluates / this rate).
* ``gen-seq``: today's path, the baseline: sequential, guided, the serial engine generates the
  index of a candidate under a schema (compressed prompt).
* ``score-seq``: the serial engine, each agent decided by scoring its candidates' phrases
  (:mod:`aiplanner.decision`), one agent after another.
* ``score-batched``: ``EmbeddedBackend(engine="batched")``, every agent's scoring in flight at
  once. Also prints the tokens the engine evaluated per agent excluding rows shared by several
  agents (target <= 60) and the round's wall time over its prefill limit (target <= 1.3).
* ``free-seq`` / ``free-batched``: free mode (the model writes the plan), sequential on the
  serial engine against concurrent on the batched one; ``llm=`` counts first answers that passed
  validation.
* ``llama-server`` (``--llama-server``, if :mod:`aiplanner.bench.llama_server` is there): the
  guided generation round against ``llama-server -np <agents>`` on 127.0.0.1, concurrent.

Calibration scores (content-free, cached per phrase by the decision module) are warmed before the
timed rounds, as in a running game.
"""

from __future__ import annotations

import argparse
import os
import time

import anyio

from aiplanner import DEFAULT_REGISTRY, EmbeddedBackend, OpenAIBackend
from aiplanner.backends.base import Backend, Message, ScoreRequest
from aiplanner.bench.world import real_requests
from aiplanner.breaker import CircuitBreaker
from aiplanner.components import Tier
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch, PlanContext, run_batch

PREFILL_TOKENS = 256


def agent_requests(n: int, seed: int) -> list[PlanRequest]:
    """``n`` agents' requests from real SnapshotSystem output (a battle of their own)."""
    return real_requests(n, seed=seed)


class Round:
    """One timed round: outcomes, wall time, time of the first plan."""

    def __init__(self) -> None:
        self.outcomes: list[PlanOutcome] = []
        self.started = time.monotonic()
        self.first: float | None = None
        self.wall = 0.0

    def emit(self, outcome: PlanOutcome) -> None:
        if self.first is None:
            self.first = time.monotonic() - self.started
        self.outcomes.append(outcome)

    @property
    def from_model(self) -> int:
        return sum(1 for o in self.outcomes if o.ok and o.tier is Tier.LLM)


def context(backend: Backend, decision: str) -> PlanContext:
    """A planning context kept across rounds (its calibration cache stays warm)."""
    return PlanContext(
        backend,
        DEFAULT_REGISTRY,
        Metrics(),
        CircuitBreaker(100),
        lambda _outcome: None,
        guided_decision=decision,
    )


async def planned(ctx: PlanContext, reqs: list[PlanRequest], strategy: str, mode: str) -> Round:
    """One round through run_batch, as the plugin runs it."""
    r = Round()
    ctx.emit = r.emit
    await run_batch(ctx, Batch(tuple(reqs), strategy, mode, "compressed", False, 0))
    r.wall = time.monotonic() - r.started
    return r


async def prefill_rate(backend: EmbeddedBackend, tries: int = 3) -> float:
    """Tokens/s of a fresh prompt nothing is cached for (words no round uses): the best of
    ``tries``, each with other words, so a burst of load on a shared machine does not set it."""
    best = 0.0
    for t in range(tries):
        words = " ".join(f"w{i}x{(i * 7 + t) % 13}" for i in range(PREFILL_TOKENS // 3))
        request = ScoreRequest((Message("user", words),), ("ok",), timeout_s=120.0)
        started = time.monotonic()
        result = await backend.score(request)
        best = max(best, (result.usage.prompt_tokens or 0) / (time.monotonic() - started))
    return best


def line(label: str, r: Round, base: float | None, extra: str = "") -> None:
    ratio = f"x{base / r.wall:5.2f}" if base else "      "
    print(
        f"{label:<16} wall={r.wall:6.2f}s {ratio} first={r.first or 0:5.2f}s "
        f"llm={r.from_model:2d}/{len(r.outcomes):2d} {extra}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> None:
    n = args.agents
    sets = [agent_requests(n, seed=3 + i) for i in range(args.repeat + 1)]
    warm, rounds = sets[0], sets[1:]
    load = os.getloadavg()
    print(
        f"agents={n} threads={args.threads} repeat={args.repeat} "
        f"load={load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}",
        flush=True,
    )
    serial = EmbeddedBackend(n_threads=args.threads)
    batched = EmbeddedBackend(n_threads=args.threads, engine="batched")
    gen_ctx = context(serial, "generate")
    serial_ctx = context(serial, "score")
    batched_ctx = context(batched, "score")
    try:
        await serial.load()
        await batched.load()
        rate = await prefill_rate(batched)
        print(f"prefill          {rate:6.1f} tok/s (batched engine, one fresh prompt)", flush=True)
        # Warm: system prompts cached, calibration scores cached, as in a running game.
        await planned(gen_ctx, warm, "sequential", "guided")
        await planned(serial_ctx, warm, "sequential", "guided")
        await planned(batched_ctx, warm, "concurrent", "guided")
        for i, reqs in enumerate(rounds, start=1):
            tag = f"#{i}" if args.repeat > 1 else ""
            base = await planned(gen_ctx, reqs, "sequential", "guided")
            line(f"gen-seq{tag}", base, None)
            r = await planned(serial_ctx, reqs, "sequential", "guided")
            line(f"score-seq{tag}", r, base.wall)
            before = batched.engine_stats()
            r = await planned(batched_ctx, reqs, "concurrent", "guided")
            after = batched.engine_stats()
            assert before is not None and after is not None
            rows = after.rows - before.rows
            own = rows - (after.shared_rows - before.shared_rows)
            limit = rows / rate
            line(
                f"score-batched{tag}",
                r,
                base.wall,
                f"tokens={rows} own/agent={own / n:5.1f} passes={after.passes - before.passes} "
                f"decodes={after.decodes - before.decodes} "
                f"in-decode={after.decode_s - before.decode_s:5.2f}s prefill-limit={limit:5.2f}s "
                f"ratio={r.wall / limit:4.2f}",
            )
            if args.llama_server:
                await llama_server_round(args, reqs, base.wall)
            if not args.no_free:
                free = await planned(gen_ctx, reqs, "sequential", "free")
                line(f"free-seq{tag}", free, None)
                r = await planned(context(batched, "score"), reqs, "concurrent", "free")
                line(f"free-batched{tag}", r, free.wall)
        load = os.getloadavg()
        print(f"load={load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
    finally:
        await serial.aclose()
        await batched.aclose()


async def llama_server_round(
    args: argparse.Namespace, reqs: list[PlanRequest], base: float
) -> None:
    """The guided generation round on ``llama-server -np <agents>``, if it is built."""
    try:
        from aiplanner.bench.llama_server import LlamaServer, cached_binary
    except ImportError:
        print("llama-server     skipped: aiplanner.bench.llama_server is not there")
        return
    if not cached_binary().exists():
        print(f"llama-server     skipped: not built ({cached_binary()})")
        return
    with LlamaServer(slots=args.agents, threads=args.threads) as server:
        backend = OpenAIBackend(
            server.base_url, model="default", max_concurrency=args.agents, read_timeout_s=60.0
        )
        try:
            ctx = context(backend, "generate")
            await planned(ctx, reqs[:1], "concurrent", "guided")  # its slots see the prefix
            line("llama-server", await planned(ctx, reqs, "concurrent", "guided"), base)
        finally:
            await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-free", action="store_true", help="skip the free-mode rows")
    parser.add_argument(
        "--llama-server", action="store_true", help="also run the round on llama-server -np N"
    )
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
