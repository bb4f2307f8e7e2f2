"""Scoring planners on the scenario suite: is the first step sensible, and does the choice depend
on the situation?

:func:`evaluate` runs any :class:`ScenarioPlanner` on scenarios (:mod:`aiplanner.scenarios`) and
returns a :class:`Report`: the valid rate, the sensible-first-action and sensible-target rates,
overall and per role, and the decision statistics that tell a planner that decides from one that
answers the same thing everywhere:

* ``agree``: the first step equals the rules' first choice (``HeuristicPlanner.plan``);
* the largest share of any one answer, by candidate position and by first action (a planner that
  always answers "option 1" shows a position share of 1.0 at once);
* overrides (a valid plan whose first step differs from the rules') and override accuracy, the
  share of overrides that are sensible, with ``fixes`` (right where the rules were wrong) and
  ``breaks`` (wrong where the rules were right);
* prompt and completion tokens and seconds per decision.

Built-in planners: :class:`RulesPlanner`, :class:`RandomPlanner` (uniform over the rules'
candidates, the floor; pass ``draws`` to :func:`evaluate` for the mean over many draws),
:class:`PositionPlanner` (always candidate k) and :class:`PipelinePlanner` (a model through the
real planning pipeline, :func:`aiplanner.strategies.run_batch`, in guided or free mode).

The order check (``order_seed``) hands the planner the same candidates shuffled and counts the
scenarios whose decision changed. The pipeline reads the rules' rank from the candidates' order
(guided scoring's ``rank_prior`` charges position ``i``), so with a prior above zero a change is
the prior at work; the model's own invariance is measured with ``rank_prior=0``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import anyio

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, Plan
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.errors import ConfigError, PlanRejected
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.scenarios import Scenario
from aiplanner.strategies import Batch, PlanContext, run_batch
from aiplanner.validation import validate_plan

__all__ = [
    "MODEL_PLANNERS",
    "Case",
    "Decision",
    "Figures",
    "OrderCheck",
    "PipelinePlanner",
    "PositionPlanner",
    "RandomPlanner",
    "Record",
    "Report",
    "RulesPlanner",
    "ScenarioPlanner",
    "SuiteAudit",
    "audit_suite",
    "evaluate",
    "make_planner",
    "plan_text",
]

OTHER: Final = "other"
"""The position key of a plan that is none of the candidates (free mode)."""
_MAX_RAW: Final = 200


@dataclass(frozen=True, slots=True)
class Case:
    """What a planner is given for one scenario: its snapshot and the rules' candidates, in the
    order presented (rank order unless the order check shuffled them)."""

    scenario: Scenario
    candidates: tuple[Plan, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """A planner's answer for one case. ``plan`` None: no plan (``error`` says why). Token
    counts and ``seconds`` are None where the planner has none to report."""

    plan: Plan | None
    error: str = ""
    raw: str = ""
    tier: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float | None = None


class ScenarioPlanner(Protocol):
    """Anything :func:`evaluate` can score: one decision per case, in order."""

    @property
    def name(self) -> str: ...

    def decide(self, cases: Sequence[Case]) -> list[Decision]: ...


class RulesPlanner:
    """The rules alone: :meth:`HeuristicPlanner.plan` (candidates ignored)."""

    def __init__(self, registry: ActionRegistry = DEFAULT_REGISTRY) -> None:
        self._rules = HeuristicPlanner(registry)

    @property
    def name(self) -> str:
        return "rules"

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        return [Decision(plan=self._rules.plan(c.scenario.snapshot)) for c in cases]


class RandomPlanner:
    """A candidate drawn uniformly (``random.Random(seed)``, one draw per case, in order; the
    generator runs on across calls, so each :meth:`decide` is a fresh draw)."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    @property
    def name(self) -> str:
        return "random"

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        return [Decision(plan=c.candidates[self._rng.randrange(len(c.candidates))]) for c in cases]


class PositionPlanner:
    """Always candidate ``position`` (the last one where there are fewer)."""

    def __init__(self, position: int) -> None:
        if position < 0:
            raise ConfigError(f"position must be >= 0, got {position}")
        self.position = position

    @property
    def name(self) -> str:
        return f"position-{self.position}"

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        return [
            Decision(plan=c.candidates[min(self.position, len(c.candidates) - 1)]) for c in cases
        ]


