from __future__ import annotations

import subprocess
import sys

import pytest

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.errors import ConfigError


def test_default_registry_declares_the_required_actions() -> None:
    assert set(DEFAULT_REGISTRY.names) >= {
        "MoveTo",
        "Attack",
        "TakeCover",
        "Reload",
        "Heal",
        "Retreat",
        "Scan",
        "Wait",
    }
    assert DEFAULT_REGISTRY.spec("Attack").args[0].kind is ArgKind.ENEMY
    assert DEFAULT_REGISTRY.by_code("M") is DEFAULT_REGISTRY.spec("MoveTo")
    assert "Fly" not in DEFAULT_REGISTRY


def test_unknown_action_and_bad_declarations_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="unknown action 'Fly'"):
        DEFAULT_REGISTRY.spec("Fly")
    with pytest.raises(ConfigError, match="duplicate action code"):
        ActionRegistry([ActionSpec("A1", "A", (), ""), ActionSpec("A2", "A", (), "")])
    with pytest.raises(ConfigError, match="duplicate action name"):
        ActionRegistry([ActionSpec("A1", "A", (), ""), ActionSpec("A1", "B", (), "")])
    with pytest.raises(ConfigError, match="one letter"):
        ActionRegistry([ActionSpec("A1", "AB", (), "")])
    with pytest.raises(ConfigError, match="lo > hi"):
        ActionRegistry([ActionSpec("W", "W", (ArgSpec("t", ArgKind.COUNT, 5, 1),), "")])
    with pytest.raises(ConfigError):
        ActionRegistry([])


def test_version_changes_with_the_declaration() -> None:
    a = ActionRegistry([ActionSpec("Scan", "S", (), "look")])
    b = ActionRegistry([ActionSpec("Scan", "S", (), "look around")])
    assert a.version != b.version
    assert a.version == ActionRegistry([ActionSpec("Scan", "S", (), "look")]).version


def _scan(ctx: object, args: tuple[int, ...], /) -> bool:
    return True


def test_behaviour_stays_out_of_the_version_which_every_process_agrees_on() -> None:
    plain = ActionRegistry([ActionSpec("Scan", "S", (), "look")])
    behaving = ActionRegistry([ActionSpec("Scan", "S", (), "look", handler=_scan)])
    assert plain.version == behaving.version
    assert "_scan" not in repr(behaving.spec("Scan"))  # a function's repr holds its address
    # The built-in registry carries functions; another interpreter computes the same version.
    code = "from aiplanner.actions import DEFAULT_REGISTRY as R; print(R.version)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == DEFAULT_REGISTRY.version


def test_missing_handlers_are_named() -> None:
    DEFAULT_REGISTRY.require_handlers()
    registry = ActionRegistry(
        [
            ActionSpec("Scan", "S", (), "look", handler=_scan),
            ActionSpec("Dance", "D", (), "dance"),
            ActionSpec("Sing", "G", (), "sing"),
        ]
    )
    with pytest.raises(ConfigError, match="Dance, Sing have no handler"):
        registry.require_handlers()


def test_targets_are_the_enemy_and_ally_arguments_of_every_step() -> None:
    plans = (
        Plan((Step("MoveTo", (3, 4)), Step("Attack", (91,)))),
        Plan((Step("Heal", (17,)), Step("Wait", (5,)))),  # a count is not a unit
        Plan((Step("Attack", (91,)),)),
    )
    assert DEFAULT_REGISTRY.targets(plans) == {91, 17}
    assert DEFAULT_REGISTRY.targets(()) == frozenset()
    with pytest.raises(ConfigError, match="unknown action"):
        DEFAULT_REGISTRY.targets((Plan((Step("Dance", ()),)),))
