"""HeuristicPlanner: rule-based plans, the tier below the model and the source of guided options.

Rules, in rank order (the first that applies gives :meth:`HeuristicPlanner.plan`):

1. out of ammo: Reload (then Attack the target in range, if any);
2. a support agent with a hurt ally (or itself hurt) in view: Heal the most hurt;
3. an enemy within weapon range: Attack it (nearest, ties by weakest, then id);
4. enemies in view, not in cover, cover within :data:`COVER_NEAR`: TakeCover, then Attack;
5. enemies in view but out of range: MoveTo a cell that brings the nearest within range, then
   Attack;
6. otherwise: MoveTo the objective (or Scan when there is none or the agent is on it).

Role flavour: ``stealth`` takes cover before attacking or reloading under fire, and bounds
between cover points that lead toward the objective; ``exploration`` scans then walks to a
fresh spot; ``support`` heals first. Unknown roles behave as ``tactical``.

Every plan is built only from actions present in the registry (arguments filled in by their
:class:`ArgKind`) and passed through :func:`validate_plan`, so whatever this module returns is
legal for the snapshot it was made for.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice
from typing import Final

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind, Plan, Step
from aiplanner.components import Battlefield
from aiplanner.errors import ConfigError, PlanRejected
from aiplanner.snapshot import SeenUnit, WorldSnapshot
from aiplanner.spatial import to_cell
from aiplanner.validation import validate_plan

__all__ = ["COVER_NEAR", "HeuristicPlanner"]

COVER_NEAR: Final = 5.0
"""Cover farther than this (cells) is not worth running to under fire."""
WAIT_TICKS: Final = 10
_RETREAT_CELLS: Final = 5.0
_EXPLORE_CELLS: Final = 6.0
_EXPLORE_PERIOD: Final = 100  # ticks before an explorer picks a new direction
_NEAR_SEARCH: Final = 2  # how far (cells) to look for a walkable cell near a wanted one
_DIRECTIONS: Final = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def _nearest_walkable(
    field: Battlefield, x: float, y: float, avoid: tuple[int, int]
) -> tuple[int, int] | None:
    """The walkable cell nearest to ``(x, y)`` within a small square, never ``avoid``."""
    cx, cy = to_cell(x, y)
    cx = min(max(cx, 0), field.width - 1)
    cy = min(max(cy, 0), field.height - 1)
    best: tuple[float, int, int] | None = None
    for nx in range(cx - _NEAR_SEARCH, cx + _NEAR_SEARCH + 1):
        for ny in range(cy - _NEAR_SEARCH, cy + _NEAR_SEARCH + 1):
            if (nx, ny) == avoid or not field.walkable(nx, ny):
                continue
            cand = ((nx - x) ** 2 + (ny - y) ** 2, nx, ny)
            if best is None or cand < best:
                best = cand
    return None if best is None else (best[1], best[2])


class HeuristicPlanner:
    """Rule-based planner over one registry.

    Raises :class:`ConfigError` if the registry has no action that is legal in every situation
    (one taking no arguments or only COUNT arguments): without one, :meth:`emergency` could not
    promise a legal plan. That fallback step is ``Wait(10)`` (clamped into its range) when the
    registry has a ``Wait`` of COUNT arguments, else the first zero-argument action, else the
    first action whose arguments are all COUNTs, at their lowest values.
    """

    __slots__ = ("_fallback", "registry")

    def __init__(self, registry: ActionRegistry = DEFAULT_REGISTRY) -> None:
        self.registry = registry
        self._fallback = self._find_fallback()

    def _find_fallback(self) -> Step:
        wait = self._make("Wait", count=WAIT_TICKS)
        if wait is not None:
            return wait
        for spec in self.registry.actions:
            if not spec.args:
                return Step(spec.name, ())
        for spec in self.registry.actions:
            if all(a.kind is ArgKind.COUNT for a in spec.args):
                return Step(spec.name, tuple(a.lo for a in spec.args))
        raise ConfigError(
            "the registry needs an action legal in every situation (no arguments, or only "
            f"COUNT arguments) for the emergency plan; it has {', '.join(self.registry.names)}"
        )

    def _make(
        self,
        name: str,
        *,
        cell: tuple[int, int] | None = None,
        target: int | None = None,
        count: int | None = None,
    ) -> Step | None:
        """A step of ``name`` with arguments filled by kind, or None if it is absent or needs
        an argument we do not have."""
        spec = self.registry.get(name)
        if spec is None:
            return None
        args: list[int] = []
        for a in spec.args:
            value: int | None
            if a.kind is ArgKind.X:
                value = None if cell is None else cell[0]
            elif a.kind is ArgKind.Y:
                value = None if cell is None else cell[1]
            elif a.kind is ArgKind.COUNT:
                value = None if count is None else min(max(count, a.lo), a.hi)
            else:
                value = target
            if value is None:
                return None
            args.append(value)
        return Step(name, tuple(args))

    @staticmethod
    def _plan(*steps: Step | None) -> Plan | None:
        kept = tuple(s for s in steps if s is not None)
        # A missing follow-up is dropped (TakeCover alone is still a plan), but a follow-up is
        # never promoted to first step: Attack without its TakeCover is a different plan.
        if not kept or steps[0] is None:
            return None
        return Plan(kept)

    def _proposals(self, snap: WorldSnapshot) -> Iterator[Plan | None]:
        """Plans in rank order, unchecked; may repeat or be illegal."""
        me = snap.me
        field = snap.field
        here = (me.x, me.y)
        enemies = sorted((e for e in snap.enemies if e.hp > 0), key=lambda u: (u.dist, u.hp, u.id))
        in_range = [e for e in enemies if e.dist <= me.weapon_range]
        target = in_range[0] if in_range else None
        nearest = enemies[0] if enemies else None
        hurt = sorted((a for a in snap.allies if a.hurt), key=lambda u: (u.hp, u.dist, u.id))
        heal_id = hurt[0].id if hurt else (me.id if me.hp * 2 < me.max_hp else None)
        cover = self._near_cover(snap)
        role = me.role
        make = self._make
        plan = self._plan

        attack = make("Attack", target=target.id) if target else None
        take_cover = make("TakeCover", cell=cover) if cover and not me.in_cover else None
        reload = make("Reload")
        heal = make("Heal", target=heal_id) if heal_id is not None else None

        armed = me.ammo > 0
        if not armed:
            if role == "stealth" and enemies:
                yield plan(take_cover, reload)
            yield plan(reload, attack)
            yield plan(reload)
            if enemies:
                yield plan(take_cover, reload)
        if role == "support":
            yield plan(heal)
        if target is not None and armed:
            if role == "stealth":
                yield plan(take_cover, attack)
            yield plan(attack)
            yield plan(take_cover, attack)
        if nearest is not None and armed:
            yield plan(take_cover, make("Attack", target=nearest.id))
        if nearest is not None and target is None and armed:
            approach = self._approach(field, here, nearest, me.weapon_range)
            step = make("MoveTo", cell=approach) if approach else None
            yield plan(step, make("Attack", target=nearest.id))
            yield plan(step)
        if nearest is not None and me.hp * 4 < me.max_hp:
            yield plan(make("Retreat", cell=self._away(field, here, nearest)))
        yield from self._peaceful(snap, cover)
        yield plan(heal)
        yield plan(take_cover)

    def _peaceful(
        self, snap: WorldSnapshot, cover: tuple[int, int] | None
    ) -> Iterator[Plan | None]:
        me = snap.me
        here = (me.x, me.y)
        field = snap.field
        make = self._make
        plan = self._plan
        goal = None
        if snap.objective is not None and snap.objective != here:
            ox, oy = snap.objective
            goal = _nearest_walkable(field, ox, oy, here)
        go = make("MoveTo", cell=goal) if goal else None
        scan = make("Scan")
        if me.role == "exploration":
            dx, dy = _DIRECTIONS[(me.id + snap.tick // _EXPLORE_PERIOD) % len(_DIRECTIONS)]
            norm = math.hypot(dx, dy)
            spot = _nearest_walkable(
                field,
                me.x + dx / norm * _EXPLORE_CELLS,
                me.y + dy / norm * _EXPLORE_CELLS,
                here,
            )
            yield plan(scan, make("MoveTo", cell=spot) if spot else None)
        # Stealth bounds from cover to cover, only toward cover closer to the goal than we are.
        if (
            me.role == "stealth"
            and goal is not None
            and cover is not None
            and not me.in_cover
            and math.dist(cover, goal) < math.dist(here, goal)
        ):
            yield plan(make("TakeCover", cell=cover), go)
        yield plan(go)
        yield plan(scan)
        yield plan(make("Wait", count=WAIT_TICKS))

    @staticmethod
    def _near_cover(snap: WorldSnapshot) -> tuple[int, int] | None:
        here = (snap.me.x, snap.me.y)
        best = min(snap.cover, key=lambda c: (math.dist(here, c), c), default=None)
        if best is None or math.dist(here, best) > COVER_NEAR:
            return None
        return best

    @staticmethod
    def _approach(
        field: Battlefield, here: tuple[int, int], enemy: SeenUnit, weapon_range: float
    ) -> tuple[int, int] | None:
        d = math.dist(here, (enemy.x, enemy.y))
        if d <= 0:
            return None
        # Walk until the enemy is a cell inside range, not onto it.
        f = min(1.0, max(0.0, (d - weapon_range + 1.0) / d))
        return _nearest_walkable(
            field, here[0] + (enemy.x - here[0]) * f, here[1] + (enemy.y - here[1]) * f, here
        )

    @staticmethod
    def _away(field: Battlefield, here: tuple[int, int], enemy: SeenUnit) -> tuple[int, int] | None:
        dx, dy = here[0] - enemy.x, here[1] - enemy.y
        norm = math.hypot(dx, dy) or 1.0
        return _nearest_walkable(
            field,
            here[0] + dx / norm * _RETREAT_CELLS,
            here[1] + dy / norm * _RETREAT_CELLS,
            here,
        )

    def _ranked(self, snap: WorldSnapshot) -> Iterator[Plan]:
        seen: set[Plan] = set()
        for plan in self._proposals(snap):
            if plan is None or plan in seen:
                continue
            seen.add(plan)
            try:
                validate_plan(plan, snap, self.registry)
            except PlanRejected:
                continue
            yield plan
        fallback = Plan((self._fallback,))
        if fallback not in seen:
            yield fallback

    def plan(self, snap: WorldSnapshot) -> Plan:
        """The best legal plan for ``snap`` (see the module docstring for the rules)."""
        return next(self._ranked(snap))

    def candidates(self, snap: WorldSnapshot, limit: int = 4) -> tuple[Plan, ...]:
        """Up to ``limit`` distinct legal plans of one or two steps, best first.

        The first is :meth:`plan`'s answer. Raises :class:`ConfigError` if ``limit < 1``.
        """
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        return tuple(islice(self._ranked(snap), limit))

    def emergency(self, snap: WorldSnapshot) -> Plan:
        """TakeCover at the nearest free cover point if that is legal, else the fallback step
        (``Wait(10)``, see the class docstring). Never raises."""
        step = self._make("TakeCover", cell=snap.cover[0]) if snap.cover else None
        if step is not None:
            plan = Plan((step,))
            try:
                return validate_plan(plan, snap, self.registry)
            except PlanRejected:
                pass
        return Plan((self._fallback,))
