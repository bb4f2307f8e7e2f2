"""A small battle scenario for integration tests and benchmarks (not a test module)."""

from __future__ import annotations

import hashlib
import random

import esper

from aiplanner.components import (
    ROLES,
    ActionQueue,
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    PlanState,
    Position,
    Team,
    Weapon,
)


def make_field(width: int = 40, height: int = 40, seed: int = 0) -> Battlefield:
    rng = random.Random(seed)
    blocked = frozenset(
        (rng.randrange(4, width - 4), rng.randrange(0, height)) for _ in range(width * height // 25)
    )
    cover: list[tuple[int, int]] = []
    while len(cover) < width * height // 40:
        c = (rng.randrange(2, width - 2), rng.randrange(1, height - 1))
        if c not in blocked and c not in cover:
            cover.append(c)
    return Battlefield(width, height, blocked, tuple(cover), (width // 2, height // 2))


def spawn_battle(n_agents: int, seed: int = 0, field: Battlefield | None = None) -> list[int]:
    """Create the map entity and ``n_agents`` agents in two teams on opposite sides."""
    field = field or make_field(seed=seed)
    esper.create_entity(field)
    rng = random.Random(seed + 1)
    ents = []
    for i in range(n_agents):
        team = i % 2
        while True:
            x = rng.randrange(0, 4) if team == 0 else rng.randrange(field.width - 4, field.width)
            y = rng.randrange(0, field.height)
            if (x, y) not in field.blocked:
                break
        ents.append(
            esper.create_entity(
                Agent(role=ROLES[i % len(ROLES)], speed=3.0),
                Position(float(x), float(y)),
                Health(100),
                Ammo(6),
                Team(team),
                Perception(10.0),
                Weapon(),
                ActionQueue(),
                PlanState(),
            )
        )
    return ents


def world_digest() -> str:
    """A hash of every agent's observable state (position, hp, ammo, plan status, steps)."""
    h = hashlib.sha256()
    for ent, (pos, hp) in sorted(esper.get_components(Position, Health), key=lambda p: p[0]):
        st = esper.try_component(ent, PlanState)
        q = esper.try_component(ent, ActionQueue)
        h.update(
            repr(
                (
                    ent,
                    round(pos.x, 6),
                    round(pos.y, 6),
                    hp.hp,
                    st.status.value if st else None,
                    st.tier if st else None,
                    tuple(q.steps) if q else None,
                    q.index if q else None,
                )
            ).encode()
        )
    return h.hexdigest()


def make_snapshot(entity: int = 1, *, enemies: int = 2, tick: int = 0, ammo: int = 6) -> object:
    """A realistic hand-built snapshot (no ECS) with ``enemies`` visible enemies in range."""
    from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot

    field = Battlefield(20, 20, frozenset({(5, 5), (5, 6)}), ((4, 4), (8, 2)), (10, 10))
    me = SelfView(entity, "tactical", 0, 3, 3, 80, 100, ammo, 6, False, 6.0)
    foes = tuple(
        SeenUnit(100 + entity * 10 + i, 6 + i, 3, 100 - 10 * i, False, float(3 + i))
        for i in range(enemies)
    )
    allies = (SeenUnit(entity + 500, 2, 3, 40, False, 1.0),)
    return WorldSnapshot(
        tick, me, foes, allies, ((4, 4), (8, 2)), ((5, 5), (5, 6)), (10, 10), field
    )


def make_request(
    entity: int = 1, *, plan_id: int = 1, budget_s: float = 5.0, enemies: int = 2
) -> object:
    from aiplanner.heuristic import HeuristicPlanner
    from aiplanner.requests import PlanRequest
    from aiplanner.snapshot import WorldSnapshot

    snap = make_snapshot(entity, enemies=enemies)
    assert isinstance(snap, WorldSnapshot)
    return PlanRequest(
        entity=entity,
        plan_id=plan_id,
        snapshot=snap,
        candidates=HeuristicPlanner().candidates(snap, 4),
        requested_tick=0,
        requested_at=0.0,
        deadline=budget_s,
        budget_s=budget_s,
    )


def real_requests(n: int, seed: int = 5) -> list[object]:
    """``n`` PlanRequests from real SnapshotSystem output, in the current esper world.

    Spawns a battle of ``2n`` agents (at least 20) and takes the first ``n`` agents' snapshots,
    with the heuristic's ranked candidates; 120 s budgets, so nothing expires while measuring.
    """
    from aiplanner.heuristic import HeuristicPlanner
    from aiplanner.requests import PlanRequest
    from aiplanner.snapshot_system import SnapshotSystem

    ents = spawn_battle(max(2 * n, 20), seed=seed)
    snaps = SnapshotSystem()
    snaps.process(0.0)
    planner = HeuristicPlanner()
    out: list[object] = []
    for i, e in enumerate(ents[:n]):
        snap = snaps.snapshot(e)
        assert snap is not None
        out.append(PlanRequest(e, i + 1, snap, planner.candidates(snap, 4), 0, 0.0, 120.0, 120.0))
    return out
