"""Prompts: chat messages for one agent or a packed batch, generated from the action registry.

Two tiers:

* ``compressed`` (default): a short system message with a generated action legend, and a user
  message of a few short lines (short keys, integers, nearest first, capped lists). Every digit is
  a token for SmolLM2 and prompt tokens cost about half an output token each on 2 cores, so every
  character here is paid for.
* ``full``: the baseline a straightforward integration would write: verbose action docs, worked
  examples and the snapshot as pretty JSON.

Free mode names places by number: the prompt lists the agent's named places
(:func:`aiplanner.places.free_options`) and the ids it may target, and the schema allows exactly
those, so the user message carries no coordinates, walls or map size.

No prompt holds an answer the model could copy: a 135M model returned the one example plan it
was shown verbatim in 22 of 30 situations. Worked examples (full tier) show the answer's shape
with named slots (``{"plan":[["A",<target_id>]]}``), which no answer grammar can produce. The
plan's key is a word, not a letter: after ``{"s":[["`` the model wrote ``S`` (Scan) again.

The system message depends only on the builder (registry, tier, mode) and the shape (single or
packed), never on the agent, its role or the batch: engines reuse the KV cache of a common prefix,
so an identical system message is evaluated once. Everything agent-specific, the role instruction
first, goes in the user message.
"""

from __future__ import annotations

import types
from collections.abc import Collection, Mapping, Sequence

import orjson

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ActionSpec, ArgKind, Plan, Step
from aiplanner.backends.base import Message
from aiplanner.components import Battlefield
from aiplanner.config import MODES, PROMPT_TIERS
from aiplanner.errors import ConfigError
from aiplanner.places import Place, free_options, slots, with_cells
from aiplanner.requests import PlanRequest
from aiplanner.schema import PLAN_KEY
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

# Argument values by kind for the worked examples' situations (never shown as an answer).
_EXAMPLE_ARG = {ArgKind.X: 6, ArgKind.Y: 8, ArgKind.ENEMY: 91, ArgKind.ALLY: 15}

# Guided prompts leave coordinates out: the candidates already hold legal cells, and every digit
# is a token.
_LEGEND_GUIDED = (
    "Input: me hp ammo range; E enemies, F allies as id hp d=distance; cov = in cover; goal@x,y."
)
_LEGEND_FREE = (
    "Input: me#id ammo range; E enemies, F allies as id d=distance; hpN = hurt, hp left; "
    "cov = in cover; "
    "P places as number name d=steps (cover, goal, nearN/awayN = closer to/farther from enemy N)."
)


