"""The built-in verbs: declared with their behaviour, and refused on components they cannot use."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.combat import ATTACK, HEAL, MOVE_TO, SCAN, WAIT, check_components
from aiplanner.components import Battlefield, Health, Position, Team
from aiplanner.errors import ConfigError


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
