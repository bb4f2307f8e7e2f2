"""Plain words for scored decisions: the situation as a few short sentences, each candidate plan
as a phrase the model could say next.

A guided decision by scoring (:mod:`aiplanner.decision`) asks the model how likely each
candidate's phrase is as the continuation of ``situation_messages(snap)`` after :data:`LEAD`
("I should"). A small model knows words far better than our compact codes, so both sides are
plain English: "Me: badly hurt, no ammo, in the open." and " reload my weapon, then shoot enemy 1".

Prefix sharing: the system message is the same for every agent (evaluated once by engines that
reuse a common prefix); everything about the agent is in the user message, decisive facts first,
with short sentences (every token costs about 4 ms of prompt evaluation on two cores).

Phrases come from the action registry (:attr:`ActionSpec.phrase`), so a game's own actions get
phrasings too: ``{arg}`` slots are filled by kind (an enemy as "enemy 1", named by its rank in the
situation text, an ally as "ally 2" or "myself") and ``{place}`` describes where the X/Y cell
leads, preposition included ("to cover", "to the goal", "closer to enemy 1"...).
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Callable, Collection, Sequence
from typing import Final

from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, Plan, Step
from aiplanner.backends.base import Message
from aiplanner.errors import ConfigError
from aiplanner.places import unpack_cell
from aiplanner.snapshot import SeenUnit, WorldSnapshot

__all__ = [
    "CONTENT_FREE",
    "LEAD",
    "SYSTEM",
    "content_free_messages",
    "decision_prompt",
    "plan_phrase",
    "situation_messages",
    "situation_text",
    "step_phrase",
]

SYSTEM: Final = (
    "You are a soldier in a grid shooter game. You read your situation and say what you do next."
)
"""The system message of every scored decision: identical for all agents and roles."""

LEAD: Final = "I should"
"""The start of the assistant's answer; candidates are scored as its continuation."""

CONTENT_FREE: Final = "N/A"
"""The user message of the content-free context used to calibrate phrase scores."""

_MAX_ENEMIES: Final = 4
_MAX_ALLIES: Final = 3
_GOAL_NEAR: Final = 2.0  # a move ending this close to the objective is "to the goal"
_CLOSE: Final = 3.0  # cells: "close"
_NEAR: Final = 8.0  # cells: "near"; beyond it "far"
_COVER_NEAR: Final = 5.0  # cells: cover worth running to (the rules' COVER_NEAR)
_MAX_PHRASE_CHARS: Final = 160


def situation_text(
    snap: WorldSnapshot, role_instruction: str = "", named: Collection[int] = ()
) -> str:
    """The situation in short sentences: the role first (shared by every agent of that role, so
    engines that share token prefixes evaluate it once), then the agent's own state, then what it
    sees. Words instead of numbers where words decide (every digit is a token here): health as
    "badly hurt", distance as "close"/"near"/"far", units named by rank ("enemy 1" is the
    nearest), which the candidates' phrases use too; neighbours described alike share a line
    ("Enemies 2-4: close, in range.").

    The nearest few enemies and allies are described; a unit past them whose id is in ``named``
    (the targets of the candidates being scored: :meth:`ActionRegistry.targets`) gets a line of
    its own too ("Ally 6: near, badly hurt."), so no candidate names a unit the model was told
    nothing about (in the live 10v10 demo, 6-8% of decisions had one: "heal ally 6" beside three
    allies)."""
    me = snap.me
    here = (me.x, me.y)
    role = f"I am {_article(me.role)} {me.role}" + (
        f": {role_instruction}" if role_instruction else ""
    )
    if me.ammo == 0:
        ammo = "no ammo"
    elif me.ammo * 2 < me.ammo_capacity:
        ammo = "low ammo"
    else:
        ammo = "ammo ok"
    lines = [f"{role}.", f"Me: {_health(me.hp, me.max_hp)}, {ammo}, {_cover(me.in_cover)}."]
    enemies = _living(snap.enemies)

    def enemy_words(e: SeenUnit) -> str:
        reach = "in range" if e.dist <= me.weapon_range else "out of range"
        return f"{_distance(e.dist)}, {reach}{_unit_state(e)}"

    def ally_words(a: SeenUnit) -> str:
        return f"{_distance(a.dist)}{_unit_state(a)}"

    lines += _ranked_lines("Enemy", "Enemies", [enemy_words(e) for e in enemies[:_MAX_ENEMIES]])
    lines += _named_past("Enemy", enemies, _MAX_ENEMIES, named, enemy_words)
    allies = _living(snap.allies)
    lines += _ranked_lines("Ally", "Allies", [ally_words(a) for a in allies[:_MAX_ALLIES]])
    lines += _named_past("Ally", allies, _MAX_ALLIES, named, ally_words)
    if not enemies:
        lines.append("No enemy in sight.")
    elif len(enemies) > len(allies) + 1:
        lines.append(f"We are outnumbered {len(enemies)} to {len(allies) + 1}.")
    if not me.in_cover:
        near = snap.cover and math.dist(here, snap.cover[0]) <= _COVER_NEAR
        lines.append("Cover is close." if near else "No cover close.")
    if snap.objective is not None:
        d = math.dist(here, snap.objective)
        lines.append("I am at the goal." if d < 1 else f"The goal is {_distance(d)}.")
    return "\n".join(lines)


