"""ScriptedBackend: usage mistakes go through the PlannerError tree."""

from __future__ import annotations

import pytest

from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"keep_calls": -1}, "keep_calls"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ScriptedBackend(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)  # as before the tree took them in
