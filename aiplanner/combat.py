"""The built-in verbs, declared once with what they do: :data:`DEFAULT_REGISTRY`.

They play on aiplanner's own components (:class:`Agent`, :class:`Position`, :class:`Health`,
:class:`Weapon`, :class:`Ammo`), i.e. with :data:`aiplanner.adapter.DEFAULT_COMPONENTS`; a game
with its own components declares its own verbs the same way (see the README).

What each does when executed:

* ``MoveTo`` / ``TakeCover`` / ``Retreat`` (x, y): an A* path is found once per step (kept in
  ``queue.path``) and walked at ``Agent.speed`` cells/s; the step ends on arrival. No path:
  impossible (``unreachable``).
* ``Attack`` (target): out of ``Weapon.range`` the agent walks toward the target (re-pathing
  when the target changes cell); in range it fires whenever its cooldown has run out, taking
  ``damage`` hp (a target in cover takes :data:`COVER_DAMAGE` of it, rounded down, at least 1)
  and one round. The step ends when the target dies or the magazine is empty.
  Weapon cooldowns tick for everyone, once per tick (the upkeep of Attack).
* ``Reload``: ``Weapon.reload_time`` seconds, then the magazine is full.
* ``Heal`` (target, possibly itself): walks to within :data:`HEAL_REACH`, then adds
  ``heal_amount`` hp (capped at ``max_hp``).
* ``Scan``: :data:`SCAN_SECONDS`. ``Wait`` (ticks): that many ticks.

An agent with no :class:`Weapon` gets a default one the first time an action needs it; one with
no :class:`Ammo` never runs dry. :func:`check_components` (run at install) refuses these handlers
with a :class:`~aiplanner.adapter.ComponentMap` they cannot play on.

The rules' candidates (each verb proposes the plans that start with it, ranked; the ranks
interleave into this order, the first that applies being the heuristic plan):

1. out of ammo: Reload (then Attack the target in range, if any);
2. a support agent with a hurt ally (or itself hurt) in view: Heal the most hurt;
3. an enemy within weapon range: Attack it (nearest, ties by weakest, then id);
4. enemies in view, not in cover, cover within :data:`COVER_NEAR`: TakeCover, then Attack;
5. enemies in view but out of range: MoveTo a cell that brings the nearest within range, then
   Attack;
6. otherwise: MoveTo the objective (or Scan when there is none or the agent is on it).

Role flavour: ``stealth`` takes cover before attacking or reloading under fire, and bounds
between cover points that lead toward the objective; ``exploration`` scans then walks to a
fresh spot; ``support`` heals first. Unknown roles behave as ``tactical``. The emergency plan is
TakeCover at the nearest free cover point.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import esper

from aiplanner import queries
from aiplanner.actions import ActionRegistry, ActionSpec, ArgKind, ArgSpec
from aiplanner.adapter import ComponentMap
from aiplanner.behaviour import Proposal, ProposalContext, StepContext, StepFailed
from aiplanner.components import Ammo, Battlefield, Health, Position, Weapon
from aiplanner.errors import ConfigError
from aiplanner.snapshot import SeenUnit, WorldSnapshot
from aiplanner.snapshot_system import COVER_RADIUS
from aiplanner.spatial import to_cell

__all__ = [
    "COVER_DAMAGE",
    "COVER_NEAR",
    "DEFAULT_REGISTRY",
    "HEAL_REACH",
    "SCAN_SECONDS",
    "WAIT_TICKS",
]

HEAL_REACH: Final = 1.5
"""A healer must be this close (cells) to its patient."""
SCAN_SECONDS: Final = 0.5
COVER_NEAR: Final = 5.0
"""Cover farther than this (cells) is not worth running to under fire."""
COVER_DAMAGE: Final = 0.5
"""The share of a hit's damage that a target in cover takes (within ``COVER_RADIUS`` of a cover
point, the same test the snapshot's ``in_cover`` makes): what makes taking cover worth it."""
WAIT_TICKS: Final = 10
_EPS: Final = 1e-9  # summed float dts land a hair short of round durations
_RETREAT_CELLS: Final = 5.0
_EXPLORE_CELLS: Final = 6.0
_EXPLORE_PERIOD: Final = 100  # ticks before an explorer picks a new direction
_NEAR_SEARCH: Final = 2  # how far (cells) to look for a walkable cell near a wanted one
_DIRECTIONS: Final = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


