"""Prompts: chat messages for one agent or a packed batch, generated from the action registry.

Two tiers:

* ``compressed`` (default): a short system message with a generated action legend, and a user
  message of a few short lines (short keys, integers, nearest first, capped lists). Every digit is
  a token for SmolLM2 and prompt tokens cost about half an output token each on 2 cores, so every
  character here is paid for.
* ``full``: the baseline a straightforward integration would write: verbose action docs, worked
  examples and the snapshot as pretty JSON.

The system message depends only on the builder (registry, tier, mode) and the shape (single or
packed), never on the agent, its role or the batch: engines reuse the KV cache of a common prefix,
so an identical system message is evaluated once. Everything agent-specific, the role instruction
first, goes in the user message.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, Plan, Step
from aiplanner.backends.base import Message
from aiplanner.codec import PlanCodec
from aiplanner.components import Battlefield
from aiplanner.config import MODES, PROMPT_TIERS
from aiplanner.errors import ConfigError
from aiplanner.requests import PlanRequest
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

__all__ = ["ROLE_INSTRUCTIONS", "PromptBuilder"]

ROLE_INSTRUCTIONS: Mapping[str, str] = types.MappingProxyType(
    {
        "tactical": "fight from cover, hit the weakest enemy in range",
        "stealth": "stay unseen, strike lone or weak enemies, avoid open fights",
        "support": "keep allies alive: heal the hurt, stay behind them",
        "exploration": "scout ahead, scan, move toward the goal",
    }
)
"""One short instruction per role, placed at the start of the user message."""

# List caps of the compressed snapshot: nearest first, the rest is noise for a small model.
_MAX_ENEMIES = 4
_MAX_ALLIES = 3
_MAX_COVER = 3
_MAX_WALLS = 4

# Example argument values by kind, for generated examples and docs.
_EXAMPLE_ARG = {ArgKind.X: 6, ArgKind.Y: 8, ArgKind.ENEMY: 91, ArgKind.ALLY: 15}

# Guided prompts leave coordinates out: the candidates already hold legal cells, and every digit
# is a token.
_LEGEND_GUIDED = (
    "Input: me hp ammo range; E enemies, F allies as id hp d=distance; cov = in cover; goal@x,y."
)
_LEGEND_FREE = (
    "Input: me@x,y hp ammo range; E enemies, F allies as id@x,y hp d=distance; cov = in cover; "
    "goal@x,y; cover = free cover points; walls = blocked cells; map = width x height."
)


class PromptBuilder:
    """Builds chat messages for one registry, tier (``compressed``/``full``) and mode
    (``guided``/``free``).

    ``role_instructions`` replaces :data:`ROLE_INSTRUCTIONS` (for games with their own roles); a
    role without an instruction gets a generic one. Raises :class:`ConfigError` for an unknown tier
    or mode.
    """

    __slots__ = (
        "_codec",
        "_roles",
        "_system_packed",
        "_system_single",
        "mode",
        "registry",
        "tier",
    )

    def __init__(
        self,
        registry: ActionRegistry = DEFAULT_REGISTRY,
        *,
        tier: str = "compressed",
        mode: str = "guided",
        role_instructions: Mapping[str, str] | None = None,
    ) -> None:
        if tier not in PROMPT_TIERS:
            raise ConfigError(f"unknown prompt tier {tier!r}; choose one of {PROMPT_TIERS}")
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; choose one of {MODES}")
        self.registry = registry
        self.tier = tier
        self.mode = mode
        self._codec = PlanCodec(registry, mode)
        self._roles: Mapping[str, str] = types.MappingProxyType(
            dict(ROLE_INSTRUCTIONS if role_instructions is None else role_instructions)
        )
        # Built once: the same string object every call, byte-identical by construction.
        self._system_single = self._system(packed=False)
        self._system_packed = self._system(packed=True)

    # -- public ------------------------------------------------------------------------------

    def messages(self, req: PlanRequest) -> tuple[Message, ...]:
        """System and user message for one agent.

        Raises :class:`ConfigError` when a candidate names an action the registry lacks.
        """
        return (
            Message("system", self._system_single),
            Message("user", self._agent_block(req, packed=False)),
        )

    def packed_messages(self, reqs: Sequence[PlanRequest]) -> tuple[Message, ...]:
        """System and user message for several agents answered in one JSON array, in the order
        of ``reqs`` (the order :meth:`PlanCodec.packed_schema` fixes).

        Raises :class:`ConfigError` for no requests, or as :meth:`messages` does.
        """
        if not reqs:
            raise ConfigError("packed_messages needs at least one request")
        sep = "\n\n" if self.tier == "full" else "\n"
        blocks = sep.join(self._agent_block(r, packed=True) for r in reqs)
        return (Message("system", self._system_packed), Message("user", blocks))

    def role_instruction(self, role: str) -> str:
        """The instruction for ``role`` (a generic one for a role without an instruction)."""
        return self._roles.get(role, "act as your role demands")

    def snapshot_text(self, snap: WorldSnapshot) -> str:
        """The snapshot as the model sees it: compact lines in the compressed tier, pretty JSON
        in the full tier. The map and free-mode-only lines (cover, walls) are left out in guided
        mode, where the candidates are already legal."""
        if self.tier == "full":
            return orjson.dumps(snap.to_dict(), option=orjson.OPT_INDENT_2).decode()
        me = snap.me
        hp = f"hp{me.hp}" if me.max_hp == 100 else f"hp{me.hp}/{me.max_hp}"
        free = self.mode == "free"
        at = f"@{me.x},{me.y}" if free else ""
        lines = [
            f"me{at} {hp} ammo{me.ammo}/{me.ammo_capacity} range{round(me.weapon_range)}"
            + (" cov" if me.in_cover else "")
        ]
        if snap.enemies:
            lines.append("E:" + ";".join(_unit(u, free) for u in snap.enemies[:_MAX_ENEMIES]))
        if snap.allies:
            lines.append("F:" + ";".join(_unit(u, free) for u in snap.allies[:_MAX_ALLIES]))
        if snap.objective is not None:
            lines.append(f"goal@{snap.objective[0]},{snap.objective[1]}")
        if free:
            if snap.cover:
                lines.append("cover:" + ";".join(f"{x},{y}" for x, y in snap.cover[:_MAX_COVER]))
            if snap.obstacles:
                walls = snap.obstacles[:_MAX_WALLS]
                lines.append("walls:" + ";".join(f"{x},{y}" for x, y in walls))
            lines.append(f"map{snap.field.width}x{snap.field.height}")
        return "\n".join(lines)

    def candidates_text(self, candidates: Sequence[Plan]) -> str:
        """Guided options: ``opts 0:M3,4;A91 1:C5,6`` (compressed) or one verbose JSON plan per
        line (full). Raises :class:`ConfigError` for an action the registry lacks."""
        if self.tier == "full":
            return "\n".join(
                f"Option {i}: {self._verbose_plan(p)}" for i, p in enumerate(candidates)
            )
        return "opts " + " ".join(f"{i}:{self._compact_plan(p)}" for i, p in enumerate(candidates))

    # -- user message ------------------------------------------------------------------------

    def _agent_block(self, req: PlanRequest, *, packed: bool) -> str:
        snap = req.snapshot
        role = snap.me.role
        if self.tier == "full":
            head = (
                f"You are agent #{req.entity}, role {role}: {self.role_instruction(role)}.\n"
                "Current situation (JSON):\n"
            )
            tail = (
                "\nCandidate plans, ranked best first by the rules:\n"
                + self.candidates_text(req.candidates)
                if self.mode == "guided"
                else ""
            )
            return head + self.snapshot_text(snap) + tail
        head = f"#{req.entity} " if packed else ""
        text = f"{head}{role}: {self.role_instruction(role)}\n{self.snapshot_text(snap)}"
        if self.mode == "guided":
            text += "\n" + self.candidates_text(req.candidates)
        return text

    def _compact_plan(self, plan: Plan) -> str:
        return ";".join(self._compact_step(s) for s in plan.steps)

    def _compact_step(self, step: Step) -> str:
        spec = self._spec(step)
        return spec.code + ",".join(str(a) for a in step.args)

    def _verbose_plan(self, plan: Plan) -> str:
        steps = []
        for step in plan.steps:
            spec = self._spec(step)
            args = zip(spec.args, step.args, strict=True)
            steps.append({"act": spec.name, **{a.name: v for a, v in args}})
        return orjson.dumps({"steps": steps}).decode()

    def _spec(self, step: Step) -> ActionSpec:
        spec = self.registry.spec(step.action)
        if len(step.args) != len(spec.args):
            raise ConfigError(f"{spec.name} takes {len(spec.args)} arguments, got {step.args}")
        return spec

    # -- system message ----------------------------------------------------------------------

    def _system(self, *, packed: bool) -> str:
        if self.tier == "full":
            return self._full_system(packed=packed)
        who = "several soldiers" if packed else "one soldier"
        legend = _LEGEND_FREE if self.mode == "free" else _LEGEND_GUIDED
        actions = " ".join(_legend_entry(a) for a in self.registry.actions)
        if self.mode == "guided":
            task = "Pick the best numbered option for the soldier's role. Steps split by ';'."
            # No example index: a small model copies it.
            shape, example = '"c":N}', ""
        else:
            task = f"Write a plan of 1 to {self.registry.max_steps} steps fitting the role."
            shape, example = '"s":[[code,args...],...]}', self._example_compact()
        if packed:
            reply = (
                "Each soldier's block starts with #id. Reply one JSON array, one element per "
                f'soldier in the given order: [{{"id":ID,{shape},...]'
            )
        else:
            reply = f"Reply only {{{shape}" + (f", e.g. {example}" if example else "")
        return (
            f"You plan for {who} in a grid shooter game.\nActions: {actions}\n{legend}\n"
            f"{task}\n{reply}"
        )

    def _full_system(self, *, packed: bool) -> str:
        lines = [
            "You are the tactical planning module of a non-player character (NPC) in a "
            "grid shooter game. The map is a grid of cells addressed by x (column) and "
            "y (row), with 0,0 at the top-left corner. Some cells are blocked by walls; cover "
            "points protect an NPC standing on them. Each NPC belongs to a team and has a role "
            "that shapes how it should behave.",
            "",
            "The following actions are available. Each action has a name, a one-letter code and "
            "integer arguments given in the order listed:",
        ]
        for spec in self.registry.actions:
            lines.append(self._full_doc(spec))
        lines += [
            "",
            "The situation is given as JSON with these fields: 'me' (your own id, role, team, "
            "position x/y, hp and max_hp, ammo and ammo_capacity, whether you are in cover, and "
            "your weapon range in cells); 'enemies' and 'allies' (visible units, nearest first, "
            "each with id, x, y, hp, in_cover and dist, the distance in cells); 'cover' (free "
            "cover points, nearest first); 'obstacles' (blocked cells nearby); 'objective' (the "
            "cell your team must reach, or null); 'map' (width and height).",
            "",
        ]
        if self.mode == "guided":
            lines.append(
                "You are also given candidate plans, each a list of steps, ranked best first by "
                "a rule-based planner. All of them are legal. Choose the one that best fits your "
                "role and the situation, and answer with its option number as JSON: "
                '{"c": <option number>}. Do not write anything else.'
            )
        else:
            lines.append(
                f"Write a plan of 1 to {self.registry.max_steps} steps. Answer with JSON only, "
                'in the compact form {"s": [[code, arg1, arg2, ...], ...]} where code is the '
                "one-letter action code and the arguments follow in the order listed above. "
                "Only target units you can see and only move to cells that are not blocked."
            )
        if packed:
            lines.append(
                "You plan for several NPCs at once. The message holds one block per NPC, starting "
                "with its id. Answer with one JSON array holding one object per NPC, in the same "
                'order, each with the NPC\'s id first: [{"id": <id>, ...}, ...].'
            )
        lines += ["", "Worked examples:"]
        lines += self._full_examples(packed=packed)
        return "\n".join(lines)

    def _full_doc(self, spec: ActionSpec) -> str:
        args = ", ".join(f"{a.name} ({_KIND_DOC[a.kind]}, {a.lo}..{a.hi})" for a in spec.args)
        return f"- {spec.name} (code {spec.code}): {spec.doc}. Arguments: {args or 'none'}."

    def _full_examples(self, *, packed: bool) -> list[str]:
        out: list[str] = []
        for n, (snap, candidates, pick, why) in enumerate(_examples(self.registry), 1):
            out.append(f"Example {n}. Situation: {orjson.dumps(snap.to_dict()).decode()}")
            answer: Plan | int = candidates[pick]
            if self.mode == "guided":
                out.append(self.candidates_text(candidates))
                answer = pick
            if packed:
                text = f"[{self._codec.encode_element(snap.me.id, answer)}]"
            elif isinstance(answer, int):
                text = self._codec.encode_choice(answer)
            else:
                text = self._codec.encode(answer)
            out.append(f"Reasoning: {why} Answer: {text}")
        return out

    def _example_compact(self) -> str:
        return self._codec.encode(Plan(tuple(_example_step(a) for a in self.registry.actions[:2])))


_KIND_DOC = {
    ArgKind.X: "a map column",
    ArgKind.Y: "a map row",
    ArgKind.ENEMY: "the id of a visible enemy",
    ArgKind.ALLY: "the id of a visible ally or yourself",
    ArgKind.COUNT: "a count",
}


def _legend_entry(spec: ActionSpec) -> str:
    args = ",".join(a.name for a in spec.args)
    return f"{spec.code}={spec.name}" + (f"({args})" if args else "")


def _unit(u: SeenUnit, with_position: bool) -> str:
    at = f"@{u.x},{u.y}" if with_position else ""
    return f"{u.id}{at} hp{u.hp} d{round(u.dist)}" + (" cov" if u.in_cover else "")


def _example_step(spec: ActionSpec) -> Step:
    return Step(spec.name, tuple(_EXAMPLE_ARG.get(a.kind, a.lo) for a in spec.args))


def _first(registry: ActionRegistry, *kinds: ArgKind) -> ActionSpec | None:
    for spec in registry.actions:
        if tuple(a.kind for a in spec.args) == kinds:
            return spec
    return None


def _examples(
    registry: ActionRegistry,
) -> list[tuple[WorldSnapshot, tuple[Plan, ...], int, str]]:
    """Worked examples for the full tier, built from whatever actions the registry has: a target
    in range (an enemy-targeting action), a hurt ally (an ally-targeting one), nothing in sight
    (a move toward the goal)."""
    field = Battlefield(32, 32, frozenset({(7, 7), (7, 8)}), ((6, 8), (3, 2)), (20, 20))

    def snap(
        me_id: int, hp: int, enemies: tuple[SeenUnit, ...], allies: tuple[SeenUnit, ...]
    ) -> WorldSnapshot:
        me = SelfView(me_id, "tactical", 0, 5, 7, hp, 100, 4, 6, False, 6.0)
        return WorldSnapshot(0, me, enemies, allies, field.cover, (), field.objective, field)

    enemy = SeenUnit(91, 9, 7, 40, False, 4.0)
    ally = SeenUnit(15, 4, 7, 20, False, 1.0)
    attack = _first(registry, ArgKind.ENEMY)
    heal = _first(registry, ArgKind.ALLY)
    move = _first(registry, ArgKind.X, ArgKind.Y)
    idle = _first(registry)
    others = [_example_step(s) for s in (move, idle) if s is not None]
    out: list[tuple[WorldSnapshot, tuple[Plan, ...], int, str]] = []
    if attack is not None:
        plans = (Plan((_example_step(attack),)), *(Plan((s,)) for s in others))
        why = "A weak enemy is in range and I have ammo, so I shoot it."
        out.append((snap(12, 90, (enemy,), ()), plans, 0, why))
    if heal is not None:
        plans = (*(Plan((s,)) for s in others), Plan((_example_step(heal),)))
        why = "No enemy is in sight and my ally is badly hurt, so I heal it."
        out.append((snap(14, 80, (), (ally,)), plans, len(plans) - 1, why))
    if move is not None:
        goal = Step(move.name, (20, 20)[: len(move.args)])
        plans = (Plan((goal,)), *(Plan((s,)) for s in others[1:]))
        why = "Nothing is in sight, so I move toward the goal."
        out.append((snap(16, 100, (), ()), plans, 0, why))
    if not out:
        spec = registry.actions[0]
        out.append((snap(12, 100, (), ()), (Plan((_example_step(spec),)),), 0, "Only option."))
    return out
