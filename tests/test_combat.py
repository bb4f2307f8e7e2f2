"""The built-in verbs: declared with their behaviour, refused on components they cannot use, and
what cover does to a hit."""

from __future__ import annotations

from dataclasses import dataclass

import esper
import pytest

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, Step
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.combat import ATTACK, COVER_DAMAGE, HEAL, MOVE_TO, SCAN, WAIT, check_components
from aiplanner.components import (
    ActionQueue,
    Agent,
    Battlefield,
    Health,
    PlanState,
    PlanStatus,
    Position,
    Team,
    Weapon,
)
from aiplanner.errors import ConfigError
from aiplanner.execution_system import ActionExecutionSystem


@dataclass(slots=True)
class Npc:
    kind: str


@dataclass(slots=True)
class Walker:
    kind: str
    speed: float = 2.0


@dataclass(slots=True)
class Life:
    points: int


def mapping(agent: type, health: tuple[type, str] = (Health, "hp")) -> ComponentMap:
    return ComponentMap(
        agent=agent,
        position=(Position, "x", "y"),
        health=health,
        team=(Team, "team"),
        world=(Battlefield, lambda field: field),
    )


def test_every_builtin_verb_has_a_handler_and_a_proposer() -> None:
    DEFAULT_REGISTRY.require_handlers()
    assert all(spec.propose is not None for spec in DEFAULT_REGISTRY.actions)
    assert DEFAULT_REGISTRY.spec("Attack") is ATTACK
    check_components(DEFAULT_REGISTRY, DEFAULT_COMPONENTS)


def test_builtin_handlers_are_refused_on_components_they_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"MoveTo: .*Npc\.speed"):
        check_components(ActionRegistry([MOVE_TO, SCAN]), mapping(Npc))
    check_components(ActionRegistry([MOVE_TO, SCAN]), mapping(Walker))  # has a speed: fine
    for verb in (ATTACK, HEAL):
        with pytest.raises(ConfigError, match=f"{verb.name}: the built-in handler"):
            check_components(ActionRegistry([verb, WAIT]), mapping(Walker, (Life, "points")))
    # Verbs that touch no mapped component go anywhere.
    check_components(ActionRegistry([SCAN, WAIT]), mapping(Npc, (Life, "points")))


def test_a_target_in_cover_takes_the_cover_share_of_a_hit(world: str) -> None:
    esper.create_entity(Battlefield(20, 20, cover=((5, 0),)))
    covered = esper.create_entity(Agent(), Position(5, 0), Team(2), Health(100))
    exposed = esper.create_entity(Agent(), Position(0, 5), Team(2), Health(100))
    for foe in (covered, exposed):
        esper.create_entity(
            Agent("tactical"),
            Position(0, 0),
            Team(1),
            Health(100),
            Weapon(range=10.0, damage=21, cooldown=0.0),
            ActionQueue([Step("Attack", (foe,))]),
            PlanState(PlanStatus.EXECUTING),
        )
    ActionExecutionSystem().process(0.1)
    assert esper.component_for_entity(exposed, Health).hp == 100 - 21
    assert esper.component_for_entity(covered, Health).hp == 100 - int(21 * COVER_DAMAGE)