# --- execution ----------------------------------------------------------------------------------


def _living(entity: int) -> tuple[Position, Health] | None:
    """Position and Health of ``entity`` if it exists and is alive."""
    if not esper.entity_exists(entity):
        return None
    # Two look-ups rather than esper.try_components (two generator expressions: 1.2 vs 0.36 us),
    # for every attacker and healer every tick.
    pos = esper.try_component(entity, Position)
    health = esper.try_component(entity, Health)
    if pos is None or health is None or health.hp <= 0:
        return None
    return pos, health


def _weapon(entity: int) -> Weapon:
    weapon = esper.try_component(entity, Weapon)
    if weapon is None:
        weapon = Weapon()
        esper.add_component(entity, weapon)
    return weapon


def _walk(pos: Position, path: list[tuple[int, int]], budget: float) -> None:
    """Move along ``path`` (consuming reached waypoints) by at most ``budget`` cells."""
    if not path or budget <= 0:
        return
    # The position in locals, written back once (every walking agent, every tick).
    x = pos.x
    y = pos.y
    hypot = math.hypot
    while path and budget > 0:
        wx, wy = path[0]
        d = hypot(wx - x, wy - y)
        if d <= budget:
            x = float(wx)
            y = float(wy)
            budget -= d
            path.pop(0)
        else:
            x += (wx - x) * budget / d
            y += (wy - y) * budget / d
            budget = 0.0
    pos.x = x
    pos.y = y


def _approach(ctx: StepContext, target: Position) -> None:
    """Walk toward ``target``, re-pathing only when it has moved to another cell."""
    pos: Position = ctx.position
    queue = ctx.queue
    goal = to_cell(target.x, target.y)
    if not queue.path or queue.path[-1] != goal:
        queue.path = ctx.path((pos.x, pos.y), goal)
    budget = ctx.agent.speed * ctx.dt
    if queue.path:
        _walk(pos, queue.path, budget)
    else:
        # Same cell, still too far (a very short reach): close in directly.
        d = math.hypot(target.x - pos.x, target.y - pos.y)
        step = min(d, budget)
        if d > 0:
            pos.x += (target.x - pos.x) * step / d
            pos.y += (target.y - pos.y) * step / d


def _covered(field: Battlefield | None, pos: Position) -> bool:
    """Whether ``pos`` is within ``COVER_RADIUS`` of one of ``field``'s cover points."""
    if field is None:
        return False
    r2 = COVER_RADIUS * COVER_RADIUS
    x, y = pos.x, pos.y
    return any((cx - x) ** 2 + (cy - y) ** 2 <= r2 for cx, cy in field.cover)


def _close_in(ctx: StepContext, target_id: int, reach: float) -> tuple[Position, Health] | None:
    """The target's Position and Health once it is within ``reach``; None while still walking
    to it.

    Raises StepFailed('target_gone') if the target is gone or dead.
    """
    target = _living(target_id)
    if target is None:
        raise StepFailed("target_gone")
    target_pos = target[0]
    pos: Position = ctx.position
    if math.hypot(target_pos.x - pos.x, target_pos.y - pos.y) > reach:
        _approach(ctx, target_pos)
        return None
    ctx.queue.path = []
    return target


