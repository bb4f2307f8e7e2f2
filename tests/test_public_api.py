"""The public surface changes only on purpose: this list is the contract."""

from __future__ import annotations

import aiplanner

EXPECTED = [
    "BACKEND_NAMES",
    "DEFAULT_COMPONENTS",
    "DEFAULT_REGISTRY",
    "EVENT_PLAN_APPLIED",
    "EXECUTION_PRIORITY",
    "PLANNING_PRIORITY",
    "ROLES",
    "SNAPSHOT_PRIORITY",
    "STRATEGIES",
    "ActionExecutionSystem",
    "ActionHandler",
    "ActionQueue",
    "ActionRegistry",
    "ActionSpec",
    "Agent",
    "Ammo",
    "ArgKind",
    "ArgSpec",
    "Backend",
    "BackendBusy",
    "BackendError",
    "BackendHTTPError",
    "BackendInfo",
    "BackendTimeout",
    "BackendUnavailable",
    "Battlefield",
    "BridgeClosed",
    "CandidateProposer",
    "CircuitBreaker",
    "CircuitOpen",
    "CompletionRequest",
    "ComponentMap",
    "ConfigError",
    "ElementError",
    "EmbeddedBackend",
    "EmbeddedStats",
    "EngineSettings",
    "EngineStats",
    "Finished",
    "FrameCollector",
    "FreeOptions",
    "Health",
    "HeuristicPlanner",
    "JsonArrayStream",
    "Message",
    "Metrics",
    "ModelNotFoundError",
    "OllamaBackend",
    "OpenAIBackend",
    "OutcomeTeacher",
    "ParseError",
    "Perception",
    "Place",
    "Plan",
    "PlanCache",
    "PlanCodec",
    "PlanOutcome",
    "PlanRejected",
    "PlanRequest",
    "PlanState",
    "PlanStatus",
    "PlanView",
    "PlannerConfig",
    "PlannerError",
    "PlannerPlugin",
    "PlanningSystem",
    "Position",
    "PromptBuilder",
    "Proposal",
    "ProposalContext",
    "RejectReason",
    "ResponseTooLarge",
    "Scenario",
    "ScriptedBackend",
    "ScriptedReply",
    "SeenUnit",
    "SelfView",
    "Situation",
    "SnapshotFormatError",
    "SnapshotSystem",
    "Step",
    "StepContext",
    "StepDeferred",
    "StepFailed",
    "Team",
    "TextDelta",
    "Tier",
    "Upkeep",
    "Usage",
    "Weapon",
    "WorldSnapshot",
    "create_backend",
    "evaluate",
    "free_options",
    "generate_situations",
    "load_scenarios",
    "pack_cell",
    "unpack_cell",
    "validate_plan",
]


def test_all_is_the_agreed_sorted_surface() -> None:
    assert aiplanner.__all__ == EXPECTED
    assert aiplanner.__all__ == sorted(aiplanner.__all__, key=lambda n: (not n.isupper(), n))
    for name in aiplanner.__all__:
        assert getattr(aiplanner, name) is not None


def test_every_error_is_a_planner_error() -> None:
    errors = [
        getattr(aiplanner, n)
        for n in aiplanner.__all__
        if n.endswith(("Error", "Rejected", "Unavailable", "Timeout", "Open", "Large"))
    ]
    assert len(errors) == 13
    for exc in errors:
        assert issubclass(exc, aiplanner.PlannerError)
    assert issubclass(aiplanner.ConfigError, ValueError)
    assert issubclass(aiplanner.SnapshotFormatError, ValueError)
    assert issubclass(aiplanner.BridgeClosed, aiplanner.PlannerError)
    assert issubclass(aiplanner.BridgeClosed, RuntimeError)
    assert issubclass(aiplanner.BackendTimeout, TimeoutError)
    assert issubclass(aiplanner.BackendUnavailable, ConnectionError)
    assert aiplanner.BackendUnavailable("x").retryable
    assert aiplanner.BackendHTTPError(429, "slow down").retryable
    assert aiplanner.BackendHTTPError(503, "busy").retryable
    assert not aiplanner.BackendHTTPError(400, "bad").retryable


def test_the_game_layer_never_imports_http_and_the_library_never_imports_pygame() -> None:
    import ast
    from pathlib import Path

    root = Path(aiplanner.__file__).parent
    game_layer = [
        "adapter.py",
        "behaviour.py",
        "combat.py",
        "components.py",
        "snapshot_system.py",
        "planning_system.py",
        "execution_system.py",
        "plugin.py",
    ]
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.startswith(("pygame", "demo_game")) for m in names), path
        if path.name in game_layer:
            assert not any(
                m.startswith(("httpx", "aiplanner.backends.openai", "aiplanner.backends.ollama"))
                for m in names
            ), path
        if path.parent.name == "backends":
            assert "esper" not in names, path
