"""Battle worlds for the benchmarks: a seeded random map, two teams, real snapshots.

The benchmarks (and ``tune``) measure the planner on the situations a game produces, so their
agents come from a real esper world run through :class:`~aiplanner.snapshot_system.SnapshotSystem`,
not from hand-written snapshots. Everything here is deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

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
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.requests import PlanRequest
from aiplanner.snapshot_system import SnapshotSystem

__all__ = ["fresh_world", "make_field", "real_requests", "spawn_agent", "spawn_battle"]


def make_field(width: int = 40, height: int = 40, seed: int = 0) -> Battlefield:
    """A map with random obstacles and cover points, the objective in the middle."""
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
        ents.append(spawn_agent(float(x), float(y), team, ROLES[i % len(ROLES)]))
    return ents


def spawn_agent(x: float, y: float, team: int, role: str) -> int:
    """One planning agent with the benchmarks' standard kit (full health, a loaded weapon, sight
    10, speed 3) at ``(x, y)``."""
    return esper.create_entity(
        Agent(role=role, speed=3.0),
        Position(x, y),
        Health(100),
        Ammo(6),
        Team(team),
        Perception(10.0),
        Weapon(),
        ActionQueue(),
        PlanState(),
    )


@contextmanager
def fresh_world(name: str) -> Iterator[None]:
    """Switch to an empty esper world called ``name``; delete it and go back afterwards."""
    esper.switch_world(name)
    try:
        yield
    finally:
        esper.switch_world("default")
        esper.delete_world(name)


def real_requests(n: int, seed: int = 5, budget_s: float = 120.0) -> list[PlanRequest]:
    """``n`` PlanRequests from real SnapshotSystem output, in a world of their own.

    Spawns a battle of ``2n`` agents (at least 20) and takes the first ``n`` agents' snapshots,
    with the heuristic's ranked candidates; each has ``budget_s`` seconds.
    """
    with fresh_world(f"aiplanner-bench-requests-{seed}"):
        ents = spawn_battle(max(2 * n, 20), seed=seed)
        snaps = SnapshotSystem()
        snaps.process(0.0)
        planner = HeuristicPlanner()
        out: list[PlanRequest] = []
        for i, e in enumerate(ents[:n]):
            snap = snaps.snapshot(e)
            assert snap is not None  # every spawned agent has the components of a snapshot
            out.append(
                PlanRequest(e, i + 1, snap, planner.candidates(snap, 4), 0, 0.0, budget_s, budget_s)
            )
        return out
