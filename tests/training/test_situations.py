"""The situation generator makes legal, varied, reproducible esper worlds."""

from __future__ import annotations

import collections

import esper
import pytest

from aiplanner.components import ROLES, Battlefield, Health, Position, Team
from aiplanner.errors import ConfigError
from aiplanner.training.situations import (
    Situation,
    UnitSpec,
    generate_situations,
    isolated_world,
    situation_snapshot,
)

SITUATIONS = generate_situations(120, seed=3)


def test_same_seed_same_situations_and_prefix_stable() -> None:
    again = generate_situations(120, seed=3)
    assert again == SITUATIONS
    assert generate_situations(10, seed=3) == SITUATIONS[:10]
    assert generate_situations(10, seed=4) != SITUATIONS[:10]


@pytest.mark.parametrize("sit", SITUATIONS[:60], ids=lambda s: str(s.seed))
def test_situation_is_a_legal_world(sit: Situation) -> None:
    field = sit.field
    cells = [(u.x, u.y) for u in sit.units()]
    assert len(set(cells)) == len(cells)
    assert all(field.walkable(x, y) for x, y in cells)
    assert all(field.walkable(x, y) for x, y in field.cover)
    assert field.objective is None or field.walkable(*field.objective)
    with isolated_world():
        roster = sit.build()
        ids = [roster.me, *roster.allies, *roster.enemies]
        assert len(set(ids)) == len(ids) == len(sit.units())
        assert roster.me == sit.id_offset + 2  # blank entities, the map, then the agent
        for ent, spec in zip(ids, sit.units(), strict=True):
            pos = esper.component_for_entity(ent, Position)
            assert (pos.x, pos.y) == (spec.x, spec.y)
            assert esper.component_for_entity(ent, Team).team == spec.team
            assert esper.component_for_entity(ent, Health).hp == spec.hp
        assert len(esper.get_component(Battlefield)) == 1
    snap, roster = situation_snapshot(sit)
    assert snap.me.id == roster.me
    assert (snap.me.x, snap.me.y, snap.me.hp, snap.me.ammo) == (
        sit.me.x,
        sit.me.y,
        sit.me.hp,
        sit.me.ammo,
    )
    assert {u.id for u in snap.enemies} <= set(roster.enemies)
    assert {u.id for u in snap.allies} <= set(roster.allies)


def test_isolated_world_restores_the_current_world(world: str) -> None:
    marker = esper.create_entity(Team(7))
    with isolated_world() as name:
        assert esper.current_world == name
        assert not esper.entity_exists(marker)
    assert esper.current_world == world
    assert name not in esper.list_worlds()
    assert esper.entity_exists(marker)


def test_generator_covers_the_space() -> None:
    parts = [s.kind.split("|") for s in SITUATIONS]
    roles = collections.Counter(p[0] for p in parts)
    assert set(roles) == set(ROLES)
    assert {p[1] for p in parts} == {"healthy", "hurt", "dying"}
    assert {p[2] for p in parts} == {"ammo-full", "ammo-low", "ammo-empty"}
    assert {p[5] for p in parts} == {"cover-near", "cover-far", "cover-none", "cover-on"}
    snaps = [situation_snapshot(s)[0] for s in SITUATIONS]
    seen = collections.Counter(min(len(s.enemies), 4) for s in snaps)
    assert seen[0] > 0 and seen[3] + seen[4] > 0  # nothing in sight ... outnumbered
    assert any(any(a.hurt for a in s.allies) for s in snaps)
    assert any(s.me.in_cover for s in snaps)
    assert any(s.objective is None for s in snaps) and any(s.objective for s in snaps)
    assert len({s.me.id for s in snaps}) > 30  # ids vary between situations


def test_round_trip_through_dict() -> None:
    for sit in SITUATIONS[:20]:
        assert Situation.from_dict(sit.to_dict()) == sit


def test_from_dict_rejects_malformed_and_illegal() -> None:
    with pytest.raises(ConfigError):
        Situation.from_dict({"map": {}})
    with pytest.raises(ConfigError):
        Situation.from_dict([1, 2])
    data = SITUATIONS[0].to_dict()
    me = data["me"]
    assert isinstance(me, dict)
    blocked = sorted(SITUATIONS[0].field.blocked)[0]
    me["x"], me["y"] = blocked
    with pytest.raises(ConfigError, match="not walkable"):
        Situation.from_dict(data)


def test_variant_changes_only_the_others() -> None:
    sit = next(s for s in SITUATIONS if len(s.enemies) >= 2)
    assert sit.variant(0) is sit
    v = sit.variant(1)
    assert v.me == sit.me and v.field == sit.field and v == sit.variant(1)
    assert v.enemies != sit.enemies
    v.check()
    for a, b in zip(v.enemies, sit.enemies, strict=True):
        assert abs(a.x - b.x) + abs(a.y - b.y) <= 1


def test_negative_count_is_refused() -> None:
    with pytest.raises(ConfigError):
        generate_situations(-1)


def test_unit_spec_defaults_are_a_fresh_soldier() -> None:
    u = UnitSpec(team=0, role="tactical", x=1, y=2)
    assert (u.hp, u.max_hp, u.ammo, u.capacity) == (100, 100, 6, 6)
