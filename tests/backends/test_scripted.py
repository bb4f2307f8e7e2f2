"""ScriptedBackend: usage mistakes go through the PlannerError tree."""

from __future__ import annotations

import anyio
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


@pytest.mark.parametrize("scoring", [False, True])
def test_a_call_past_its_budget_raises_backend_timeout(scoring: bool) -> None:
    from aiplanner.backends.base import CompletionRequest, Message, ScoreRequest
    from aiplanner.errors import BackendTimeout

    backend = ScriptedBackend(latency_s=5.0, scoring=True)
    messages = (Message("user", "hi"),)

    async def call() -> None:
        if scoring:
            await backend.score(ScoreRequest(messages, (" a",), timeout_s=0.01))
        else:
            async for _ in backend.stream(CompletionRequest(messages, timeout_s=0.01)):
                pass

    with pytest.raises(BackendTimeout):
        anyio.run(call)
