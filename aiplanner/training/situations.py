"""Situations: seeded, varied tactical moments as real esper worlds, the raw material of training.

A :class:`Situation` is plain data (a map and every unit on it) that :meth:`Situation.build`
turns into entities in the current esper world, using aiplanner's own components; nothing else
is special about it, so whatever the plugin does with a game's world it does with these.
:func:`generate_situations` draws many of them from one seed, covering what the rules must
handle: all four roles, healthy to nearly dead, alone to outnumbered, a full, low or empty
magazine, cover near, far or absent, hurt allies, nothing in sight, with and without an objective.

``variant(k)`` gives the same moment with the *others* slightly changed (their weapon cooldown
phase, a cell of jitter, a little health): the execution rules are deterministic, so this is
where a rollout's "chance" comes from (see :mod:`aiplanner.training.teacher`). The agent under
test never changes between variants, so the candidates made for its snapshot stay legal.
"""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import esper

from aiplanner.components import (
    ROLES,
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    Position,
    Team,
    Weapon,
)
from aiplanner.errors import ConfigError
from aiplanner.snapshot import SeenUnit, WorldSnapshot
from aiplanner.snapshot_system import SnapshotSystem

__all__ = [
    "Roster",
    "Situation",
    "UnitSpec",
    "generate_situations",
    "isolated_world",
    "situation_from_snapshot",
    "situation_snapshot",
]