def _ranked_lines(one: str, many: str, descriptions: list[str]) -> list[str]:
    """One line per unit, named by rank ("Enemy 1: close, in range."), except that a run of
    units described alike shares one ("Enemies 2-4: close, in range."): the same words in 12%
    fewer prompt tokens, 14% fewer rows evaluated a decision in the live demo
    (``benchmarks/RESULTS.md``, *Fewer words a decision*), and every rank a phrase can name still
    falls in exactly one line."""
    lines = []
    rank = 1
    for description, run in itertools.groupby(descriptions):
        n = len(list(run))
        who = f"{one} {rank}" if n == 1 else f"{many} {rank}-{rank + n - 1}"
        lines.append(f"{who}: {description}.")
        rank += n
    return lines


def _named_past(
    one: str,
    units: list[SeenUnit],
    shown: int,
    named: Collection[int],
    words: Callable[[SeenUnit], str],
) -> list[str]:
    """A line, by rank, for each unit past the first ``shown`` whose id is in ``named``."""
    if not named:
        return []
    return [
        f"{one} {rank}: {words(u)}."
        for rank, u in enumerate(units[shown:], shown + 1)
        if u.id in named
    ]


def situation_messages(
    snap: WorldSnapshot, role_instruction: str = "", named: Collection[int] = ()
) -> tuple[Message, ...]:
    """System and user message of a scored decision for ``snap`` (``named``: see
    :func:`situation_text`)."""
    return (
        Message("system", SYSTEM),
        Message("user", situation_text(snap, role_instruction, named)),
    )


def decision_prompt(
    snap: WorldSnapshot,
    candidates: Sequence[Plan],
    registry: ActionRegistry,
    role_instruction: str = "",
) -> tuple[tuple[Message, ...], tuple[str, ...]]:
    """The messages and the candidates' phrases of a decision among ``candidates`` by scoring:
    each phrase (:func:`plan_phrase`), and the situation naming every unit a phrase names
    (``registry.targets``, :func:`situation_text`). The live decision, the adapter's training
    examples, its hold-out evaluation and the benchmarks all build it here, so the model is
    trained and measured on the text it is asked.

    Raises :class:`ConfigError` as :func:`plan_phrase` and :meth:`ActionRegistry.targets` do.
    """
    phrases = tuple(plan_phrase(c, snap, registry) for c in candidates)
    named = registry.targets(candidates)
    return situation_messages(snap, role_instruction, named), phrases


def content_free_messages() -> tuple[Message, ...]:
    """The same prompt shape with no situation: what the model says regardless of the input."""
    return (Message("system", SYSTEM), Message("user", CONTENT_FREE))


