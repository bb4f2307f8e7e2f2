"""OutcomeTeacher: labels a situation with the candidate whose rollout turns out best.

For one :class:`~aiplanner.training.situations.Situation`, the teacher takes the rules' ranked
candidates (``HeuristicPlanner.candidates(snapshot, 4)``) and plays each one out for a few
seconds of game time with the plugin's own processors and no backend: the agent under test
starts with the candidate in its ``ActionQueue`` (``PlanState`` EXECUTING, so the planner leaves
it alone until the plan ends, then the rules take over), and every other agent plans by the rules
as the plugin would without a model. Each rollout runs in an isolated esper world.

The outcome is scored from the agent's side, summed tick by tick with a discount so that what
happens sooner counts more (:class:`OutcomeWeights`): enemy health removed and kills, the agent's
own health lost and its death, allies' health lost or healed and their deaths, and cells gained
toward the objective. With ``TeacherConfig.round_rules`` the rollout also plays the demo
game's round rules (:class:`OutcomeWeights` ``hold``, ``win``, ``loss``): a side holds the
objective while it has someone alive within ``objective_radius`` cells and the other side has
nobody there; holding it ``hold_s`` seconds in a row, or leaving the other side nobody alive,
wins the round, and the rollout ends there (what would have followed is not scored).

Chance. The execution rules and the rules planner are deterministic: no random number is drawn
anywhere in a rollout. So "several seeds" here vary the *others'* situation instead
(:meth:`Situation.variant`: weapon cooldown phase, a cell of jitter, a little health); every
candidate is scored on the same variants (common random numbers), and its score is the mean.

The label is the best candidate's index and its margin over the runner-up.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Final

import esper
import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind, Plan, Step
from aiplanner.components import ActionQueue, Health, PlanState, PlanStatus, Position, Tier
from aiplanner.config import PlannerConfig
from aiplanner.errors import ConfigError
from aiplanner.evaluation import Case, Decision
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.plugin import PlannerPlugin
from aiplanner.snapshot import WorldSnapshot
from aiplanner.training.situations import (
    Roster,
    Situation,
    isolated_world,
    situation_from_snapshot,
    situation_snapshot,
)

__all__ = [
    "Label",
    "Outcome",
    "OutcomeTeacher",
    "OutcomeWeights",
    "TeacherConfig",
    "TeacherPlanner",
    "add_teacher_arguments",
    "file_sha256",
    "label_snapshot",
    "load_labels",
    "parse_weights",
    "save_labels",
    "teacher_config_from",
]

_MAX_LABEL_LINE: Final = 1 << 16  # bytes; a labelled situation is a few kB


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeWeights:
    """How much each event is worth to the agent under test (health is in hp)."""

    dealt: float = 1.0  # per enemy hp removed (by anyone on the agent's side)
    kill: float = 40.0  # per enemy killed
    taken: float = 1.5  # per hp the agent loses (negative when it is healed)
    death: float = 150.0  # the agent dies
    ally_hp: float = 1.0  # per hp an ally loses (negative when healed)
    ally_death: float = 60.0  # per ally killed
    progress: float = 1.0  # per cell closer to the objective
    discount_per_s: float = 0.85  # an event t seconds ahead counts discount_per_s ** t
    hold: float = 0.0  # per second the agent's side holds the objective alone (minus: the other)
    win: float = 0.0  # the agent's side wins the round (round_rules only)
    loss: float = 0.0  # the agent's side loses the round (round_rules only)


def parse_weights(text: str, base: OutcomeWeights | None = None) -> OutcomeWeights:
    """``"death=300,kill=80"``: ``base`` (default :class:`OutcomeWeights`) with those fields set.

    Raises :class:`ConfigError` for an unknown name, a value that is not a finite number or a
    discount outside (0, 1].
    """
    start = base if base is not None else OutcomeWeights()
    names = {f.name for f in fields(OutcomeWeights)}
    changes: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in names:
            raise ConfigError(f"bad weight {part!r}; known: {', '.join(sorted(names))}")
        try:
            number = float(value)
        except ValueError as exc:
            raise ConfigError(f"weight {name} must be a number, got {value!r}") from exc
        if not math.isfinite(number):
            raise ConfigError(f"weight {name} must be finite, got {value!r}")
        changes[name] = number
    weights = replace(start, **changes)
    if not 0.0 < weights.discount_per_s <= 1.0:
        raise ConfigError(f"discount_per_s must be in (0, 1], got {weights.discount_per_s}")
    return weights


@dataclass(frozen=True, slots=True, kw_only=True)
class TeacherConfig:
    """Rollout settings. ``dt`` is 1/8 s so weapon cooldowns and reloads are whole ticks."""

    horizon_s: float = 5.0
    dt: float = 0.125
    variants: int = 3
    max_candidates: int = 4
    weights: OutcomeWeights = field(default_factory=OutcomeWeights)
    round_rules: bool = False  # score holding the objective and the round's end (see above)
    objective_radius: float = 2.0  # cells, as the demo's maps default to
    hold_s: float = 5.0  # seconds a side must hold the objective alone to win

    def __post_init__(self) -> None:
        if not (self.dt > 0 and self.horizon_s >= self.dt):
            raise ConfigError(f"need 0 < dt <= horizon_s, got dt={self.dt}, {self.horizon_s}")
        if self.variants < 1 or not 1 <= self.max_candidates <= 9:
            raise ConfigError("variants must be >= 1 and max_candidates 1..9")
        if not (self.objective_radius > 0 and self.hold_s > 0):
            raise ConfigError("objective_radius and hold_s must be positive")

    def to_dict(self) -> dict[str, object]:
        """The settings as plain data, for reports."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rollout did: the totals over the horizon (undiscounted) and the score."""

    dealt: int
    kills: int
    taken: int
    died: bool
    ally_lost: int
    ally_deaths: int
    progress: float
    score: float
    result: int = 0  # round_rules: +1 the agent's side won the round, -1 lost, 0 neither


