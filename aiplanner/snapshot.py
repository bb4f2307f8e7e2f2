"""WorldSnapshot: the frozen, per-agent view of the world that planners see.

Built by :class:`aiplanner.snapshot_system.SnapshotSystem` from components. Every list is in a
deterministic order (nearest first, ties by id / coordinates). Frozen: snapshots cross threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from aiplanner.components import Battlefield

__all__ = ["SeenUnit", "SelfView", "WorldSnapshot", "quantised_key"]


@dataclass(frozen=True, slots=True)
class SelfView:
    id: int
    role: str
    team: int
    x: int
    y: int
    hp: int
    max_hp: int
    ammo: int
    ammo_capacity: int
    in_cover: bool
    weapon_range: float


@dataclass(frozen=True, slots=True)
class SeenUnit:
    """Another agent within perception range. ``dist`` is in cells (rounded to 0.1)."""

    id: int
    x: int
    y: int
    hp: int
    in_cover: bool
    dist: float
    max_hp: int = 100

    @property
    def hurt(self) -> bool:
        """Alive and below half of its maximum health."""
        return self.hp > 0 and self.hp * 2 < self.max_hp


@dataclass(frozen=True, slots=True)
class WorldSnapshot:
    tick: int
    me: SelfView
    enemies: tuple[SeenUnit, ...]
    allies: tuple[SeenUnit, ...]
    cover: tuple[tuple[int, int], ...]  # nearby free cover points, nearest first
    obstacles: tuple[tuple[int, int], ...]  # nearby blocked cells, nearest first
    objective: tuple[int, int] | None
    field: Battlefield  # the whole map, for bounds and obstacle checks; not serialised

    def enemy(self, entity: int) -> SeenUnit | None:
        for u in self.enemies:
            if u.id == entity:
                return u
        return None

    def ally(self, entity: int) -> SeenUnit | None:
        for u in self.allies:
            if u.id == entity:
                return u
        return None

    def to_dict(self) -> dict[str, object]:
        """A plain, JSON-ready dict (the map itself is summarised by its size)."""
        me = self.me
        return {
            "tick": self.tick,
            "me": {
                "id": me.id,
                "role": me.role,
                "team": me.team,
                "x": me.x,
                "y": me.y,
                "hp": me.hp,
                "max_hp": me.max_hp,
                "ammo": me.ammo,
                "ammo_capacity": me.ammo_capacity,
                "in_cover": me.in_cover,
                "weapon_range": me.weapon_range,
            },
            "enemies": [_unit(u) for u in self.enemies],
            "allies": [_unit(u) for u in self.allies],
            "cover": [list(c) for c in self.cover],
            "obstacles": [list(c) for c in self.obstacles],
            "objective": list(self.objective) if self.objective else None,
            "map": [self.field.width, self.field.height],
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, object], field: Battlefield | None = None) -> WorldSnapshot:
        """Rebuild a snapshot from :meth:`to_dict` output (used by the CLI's ``--snapshot``).

        Raises ``KeyError``/``TypeError``/``ValueError`` on malformed data.
        """
        me = data["me"]
        assert isinstance(me, dict)
        size = data.get("map", [32, 32])
        assert isinstance(size, list)
        if field is None:
            obstacles = data.get("obstacles", [])
            cover = data.get("cover", [])
            objective = data.get("objective")
            assert isinstance(obstacles, list) and isinstance(cover, list)
            field = Battlefield(
                int(size[0]),
                int(size[1]),
                frozenset((int(c[0]), int(c[1])) for c in obstacles),
                tuple((int(c[0]), int(c[1])) for c in cover),
                (int(objective[0]), int(objective[1])) if isinstance(objective, list) else None,
            )
        return cls(
            tick=int(data.get("tick", 0)),  # type: ignore[call-overload]
            me=SelfView(
                id=int(me["id"]),
                role=str(me["role"]),
                team=int(me["team"]),
                x=int(me["x"]),
                y=int(me["y"]),
                hp=int(me["hp"]),
                max_hp=int(me.get("max_hp", 100)),
                ammo=int(me.get("ammo", 0)),
                ammo_capacity=int(me.get("ammo_capacity", 6)),
                in_cover=bool(me.get("in_cover", False)),
                weapon_range=float(me.get("weapon_range", 6.0)),
            ),
            enemies=tuple(_seen(u) for u in data.get("enemies", [])),  # type: ignore[attr-defined]
            allies=tuple(_seen(u) for u in data.get("allies", [])),  # type: ignore[attr-defined]
            cover=tuple((int(c[0]), int(c[1])) for c in data.get("cover", [])),  # type: ignore[attr-defined]
            obstacles=tuple((int(c[0]), int(c[1])) for c in data.get("obstacles", [])),  # type: ignore[attr-defined]
            objective=field.objective,
            field=field,
        )


def _unit(u: SeenUnit) -> dict[str, object]:
    return {
        "id": u.id,
        "x": u.x,
        "y": u.y,
        "hp": u.hp,
        "max_hp": u.max_hp,
        "in_cover": u.in_cover,
        "dist": u.dist,
    }


def _seen(u: dict[str, object]) -> SeenUnit:
    return SeenUnit(
        id=int(u["id"]),  # type: ignore[call-overload]
        x=int(u["x"]),  # type: ignore[call-overload]
        y=int(u["y"]),  # type: ignore[call-overload]
        hp=int(u["hp"]),  # type: ignore[call-overload]
        in_cover=bool(u.get("in_cover", False)),
        dist=float(u.get("dist", 0.0)),  # type: ignore[arg-type]
        max_hp=int(u.get("max_hp", 100)),  # type: ignore[call-overload]
    )


def quantised_key(snap: WorldSnapshot, cell: int = 2, hp_step: int = 25) -> tuple[object, ...]:
    """A hashable key for the plan cache: positions bucketed to ``cell``, hp/ammo bucketed.

    Two agents in the same situation (same role, nearby positions, similar health, the same visible
    enemies in similar places) share a key. Enemy ids are part of it: a cached Attack names one.
    """
    me = snap.me
    ammo_bucket = 0 if me.ammo == 0 else (1 if me.ammo * 2 < me.ammo_capacity else 2)
    return (
        me.role,
        me.x // cell,
        me.y // cell,
        me.hp // hp_step,
        ammo_bucket,
        me.in_cover,
        tuple((u.id, u.x // cell, u.y // cell, u.hp // hp_step) for u in snap.enemies[:4]),
        tuple((u.id, u.hp // hp_step) for u in snap.allies[:4] if u.hurt),
        snap.objective,
    )