MAP_WIDTH: Final = 28
MAP_HEIGHT: Final = 20
_WORLD_PREFIX: Final = "aiplanner-training-"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitSpec:
    """One agent of a situation: where it stands and what it carries."""

    team: int
    role: str
    x: int
    y: int
    hp: int = 100
    max_hp: int = 100
    ammo: int = 6
    capacity: int = 6
    cooldown_left: float = 0.0
    perception: float = 8.0
    speed: float = 3.0

    def components(self) -> tuple[object, ...]:
        return (
            Agent(role=self.role, speed=self.speed),
            Position(float(self.x), float(self.y)),
            Health(self.hp, self.max_hp),
            Ammo(self.ammo, self.capacity),
            Team(self.team),
            Perception(self.perception),
            Weapon(cooldown_left=self.cooldown_left),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "team": self.team,
            "role": self.role,
            "x": self.x,
            "y": self.y,
            "hp": self.hp,
            "max_hp": self.max_hp,
            "ammo": self.ammo,
            "capacity": self.capacity,
            "cooldown_left": self.cooldown_left,
            "perception": self.perception,
            "speed": self.speed,
        }

    @classmethod
    def from_dict(cls, data: object) -> UnitSpec:
        if not isinstance(data, dict):
            raise ConfigError(f"a unit must be an object, got {type(data).__name__}")
        try:
            return cls(
                team=int(data["team"]),
                role=str(data["role"]),
                x=int(data["x"]),
                y=int(data["y"]),
                hp=int(data["hp"]),
                max_hp=int(data["max_hp"]),
                ammo=int(data["ammo"]),
                capacity=int(data["capacity"]),
                cooldown_left=float(data["cooldown_left"]),
                perception=float(data["perception"]),
                speed=float(data["speed"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"bad unit {data!r}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Roster:
    """The entity ids :meth:`Situation.build` created: the agent under test, its allies, its
    enemies (each in the situation's order)."""

    me: int
    allies: tuple[int, ...]
    enemies: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Situation:
    """A map and its units; ``me`` is the agent whose decision is taught.

    ``id_offset`` blank entities are created first so that ids look like those of a running game
    (and differ between situations). ``kind`` names the generator's draw, for reports.
    """

    seed: int
    kind: str
    field: Battlefield
    me: UnitSpec
    allies: tuple[UnitSpec, ...] = ()
    enemies: tuple[UnitSpec, ...] = ()
    id_offset: int = 0

    def units(self) -> tuple[UnitSpec, ...]:
        return (self.me, *self.allies, *self.enemies)

    def check(self) -> None:
        """Raise :class:`ConfigError` unless every unit stands alone on a walkable cell, the cover
        points and the objective are walkable, and teams are consistent."""
        f = self.field
        cells = [(u.x, u.y) for u in self.units()]
        for u in self.units():
            if not f.walkable(u.x, u.y):
                raise ConfigError(f"situation {self.seed}: unit at {(u.x, u.y)} is not walkable")
            if u.role not in ROLES:
                raise ConfigError(f"situation {self.seed}: unknown role {u.role!r}")
        if len(set(cells)) != len(cells):
            raise ConfigError(f"situation {self.seed}: two units share a cell")
        for c in (*f.cover, *((f.objective,) if f.objective else ())):
            if not f.walkable(*c):
                raise ConfigError(f"situation {self.seed}: {c} is not walkable")
        if any(a.team != self.me.team for a in self.allies) or any(
            e.team == self.me.team for e in self.enemies
        ):
            raise ConfigError(f"situation {self.seed}: allies and enemies on the wrong teams")

    def build(self) -> Roster:
        """Create the map and the units in the current esper world; return their ids."""
        for _ in range(self.id_offset):
            esper.create_entity()
        esper.create_entity(self.field)
        me = esper.create_entity(*self.me.components())
        allies = tuple(esper.create_entity(*u.components()) for u in self.allies)
        enemies = tuple(esper.create_entity(*u.components()) for u in self.enemies)
        return Roster(me, allies, enemies)

    def variant(self, k: int) -> Situation:
        """The same moment with the others slightly changed (``k == 0``: unchanged).

        Each other unit gets a random weapon cooldown phase, may step one cell (to a free,
        walkable one) and may lose or gain a little health. The agent under test is untouched.
        """
        if k == 0:
            return self
        rng = random.Random(self.seed * 7919 + k)
        taken = {(u.x, u.y) for u in self.units()}

        def nudge(u: UnitSpec) -> UnitSpec:
            x, y = u.x, u.y
            dx, dy = rng.choice(((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)))
            if (x + dx, y + dy) not in taken and self.field.walkable(x + dx, y + dy):
                taken.discard((x, y))
                x, y = x + dx, y + dy
                taken.add((x, y))
            hp = min(u.max_hp, max(1, u.hp + rng.randint(-10, 10)))
            return replace(u, x=x, y=y, hp=hp, cooldown_left=round(rng.uniform(0.0, 0.5), 2))

        return replace(
            self,
            allies=tuple(nudge(u) for u in self.allies),
            enemies=tuple(nudge(u) for u in self.enemies),
        )

    def to_dict(self) -> dict[str, object]:
        f = self.field
        return {
            "seed": self.seed,
            "kind": self.kind,
            "id_offset": self.id_offset,
            "map": {
                "width": f.width,
                "height": f.height,
                "blocked": sorted([x, y] for x, y in f.blocked),
                "cover": [list(c) for c in f.cover],
                "objective": list(f.objective) if f.objective else None,
            },
            "me": self.me.to_dict(),
            "allies": [u.to_dict() for u in self.allies],
            "enemies": [u.to_dict() for u in self.enemies],
        }

    @classmethod
    def from_dict(cls, data: object) -> Situation:
        """Rebuild a situation from :meth:`to_dict` output.

        Raises :class:`ConfigError` for a malformed dict, or one that is not a legal world.
        """
        if not isinstance(data, dict) or not isinstance(data.get("map"), dict):
            raise ConfigError("a situation must be an object with a 'map' object")
        m = data["map"]
        try:
            objective = m["objective"]
            field = Battlefield(
                int(m["width"]),
                int(m["height"]),
                frozenset((int(c[0]), int(c[1])) for c in m["blocked"]),
                tuple((int(c[0]), int(c[1])) for c in m["cover"]),
                (int(objective[0]), int(objective[1])) if objective is not None else None,
            )
            allies, enemies = data["allies"], data["enemies"]
            if not isinstance(allies, list) or not isinstance(enemies, list):
                raise TypeError("allies and enemies must be lists")
            sit = cls(
                seed=int(data["seed"]),
                kind=str(data["kind"]),
                field=field,
                me=UnitSpec.from_dict(data["me"]),
                allies=tuple(UnitSpec.from_dict(u) for u in allies),
                enemies=tuple(UnitSpec.from_dict(u) for u in enemies),
                id_offset=int(data["id_offset"]),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"bad situation: {exc}") from exc
        sit.check()
        return sit


@contextlib.contextmanager
def isolated_world() -> Iterator[str]:
    """Run the body in a fresh esper world (yielding its name), deleted afterwards.

    The world that was current before is current again on exit, whatever happens inside.
    """
    previous = esper.current_world
    name = f"{_WORLD_PREFIX}{uuid.uuid4().hex}"
    esper.switch_world(name)
    try:
        yield name
    finally:
        esper.switch_world(previous)
        esper.delete_world(name)


def situation_snapshot(situation: Situation) -> tuple[WorldSnapshot, Roster]:
    """The snapshot the plugin would build for the agent under test on its first tick.

    Built in an isolated world. Raises :class:`ConfigError` if the agent gets no snapshot.
    """
    with isolated_world():
        roster = situation.build()
        snapshots = SnapshotSystem()
        snapshots.process(0.0)
        snap = snapshots.snapshot(roster.me)
    if snap is None:
        raise ConfigError(f"situation {situation.seed}: the agent under test has no snapshot")
    return snap, roster


def situation_from_snapshot(
    snap: WorldSnapshot, seed: int = 0, *, separate: bool = False
) -> Situation:
    """The world a snapshot describes, as a situation: the agent, the enemies and allies it
    sees (in the snapshot's order), its map. What a snapshot does not say is filled in plainly:
    the others are tactical, loaded (6 of 6) and with cooled weapons, the agent's own weapon is
    cooled, and its perception reaches everyone it saw. Entity ids differ from the snapshot's:
    :func:`situation_snapshot`'s roster lists the new ones in the same order.

    ``separate``: a game's units stand anywhere, so two of them can round to one cell; each
    other unit that lands on a taken or blocked cell moves to the nearest free walkable one
    (the agent never moves). Without it, that is an error.

    Raises :class:`ConfigError` if the snapshot is not a legal world (units off the map, on a
    wall or on one cell).
    """
    me = snap.me
    others = (*snap.enemies, *snap.allies)
    reach = max((8.0, *(u.dist + 1.0 for u in others)))
    foe = me.team + 1
    taken = {(me.x, me.y)}

    def unit(u: SeenUnit, team: int) -> UnitSpec:
        x, y = u.x, u.y
        if separate:
            x, y = _nearest_free(snap.field, (x, y), taken)
            taken.add((x, y))
        return UnitSpec(team=team, role="tactical", x=x, y=y, hp=u.hp, max_hp=u.max_hp)

    situation = Situation(
        seed=seed,
        kind="snapshot",
        field=snap.field,
        me=UnitSpec(
            team=me.team,
            role=me.role if me.role in ROLES else "tactical",
            x=me.x,
            y=me.y,
            hp=me.hp,
            max_hp=me.max_hp,
            ammo=me.ammo,
            capacity=me.ammo_capacity,
            perception=reach,
        ),
        allies=tuple(unit(u, me.team) for u in snap.allies),
        enemies=tuple(unit(u, foe) for u in snap.enemies),
    )
    situation.check()
    return situation


def _nearest_free(
    field: Battlefield, cell: tuple[int, int], taken: set[tuple[int, int]], reach: int = 4
) -> tuple[int, int]:
    """``cell`` if free and walkable, else the nearest such cell within ``reach`` (rings of
    growing Chebyshev radius, each in row-major order), else ``cell`` (the check then fails)."""
    x0, y0 = cell
    for r in range(reach + 1):
        for y in range(y0 - r, y0 + r + 1):
            for x in range(x0 - r, x0 + r + 1):
                on_ring = max(abs(x - x0), abs(y - y0)) == r
                if on_ring and (x, y) not in taken and field.walkable(x, y):
                    return x, y
    return cell


# --- the generator --------------------------------------------------------------------------


def generate_situations(count: int, seed: int = 0) -> list[Situation]:
    """``count`` varied, legal situations; the same ``(count, seed)`` always gives the same list,
    and situation ``i`` does not depend on ``count``.

    Raises :class:`ConfigError` if ``count`` is negative.
    """
    if count < 0:
        raise ConfigError(f"count must be >= 0, got {count}")
    return [_generate_one(seed * 1_000_003 + i) for i in range(count)]


_HEALTH: Final = (("healthy", 70, 100), ("hurt", 30, 60), ("dying", 5, 24))
_AMMO: Final = ("full", "low", "empty")
_ENEMY_COUNTS: Final = (0, 1, 1, 2, 2, 3, 3, 4)  # nothing in sight to outnumbered four to one


def _generate_one(seed: int) -> Situation:
    rng = random.Random(seed)
    width, height = MAP_WIDTH, MAP_HEIGHT
    blocked = _walls(rng, width, height)
    taken: set[tuple[int, int]] = set()

    def free_cell(cx: float, cy: float, spread: float) -> tuple[int, int]:
        for attempt in range(200):
            s = spread + attempt * 0.05
            x = round(cx + rng.uniform(-s, s))
            y = round(cy + rng.uniform(-s, s))
            if 0 <= x < width and 0 <= y < height and (x, y) not in blocked | taken:
                taken.add((x, y))
                return x, y
        for x in range(width):  # a crowded draw: any free cell keeps the situation legal
            for y in range(height):
                if (x, y) not in blocked | taken:
                    taken.add((x, y))
                    return x, y
        raise ConfigError(f"situation {seed}: no free cell left")

    team = rng.randrange(2)
    role = rng.choice(ROLES)
    health_name, lo, hi = rng.choice(_HEALTH)
    ammo_name = rng.choice(_AMMO)
    ammo = {"full": 6, "low": rng.randint(1, 2), "empty": 0}[ammo_name]
    mx, my = free_cell(width / 2, height / 2, 5.0)
    # cover: near (1-4 cells), far (6-10) or none around the agent, plus a few elsewhere
    cover_name = rng.choice(("near", "far", "none", "on"))
    cover: list[tuple[int, int]] = []
    if cover_name == "on":
        cover.append((mx, my))
    elif cover_name != "none":
        d = rng.uniform(1.0, 4.0) if cover_name == "near" else rng.uniform(6.0, 10.0)
        a = rng.uniform(0, 2 * math.pi)
        cover.append(free_cell(mx + d * math.cos(a), my + d * math.sin(a), 0.5))
    for _ in range(rng.randint(0, 3)):
        c = free_cell(rng.uniform(0, width - 1), rng.uniform(0, height - 1), 0.5)
        if math.dist(c, (mx, my)) > 6.0:
            cover.append(c)
    for c in cover:
        taken.discard(c)  # units may stand on cover points
    taken.add((mx, my))
    me = UnitSpec(
        team=team, role=role, x=mx, y=my, hp=rng.randint(lo, hi), ammo=ammo, cooldown_left=0.0
    )

    n_enemies = rng.choice(_ENEMY_COUNTS)
    front = rng.uniform(0, 2 * math.pi)
    enemies = []
    far_only = n_enemies > 0 and rng.random() < 0.15  # enemies exist but none is in sight yet
    for _ in range(n_enemies):
        d = rng.uniform(9.0, 13.0) if far_only else rng.choice((2.5, 4.0, 5.5, 7.0, 8.0))
        d += rng.uniform(-0.5, 0.5)
        a = front + rng.gauss(0.0, 0.5)
        ex, ey = free_cell(mx + d * math.cos(a), my + d * math.sin(a), 1.0)
        enemies.append(
            UnitSpec(
                team=1 - team,
                role=rng.choice(ROLES),
                x=ex,
                y=ey,
                hp=rng.choice((100, 100, 80, 60, 40, 20)),
                ammo=rng.choice((6, 6, 4, 2, 0)),
                cooldown_left=round(rng.uniform(0.0, 0.5), 2),
            )
        )
    allies = []
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        d = rng.uniform(1.0, 6.0)
        a = front + math.pi + rng.gauss(0.0, 1.0)  # allies mostly behind
        ax, ay = free_cell(mx + d * math.cos(a), my + d * math.sin(a), 1.0)
        hurt = rng.random() < 0.4
        allies.append(
            UnitSpec(
                team=team,
                role=rng.choice(ROLES),
                x=ax,
                y=ay,
                hp=rng.randint(10, 45) if hurt else rng.randint(60, 100),
                ammo=rng.choice((6, 4, 2, 0)),
                cooldown_left=round(rng.uniform(0.0, 0.5), 2),
            )
        )
    objective = None
    if rng.random() < 0.8:
        a = rng.uniform(0, 2 * math.pi)
        d = rng.uniform(5.0, 14.0)
        objective = _free_or_none(
            blocked,
            width,
            height,
            round(mx + d * math.cos(a)),
            round(my + d * math.sin(a)),
        )
    field = Battlefield(width, height, frozenset(blocked), tuple(cover), objective)
    kind = "|".join(
        (
            role,
            health_name,
            f"ammo-{ammo_name}",
            f"enemies-{n_enemies}{'-far' if far_only else ''}",
            f"allies-{len(allies)}",
            f"cover-{cover_name}",
        )
    )
    sit = Situation(
        seed=seed,
        kind=kind,
        field=field,
        me=me,
        allies=tuple(allies),
        enemies=tuple(enemies),
        id_offset=rng.randrange(0, 120),
    )
    sit.check()
    return sit


def _walls(rng: random.Random, width: int, height: int) -> set[tuple[int, int]]:
    """A few straight wall segments, away from the map's edges."""
    blocked: set[tuple[int, int]] = set()
    for _ in range(rng.randint(2, 6)):
        x, y = rng.randrange(2, width - 2), rng.randrange(2, height - 2)
        dx, dy = rng.choice(((1, 0), (0, 1)))
        for i in range(rng.randint(2, 5)):
            cx, cy = x + dx * i, y + dy * i
            if 1 <= cx < width - 1 and 1 <= cy < height - 1:
                blocked.add((cx, cy))
    return blocked


def _free_or_none(
    blocked: set[tuple[int, int]], width: int, height: int, x: int, y: int
) -> tuple[int, int] | None:
    x = min(max(x, 0), width - 1)
    y = min(max(y, 0), height - 1)
    for r in range(4):
        for cx in range(x - r, x + r + 1):
            for cy in range(y - r, y + r + 1):
                if 0 <= cx < width and 0 <= cy < height and (cx, cy) not in blocked:
                    return cx, cy
    return None
