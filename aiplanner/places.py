"""Named places: the few cells a free-mode plan may move to, listed in the prompt by number.

A 135M model asked for raw ``x,y`` cells walks into walls and copies whatever cell it was shown.
Free mode instead offers a short list built from the snapshot (nearest free cover points, the
objective, a reachable cell toward and one away from each of the nearest enemies) and the model
answers with an index into it: ``["M",2]`` is "move to place 2". The grammar allows only the
indices that exist, so an illegal destination cannot be written; the codec turns the index back
into a cell, and the validator checks that cell like any other.

Where a plan holds a place: an X argument directly followed by a Y argument is one place (the
default registry's MoveTo, TakeCover, Retreat); an argument of kind ``PLACE`` or ``COVER`` is one
place packed into one integer (:func:`pack_cell`), so a plan stays meaningful after the snapshot it
was made from is gone. ``COVER`` accepts only the places that are cover points.

The list depends on the snapshot only (deterministic order and tie-breaks), so the prompt, the
schema and the decoder, built separately, agree on every index.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from aiplanner.actions import ActionSpec, ArgKind
from aiplanner.pathfinding import find_path, path_cost, reachable
from aiplanner.snapshot import SeenUnit, WorldSnapshot

__all__ = [
    "MAX_PLACES",
    "PLACE_STRIDE",
    "FreeOptions",
    "Place",
    "Slot",
    "free_options",
    "named_places",
    "pack_cell",
    "slots",
    "unpack_cell",
    "with_cells",
]

MAX_PLACES: Final = 8
"""At most this many named places per agent: one digit each, a short prompt line."""

PLACE_STRIDE: Final = 1 << 16
"""A ``PLACE``/``COVER`` argument is ``y * PLACE_STRIDE + x``: maps up to 65536 cells wide."""

_MAX_COVER: Final = 3
_MAX_ENEMIES: Final = 2  # enemies that get near/away places
_SHOWN_ENEMIES: Final = 4  # enemies a free plan may name (the prompt lists these)
_SHOWN_ALLIES: Final = 3
_STEP: Final = 10  # A*'s cost of one straight step
_NEAR_RADIUS: Final = 10 * _STEP  # cells reachable within this are found in one sweep
_HOP: Final = 6 * _STEP  # how far a "near"/"away" place is at most, in walking cost
_MIN_GAIN: Final = 1.5  # a near/away place must change the distance to the enemy by this much


@dataclass(frozen=True, slots=True)
class Place:
    """A named cell: ``name`` as the prompt shows it, ``steps`` the walk to it from the agent."""

    name: str
    cell: tuple[int, int]
    steps: int
    cover: bool = False


@dataclass(frozen=True, slots=True)
class FreeOptions:
    """Everything a free-mode plan for one snapshot may name; the prompt shows exactly these.

    ``enemies``: living visible enemies, nearest first (at most 4); ``allies``: living visible
    allies (at most 3); ``heal_ids``: who a heal may target, the hurt ones among the allies shown
    and the agent itself when hurt; ``places``: :func:`named_places`.
    """

    enemies: tuple[SeenUnit, ...]
    allies: tuple[SeenUnit, ...]
    heal_ids: tuple[int, ...]
    places: tuple[Place, ...]

    @property
    def cover_indices(self) -> tuple[int, ...]:
        """The indices of the places that are cover points."""
        return tuple(i for i, p in enumerate(self.places) if p.cover)


@dataclass(frozen=True, slots=True)
class Slot:
    """One argument of a compact step as the model writes it: the registry arguments it fills
    (two for an X,Y pair, else one) and whether it is a place (``"place"``/``"cover"``) or a
    plain integer (``"plain"``)."""

    args: tuple[int, ...]
    kind: str


def pack_cell(x: int, y: int) -> int:
    """The value of a ``PLACE``/``COVER`` argument for cell ``x, y`` (both non-negative)."""
    return y * PLACE_STRIDE + x


def unpack_cell(value: int) -> tuple[int, int]:
    """The cell a ``PLACE``/``COVER`` argument names (inverse of :func:`pack_cell`)."""
    y, x = divmod(value, PLACE_STRIDE)
    return x, y


def with_cells(spec: ActionSpec, args: Sequence[int]) -> list[int]:
    """``args`` of a ``spec`` step with every ``PLACE``/``COVER`` argument spelt as its ``x, y``
    (the cell form of compact plans and candidate lists); other arguments are unchanged."""
    out: list[int] = []
    for a, v in zip(spec.args, args, strict=True):
        out += unpack_cell(v) if a.kind in (ArgKind.PLACE, ArgKind.COVER) else (v,)
    return out


@functools.cache
def slots(spec: ActionSpec) -> tuple[Slot, ...]:
    """How ``spec``'s arguments appear in a compact step: X then Y as one place, ``PLACE`` and
    ``COVER`` as one place each, everything else as itself."""
    out: list[Slot] = []
    kinds = [a.kind for a in spec.args]
    i = 0
    while i < len(kinds):
        kind = kinds[i]
        if kind is ArgKind.X and i + 1 < len(kinds) and kinds[i + 1] is ArgKind.Y:
            out.append(Slot((i, i + 1), "place"))
            i += 2
            continue
        name = {ArgKind.PLACE: "place", ArgKind.COVER: "cover"}.get(kind, "plain")
        out.append(Slot((i,), name))
        i += 1
    return tuple(out)


@functools.lru_cache(maxsize=512)
def free_options(snap: WorldSnapshot) -> FreeOptions:
    """The :class:`FreeOptions` of ``snap`` (computed once per snapshot)."""
    me = snap.me
    enemies = tuple(e for e in snap.enemies if e.hp > 0)[:_SHOWN_ENEMIES]
    allies = tuple(a for a in snap.allies if a.hp > 0)[:_SHOWN_ALLIES]
    heal = [a.id for a in allies if a.hp < a.max_hp]
    if 0 < me.hp < me.max_hp:
        heal.append(me.id)
    return FreeOptions(enemies, allies, tuple(heal), named_places(snap))


@functools.lru_cache(maxsize=512)
def named_places(snap: WorldSnapshot) -> tuple[Place, ...]:
    """The places a free-mode plan for ``snap``'s agent may go to, at most :data:`MAX_PLACES`,
    each reachable on foot and distinct from the agent's own cell: up to 3 free cover points
    (nearest first, skipping any a living unit stands on), the objective, then for each of the 2
    nearest living enemies a cell closer to it (``near91``) and one farther from it
    (``away91``), both within 6 steps."""
    field = snap.field
    here = (snap.me.x, snap.me.y)
    near = reachable(field, here, _NEAR_RADIUS)
    taken = {here} | {(u.x, u.y) for u in (*snap.enemies, *snap.allies) if u.hp > 0}
    cover_cells = set(field.cover)
    out: list[Place] = []

    def add(name: str, cell: tuple[int, int], cost: int) -> None:
        if len(out) < MAX_PLACES and all(p.cell != cell for p in out):
            out.append(Place(name, cell, round(cost / _STEP), cell in cover_cells))

    def walk(cell: tuple[int, int]) -> int | None:
        cost = near.get(cell)
        if cost is not None:
            return cost
        path = find_path(field, here, cell)
        return None if path is None else path_cost(here, path)

    covers = 0
    for cell in snap.cover[: 2 * _MAX_COVER]:  # occupied or cut-off ones are skipped
        cost = walk(cell) if cell not in taken else None
        if cost is not None:
            add("cover", cell, cost)
            covers += 1
            if covers == _MAX_COVER:
                break
    goal = snap.objective
    if goal is not None and goal != here:
        cost = walk(goal)
        if cost is not None:
            add("goal", goal, cost)
    hop = [(c, g) for c, g in near.items() if g <= _HOP and c not in taken]
    for enemy in [e for e in snap.enemies if e.hp > 0][:_MAX_ENEMIES]:
        at = (enemy.x, enemy.y)
        now = math.dist(here, at)
        # Toward: the closest the agent can get in a few steps (not onto the enemy);
        # away: the farthest. Ties go to the shorter walk, then the smaller cell; a cell that is
        # already a place is passed over for the next best.
        free = [cg for cg in hop if all(p.cell != cg[0] for p in out)]
        toward = min(free, key=lambda cg: (math.dist(cg[0], at), cg[1], cg[0]), default=None)
        if toward is not None and math.dist(toward[0], at) <= now - _MIN_GAIN:
            add(f"near{enemy.id}", *toward)
            free.remove(toward)
        away = min(free, key=lambda cg: (-math.dist(cg[0], at), cg[1], cg[0]), default=None)
        if away is not None and math.dist(away[0], at) >= now + _MIN_GAIN:
            add(f"away{enemy.id}", *away)
    return tuple(out)
