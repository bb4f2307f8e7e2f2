"""A second, small esper game with its own components and verbs, planned by aiplanner.

Survivors (builders and foragers) walk a camp, barricade its shelters and forage for food. Not one
aiplanner component is on its entities except the two planning adds itself (``PlanState``,
``ActionQueue``): the game says where its state lives (a :class:`aiplanner.ComponentMap`) and what
its verbs do (handlers and proposers on each :class:`aiplanner.ActionSpec`). The block between the
``adapter`` markers is all it takes, and is the README's example.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import esper

from aiplanner import (
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Battlefield,
    ComponentMap,
    PlannerConfig,
    Proposal,
    ProposalContext,
    StepContext,
    StepFailed,
)

BUILD_SECONDS = 1.0
FORAGE_SECONDS = 0.5
REACH = 1.5


# --- the game's own components -------------------------------------------------------------------
@dataclass(slots=True)
class Survivor:
    job: str  # "builder" or "forager"
    speed: float = 4.0


@dataclass(slots=True)
class Transform:
    x: float
    y: float


@dataclass(slots=True)
class Vitals:
    hp: int
    max_hp: int = 50


@dataclass(slots=True)
class Faction:
    side: int


@dataclass(slots=True)
class Pack:
    food: int = 0


@dataclass(slots=True)
class Wall:
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Camp:
    size: int
    rocks: frozenset[tuple[int, int]] = frozenset()
    shelters: tuple[tuple[int, int], ...] = ()
    fire: tuple[int, int] = (0, 0)


# --- the game's verbs: what each does, and when the rules suggest it ----------------------------
def walk(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    me: Transform = ctx.position
    queue = ctx.queue
    if not queue.path:
        queue.path = ctx.path((me.x, me.y), (args[0], args[1])) or [(args[0], args[1])]
    budget = ctx.agent.speed * ctx.dt
    while queue.path and budget > 0:
        wx, wy = queue.path[0]
        d = math.hypot(wx - me.x, wy - me.y)
        if d <= budget:
            me.x, me.y, budget = float(wx), float(wy), budget - d
            queue.path.pop(0)
        else:
            me.x += (wx - me.x) * budget / d
            me.y += (wy - me.y) * budget / d
            budget = 0.0
    return not queue.path


def barricade(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    me: Transform = ctx.position
    queue = ctx.queue
    if ctx.field is None or (args[0], args[1]) not in ctx.field.cover:
        raise StepFailed("no_shelter_there")  # another survivor walled it up first
    if math.hypot(args[0] - me.x, args[1] - me.y) > REACH:
        raise StepFailed("too_far")
    queue.progress += ctx.dt
    if queue.progress + 1e-9 < BUILD_SECONDS:
        return False
    # The shelter is walled up: a new Camp, which the ComponentMap converts again.
    esper.create_entity(Wall(args[0], args[1]))
    for ent, camp in esper.get_component(Camp):
        cell = (args[0], args[1])
        shelters = tuple(s for s in camp.shelters if s != cell)
        esper.add_component(
            ent, dataclasses.replace(camp, rocks=camp.rocks | {cell}, shelters=shelters)
        )
    return True


def forage(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    queue = ctx.queue
    queue.progress += ctx.dt
    if queue.progress + 1e-9 < FORAGE_SECONDS:
        return False
    pack = esper.try_component(ctx.entity, Pack)
    if pack is not None:
        pack.food += 1
    return True


def rest(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    queue = ctx.queue
    queue.progress += 1
    return queue.progress >= args[0]


def _shelter(ctx: ProposalContext) -> tuple[int, int] | None:
    me = ctx.snapshot.me
    return min(ctx.snapshot.cover, key=lambda c: (math.dist((me.x, me.y), c), c), default=None)


def propose_barricade(ctx: ProposalContext) -> Iterator[Proposal]:
    snap = ctx.snapshot
    here = (snap.me.x, snap.me.y)
    shelter = _shelter(ctx)
    if shelter is None or snap.me.role != "builder":
        return
    if math.dist(here, shelter) <= REACH and here != shelter:
        yield 10, ctx.plan(ctx.step(BARRICADE, cell=shelter))
        return
    sx, sy = shelter
    beside = [c for c in ((sx + 1, sy), (sx - 1, sy), (sx, sy + 1), (sx, sy - 1))]
    beside = [c for c in beside if snap.field.walkable(*c)]
    if beside:
        spot = min(beside, key=lambda c: (math.dist(here, c), c))
        yield 20, ctx.plan(ctx.step(WALK, cell=spot), ctx.step(BARRICADE, cell=shelter))


def propose_forage(ctx: ProposalContext) -> Iterator[Proposal]:
    rank = 10 if ctx.snapshot.me.role == "forager" else 40
    yield rank, ctx.plan(ctx.step(FORAGE))


def propose_walk(ctx: ProposalContext) -> Iterator[Proposal]:
    me = ctx.snapshot.me
    fire = ctx.snapshot.objective
    if fire is not None and fire != (me.x, me.y):
        yield 30, ctx.plan(ctx.step(WALK, cell=fire))


def to_battlefield(camp: Camp) -> Battlefield:
    return Battlefield(camp.size, camp.size, camp.rocks, camp.shelters, camp.fire)


# --- adapter: all the game adds to plan with aiplanner -------------------------------------------
COMPONENTS = ComponentMap(
    agent=Survivor,
    role="job",
    position=(Transform, "x", "y"),
    health=(Vitals, "hp"),
    max_health=(Vitals, "max_hp"),
    team=(Faction, "side"),
    world=(Camp, to_battlefield),
)
CELL = (ArgSpec("x", ArgKind.X), ArgSpec("y", ArgKind.Y))
WALK = ActionSpec("Walk", "W", CELL, "walk to cell x,y", handler=walk, propose=propose_walk)
BARRICADE = ActionSpec(
    "Barricade",
    "B",
    CELL,
    "wall up the shelter at x,y",
    handler=barricade,
    propose=propose_barricade,
)
FORAGE = ActionSpec("Forage", "F", (), "gather food here", handler=forage, propose=propose_forage)
REST = ActionSpec("Rest", "R", (ArgSpec("ticks", ArgKind.COUNT, 1, 60),), "rest", handler=rest)
CONFIG = PlannerConfig(
    registry=ActionRegistry([WALK, BARRICADE, FORAGE, REST]),
    components=COMPONENTS,
    roles=("builder", "forager"),
)
# --- end of adapter ------------------------------------------------------------------------------


def build_camp(seed: int, survivors: int = 6) -> Camp:
    """The camp and its survivors, in the current esper world (placement from ``seed``)."""
    rng = random.Random(seed)
    camp = Camp(
        20,
        rocks=frozenset({(9, y) for y in range(4, 15)}),
        shelters=((4, 4), (15, 15), (4, 15), (15, 4)),
        fire=(12, 10),
    )
    esper.create_entity(camp)
    for i in range(survivors):
        esper.create_entity(
            Survivor("builder" if i % 2 == 0 else "forager"),
            Transform(float(rng.randrange(0, 8)), float(rng.randrange(0, 20))),
            Vitals(50),
            Faction(1),
            Pack(),
        )
    return camp