@dataclass(frozen=True, slots=True)
class Label:
    """A situation, its candidates, each candidate's mean score, the best one and its margin."""

    situation: Situation
    candidates: tuple[Plan, ...]
    scores: tuple[float, ...]
    best: int
    margin: float

    def to_dict(self) -> dict[str, object]:
        return {
            "situation": self.situation.to_dict(),
            "candidates": [[[s.action, list(s.args)] for s in c.steps] for c in self.candidates],
            "scores": [round(s, 4) for s in self.scores],
            "best": self.best,
            "margin": round(self.margin, 4),
        }

    @classmethod
    def from_dict(cls, data: object) -> Label:
        """Raises :class:`ConfigError` for a malformed record."""
        if not isinstance(data, dict):
            raise ConfigError("a label must be an object")
        try:
            candidates = tuple(
                Plan(tuple(Step(str(a), tuple(int(v) for v in args)) for a, args in c))
                for c in data["candidates"]
            )
            scores = tuple(float(s) for s in data["scores"])
            best = int(data["best"])
            margin = float(data["margin"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad label: {exc}") from exc
        if len(scores) != len(candidates) or not 0 <= best < len(candidates):
            raise ConfigError("a label needs one score per candidate and a best in range")
        return cls(Situation.from_dict(data["situation"]), candidates, scores, best, margin)


def add_teacher_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The teacher's settings as command-line options (``--{prefix}horizon-s`` ...), read back
    by :func:`teacher_config_from`."""
    d = TeacherConfig()
    parser.add_argument(f"--{prefix}horizon-s", type=float, default=d.horizon_s)
    parser.add_argument(f"--{prefix}variants", type=int, default=d.variants)
    parser.add_argument(
        f"--{prefix}weights",
        default="",
        help="outcome weights to change, e.g. 'death=300,hold=20,win=200' (see OutcomeWeights)",
    )
    parser.add_argument(
        f"--{prefix}round-rules",
        action="store_true",
        help="score holding the objective and the round's end (hold / win / loss weights)",
    )


def teacher_config_from(args: argparse.Namespace, prefix: str = "") -> TeacherConfig:
    """The :class:`TeacherConfig` that :func:`add_teacher_arguments`' options describe.

    Raises :class:`ConfigError` for bad values.
    """
    key = prefix.replace("-", "_")
    values = vars(args)
    return TeacherConfig(
        horizon_s=float(values[f"{key}horizon_s"]),
        variants=int(values[f"{key}variants"]),
        weights=parse_weights(str(values[f"{key}weights"])),
        round_rules=bool(values[f"{key}round_rules"]),
    )


class OutcomeTeacher:
    """Scores candidates by rollout (see the module docstring)."""

    def __init__(
        self, config: TeacherConfig | None = None, registry: ActionRegistry = DEFAULT_REGISTRY
    ) -> None:
        self.config = config if config is not None else TeacherConfig()
        self.registry = registry
        self._rules = HeuristicPlanner(registry)

    def candidates(self, snap: WorldSnapshot) -> tuple[Plan, ...]:
        return self._rules.candidates(snap, self.config.max_candidates)

    def label(self, situation: Situation, candidates: Sequence[Plan] | None = None) -> Label:
        """Roll out each candidate (the rules' by default) on every variant; pick the best.

        Ties go to the earlier candidate (the rules' order). Raises :class:`ConfigError` for an
        empty candidate list.
        """
        if candidates is None:
            snap, _ = situation_snapshot(situation)
            candidates = self.candidates(snap)
        if not candidates:
            raise ConfigError("nothing to label: no candidates")
        variants = [situation.variant(k) for k in range(self.config.variants)]
        scores = tuple(
            math.fsum(self.rollout(v, plan).score for v in variants) / len(variants)
            for plan in candidates
        )
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        rest = [s for i, s in enumerate(scores) if i != best]
        margin = scores[best] - max(rest) if rest else 0.0
        return Label(situation, tuple(candidates), scores, best, margin)

    def rollout(self, situation: Situation, plan: Plan) -> Outcome:
        """Play ``situation`` for the horizon with the agent under test starting on ``plan``."""
        cfg = self.config
        w = cfg.weights
        ticks = round(cfg.horizon_s / cfg.dt)
        decay = w.discount_per_s**cfg.dt
        now = [0.0]
        with isolated_world():
            roster = situation.build()
            esper.add_component(roster.me, ActionQueue(list(plan.steps), plan_id=1))
            esper.add_component(roster.me, PlanState(PlanStatus.EXECUTING, 1, Tier.LLM))
            plugin = PlannerPlugin(
                PlannerConfig(registry=self.registry, delete_dead=False, cache_enabled=False),
                None,
                clock=lambda: now[0],
            )
            plugin.install()
            objective = situation.field.objective
            radius = cfg.objective_radius
            before = _State.read(roster, objective, radius)
            start = before
            score = 0.0
            weight = 1.0
            held = 0.0  # seconds the current holder has held the objective alone
            result = 0  # the round: +1 won, -1 lost, 0 still going
            try:
                for tick in range(ticks):
                    now[0] = tick * cfg.dt
                    esper.process(cfg.dt)
                    after = _State.read(roster, objective, radius)
                    weight *= decay
                    step = before.reward(after, w)
                    if cfg.round_rules:
                        holder = after.holder
                        if holder == 0:
                            held = 0.0
                        else:
                            held = held + cfg.dt if holder == before.holder else cfg.dt
                        step += w.hold * holder * cfg.dt
                        result = after.result(held >= cfg.hold_s - 1e-9, start.enemies_left > 0)
                        step += w.win if result > 0 else -w.loss if result < 0 else 0.0
                    score += weight * step
                    before = after
                    if result:
                        break
            finally:
                plugin.close()
        return Outcome(
            dealt=start.enemy_hp - before.enemy_hp,
            kills=before.enemy_dead - start.enemy_dead,
            taken=start.my_hp - before.my_hp,
            died=before.my_dead and not start.my_dead,
            ally_lost=start.ally_hp - before.ally_hp,
            ally_deaths=before.ally_dead - start.ally_dead,
            progress=start.goal_dist - before.goal_dist,
            score=score,
            result=result,
        )

    def label_all(
        self,
        situations: Iterable[Situation],
        progress: Callable[[int], None] | None = None,
    ) -> list[Label]:
        """Label each situation in order; ``progress(i)`` is called after each one."""
        out = []
        for i, sit in enumerate(situations):
            out.append(self.label(sit))
            if progress is not None:
                progress(i + 1)
        return out


@dataclass(frozen=True, slots=True)
class _State:
    enemy_hp: int
    enemy_dead: int
    my_hp: int
    my_dead: bool
    ally_hp: int
    ally_dead: int
    goal_dist: float
    holder: int = 0  # +1 the agent's side holds the objective alone, -1 the enemy's, 0 nobody
    enemies_left: int = 1
    side_left: int = 1  # the agent and its allies alive

    @classmethod
    def read(cls, roster: Roster, objective: tuple[int, int] | None, radius: float) -> _State:
        enemies = [_hp(e) for e in roster.enemies]
        allies = [_hp(a) for a in roster.allies]
        me = _hp(roster.me)
        dist = 0.0
        holder = 0
        if objective is not None:
            pos = esper.try_component(roster.me, Position)
            if pos is not None:
                dist = math.hypot(pos.x - objective[0], pos.y - objective[1])
            ours = _present((roster.me, *roster.allies), objective, radius)
            theirs = _present(roster.enemies, objective, radius)
            holder = 1 if ours and not theirs else -1 if theirs and not ours else 0
        return cls(
            enemy_hp=sum(enemies),
            enemy_dead=sum(1 for h in enemies if h == 0),
            my_hp=me,
            my_dead=me == 0,
            ally_hp=sum(allies),
            ally_dead=sum(1 for h in allies if h == 0),
            goal_dist=dist,
            holder=holder,
            enemies_left=sum(1 for h in enemies if h > 0),
            side_left=(me > 0) + sum(1 for h in allies if h > 0),
        )

    def result(self, held_long_enough: bool, had_enemies: bool) -> int:
        """The round's result in this state (+1 won, -1 lost, 0 going on), the demo's rules:
        a side with nobody left loses (both: a draw, 0), else holding long enough wins. With no
        enemy in the situation at the start, nobody is eliminated: the others are out of sight,
        not gone."""
        if self.side_left == 0 or (had_enemies and self.enemies_left == 0):
            return int(self.side_left > 0) - int(self.enemies_left > 0 or not had_enemies)
        return self.holder if held_long_enough else 0

    def reward(self, after: _State, w: OutcomeWeights) -> float:
        return (
            w.dealt * (self.enemy_hp - after.enemy_hp)
            + w.kill * (after.enemy_dead - self.enemy_dead)
            - w.taken * (self.my_hp - after.my_hp)
            - w.death * (after.my_dead - self.my_dead)
            - w.ally_hp * (self.ally_hp - after.ally_hp)
            - w.ally_death * (after.ally_dead - self.ally_dead)
            + w.progress * (self.goal_dist - after.goal_dist)
        )


def _present(entities: Iterable[int], objective: tuple[int, int], radius: float) -> bool:
    """Is one of ``entities`` alive within ``radius`` cells of ``objective``?"""
    r2 = radius * radius
    for ent in entities:
        if _hp(ent) <= 0:
            continue
        pos = esper.try_component(ent, Position)
        if pos is not None and (pos.x - objective[0]) ** 2 + (pos.y - objective[1]) ** 2 <= r2:
            return True
    return False


def _hp(entity: int) -> int:
    """Health clamped at 0; 0 for an entity that is gone."""
    if not esper.entity_exists(entity):
        return 0
    health = esper.try_component(entity, Health)
    return max(0, health.hp) if health is not None else 0


def save_labels(path: Path, labels: Iterable[Label]) -> str:
    """Write labels as JSON lines; return the file's sha256 (hex)."""
    data = b"".join(orjson.dumps(label.to_dict()) + b"\n" for label in labels)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def load_labels(path: Path) -> list[Label]:
    """Read labels written by :func:`save_labels`.

    Raises :class:`ConfigError` for a malformed or oversized line (``OSError`` if the
    file cannot be read).
    """
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        if len(line) > _MAX_LABEL_LINE:
            raise ConfigError(f"{path}:{n}: line longer than {_MAX_LABEL_LINE} bytes")
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not JSON: {exc}") from exc
        out.append(Label.from_dict(record))
    return out


def file_sha256(path: Path) -> str:
    """The sha256 (hex) of a file (labels, model, adapter), as recorded in training reports."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TeacherPlanner:
    """The teacher as a scenario planner: for each case it rolls out the case's candidates in
    the world the scenario's snapshot describes (:func:`situation_from_snapshot`) and picks the
    best. Scored on the hand-written suite, it shows how far the teacher's labels agree with
    game sense: the most an adapter trained on them can be expected to reach there."""

    def __init__(self, teacher: OutcomeTeacher | None = None) -> None:
        self.teacher = teacher if teacher is not None else OutcomeTeacher()

    @property
    def name(self) -> str:
        return "teacher"

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        out: list[Decision] = []
        for i, case in enumerate(cases):
            try:
                label = label_snapshot(self.teacher, case.scenario.snapshot, case.candidates, i)
            except ConfigError as exc:
                out.append(Decision(plan=None, error=str(exc)))
                continue
            out.append(Decision(plan=case.candidates[label.best], raw=f"margin {label.margin:.1f}"))
        return out


def label_snapshot(
    teacher: OutcomeTeacher,
    snap: WorldSnapshot,
    candidates: Sequence[Plan],
    seed: int,
    *,
    separate: bool = False,
) -> Label:
    """The teacher's label for ``candidates`` (made for ``snap``), rolled out in the world the
    snapshot describes (:func:`situation_from_snapshot` with ``seed`` and ``separate``); the
    label's candidates carry the rollout world's entity ids, its ``best`` indexes ``candidates``.

    Raises :class:`ConfigError` if the snapshot is not a legal world or there are no candidates.
    """
    situation = situation_from_snapshot(snap, seed=seed, separate=separate)
    _, roster = situation_snapshot(situation)
    ids = {snap.me.id: roster.me}
    ids.update(zip((u.id for u in snap.enemies), roster.enemies, strict=True))
    ids.update(zip((u.id for u in snap.allies), roster.allies, strict=True))
    plans = [_remap(plan, ids, teacher.registry) for plan in candidates]
    return teacher.label(situation, plans)


def _remap(plan: Plan, ids: dict[int, int], registry: ActionRegistry) -> Plan:
    """``plan`` with its entity arguments (targets) renamed by ``ids``."""
    steps = []
    for step in plan.steps:
        spec = registry.get(step.action)
        kinds = [a.kind for a in spec.args] if spec is not None else []
        args = tuple(
            ids.get(v, v) if k in (ArgKind.ENEMY, ArgKind.ALLY) else v
            for v, k in zip(step.args, kinds, strict=False)
        )
        steps.append(Step(step.action, args))
    return Plan(tuple(steps))