class PipelinePlanner:
    """A model through the real pipeline: one :func:`run_batch` per case, sequential, with a
    :class:`PlanContext` and a one-agent :class:`Batch`, as the plugin and the CLI do.

    ``guided_decision`` (``"score"``/``"generate"``), ``rank_prior`` and ``calibrated`` are passed
    to the :class:`PlanContext` when given (None: the pipeline's default). ``simplified_retry``
    is off by default so that each decision is the model's first answer. The backend is not
    closed here: its owner closes it.

    Raises :class:`ConfigError` when a setting is given that this version's :class:`PlanContext`
    does not have.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        mode: str = "guided",
        name: str | None = None,
        prompt_tier: str = "compressed",
        registry: ActionRegistry = DEFAULT_REGISTRY,
        guided_decision: str | None = None,
        rank_prior: float | None = None,
        calibrated: bool | None = None,
        simplified_retry: bool = False,
        temperature: float = 0.0,
        seed: int = 0,
        budget_s: float = 60.0,
    ) -> None:
        self.backend = backend
        self.mode = mode
        self.prompt_tier = prompt_tier
        self.registry = registry
        self.simplified_retry = simplified_retry
        self.budget_s = budget_s
        wanted: dict[str, object] = {"temperature": temperature, "seed": seed}
        for key, value in (
            ("guided_decision", guided_decision),
            ("rank_prior", rank_prior),
            ("calibrated", calibrated),
        ):
            if value is not None:
                wanted[key] = value
        known = {f.name for f in dataclasses.fields(PlanContext)}
        missing = sorted(set(wanted) - known)
        if missing:
            raise ConfigError(f"this pipeline's PlanContext has no {', '.join(missing)}")
        self.settings: dict[str, object] = wanted
        self._name = name or mode

    @property
    def name(self) -> str:
        return self._name

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        return anyio.run(self._decide_all, cases)

    async def _decide_all(self, cases: Sequence[Case]) -> list[Decision]:
        got: list[PlanOutcome] = []
        # Failures are counted per decision: a breaker would turn one bad answer into many.
        ctx = PlanContext(
            backend=self.backend,
            registry=self.registry,
            metrics=Metrics(),
            breaker=CircuitBreaker(failures=1_000_000),
            emit=got.append,
            **self.settings,  # type: ignore[arg-type]
        )
        out: list[Decision] = []
        for i, case in enumerate(cases):
            snap = case.scenario.snapshot
            req = PlanRequest(
                entity=snap.me.id,
                plan_id=i + 1,
                snapshot=snap,
                candidates=case.candidates,
                requested_tick=snap.tick,
                requested_at=0.0,
                deadline=self.budget_s,
                budget_s=self.budget_s,
            )
            got.clear()
            started = time.perf_counter()
            await run_batch(
                ctx,
                Batch((req,), "sequential", self.mode, self.prompt_tier, self.simplified_retry, 0),
            )
            elapsed = time.perf_counter() - started
            out.append(_decision(got, elapsed))
        return out


MODEL_PLANNERS: Final[Mapping[str, str]] = {
    "guided-score": "guided; candidates scored by the model, with the pipeline's rank prior",
    "model-alone": "guided; candidates scored by the model alone (rank prior 0)",
    "guided-generate": "guided; the model generates a candidate index",
    "free": "free; the model writes the plan",
}
"""The model planners :func:`make_planner` knows, by name, with what each is."""


def make_planner(
    name: str,
    backend: Backend | None = None,
    *,
    seed: int = 0,
    rank_prior: float | None = None,
    temperature: float = 0.0,
) -> ScenarioPlanner:
    """A built-in planner by name: ``rules``, ``random``, ``teacher``, ``position-K``, or one of
    :data:`MODEL_PLANNERS` (needs ``backend``; ``rank_prior`` applies to ``guided-score``, None
    meaning the pipeline's default). Raises :class:`ConfigError` for an unknown name, a model
    planner without a backend, or a setting the pipeline lacks."""
    if name == "rules":
        return RulesPlanner()
    if name == "random":
        return RandomPlanner(seed)
    if name == "teacher":  # the outcome teacher's rollouts (the training extra's labeller)
        from aiplanner.training.teacher import TeacherPlanner

        return TeacherPlanner()
    if name.startswith("position-") and name.removeprefix("position-").isdigit():
        return PositionPlanner(int(name.removeprefix("position-")))
    if name not in MODEL_PLANNERS:
        known = ", ".join(("rules", "random", "teacher", "position-K", *MODEL_PLANNERS))
        raise ConfigError(f"unknown planner {name!r}; choose one of {known}")
    if backend is None:
        raise ConfigError(f"planner {name!r} needs a backend")
    if name == "free":
        return PipelinePlanner(backend, mode="free", name=name, seed=seed, temperature=temperature)
    if name == "guided-generate":
        decision, prior = "generate", None
    else:
        decision, prior = "score", 0.0 if name == "model-alone" else rank_prior
    return PipelinePlanner(
        backend,
        name=name,
        seed=seed,
        temperature=temperature,
        guided_decision=decision,
        rank_prior=prior,
    )


def _decision(got: Sequence[PlanOutcome], elapsed: float) -> Decision:
    if not got:
        return Decision(plan=None, error="no outcome", seconds=elapsed)
    o = got[0]
    return Decision(
        plan=o.plan,
        error="" if o.error is None else f"{type(o.error).__name__}: {o.error}"[:_MAX_RAW],
        raw=o.raw[:_MAX_RAW],
        tier=o.tier.value if o.tier is not None else "",
        prompt_tokens=o.usage.prompt_tokens,
        completion_tokens=o.usage.completion_tokens,
        seconds=elapsed,
    )


# -- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One decision on one scenario (in draw ``draw``), judged."""

    scenario: str
    role: str
    draw: int
    plan: str
    valid: bool
    error: str
    action: str
    action_ok: bool
    target_checked: bool
    target_ok: bool
    sensible: bool
    position: str  # "0".."n-1" in the presented candidates, OTHER, or "" when invalid
    agrees: bool
    rules_sensible: bool
    tier: str
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float | None
    raw: str

    @property
    def override(self) -> bool:
        return self.valid and not self.agrees

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """Counts over a group of records; rates are over all its decisions unless said otherwise."""

    decisions: int
    valid: int
    action_ok: int
    target_checked: int
    target_ok: int
    sensible: int
    agree: int
    overrides: int
    overrides_right: int
    fixes: int
    breaks: int
    rules_wrong: int
    positions: dict[str, int]
    actions: dict[str, int]

    @classmethod
    def of(cls, records: Sequence[Record]) -> Figures:
        overrides = [r for r in records if r.override]
        valid = [r for r in records if r.valid]
        return cls(
            decisions=len(records),
            valid=len(valid),
            action_ok=sum(r.action_ok for r in records),
            target_checked=sum(r.action_ok and r.target_checked for r in records),
            target_ok=sum(r.action_ok and r.target_checked and r.target_ok for r in records),
            sensible=sum(r.sensible for r in records),
            agree=sum(r.agrees for r in records),
            overrides=len(overrides),
            overrides_right=sum(r.sensible for r in overrides),
            fixes=sum(r.sensible and not r.rules_sensible for r in overrides),
            breaks=sum(r.rules_sensible and not r.sensible for r in overrides),
            rules_wrong=sum(not r.rules_sensible for r in records),
            positions=dict(sorted(Counter(r.position for r in valid).items())),
            actions=dict(sorted(Counter(r.action for r in valid).items())),
        )

    @property
    def valid_rate(self) -> float:
        return _rate(self.valid, self.decisions)

    @property
    def action_rate(self) -> float:
        """First action acceptable (whatever its target)."""
        return _rate(self.action_ok, self.decisions)

    @property
    def target_rate(self) -> float | None:
        """Of the acceptable first actions whose target or place is judged, the share that fit."""
        return _rate(self.target_ok, self.target_checked) if self.target_checked else None

    @property
    def sensible_rate(self) -> float:
        """First action and its target both acceptable."""
        return _rate(self.sensible, self.decisions)

    @property
    def agree_rate(self) -> float:
        return _rate(self.agree, self.decisions)

    @property
    def override_rate(self) -> float:
        return _rate(self.overrides, self.decisions)

    @property
    def override_accuracy(self) -> float | None:
        return _rate(self.overrides_right, self.overrides) if self.overrides else None

    @property
    def max_position_share(self) -> float:
        """The most frequent candidate position's share of the valid decisions."""
        return _rate(max(self.positions.values(), default=0), self.valid)

    @property
    def max_action_share(self) -> float:
        """The most frequent first action's share of the valid decisions."""
        return _rate(max(self.actions.values(), default=0), self.valid)

    def to_dict(self) -> dict[str, object]:
        counts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        rates = {
            name: getattr(self, name)
            for name in (
                "valid_rate",
                "action_rate",
                "target_rate",
                "sensible_rate",
                "agree_rate",
                "override_rate",
                "override_accuracy",
                "max_position_share",
                "max_action_share",
            )
        }
        return counts | rates


@dataclass(frozen=True, slots=True)
class OrderCheck:
    """Decisions with the candidates shuffled (``seed``) against the first draw's."""

    seed: int
    compared: int
    changed: int
    scenarios: tuple[str, ...]  # the ones whose decision changed

    def to_dict(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "compared": self.compared,
            "changed": self.changed,
            "scenarios": list(self.scenarios),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What :func:`evaluate` measured. ``seconds_per_decision`` is wall time of the planner's
    ``decide`` calls over the decisions; token figures average the decisions that report them."""

    planner: str
    scenarios: int
    draws: int
    max_candidates: int
    overall: Figures
    roles: dict[str, Figures]
    records: tuple[Record, ...]
    seconds_per_decision: float
    prompt_tokens_per_decision: float | None
    completion_tokens_per_decision: float | None
    order: OrderCheck | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (plain dicts, lists, numbers, strings and None)."""
        return {
            "planner": self.planner,
            "scenarios": self.scenarios,
            "draws": self.draws,
            "max_candidates": self.max_candidates,
            "overall": self.overall.to_dict(),
            "roles": {role: f.to_dict() for role, f in self.roles.items()},
            "seconds_per_decision": self.seconds_per_decision,
            "prompt_tokens_per_decision": self.prompt_tokens_per_decision,
            "completion_tokens_per_decision": self.completion_tokens_per_decision,
            "order": None if self.order is None else self.order.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def plan_text(plan: Plan) -> str:
    """``Attack(91); TakeCover(4,8)``."""
    return "; ".join(f"{s.action}({','.join(map(str, s.args))})" for s in plan.steps)


# -- running -----------------------------------------------------------------------------------


def evaluate(
    planner: ScenarioPlanner,
    scenarios: Sequence[Scenario],
    *,
    max_candidates: int = 4,
    draws: int = 1,
    order_seed: int | None = None,
    registry: ActionRegistry = DEFAULT_REGISTRY,
) -> Report:
    """Run ``planner`` on ``scenarios`` ``draws`` times and judge every decision.

    Candidates are ``HeuristicPlanner(registry).candidates(snapshot, max_candidates)``. With
    ``order_seed``, the planner also decides once on the same candidates shuffled (seeded; never
    left in rank order where there are two or more) and :attr:`Report.order` counts the changed
    decisions. Raises :class:`ConfigError` for no scenarios, ``draws < 1``, or a planner that
    answers with the wrong number of decisions.
    """
    if not scenarios:
        raise ConfigError("evaluate needs at least one scenario")
    if draws < 1:
        raise ConfigError(f"draws must be at least 1, got {draws}")
    rules = HeuristicPlanner(registry)
    cases = [Case(s, rules.candidates(s.snapshot, max_candidates)) for s in scenarios]
    records: list[Record] = []
    first: list[Decision] = []
    wall = 0.0
    for draw in range(draws):
        decisions, seconds = _run(planner, cases)
        wall += seconds
        if draw == 0:
            first = decisions
        records += [_record(c, d, draw, registry) for c, d in zip(cases, decisions, strict=True)]
    order = None
    if order_seed is not None:
        order = _order_check(planner, cases, first, order_seed)
    roles: dict[str, list[Record]] = {}
    for r in records:
        roles.setdefault(r.role, []).append(r)
    prompt = [r.prompt_tokens for r in records if r.prompt_tokens is not None]
    completion = [r.completion_tokens for r in records if r.completion_tokens is not None]
    return Report(
        planner=planner.name,
        scenarios=len(scenarios),
        draws=draws,
        max_candidates=max_candidates,
        overall=Figures.of(records),
        roles={role: Figures.of(rs) for role, rs in roles.items()},
        records=tuple(records),
        seconds_per_decision=wall / len(records),
        prompt_tokens_per_decision=sum(prompt) / len(prompt) if prompt else None,
        completion_tokens_per_decision=sum(completion) / len(completion) if completion else None,
        order=order,
    )


def _run(planner: ScenarioPlanner, cases: Sequence[Case]) -> tuple[list[Decision], float]:
    started = time.perf_counter()
    decisions = planner.decide(cases)
    seconds = time.perf_counter() - started
    if len(decisions) != len(cases):
        raise ConfigError(
            f"planner {planner.name} gave {len(decisions)} decisions for {len(cases)} cases"
        )
    return decisions, seconds


def _record(case: Case, decision: Decision, draw: int, registry: ActionRegistry) -> Record:
    """Judge one decision; ``case.candidates`` are in rank order, so the first is the rules'."""
    s = case.scenario
    plan, error = decision.plan, decision.error
    valid = False
    if plan is not None:
        try:
            validate_plan(plan, s.snapshot, registry)
            valid = True
        except PlanRejected as exc:
            error = error or f"PlanRejected: {exc}"
    elif not error:
        error = "no plan"
    judged = s.judge(plan) if valid and plan is not None else None
    rules_first = case.candidates[0]
    position = ""
    if valid and plan is not None:
        position = str(case.candidates.index(plan)) if plan in case.candidates else OTHER
    return Record(
        scenario=s.name,
        role=s.role,
        draw=draw,
        plan=plan_text(plan) if plan is not None else "",
        valid=valid,
        error=error,
        action=plan.steps[0].action if valid and plan is not None else "",
        action_ok=judged is not None and judged.action_ok,
        target_checked=judged is not None and judged.target_checked,
        target_ok=judged is not None and judged.target_ok,
        sensible=judged is not None and judged.sensible,
        position=position,
        agrees=valid and plan is not None and plan.steps[0] == rules_first.steps[0],
        rules_sensible=s.judge(rules_first).sensible,
        tier=decision.tier,
        prompt_tokens=decision.prompt_tokens,
        completion_tokens=decision.completion_tokens,
        seconds=decision.seconds,
        raw=decision.raw,
    )


def _order_check(
    planner: ScenarioPlanner, cases: Sequence[Case], first: Sequence[Decision], seed: int
) -> OrderCheck:
    rng = random.Random(seed)
    shuffled = [Case(c.scenario, _shuffle(c.candidates, rng)) for c in cases]
    again, _ = _run(planner, shuffled)
    compared = [
        (c.scenario.name, a.plan, b.plan)
        for c, a, b in zip(cases, first, again, strict=True)
        if len(c.candidates) > 1
    ]
    changed = tuple(name for name, a, b in compared if a != b)
    return OrderCheck(seed, len(compared), len(changed), changed)


def _shuffle(candidates: tuple[Plan, ...], rng: random.Random) -> tuple[Plan, ...]:
    if len(candidates) < 2:
        return candidates
    while True:
        order = list(candidates)
        rng.shuffle(order)
        if tuple(order) != candidates:
            return tuple(order)


# -- the suite itself --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SuiteAudit:
    """What the rules make of a suite: per scenario, whether their first choice is sensible and
    which candidate positions are (a model can only fix a rules-wrong case by picking one)."""

    max_candidates: int
    rules_sensible: dict[str, bool]
    acceptable_positions: dict[str, tuple[int, ...]]

    @property
    def rules_wrong(self) -> tuple[str, ...]:
        return tuple(n for n, ok in self.rules_sensible.items() if not ok)

    @property
    def fixable(self) -> tuple[str, ...]:
        """Rules-wrong scenarios with a sensible candidate."""
        return tuple(n for n in self.rules_wrong if self.acceptable_positions[n])

    @property
    def unfixable(self) -> tuple[str, ...]:
        """Rules-wrong scenarios where no candidate is sensible."""
        return tuple(n for n in self.rules_wrong if not self.acceptable_positions[n])

    def to_dict(self) -> dict[str, object]:
        return {
            "max_candidates": self.max_candidates,
            "scenarios": len(self.rules_sensible),
            "rules_wrong": list(self.rules_wrong),
            "fixable": list(self.fixable),
            "unfixable": list(self.unfixable),
            "acceptable_positions": {n: list(p) for n, p in self.acceptable_positions.items()},
        }


def audit_suite(
    scenarios: Sequence[Scenario],
    *,
    max_candidates: int = 4,
    registry: ActionRegistry = DEFAULT_REGISTRY,
) -> SuiteAudit:
    """Judge the rules' first choice and every candidate of each scenario."""
    rules = HeuristicPlanner(registry)
    sensible: dict[str, bool] = {}
    positions: dict[str, tuple[int, ...]] = {}
    for s in scenarios:
        cands = rules.candidates(s.snapshot, max_candidates)
        sensible[s.name] = s.judge(cands[0]).sensible
        positions[s.name] = tuple(i for i, p in enumerate(cands) if s.judge(p).sensible)
    return SuiteAudit(max_candidates, sensible, positions)