def move(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    """MoveTo / TakeCover / Retreat: walk the A* path to (x, y); done on arrival."""
    queue = ctx.queue
    pos: Position = ctx.position
    path = queue.path
    if not path:
        # An empty path at this point means the step just started: path once per step.
        goal = (args[0], args[1])
        path = queue.path = ctx.path((pos.x, pos.y), goal) or [goal]
    _walk(pos, path, ctx.agent.speed * ctx.dt)
    return not path


def attack(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    weapon = _weapon(ctx.entity)
    target = _close_in(ctx, args[0], weapon.range)
    if target is None:
        return False
    target_pos, target_health = target
    ammo = esper.try_component(ctx.entity, Ammo)
    if ammo is not None and ammo.rounds <= 0:
        return True
    if weapon.cooldown_left > 0:
        return False
    damage = weapon.damage
    if _covered(ctx.field, target_pos):
        damage = max(1, int(damage * COVER_DAMAGE))
    target_health.hp -= damage
    weapon.cooldown_left = weapon.cooldown
    if ammo is not None:
        ammo.rounds -= 1
    return target_health.hp <= 0 or (ammo is not None and ammo.rounds <= 0)


def cool_weapons(dt: float, /) -> None:
    """Attack's upkeep: every weapon's cooldown runs down, whoever is acting."""
    for weapon in queries.column(Weapon)[1]:
        if weapon.cooldown_left > 0:
            weapon.cooldown_left = max(0.0, weapon.cooldown_left - dt)


def reload(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    queue = ctx.queue
    queue.progress += ctx.dt
    if queue.progress + _EPS < _weapon(ctx.entity).reload_time:
        return False
    ammo = esper.try_component(ctx.entity, Ammo)
    if ammo is not None:
        ammo.rounds = ammo.capacity
    return True


def heal(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    target = _close_in(ctx, args[0], HEAL_REACH)
    if target is None:
        return False
    target_health = target[1]
    amount = _weapon(ctx.entity).heal_amount
    target_health.hp = max(target_health.hp, min(target_health.max_hp, target_health.hp + amount))
    return True


def scan(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    queue = ctx.queue
    queue.progress += ctx.dt
    return queue.progress + _EPS >= SCAN_SECONDS


def wait(ctx: StepContext, args: tuple[int, ...], /) -> bool:
    queue = ctx.queue
    queue.progress += 1
    return queue.progress >= args[0]


def check_components(registry: ActionRegistry, components: ComponentMap) -> None:
    """Raise :class:`ConfigError` if ``registry`` uses a built-in handler that cannot play on
    ``components``: Attack and Heal change aiplanner's :class:`Health` of a target found by its
    :class:`Position`; the movers read ``speed`` from the agent component."""
    for spec in registry.actions:
        handler = spec.handler
        if handler in (attack, heal) and (
            components.position is not Position or components.health is not Health
        ):
            raise ConfigError(
                f"{spec.name}: the built-in handler works on aiplanner's Position and Health; "
                "with a ComponentMap of your own components, declare your own handler"
            )
        if handler is move and not hasattr(components.agent, "speed"):
            raise ConfigError(
                f"{spec.name}: the built-in handler walks at {components.agent.__name__}.speed, "
                "which does not exist; declare your own handler"
            )


# --- the rules' candidates ----------------------------------------------------------------------


def _nearest_walkable(
    field: Battlefield, x: float, y: float, avoid: tuple[int, int]
) -> tuple[int, int] | None:
    """The walkable cell nearest to ``(x, y)`` within a small square, never ``avoid``."""
    cx, cy = to_cell(x, y)
    width, height, blocked = field.width, field.height, field.blocked
    cx = min(max(cx, 0), width - 1)
    cy = min(max(cy, 0), height - 1)
    # Field.walkable inlined (the rules call this for every candidate of every agent): the
    # square clipped to the map, then the blocked set. Cells are visited in increasing (x, y)
    # order, so keeping the first of equal distances is the (distance, x, y) minimum.
    ys = range(max(cy - _NEAR_SEARCH, 0), min(cy + _NEAR_SEARCH, height - 1) + 1)
    best_d: float = 0.0
    best: tuple[int, int] | None = None
    for nx in range(max(cx - _NEAR_SEARCH, 0), min(cx + _NEAR_SEARCH, width - 1) + 1):
        dx2 = (nx - x) ** 2
        for ny in ys:
            cell = (nx, ny)
            if cell == avoid or cell in blocked:
                continue
            d = dx2 + (ny - y) ** 2
            if best is None or d < best_d:
                best_d = d
                best = cell
    return best


@dataclass(frozen=True, slots=True)
class _Situation:
    """What several verbs' rules look at, derived once per snapshot."""

    here: tuple[int, int]
    enemies: list[SeenUnit]  # living, nearest first, ties by weakest then id
    target: SeenUnit | None  # the first of them within weapon range
    heal_id: int | None  # the most hurt ally in view, or the agent itself when hurt
    cover: tuple[int, int] | None  # the nearest free cover within COVER_NEAR
    armed: bool

    @property
    def nearest(self) -> SeenUnit | None:
        return self.enemies[0] if self.enemies else None


def _situation(snap: WorldSnapshot) -> _Situation:
    me = snap.me
    here = (me.x, me.y)
    enemies = sorted((e for e in snap.enemies if e.hp > 0), key=lambda u: (u.dist, u.hp, u.id))
    in_range = [e for e in enemies if e.dist <= me.weapon_range]
    hurt = sorted((a for a in snap.allies if a.hurt), key=lambda u: (u.hp, u.dist, u.id))
    heal_id = hurt[0].id if hurt else (me.id if me.hp * 2 < me.max_hp else None)
    cover = min(snap.cover, key=lambda c: (math.dist(here, c), c), default=None)
    if cover is not None and math.dist(here, cover) > COVER_NEAR:
        cover = None
    return _Situation(here, enemies, in_range[0] if in_range else None, heal_id, cover, me.ammo > 0)


def _goal(snap: WorldSnapshot) -> tuple[int, int] | None:
    """A walkable cell at (or next to) the objective, unless the agent stands on it."""
    here = (snap.me.x, snap.me.y)
    if snap.objective is None or snap.objective == here:
        return None
    return _nearest_walkable(snap.field, snap.objective[0], snap.objective[1], here)


# Ranks: lower comes first. Multiples of ten leave room for a game's own verbs in between.
def _propose_move(ctx: ProposalContext) -> Iterator[Proposal]:
    if ctx.emergency:
        return
    s = ctx.shared(_situation)
    snap = ctx.snapshot
    nearest = s.nearest
    if nearest is not None and s.target is None and s.armed:
        d = math.dist(s.here, (nearest.x, nearest.y))
        spot = None
        if d > 0:
            # Walk until the enemy is a cell inside range, not onto it.
            f = min(1.0, max(0.0, (d - snap.me.weapon_range + 1.0) / d))
            spot = _nearest_walkable(
                snap.field,
                s.here[0] + (nearest.x - s.here[0]) * f,
                s.here[1] + (nearest.y - s.here[1]) * f,
                s.here,
            )
        step = ctx.step(MOVE_TO, cell=spot) if spot else None
        yield 100, ctx.plan(step, ctx.step(ATTACK, target=nearest.id))
        yield 110, ctx.plan(step)
    goal = ctx.shared(_goal)
    yield 150, ctx.plan(ctx.step(MOVE_TO, cell=goal) if goal else None)


def _propose_attack(ctx: ProposalContext) -> Iterator[Proposal]:
    s = ctx.shared(_situation)
    if not ctx.emergency and s.target is not None and s.armed:
        yield 70, ctx.plan(ctx.step(ATTACK, target=s.target.id))


def _propose_cover(ctx: ProposalContext) -> Iterator[Proposal]:
    snap = ctx.snapshot
    if ctx.emergency:
        if snap.cover:
            yield 0, ctx.plan(ctx.step(TAKE_COVER, cell=snap.cover[0]))
        return
    s = ctx.shared(_situation)
    me = snap.me
    stealth = me.role == "stealth"
    take_cover = ctx.step(TAKE_COVER, cell=s.cover) if s.cover and not me.in_cover else None
    if not s.armed and s.enemies:
        reload_step = ctx.step(RELOAD)
        if stealth:
            yield 10, ctx.plan(take_cover, reload_step)
        yield 40, ctx.plan(take_cover, reload_step)
    if s.target is not None and s.armed:
        attack_step = ctx.step(ATTACK, target=s.target.id)
        if stealth:
            yield 60, ctx.plan(take_cover, attack_step)
        yield 80, ctx.plan(take_cover, attack_step)
    if s.nearest is not None and s.armed:
        yield 90, ctx.plan(take_cover, ctx.step(ATTACK, target=s.nearest.id))
    # Stealth bounds from cover to cover, only toward cover closer to the goal than we are.
    goal = ctx.shared(_goal)
    if (
        stealth
        and goal is not None
        and s.cover is not None
        and not me.in_cover
        and math.dist(s.cover, goal) < math.dist(s.here, goal)
    ):
        yield 140, ctx.plan(ctx.step(TAKE_COVER, cell=s.cover), ctx.step(MOVE_TO, cell=goal))
    yield 190, ctx.plan(take_cover)


def _propose_reload(ctx: ProposalContext) -> Iterator[Proposal]:
    s = ctx.shared(_situation)
    if not ctx.emergency and not s.armed:
        reload_step = ctx.step(RELOAD)
        attack_step = ctx.step(ATTACK, target=s.target.id) if s.target else None
        yield 20, ctx.plan(reload_step, attack_step)
        yield 30, ctx.plan(reload_step)


def _propose_heal(ctx: ProposalContext) -> Iterator[Proposal]:
    if ctx.emergency:
        return
    s = ctx.shared(_situation)
    step = ctx.step(HEAL, target=s.heal_id) if s.heal_id is not None else None
    if ctx.snapshot.me.role == "support":
        yield 50, ctx.plan(step)
    yield 180, ctx.plan(step)


def _propose_retreat(ctx: ProposalContext) -> Iterator[Proposal]:
    me = ctx.snapshot.me
    s = ctx.shared(_situation)
    enemy = s.nearest
    if ctx.emergency or enemy is None or me.hp * 4 >= me.max_hp:
        return
    dx, dy = s.here[0] - enemy.x, s.here[1] - enemy.y
    norm = math.hypot(dx, dy) or 1.0
    away = _nearest_walkable(
        ctx.snapshot.field,
        s.here[0] + dx / norm * _RETREAT_CELLS,
        s.here[1] + dy / norm * _RETREAT_CELLS,
        s.here,
    )
    yield 120, ctx.plan(ctx.step(RETREAT, cell=away))


def _propose_scan(ctx: ProposalContext) -> Iterator[Proposal]:
    if ctx.emergency:
        return
    snap = ctx.snapshot
    me = snap.me
    scan_step = ctx.step(SCAN)
    if me.role == "exploration":
        here = (me.x, me.y)
        dx, dy = _DIRECTIONS[(me.id + snap.tick // _EXPLORE_PERIOD) % len(_DIRECTIONS)]
        norm = math.hypot(dx, dy)
        spot = _nearest_walkable(
            snap.field, me.x + dx / norm * _EXPLORE_CELLS, me.y + dy / norm * _EXPLORE_CELLS, here
        )
        yield 130, ctx.plan(scan_step, ctx.step(MOVE_TO, cell=spot) if spot else None)
    yield 160, ctx.plan(scan_step)


def _propose_wait(ctx: ProposalContext) -> Iterator[Proposal]:
    if not ctx.emergency:
        yield 170, ctx.plan(ctx.step(WAIT, count=WAIT_TICKS))


# --- the declarations ---------------------------------------------------------------------------

_X = ArgSpec("x", ArgKind.X)
_MAX_ID = 2**31 - 1  # esper ids only grow: a long game passes any small bound
_Y = ArgSpec("y", ArgKind.Y)

MOVE_TO: Final = ActionSpec(
    "MoveTo",
    "M",
    (_X, _Y),
    "walk to cell x,y",
    "walk {place}",
    handler=move,
    propose=_propose_move,
)
ATTACK: Final = ActionSpec(
    "Attack",
    "A",
    (ArgSpec("target_id", ArgKind.ENEMY, 0, _MAX_ID),),
    "shoot a visible enemy",
    "shoot {target_id}",
    handler=attack,
    propose=_propose_attack,
    upkeep=cool_weapons,
)
TAKE_COVER: Final = ActionSpec(
    "TakeCover",
    "C",
    (_X, _Y),
    "run to the cover point at x,y",
    "run to cover",
    handler=move,
    propose=_propose_cover,
)
RELOAD: Final = ActionSpec(
    "Reload",
    "R",
    (),
    "refill the magazine",
    "reload my weapon",
    handler=reload,
    propose=_propose_reload,
    upkeep=cool_weapons,
)
HEAL: Final = ActionSpec(
    "Heal",
    "H",
    (ArgSpec("target_id", ArgKind.ALLY, 0, _MAX_ID),),
    "heal a visible ally",
    "heal {target_id}",
    handler=heal,
    propose=_propose_heal,
)
RETREAT: Final = ActionSpec(
    "Retreat",
    "T",
    (_X, _Y),
    "fall back to cell x,y",
    "fall back, away from them",
    handler=move,
    propose=_propose_retreat,
)
SCAN: Final = ActionSpec(
    "Scan",
    "S",
    (),
    "look around for enemies",
    "look around",
    handler=scan,
    propose=_propose_scan,
)
WAIT: Final = ActionSpec(
    "Wait",
    "W",
    (ArgSpec("ticks", ArgKind.COUNT, 1, 120),),
    "hold position",
    "hold still",
    handler=wait,
    propose=_propose_wait,
)

DEFAULT_REGISTRY: Final = ActionRegistry(
    [MOVE_TO, ATTACK, TAKE_COVER, RELOAD, HEAL, RETREAT, SCAN, WAIT]
)
"""The built-in verbs with their handlers, proposers and upkeep."""
