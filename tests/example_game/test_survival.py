"""The survival game: its own components and verbs, planned end to end through the adapter."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import esper
import pytest
from survival import CONFIG, Camp, Pack, Survivor, Transform, Wall, build_camp

import aiplanner
from aiplanner import Plan, PlannerPlugin, ScriptedBackend, Tier

_worlds = itertools.count()
DT = 1 / 30


@pytest.fixture
def world() -> Iterator[str]:
    name = f"test-survival-{next(_worlds)}"
    esper.switch_world(name)
    yield name
    esper.switch_world("default")
    esper.delete_world(name)


class Applied:
    """Keeps every applied plan (esper holds handlers weakly: keep this object alive)."""

    def __init__(self) -> None:
        self.plans: list[tuple[int, Plan, Tier, int]] = []

    def __call__(self, entity: int, plan: Plan, tier: Tier, tick: int) -> None:
        self.plans.append((entity, plan, tier, tick))


def play(seed: int, ticks: int = 300) -> tuple[Applied, list[tuple[object, ...]]]:
    """A seeded headless round: guided mode, scripted backend on virtual time, lockstep."""
    build_camp(seed)
    applied = Applied()
    esper.set_handler(aiplanner.EVENT_PLAN_APPLIED, applied)
    config = replace(CONFIG, mode="guided", lockstep=True, seed=seed)  # reproducible delivery
    clock = itertools.count()
    backend = ScriptedBackend(latency_s=(0.05, 0.3), seed=seed, virtual_time=True)
    with PlannerPlugin(config, backend, clock=lambda: next(clock) * DT):
        for _ in range(ticks):
            esper.process(DT)
    esper.remove_handler(aiplanner.EVENT_PLAN_APPLIED, applied)
    state = sorted(
        (ent, s.job, t.x, t.y, esper.component_for_entity(ent, Pack).food)
        for ent, (s, t) in esper.get_components(Survivor, Transform)
    )
    walls = sorted((w.x, w.y) for _, w in esper.get_component(Wall))
    return applied, [*state, tuple(walls)]


def test_a_round_is_planned_by_the_model_and_the_games_own_verbs_run(world: str) -> None:
    applied, _ = play(seed=3)
    llm = [p for p in applied.plans if p[2] is Tier.LLM]
    assert llm, "guided mode should apply the model's choices"
    verbs = {step.action for _, plan, _, _ in applied.plans for step in plan.steps}
    assert {"Barricade", "Forage"} <= verbs
    # What the verbs did, as the game's own state: food gathered, shelters walled up.
    assert sum(p.food for _, p in esper.get_component(Pack)) > 0
    walls = [(w.x, w.y) for _, w in esper.get_component(Wall)]
    assert walls and len(set(walls)) == len(walls)  # a shelter is walled up once
    camp = esper.get_component(Camp)[0][1]
    assert set(walls) <= camp.rocks and not set(walls) & set(camp.shelters)


def test_no_aiplanner_component_on_the_games_entities_but_planning_state(world: str) -> None:
    play(seed=1, ticks=60)
    allowed = {aiplanner.PlanState, aiplanner.ActionQueue}
    entities = {e for kind in (Survivor, Camp, Wall) for e, _ in esper.get_component(kind)}
    assert len(entities) > 6
    for ent in entities:
        for comp in esper.components_for_entity(ent):
            kind = type(comp)
            assert kind in allowed or not kind.__module__.startswith("aiplanner"), kind
    survivor = next(iter(esper.get_component(Survivor)))[0]
    assert esper.has_component(survivor, aiplanner.PlanState)  # planning did adopt them


def test_a_seeded_round_repeats_exactly() -> None:
    runs = []
    for _ in range(2):
        name = f"test-survival-{next(_worlds)}"
        esper.switch_world(name)
        try:
            applied, state = play(seed=7, ticks=150)
            runs.append(([(e, p, t, k) for e, p, t, k in applied.plans], state))
        finally:
            esper.switch_world("default")
            esper.delete_world(name)
    assert runs[0] == runs[1]


def test_builtin_verbs_that_need_aiplanners_components_are_refused_at_install(world: str) -> None:
    build_camp(seed=0)
    plugin = PlannerPlugin(replace(CONFIG, registry=aiplanner.DEFAULT_REGISTRY))
    with pytest.raises(aiplanner.ConfigError, match="Attack: the built-in handler"):
        plugin.install()
    assert not plugin.installed
    plugin.close()
