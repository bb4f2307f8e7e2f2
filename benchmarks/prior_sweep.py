"""Choose the scored decision's settings on the scenario suite: rank prior, calibration,
normalisation.

Run: python benchmarks/prior_sweep.py [--threads 2] [--max-candidates 4] [--json FILE]

Scores every scenario's candidates once with the embedded model (situation and content-free
context), then replays the choice rule (:func:`aiplanner.decision.choose`) offline for each
setting, so the sweep costs one model pass. For each setting it prints the sensible-first-action
rate, how often the model departs from the rules' first choice, how often such an override is
right, and the fixes/breaks against the rules. A setting chosen here is chosen on the test suite:
the figures that justify it are in-sample (say so wherever they are quoted).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import orjson

from aiplanner.actions import DEFAULT_REGISTRY, Plan
from aiplanner.backends.base import ScoreRequest
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.decision import choose
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.phrasing import LEAD, content_free_messages, decision_prompt
from aiplanner.prompts import PromptBuilder
from aiplanner.scenarios import Scenario, load_scenarios

PRIORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass(frozen=True, slots=True)
class Scored:
    scenario: Scenario
    candidates: tuple[Plan, ...]
    sensible: tuple[bool, ...]
    raw: tuple[float, ...]
    base: tuple[float, ...]
    tokens: tuple[int, ...]


async def score_suite(
    backend: EmbeddedBackend, scenarios: Sequence[Scenario], max_candidates: int
) -> tuple[list[Scored], float]:
    rules = HeuristicPlanner()
    builder = PromptBuilder(DEFAULT_REGISTRY, tier="compressed", mode="guided")
    out: list[Scored] = []
    cache: dict[str, float] = {}
    started = time.perf_counter()
    for s in scenarios:
        cands = rules.candidates(s.snapshot, max_candidates)
        role = builder.role_instruction(s.role)  # the live decision's
        messages, phrases = decision_prompt(s.snapshot, cands, DEFAULT_REGISTRY, role)
        res = await backend.score(ScoreRequest(messages, phrases, LEAD, timeout_s=120.0))
        missing = tuple(p for p in dict.fromkeys(phrases) if p not in cache)
        if missing:
            free = await backend.score(
                ScoreRequest(content_free_messages(), missing, LEAD, timeout_s=120.0)
            )
            cache.update(zip(missing, free.logprobs, strict=True))
        out.append(
            Scored(
                s,
                cands,
                tuple(s.judge(c).sensible for c in cands),
                res.logprobs,
                tuple(cache[p] for p in phrases),
                res.tokens,
            )
        )
    return out, time.perf_counter() - started


def sweep(scored: Sequence[Scored]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for norm in ("sum", "mean"):
        for calibrated in (True, False):
            for prior in PRIORS:
                sensible = overrides = right = fixes = breaks = 0
                picks: dict[int, int] = {}
                for sc in scored:
                    div = sc.tokens if norm == "mean" else (1,) * len(sc.raw)
                    raw = [r / d for r, d in zip(sc.raw, div, strict=True)]
                    base = [b / d for b, d in zip(sc.base, div, strict=True)]
                    pick = choose(raw, base if calibrated else None, rank_prior=prior).index
                    picks[pick] = picks.get(pick, 0) + 1
                    ok = sc.sensible[pick]
                    sensible += ok
                    if pick != 0:
                        overrides += 1
                        right += ok
                        fixes += ok and not sc.sensible[0]
                        breaks += (not ok) and sc.sensible[0]
                n = len(scored)
                rows.append(
                    {
                        "norm": norm,
                        "calibrated": calibrated,
                        "prior": prior,
                        "sensible": sensible,
                        "n": n,
                        "overrides": overrides,
                        "override_right": right,
                        "fixes": fixes,
                        "breaks": breaks,
                        "max_share": max(picks.values()) / n,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-candidates", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    scenarios = load_scenarios()
    backend = EmbeddedBackend(n_threads=args.threads)
    scored, seconds = anyio.run(score_suite, backend, scenarios, args.max_candidates)
    backend.close()
    rules = sum(sc.sensible[0] for sc in scored)
    print(
        f"{len(scored)} scenarios scored in {seconds:.1f} s; rules alone sensible in {rules}; "
        f"a sensible candidate exists in {sum(any(sc.sensible) for sc in scored)}"
    )
    print(
        f"{'norm':5} {'calib':5} {'prior':>5} {'sens':>5} {'ovr':>4} {'ovrOK':>5} "
        f"{'fix':>4} {'brk':>4} {'maxPick':>7}"
    )
    rows = sweep(scored)
    for r in rows:
        ovr = int(str(r["overrides"]))
        acc = "-" if ovr == 0 else f"{int(str(r['override_right'])) / ovr:.0%}"
        print(
            f"{r['norm']!s:5} {r['calibrated']!s:5} {r['prior']!s:>5} {r['sensible']!s:>5} "
            f"{ovr:4d} {acc:>5} {r['fixes']!s:>4} {r['breaks']!s:>4} "
            f"{float(str(r['max_share'])):7.0%}"
        )
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps({"rows": rows, "rules": rules, "seconds": seconds}))


if __name__ == "__main__":
    main()
