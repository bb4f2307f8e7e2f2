"""Free mode, scored first: the first step is decided by scoring, the rest is generated.

Generating a free plan from its first token lets the likeliest first token decide the whole plan
whatever the situation: the 135M model began 65 of 66 suite plans with Scan under the plan's old key
``"s"`` (it repeated the letter), and under ``"plan"`` it still picks its first code by the agent's
role (tactical Retreat, support MoveTo, stealth and exploration Scan), not by what it sees. Here the
first step is chosen the way guided mode chooses (:mod:`aiplanner.decision`): every first step the
agent's free grammar allows (:func:`first_steps`, one per distinct plain-words phrase) is scored as
the continuation of the situation, calibrated by its content-free score, and the rules' rank enters
as an explicit prior (``rank_prior`` per rank step; a step none of the rules' candidates starts with
ranks after all of them). The model then writes the rest of the plan under the free grammar with
that first step fixed (:func:`aiplanner.schema.with_first_step`).

Selected with ``PlanContext.free_decision = "score-first"`` on a backend that can score; the
default, ``"generate"``, writes the whole plan.

Measured on the 66-scenario suite (``benchmarks/decisions.py --planners free-score-first free
--no-order-check``, embedded SmolLM2-135M): generated under ``"plan"`` (1 thread, load 1.1-1.6),
valid 100%, sensible 24.2%, first actions Scan 32, Retreat 18, MoveTo 16 (under ``"s"``: Scan 65,
Retreat 1); scored first with the default ``rank_prior`` 1 (1 thread, load 1.0-1.4), valid 100%,
sensible 45.5%, largest share of one first action 60.6% (MoveTo 40, Heal 12, Attack 11, Scan 2,
Retreat 1), either key. Earlier (2 threads, load 7-10): scored first with ``rank_prior`` 2, valid
100%, sensible 54.5%, largest share of one first action 37.9% (Attack 25, MoveTo 25, Heal 12, Scan
3, TakeCover 1), first step equal to the rules' in 54.5%; with ``rank_prior`` 1, sensible 42.4%,
MoveTo ("walk closer to enemy 1", inflated by calibration) first in 36. The rules: 63.6%; a random
legal plan: 40.2%.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, Step
from aiplanner.backends.base import Usage
from aiplanner.components import Tier
from aiplanner.decision import role_instruction, score_phrases
from aiplanner.errors import ConfigError
from aiplanner.phrasing import situation_messages, step_phrase
from aiplanner.places import FreeOptions, free_options, pack_cell, slots
from aiplanner.requests import PlanRequest
from aiplanner.snapshot import WorldSnapshot

if TYPE_CHECKING:
    from aiplanner.strategies import PlanContext

__all__ = [
    "FREE_DECISIONS",
    "FirstChoice",
    "FirstStep",
    "choose_first_step",
    "first_steps",
    "pick_first",
]

FREE_DECISIONS: Final = ("generate", "score-first")
"""How free mode decides its first step: ``generate`` it, or ``score-first``."""

MAX_FIRST_STEPS: Final = 48
"""At most this many first steps are enumerated (before merging equal phrases)."""


@dataclass(frozen=True, slots=True)
class FirstStep:
    """One legal first step: as the registry has it (``step``, cells for places), as the free
    grammar writes its arguments (``values``: place indices for places), its phrase, and the rank
    of the first of the rules' candidates whose first step has the same phrase (the number of
    candidates when none has)."""

    step: Step
    values: tuple[int, ...]
    phrase: str
    rank: int


@dataclass(frozen=True, slots=True)
class FirstChoice:
    """A scored first step and the numbers behind it, one entry per option."""

    first: FirstStep
    index: int
    calibrated: tuple[float, ...]
    combined: tuple[float, ...]
    usage: Usage


def first_steps(req: PlanRequest, registry: ActionRegistry) -> tuple[FirstStep, ...]:
    """Every first step ``req``'s free grammar allows, one per distinct phrase.

    Targets and places come from :func:`~aiplanner.places.free_options` as the grammar's do; a
    plain argument that is neither (a count) takes the value a rules' candidate gives that action,
    else its lower bound; an action with a plain cell argument no candidate fills is left out.
    Steps whose phrases are equal are one option for the model: the one a rules' candidate starts
    with represents them, else the first enumerated (places nearest first). Options follow the
    registry's action order.
    """
    snap = req.snapshot
    options = free_options(snap)
    firsts = [c.steps[0] for c in req.candidates if c.steps]
    by_phrase: dict[str, FirstStep] = {}
    for spec in registry.actions:
        for step, values in _steps(spec, options, firsts):
            phrase = step_phrase(step, snap, registry)
            rank = _rank(phrase, firsts, snap, registry)
            known = by_phrase.get(phrase)
            if known is None or (known.step not in firsts and step in firsts):
                by_phrase[phrase] = FirstStep(step, values, phrase, rank)
    return tuple(by_phrase.values())


def pick_first(
    options: Sequence[FirstStep],
    raw: Sequence[float],
    baseline: Sequence[float] | None,
    *,
    rank_prior: float,
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """The chosen option's index, the calibrated and the combined scores: the arg-max of
    ``raw - baseline - rank_prior * rank``, ties to the better rank, then the earlier option.

    Raises :class:`ConfigError` for no options, mismatched lengths or a negative prior.
    """
    if not options:
        raise ConfigError("a scored first step needs at least one option")
    if len(raw) != len(options) or (baseline is not None and len(baseline) != len(options)):
        raise ConfigError(f"{len(options)} options but {len(raw)} scores")
    if rank_prior < 0:
        raise ConfigError(f"rank_prior must be >= 0, got {rank_prior}")
    base = baseline if baseline is not None else [0.0] * len(raw)
    calibrated = tuple(r - b for r, b in zip(raw, base, strict=True))
    combined = tuple(c - rank_prior * o.rank for c, o in zip(calibrated, options, strict=True))
    best = max(range(len(options)), key=lambda i: (combined[i], -options[i].rank, -i))
    return best, calibrated, combined


async def choose_first_step(
    ctx: PlanContext, req: PlanRequest, tier: Tier, budget_s: float
) -> FirstChoice:
    """Score ``req``'s legal first steps and pick one (``ctx.rank_prior``, ``ctx.calibrated``).

    Raises :class:`PlannerError` (a failed call, no time left, nothing legal to do).
    """
    options = first_steps(req, ctx.registry)
    if not options:
        raise ConfigError("no first step is possible for this agent")
    if len(options) == 1:
        return FirstChoice(options[0], 0, (0.0,), (0.0,), Usage())
    phrases = tuple(" " + o.phrase for o in options)
    messages = situation_messages(req.snapshot, role_instruction(ctx, req.snapshot))
    result, baseline = await score_phrases(ctx, req, messages, phrases, tier, budget_s)
    index, calibrated, combined = pick_first(
        options, result.logprobs, baseline, rank_prior=ctx.rank_prior
    )
    return FirstChoice(options[index], index, calibrated, combined, result.usage)


def _rank(phrase: str, firsts: Sequence[Step], snap: WorldSnapshot, reg: ActionRegistry) -> int:
    for i, step in enumerate(firsts):
        try:
            if step_phrase(step, snap, reg) == phrase:
                return i
        except ConfigError:  # a candidate of an action the registry lacks: not a match
            continue
    return len(firsts)


def _steps(
    spec: ActionSpec, options: FreeOptions, firsts: Sequence[Step]
) -> list[tuple[Step, tuple[int, ...]]]:
    """``spec``'s legal steps with their grammar values (see :func:`first_steps`)."""
    choices: list[list[tuple[tuple[int, ...], int]]] = []  # per slot: (registry args, value)
    cover = set(options.cover_indices)
    for slot in slots(spec):
        arg = spec.args[slot.args[0]]
        if slot.kind != "plain":
            allowed = [i for i in range(len(options.places)) if slot.kind != "cover" or i in cover]
            cells = [options.places[i].cell for i in allowed]
            if len(slot.args) == 2:
                choices.append([(c, i) for c, i in zip(cells, allowed, strict=True)])
            else:
                choices.append([((pack_cell(*c),), i) for c, i in zip(cells, allowed, strict=True)])
            continue
        ids: list[int]
        if arg.kind is ArgKind.ENEMY:
            ids = [u.id for u in options.enemies]
        elif arg.kind is ArgKind.ALLY:
            ids = list(options.heal_ids)
        else:
            given = [s.args[slot.args[0]] for s in firsts if s.action == spec.name]
            fallback = [arg.lo] if arg.kind is ArgKind.COUNT else []
            ids = given[:1] or fallback
        choices.append([((v,), v) for v in ids if arg.lo <= v <= arg.hi])
    out: list[tuple[Step, tuple[int, ...]]] = []
    for combo in itertools.product(*choices):
        args = tuple(a for part, _ in combo for a in part)
        out.append((Step(spec.name, args), tuple(v for _, v in combo)))
        if len(out) == MAX_FIRST_STEPS:
            break
    return out
