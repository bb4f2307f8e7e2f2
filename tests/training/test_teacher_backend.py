"""The teacher as a planner in a running game: its squad plays the rollouts' best candidate."""

from __future__ import annotations

import dataclasses
from collections import Counter

import anyio
import esper
import pytest

from aiplanner import EVENT_PLAN_APPLIED, PlannerConfig, PlannerPlugin
from aiplanner.actions import Plan
from aiplanner.backends.base import CompletionRequest, Message, ScoreRequest
from aiplanner.components import Battlefield, Tier
from aiplanner.errors import BackendError, BackendTimeout, ConfigError
from aiplanner.requests import PlanRequest
from aiplanner.training.situations import Situation, UnitSpec, situation_snapshot
from aiplanner.training.teacher import OutcomeTeacher, TeacherConfig, label_snapshot
from aiplanner.training.teacher_backend import SERVER_PRIORITY, TeacherBackend, TeacherServer

FIELD = Battlefield(24, 16, frozenset((12, y) for y in range(3, 9)), ((11, 10),), (12, 12))
DT = 0.125


class _Recording(TeacherBackend):
    """Keeps every request it served, in order."""

    def __init__(self, teacher: OutcomeTeacher) -> None:
        super().__init__(teacher)
        self.served: list[PlanRequest] = []

    def serve_one(self, wait_s: float) -> PlanRequest | None:
        req = super().serve_one(wait_s)
        if req is not None:
            self.served.append(req)
        return req


def _battle(teacher: OutcomeTeacher) -> tuple[_Recording, list[tuple[int, Plan, Tier]]]:
    """Two against two for 6 s; team 0 asks the teacher, team 1 plays the rules."""
    units = [
        UnitSpec(team=0, role="tactical", x=4, y=10, hp=60),
        UnitSpec(team=0, role="support", x=4, y=12),
        UnitSpec(team=1, role="tactical", x=18, y=10),
        UnitSpec(team=1, role="exploration", x=18, y=12, hp=30),
    ]
    sit = Situation(seed=0, kind="hand", field=FIELD, me=units[0], allies=(units[1],))
    esper.create_entity(FIELD)
    for u in (sit.me, *sit.allies, units[2], units[3]):
        esper.create_entity(*u.components())
    backend = _Recording(teacher)
    applied: list[tuple[int, Plan, Tier]] = []

    def on_applied(entity: int, plan: Plan, tier: Tier, tick: int) -> None:
        applied.append((entity, plan, tier))

    esper.set_handler(EVENT_PLAN_APPLIED, on_applied)
    clock = [0.0]
    config = PlannerConfig(
        lockstep=True,
        provisional=False,
        model_teams=(0,),
        rank_prior=0.0,
        calibrated=False,
        cache_enabled=False,
        lockstep_timeout_s=60.0,
        plan_deadline_s=60.0,
    )
    plugin = PlannerPlugin(config, backend, clock=lambda: clock[0]).install()
    server = TeacherServer(backend, lambda: plugin.backend_busy, wait_s=30.0)
    esper.add_processor(server, priority=SERVER_PRIORITY)
    try:
        for tick in range(48):
            clock[0] = tick * DT
            esper.process(DT)
    finally:
        plugin.close()
        esper.remove_processor(TeacherServer)
    assert server.missed == 0
    return backend, applied


def test_the_teacher_squad_plays_the_rollouts_best_candidate_and_repeats(world: str) -> None:
    teacher = OutcomeTeacher(TeacherConfig(horizon_s=2.0, variants=2))
    backend, applied = _battle(teacher)
    assert backend.decided == len(backend.served) > 0 and backend.failed == 0
    assert backend.positions.total() == backend.actions.total() == backend.decided
    assert esper.current_world == world  # the rollouts' worlds came and went on this thread
    by_model = [(e, p) for e, p, t in applied if t is Tier.LLM]
    assert by_model
    ranks: Counter[int] = Counter()
    for req in backend.served:
        label = label_snapshot(
            teacher, req.snapshot, req.candidates, req.snapshot.tick, separate=True
        )
        assert (req.entity, req.candidates[label.best]) in by_model
        ranks[label.best] += 1
    assert ranks == backend.positions
    overruled = [
        r for r in backend.served if (r.entity, r.candidates[0]) not in by_model
    ]  # the teacher does not just echo the rules
    assert overruled or all(len(r.candidates) == 1 for r in backend.served)
    esper.clear_database()
    again, applied_again = _battle(teacher)
    assert [(r.entity, r.candidates) for r in again.served] == [
        (r.entity, r.candidates) for r in backend.served
    ]
    assert applied_again == applied


def _request(n: int, shape: str = "score") -> ScoreRequest:
    sit = Situation(
        seed=1,
        kind="hand",
        field=FIELD,
        me=UnitSpec(team=0, role="tactical", x=4, y=10),
        enemies=(UnitSpec(team=1, role="tactical", x=9, y=10),),
    )
    snap, _ = situation_snapshot(sit)
    candidates = OutcomeTeacher().candidates(snap)[:n]
    req = PlanRequest(snap.me.id, 1, snap, candidates, 0, 0.0, 10.0, 10.0)
    return ScoreRequest(
        messages=(Message("user", "x"),),
        continuations=tuple(f"c{i}" for i in range(len(candidates))),
        tag={"shape": shape, "requests": (req,)},
    )


def test_calibration_gets_zeros_and_bad_requests_are_refused() -> None:
    backend = TeacherBackend()
    calibrate = dataclasses.replace(_request(3), tag={"shape": "calibrate"})
    assert anyio.run(backend.score, calibrate).logprobs == (0.0, 0.0, 0.0)
    wrong = dataclasses.replace(_request(3), continuations=("a",))
    with pytest.raises(ConfigError):
        anyio.run(backend.score, wrong)
    with pytest.raises(ConfigError):
        anyio.run(backend.score, dataclasses.replace(_request(3), continuations=()))
    with pytest.raises(ConfigError):
        TeacherBackend(timeout_s=0)

    async def write() -> None:
        async for _ in backend.stream(CompletionRequest(messages=(Message("user", "x"),))):
            pass

    with pytest.raises(BackendError):
        anyio.run(write)


def test_a_score_call_nobody_serves_times_out() -> None:
    backend = TeacherBackend(timeout_s=0.05)
    with pytest.raises(BackendTimeout):
        anyio.run(backend.score, _request(3))
    assert backend.serve_one(0.0) is not None  # the abandoned job is dropped, not run
    assert backend.decided == 0 and backend.serve_one(0.0) is None
