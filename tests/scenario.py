"""Scenarios for integration tests (not a test module): the battle world of the benchmarks
(:mod:`aiplanner.bench.world`), hand-built snapshots and requests, a world digest."""

from __future__ import annotations

import hashlib

import esper

from aiplanner.bench.world import spawn_battle
from aiplanner.components import (
    ActionQueue,
    Battlefield,
    Health,
    PlanState,
    Position,
)


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
