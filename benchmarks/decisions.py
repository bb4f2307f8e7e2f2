"""Decisions on the scenario suite: is each planner's first step sensible, and does it decide?

Run: python benchmarks/decisions.py [--backend embedded|openai|ollama|heuristic] [--base-url URL]
         [--model M] [--threads N] [--planners rules random position-0 ... free] [--draws 50]
         [--rank-prior X] [--no-order-check] [--limit N] [--json FILE]
         [--teacher-horizon-s H] [--teacher-weights 'k=v,...'] [--teacher-round-rules]

Scores the rules, the random floor (mean over ``--draws`` draws), every constant candidate
position, the model planners (:data:`aiplanner.evaluation.MODEL_PLANNERS`: guided by score,
the model alone, guided by a generated index, free plans) and free plans whose first step is
scored (``free-score-first`` with the rank prior, ``free-score-first-alone`` without it:
:mod:`aiplanner.free_first`) through the real pipeline on the suite shipped with the package.
Prints what the rules make of the suite (scenarios where their first choice is wrong, and
whether a candidate could fix it), one table over the planners, one per role, and the spread of
answers by candidate position and by action, and for free plans the verbatim copies (an answer
equal, as JSON, to some JSON value of the prompt it was given). ``--json`` writes every report
with its per-scenario records. A model planner the pipeline cannot run (a setting its
``PlanContext`` lacks) is skipped with the reason.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from aiplanner import DEFAULT_REGISTRY, HeuristicPlanner, create_backend
from aiplanner.backends.base import Backend
from aiplanner.codec import extract_json, json_values
from aiplanner.errors import PlannerError
from aiplanner.evaluation import (
    MODEL_PLANNERS,
    Case,
    PipelinePlanner,
    Record,
    Report,
    ScenarioPlanner,
    audit_suite,
    evaluate,
    make_planner,
)
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanRequest
from aiplanner.scenarios import Scenario, load_scenarios
from aiplanner.training.teacher import (
    OutcomeTeacher,
    TeacherPlanner,
    add_teacher_arguments,
    teacher_config_from,
)

BASELINES = ("rules", "random")
FREE_PLANNERS = ("free", "free-score-first", "free-score-first-alone")
"""The planners that write free plans: their answers are checked for verbatim copies."""
FREE_SCORED = {
    "free-score-first": None,  # the pipeline's rank prior (or --rank-prior)
    "free-score-first-alone": 0.0,  # the model's calibrated scores alone
}
"""Free mode with its first step scored and the rest generated (aiplanner.free_first)."""


def free_scored_planner(name: str, backend: Backend, rank_prior: float | None) -> ScenarioPlanner:
    """A free planner whose ``PlanContext.free_decision`` is ``score-first``."""
    planner = PipelinePlanner(backend, mode="free", name=name)
    planner.settings["free_decision"] = "score-first"
    prior = FREE_SCORED[name]
    if prior is None:
        prior = rank_prior
    if prior is not None:
        planner.settings["rank_prior"] = prior
    return planner


def prompt_copies(records: Sequence[Record], scenarios: Sequence[Scenario]) -> int:
    """How many free-mode answers in ``records`` equal (as JSON) a JSON value of the compressed
    free prompt their scenario gives (built as :class:`PipelinePlanner` builds the request)."""
    builder = PromptBuilder(DEFAULT_REGISTRY, mode="free")
    by_name = {s.name: s for s in scenarios}
    copies = 0
    for record in records:
        scenario = by_name.get(record.scenario)
        if scenario is None or not record.raw:
            continue
        try:
            answer = orjson.loads(extract_json(record.raw))
        except (PlannerError, orjson.JSONDecodeError):
            continue
        snap = scenario.snapshot
        req = PlanRequest(snap.me.id, 1, snap, (), snap.tick, 0.0, 60.0, 60.0)
        prompt = "\n".join(m.content for m in builder.messages(req))
        copies += answer in json_values(prompt)
    return copies


def _pct(x: float | None) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def print_audit(scenarios: Sequence[Scenario], max_candidates: int) -> dict[str, object]:
    audit = audit_suite(scenarios, max_candidates=max_candidates)
    roles: dict[str, int] = {}
    for s in scenarios:
        roles[s.role] = roles.get(s.role, 0) + 1
    print(f"suite: {len(scenarios)} scenarios ({', '.join(f'{r} {n}' for r, n in roles.items())})")
    print(
        f"rules wrong in {len(audit.rules_wrong)}; a sensible candidate among the first "
        f"{max_candidates} in {len(audit.fixable)}, none in {len(audit.unfixable)}"
    )
    for name in audit.unfixable:
        print(f"  no sensible candidate: {name}")
    return audit.to_dict()


def print_table(reports: Sequence[Report]) -> None:
    head = (
        f"{'planner':<16} {'valid':>5} {'sens':>5} {'act':>5} {'targ':>5} {'agree':>5} "
        f"{'ovr':>5} {'ovrOK':>5} {'fix/brk':>7} {'maxPos':>6} {'maxAct':>6} "
        f"{'s/dec':>6} {'in':>5} {'out':>4} {'order':>6}"
    )
    print(head)
    for r in reports:
        f = r.overall
        order = "-" if r.order is None else f"{r.order.changed}/{r.order.compared}"
        print(
            f"{r.planner:<16} {_pct(f.valid_rate)} {_pct(f.sensible_rate)} {_pct(f.action_rate)} "
            f"{_pct(f.target_rate)} {_pct(f.agree_rate)} {_pct(f.override_rate)} "
            f"{_pct(f.override_accuracy)} {f'{f.fixes}/{f.breaks}':>7} "
            f"{_pct(f.max_position_share):>6} {_pct(f.max_action_share):>6} "
            f"{r.seconds_per_decision:6.3f} {_num(r.prompt_tokens_per_decision, '5.0f'):>5} "
            f"{_num(r.completion_tokens_per_decision, '4.1f'):>4} {order:>6}"
        )
    print(
        "(rates in %; sens = first action and target acceptable; targ = target/place right when "
        "the action is; agree = first step equals the rules'; ovr = overrides, ovrOK = share of "
        "them sensible; fix/brk = overrides right where the rules were wrong / wrong where they "
        "were right; maxPos/maxAct = largest share of one candidate position / first action; "
        "order = decisions changed by shuffling the candidates; random: pooled over its draws)"
    )


def print_roles(reports: Sequence[Report]) -> None:
    roles = list(dict.fromkeys(role for r in reports for role in r.roles))
    print(f"{'sensible % by role':<16} " + " ".join(f"{role:>11}" for role in roles))
    for r in reports:
        cells = []
        for role in roles:
            f = r.roles.get(role)
            cells.append(f"{'-':>11}" if f is None else f"{_pct(f.sensible_rate):>11}")
        print(f"{r.planner:<16} " + " ".join(cells))


def print_spread(reports: Sequence[Report]) -> None:
    print("spread of answers (valid decisions): by candidate position | by first action")
    for r in reports:
        f = r.overall
        pos = " ".join(f"{k}:{v}" for k, v in f.positions.items())
        act = " ".join(f"{k}:{v}" for k, v in sorted(f.actions.items(), key=lambda kv: -kv[1]))
        print(f"{r.planner:<16} {pos} | {act}")


def warm_up(planner: ScenarioPlanner, scenario: Scenario, max_candidates: int) -> None:
    """One decision before timing: loads the model and fills the engine's prefix cache."""
    cands = HeuristicPlanner().candidates(scenario.snapshot, max_candidates)
    planner.decide([Case(scenario, cands)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--weights", default="auto", help="embedded: auto, as-is, f16, q8_0, mixed, q4_0, iq4_nl"
    )
    parser.add_argument("--max-candidates", type=int, default=4)
    parser.add_argument(
        "--planners",
        nargs="+",
        help="default: rules random position-0..N-1 and every model planner",
    )
    parser.add_argument("--draws", type=int, default=50, help="random floor: draws to average")
    parser.add_argument(
        "--rank-prior", type=float, help="guided-score, free-score-first: penalty per rank step"
    )
    parser.add_argument("--no-order-check", action="store_true")
    parser.add_argument("--order-seed", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N scenarios of each role")
    parser.add_argument("--json", type=Path, help="write every report here")
    add_teacher_arguments(parser, prefix="teacher-")
    args = parser.parse_args(argv)
    teacher = teacher_config_from(args, prefix="teacher-")

    scenarios = load_scenarios()
    if args.limit:
        kept: dict[str, int] = {}
        chosen = []
        for s in scenarios:
            kept[s.role] = kept.get(s.role, 0) + 1
            if kept[s.role] <= args.limit:
                chosen.append(s)
        scenarios = tuple(chosen)
    positions = [f"position-{k}" for k in range(args.max_candidates)]
    names = args.planners or [*BASELINES, *positions, *MODEL_PLANNERS, *FREE_SCORED]
    backend: Backend | None = None
    model_names = {*MODEL_PLANNERS, *FREE_SCORED}
    if any(n in model_names for n in names):
        backend = create_backend(
            args.backend,
            model=args.model,
            base_url=args.base_url,
            n_threads=args.threads,
            weights=args.weights,
        )
    load = os.getloadavg()
    print(
        f"backend={args.backend} model={backend.info.model if backend else '-'} "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    audit = print_audit(scenarios, args.max_candidates)
    reports: list[Report] = []
    skipped: dict[str, str] = {}
    copies: dict[str, int] = {}

    def save() -> None:
        # After every planner: a run cut short keeps what it measured.
        if args.json:
            doc = {
                "backend": args.backend,
                "model": backend.info.model if backend else None,
                "load_average": {"start": list(load), "now": list(os.getloadavg())},
                "audit": audit,
                "skipped": skipped,
                "verbatim_copies": copies,
                "reports": [r.to_dict() for r in reports],
            }
            args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))

    try:
        for name in names:
            if name in model_names and backend is None:
                skipped[name] = f"backend {args.backend} has no model"
                continue
            try:
                if name in FREE_SCORED and backend is not None:
                    planner = free_scored_planner(name, backend, args.rank_prior)
                elif name == "teacher":  # with the --teacher-* settings
                    planner = TeacherPlanner(OutcomeTeacher(teacher))
                else:
                    planner = make_planner(name, backend, rank_prior=args.rank_prior)
            except PlannerError as exc:
                skipped[name] = str(exc)
                continue
            if name in model_names:
                warm_up(planner, scenarios[0], args.max_candidates)
            report = evaluate(
                planner,
                scenarios,
                max_candidates=args.max_candidates,
                draws=args.draws if name == "random" else 1,
                # A random pick changes with every draw: its order check would be noise.
                order_seed=None if args.no_order_check or name == "random" else args.order_seed,
            )
            reports.append(report)
            if name in FREE_PLANNERS:
                copies[name] = prompt_copies(report.records, scenarios)
            save()
            f = report.overall
            print(
                f"  done: {name}: sensible {f.sensible}/{f.decisions}, "
                f"{report.seconds_per_decision:.3f} s/decision",
                file=sys.stderr,
            )
    finally:
        if backend is not None:
            import anyio

            anyio.run(backend.aclose)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print()
    print_table(reports)
    print()
    print_roles(reports)
    print()
    print_spread(reports)
    for name, n in copies.items():
        print(f"verbatim copies of a prompt JSON value, {name}: {n}/{len(scenarios)}")
    end = os.getloadavg()
    print(f"\nload average at end {end[0]:.2f} {end[1]:.2f} {end[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