class PromptBuilder:
    """Builds chat messages for one registry, tier (``compressed``/``full``) and mode
    (``guided``/``free``).

    ``role_instructions`` replaces :data:`ROLE_INSTRUCTIONS` (for games with their own roles); a
    role without an instruction gets a generic one. Raises :class:`ConfigError` for an unknown tier
    or mode.
    """

    __slots__ = (
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

    def snapshot_text(self, snap: WorldSnapshot, named: Collection[int] = ()) -> str:
        """The snapshot as the model sees it: compact lines in the compressed tier, pretty JSON
        in the full tier. The map and free-mode-only lines (cover, walls) are left out in guided
        mode, where the candidates are already legal; there the nearest few enemies and allies
        are listed, and after them any other whose id is in ``named`` (the units the candidates
        target, :meth:`ActionRegistry.targets`), so no option names a unit the text leaves out."""
        if self.tier == "full":
            pretty = orjson.dumps(snap.to_dict(), option=orjson.OPT_INDENT_2).decode()
            return pretty + (self._full_options(snap) if self.mode == "free" else "")
        me = snap.me
        free = self.mode == "free"
        hp = _health(me.hp, me.max_hp, free, out_of=me.max_hp != 100)
        who = f"me#{me.id}" if free else "me"
        lines = [
            f"{who}{hp} ammo{me.ammo}/{me.ammo_capacity} range{round(me.weapon_range)}"
            + (" cov" if me.in_cover else "")
        ]
        if free:
            # Exactly what the free-mode schema lets the model name, in the same order.
            options = free_options(snap)
            enemies, allies = options.enemies, options.allies
        else:
            enemies = _shown(snap.enemies, _MAX_ENEMIES, named)
            allies = _shown(snap.allies, _MAX_ALLIES, named)
        if enemies:
            lines.append("E:" + ";".join(_unit(u, free) for u in enemies))
        if allies:
            lines.append("F:" + ";".join(_unit(u, free) for u in allies))
        if free:
            if options.places:
                lines.append("P:" + ";".join(_place(i, p) for i, p in enumerate(options.places)))
        elif snap.objective is not None:
            lines.append(f"goal@{snap.objective[0]},{snap.objective[1]}")
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
        guided = self.mode == "guided"
        named = self.registry.targets(req.candidates) if guided else ()
        text = f"{head}{role}: {self.role_instruction(role)}\n{self.snapshot_text(snap, named)}"
        if guided:
            text += "\n" + self.candidates_text(req.candidates)
        return text

    def _compact_plan(self, plan: Plan) -> str:
        return ";".join(self._compact_step(s) for s in plan.steps)

    def _compact_step(self, step: Step) -> str:
        spec = self._spec(step)
        return spec.code + ",".join(str(a) for a in with_cells(spec, step.args))

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
        actions = " ".join(_legend_entry(a, self.mode == "free") for a in self.registry.actions)
        # No example answer anywhere: a small model copies it (see the module docstring).
        if self.mode == "guided":
            task = "Pick the best numbered option for the soldier's role. Steps split by ';'."
            shape = '"c":N}'
        else:
            task = (
                f"Write a plan of 1 to {self.registry.max_steps} steps fitting the role, "
                "naming only the ids and place numbers given."
            )
            shape = f'"{PLAN_KEY}":[[code,args...],...]}}'
        if packed:
            reply = (
                "Each soldier's block starts with #id. Reply one JSON array, one element per "
                f'soldier in the given order: [{{"id":ID,{shape},...]'
            )
        else:
            reply = f"Reply only {{{shape}"
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
                f'in the compact form {{"{PLAN_KEY}": [[code, arg1, arg2, ...], ...]}} where code '
                "is the one-letter action code and the arguments follow in the order listed above, "
                "except that a place (an x, y pair, or a place argument) is written as one "
                "number: the number of one of the places listed with the situation. Only "
                "target the units listed as targets."
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
        docs: list[str] = []
        for slot in slots(spec):
            a = spec.args[slot.args[0]]
            if slot.kind == "plain" or (len(slot.args) == 2 and self.mode == "guided"):
                docs += [
                    f"{b.name} ({_KIND_DOC[b.kind]}, {b.lo}..{b.hi})"
                    for b in (spec.args[i] for i in slot.args)
                ]
            elif len(slot.args) == 2:
                docs.append(f"place ({_KIND_DOC[ArgKind.PLACE]})")
            else:
                docs.append(f"{a.name} ({_KIND_DOC[a.kind]})")
        args = ", ".join(docs)
        return f"- {spec.name} (code {spec.code}): {spec.doc}. Arguments: {args or 'none'}."

    def _full_examples(self, *, packed: bool) -> list[str]:
        """Worked examples whose answers name their numbers by what they are (``<target_id>``,
        ``<place>``, ``<option>``): the shape to follow, and nothing to copy."""
        out: list[str] = []
        for n, (snap, candidates, pick, why) in enumerate(_examples(self.registry), 1):
            out.append(f"Example {n}. Situation: {orjson.dumps(snap.to_dict()).decode()}")
            if self.mode == "guided":
                out.append(self.candidates_text(candidates))
                body = '"c":<option>'
            else:
                steps = ",".join(self._slot_step(s) for s in candidates[pick].steps)
                body = f'"{PLAN_KEY}":[{steps}]'
            text = f'[{{"id":<your id>,{body}}}]' if packed else f"{{{body}}}"
            out.append(f"Reasoning: {why} Answer: {text}")
        return out

    def _slot_step(self, step: Step) -> str:
        """One compact step with each argument replaced by the name of what it is."""
        spec = self._spec(step)
        names = [
            "<place>" if slot.kind != "plain" else f"<{spec.args[slot.args[0]].name}>"
            for slot in slots(spec)
        ]
        return "[" + ",".join([orjson.dumps(spec.code).decode(), *names]) + "]"

    def _full_options(self, snap: WorldSnapshot) -> str:
        options = free_options(snap)
        lines = ["", "Places you may go to (write the number):"]
        lines += [
            f"{i}: {p.name} at ({p.cell[0]}, {p.cell[1]}), {p.steps} steps away"
            for i, p in enumerate(options.places)
        ] or ["none"]
        targets = ", ".join(str(u.id) for u in options.enemies) or "none"
        heal = ", ".join(str(i) for i in options.heal_ids) or "none"
        lines += [f"Enemies you may target: {targets}", f"Who you may heal: {heal}"]
        return "\n".join(lines)


_KIND_DOC = {
    ArgKind.X: "a map column",
    ArgKind.Y: "a map row",
    ArgKind.ENEMY: "the id of a visible enemy",
    ArgKind.ALLY: "the id of a visible ally or yourself",
    ArgKind.COUNT: "a count",
    ArgKind.PLACE: "a place: the number of one of the listed places",
    ArgKind.COVER: "a cover point: the number of one of the listed places that is cover",
}


def _legend_entry(spec: ActionSpec, places: bool) -> str:
    if places:  # free mode: an X,Y pair is one place number
        names = [
            spec.args[s.args[0]].name if s.kind == "plain" or len(s.args) == 1 else "place"
            for s in slots(spec)
        ]
    else:
        names = [a.name for a in spec.args]
    args = ",".join(names)
    return f"{spec.code}={spec.name}" + (f"({args})" if args else "")


def _health(hp: int, max_hp: int, free: bool, *, out_of: bool = False) -> str:
    """`` hpN`` (`` hpN/M`` ``out_of`` its maximum), or nothing: free mode names health only
    when it is short of full (four tokens a unit spared; its legend says so)."""
    if free and hp >= max_hp:
        return ""
    return f" hp{hp}/{max_hp}" if out_of else f" hp{hp}"


def _shown(units: tuple[SeenUnit, ...], limit: int, named: Collection[int]) -> tuple[SeenUnit, ...]:
    """The first ``limit`` of ``units``, then any later one whose id is in ``named``."""
    return (*units[:limit], *(u for u in units[limit:] if u.id in named))


def _unit(u: SeenUnit, free: bool) -> str:
    return f"{u.id}{_health(u.hp, u.max_hp, free)} d{round(u.dist)}" + (
        " cov" if u.in_cover else ""
    )


def _place(i: int, p: Place) -> str:
    return f"{i} {p.name} d{p.steps}"


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