def plan_phrase(plan: Plan, snap: WorldSnapshot, registry: ActionRegistry) -> str:
    """``plan`` in plain words, starting with a space (it continues :data:`LEAD`).

    Raises :class:`ConfigError` for an action the registry lacks or a phrase slot that names no
    argument of its action.
    """
    text = " " + ", then ".join(step_phrase(s, snap, registry) for s in plan.steps)
    return text[:_MAX_PHRASE_CHARS]


def step_phrase(step: Step, snap: WorldSnapshot, registry: ActionRegistry) -> str:
    """One step in plain words, from its action's ``phrase`` template (or its doc)."""
    spec = registry.spec(step.action)
    template = spec.phrase or spec.doc
    values: dict[str, str] = {}
    for arg, value in zip(spec.args, step.args, strict=False):
        values[arg.name] = _arg_words(arg.kind, value, snap)
    if "{place}" in template:
        values["place"] = _place(spec, step, snap)
    try:
        return string.Formatter().vformat(template, (), values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"action {spec.name}: phrase {template!r} does not fit its arguments"
        ) from exc


def _arg_words(kind: ArgKind, value: int, snap: WorldSnapshot) -> str:
    if kind in (ArgKind.PLACE, ArgKind.COVER):
        x, y = unpack_cell(value)
        return f"{x},{y}"
    if kind is ArgKind.ENEMY:
        return f"enemy {_rank(snap.enemies, value)}"
    if kind is ArgKind.ALLY:
        return "myself" if value == snap.me.id else f"ally {_rank(snap.allies, value)}"
    return str(value)


def _rank(units: tuple[SeenUnit, ...], entity: int) -> str:
    """The unit's name in the situation text: its rank among the living, nearest first."""
    for i, u in enumerate(_living(units), 1):
        if u.id == entity:
            return str(i)
    return f"#{entity}"  # not in view: validation rejects such a plan anyway


def _place(spec: ActionSpec, step: Step, snap: WorldSnapshot) -> str:
    """Where an X/Y pair leads, against the snapshot, with its preposition."""
    cell = _cell(spec, step)
    if cell is None:
        return "somewhere new"
    if cell in snap.cover:
        return "to cover"
    if snap.objective is not None and math.dist(cell, snap.objective) <= _GOAL_NEAR:
        return "to the goal"
    enemies = _living(snap.enemies)
    if enemies:
        nearest = enemies[0]
        here = (snap.me.x, snap.me.y)
        there = (nearest.x, nearest.y)
        closer = math.dist(cell, there) < math.dist(here, there)
        return f"{'closer to' if closer else 'away from'} enemy 1"
    return "somewhere new"


def _cell(spec: ActionSpec, step: Step) -> tuple[int, int] | None:
    """The cell a step goes to: its X/Y pair, or its first PLACE/COVER argument."""
    kinds = [a.kind for a in spec.args]
    for i, kind in enumerate(kinds):
        if kind in (ArgKind.PLACE, ArgKind.COVER) and i < len(step.args):
            return unpack_cell(step.args[i])
    try:
        return step.args[kinds.index(ArgKind.X)], step.args[kinds.index(ArgKind.Y)]
    except (ValueError, IndexError):
        return None


def _living(units: tuple[SeenUnit, ...]) -> list[SeenUnit]:
    return [u for u in units if u.hp > 0]


def _health(hp: int, max_hp: int) -> str:
    if hp * 4 < max_hp:
        return "nearly dead"
    if hp * 2 < max_hp:
        return "badly hurt"
    if hp * 4 < max_hp * 3:
        return "hurt"
    return "healthy"


def _unit_state(u: SeenUnit) -> str:
    """What matters about another unit beyond where it is: hurt, in cover (healthy is said by
    saying nothing)."""
    health = _health(u.hp, u.max_hp)
    return ("" if health == "healthy" else f", {health}") + (", in cover" if u.in_cover else "")


def _distance(d: float) -> str:
    if d <= _CLOSE:
        return "close"
    return "near" if d <= _NEAR else "far"


def _cover(in_cover: bool) -> str:
    return "in cover" if in_cover else "in the open"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
