"""Free mode with the real model: first-answer validity, verbatim copies, spread, cost.

Every situation is planned once in free mode (one agent per call, compressed prompt, no retry
with the simplified prompt), and each first answer is checked:

* valid: decoded and validated at the LLM tier (the grammar leaves nothing else possible);
* copy: the answer equals (as JSON) some JSON value found anywhere in the prompt it was given,
  or its steps are those of the example an old prompt showed, ``{"s":[["M",6,8],["A",91]]}``;
* spread: the first actions chosen, and the largest share of any one answer text;
* sensible: the first step fits the scenario's acceptable actions (suite situations only), beside
  the rules' plan (``HeuristicPlanner.plan``) on the same situations;
* cost: prompt and output tokens and the call's wall time per decision.

Situations: the scenario suite (:mod:`aiplanner.scenarios`, when its files exist) and real ECS
snapshots of seeded battles (``tests/scenario.py``). Run under the benchmark lock:

    flock /tmp/aiplanner-bench.lock .venv/bin/python benchmarks/free_mode.py --threads 2 \
        [--free-decision generate|score-first] [--rank-prior 1.0]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import anyio
import esper
import orjson

from aiplanner import DEFAULT_REGISTRY, create_backend
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.codec import json_values
from aiplanner.components import Tier
from aiplanner.free_first import FREE_DECISIONS
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.metrics import Metrics
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.schema import PLAN_KEY
from aiplanner.strategies import Batch, PlanContext, run_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scenario import real_requests

OLD_EXAMPLE_STEPS = [["M", 6, 8], ["A", 91]]
"""The steps of the example an old prompt showed (under the plan's old key, ``"s"``)."""


def battle_requests(seeds: range, per_seed: int) -> list[PlanRequest]:
    out: list[PlanRequest] = []
    for seed in seeds:
        esper.switch_world(f"bench-free-{seed}")
        try:
            out += real_requests(per_seed, seed=seed)  # type: ignore[arg-type]
        finally:
            esper.switch_world("default")
            esper.delete_world(f"bench-free-{seed}")
    return out


def suite_requests() -> list[tuple[PlanRequest, object]]:
    try:
        from aiplanner.scenarios import load_scenarios

        scenarios = load_scenarios()
    except Exception as exc:  # the suite is optional here: report and go on without it
        print(f"scenario suite unavailable: {exc}")
        return []
    planner = HeuristicPlanner()
    return [
        (
            PlanRequest(
                1000 + i, i + 1, s.snapshot, planner.candidates(s.snapshot, 4), 0, 0.0, 120, 120
            ),
            s,
        )
        for i, s in enumerate(scenarios)
    ]


async def plan_one(
    backend: Backend, req: PlanRequest, args: argparse.Namespace
) -> tuple[PlanOutcome, Metrics, float]:
    out: list[PlanOutcome] = []
    metrics = Metrics()
    ctx = PlanContext(
        backend,
        DEFAULT_REGISTRY,
        metrics,
        CircuitBreaker(1000),
        out.append,
        free_decision=args.free_decision,
        rank_prior=args.rank_prior,
    )
    started = time.monotonic()
    await run_batch(ctx, Batch((req,), "sequential", "free", "compressed", False, 0))
    return out[0], metrics, time.monotonic() - started


async def main_async(args: argparse.Namespace) -> None:
    backend = create_backend(
        args.backend, base_url=args.base_url, n_threads=args.threads, model=args.model
    )
    assert backend is not None
    suite = suite_requests() if args.source in ("suite", "both") else []
    battle: list[PlanRequest] = []
    if args.source in ("battle", "both"):
        battle = battle_requests(range(1, 1 + args.seeds), args.per_seed)
    items: list[tuple[PlanRequest, object | None]] = [*suite, *((r, None) for r in battle)]
    builder = PromptBuilder(DEFAULT_REGISTRY, mode="free")
    rules = HeuristicPlanner()
    valid = copies = old_copies = sensible = rules_sensible = judged = 0
    firsts: collections.Counter[str] = collections.Counter()
    answers: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    tok_in: list[int] = []
    tok_out: list[int] = []
    walls: list[float] = []
    try:
        await plan_one(backend, items[-1][0], args)  # load the model, warm the shared prefix
        for req, scenario in items:
            outcome, _metrics, wall = await plan_one(backend, req, args)
            prompt = "\n".join(m.content for m in builder.messages(req))
            raw = outcome.raw.strip()
            try:
                answer: object = orjson.loads(raw)
            except orjson.JSONDecodeError:
                answer = raw
            copies += answer in json_values(prompt)
            old_copies += isinstance(answer, dict) and answer.get(PLAN_KEY) == OLD_EXAMPLE_STEPS
            answers[raw] += 1
            walls.append(wall)
            if outcome.usage.prompt_tokens is not None:
                tok_in.append(outcome.usage.prompt_tokens)
            if outcome.usage.completion_tokens is not None:
                tok_out.append(outcome.usage.completion_tokens)
            if outcome.ok and outcome.tier is Tier.LLM and outcome.plan is not None:
                valid += 1
                firsts[outcome.plan.steps[0].action] += 1
            else:
                reasons[getattr(outcome.error, "reason", type(outcome.error).__name__)] += 1
            if scenario is not None:
                judged += 1
                if outcome.plan is not None:
                    sensible += scenario.judge(outcome.plan).sensible  # type: ignore[attr-defined]
                rules_sensible += scenario.judge(rules.plan(req.snapshot)).sensible  # type: ignore[attr-defined]
            if args.verbose:
                print(f"{req.snapshot.me.role:<12} {raw}")
    finally:
        await backend.aclose()
    n = len(items)
    top = answers.most_common(1)[0] if answers else ("", 0)
    print(
        f"backend={backend.info.name} model={backend.info.model} situations={n} "
        f"(suite {len(suite)}, battle {len(battle)})"
    )
    print(f"first answer valid at the LLM tier: {valid}/{n} ({100 * valid / n:.1f}%)")
    if reasons:
        print(f"  failures: {dict(reasons)}")
    print(f"verbatim copies of a prompt JSON value: {copies}/{n}; of the old example: {old_copies}")
    print(f"first actions: {dict(firsts.most_common())}")
    print(f"distinct answers: {len(answers)}; largest share of one answer: {top[1]}/{n} {top[0]!r}")
    if judged:
        print(f"sensible first action (suite): free {sensible}/{judged}, ", end="")
        print(f"rules {rules_sensible}/{judged}")
    if tok_in:
        print(
            f"tokens per decision: in {statistics.mean(tok_in):.0f} "
            f"out {statistics.mean(tok_out) if tok_out else float('nan'):.1f}; "
            f"time per decision: mean {statistics.mean(walls):.2f}s "
            f"median {statistics.median(walls):.2f}s max {max(walls):.2f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", choices=("suite", "battle", "both"), default="both")
    parser.add_argument("--seeds", type=int, default=4, help="battles for real ECS snapshots")
    parser.add_argument("--per-seed", type=int, default=8, help="agents planned per battle")
    parser.add_argument(
        "--free-decision",
        choices=FREE_DECISIONS,
        default="generate",
        help="score-first: the first step scored, the rest generated (aiplanner.free_first)",
    )
    parser.add_argument("--rank-prior", type=float, default=1.0, help="score-first's prior")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer")
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
