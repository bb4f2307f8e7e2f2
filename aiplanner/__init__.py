"""aiplanner: LLM planning for esper NPCs that never stalls the frame.

Add :class:`PlannerPlugin` to an esper world; it installs a :class:`SnapshotSystem`, a
:class:`PlanningSystem` and an :class:`ActionExecutionSystem`. Plans come from a :class:`Backend`
(embedded llama.cpp by default, Ollama or any OpenAI-compatible server, or the
:class:`ScriptedBackend` test double) through an async bridge, with cache and fallback tiers.
"""

from aiplanner.actions import (
    DEFAULT_REGISTRY,
    ActionRegistry,
    ActionSpec,
    ArgKind,
    ArgSpec,
    Plan,
    Step,
)
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.backends.base import (
    Backend,
    BackendInfo,
    CompletionRequest,
    Finished,
    Message,
    TextDelta,
    Usage,
)
from aiplanner.backends.batched import EngineSettings, EngineStats
from aiplanner.backends.embedded import EmbeddedBackend, EmbeddedStats
from aiplanner.backends.factory import BACKEND_NAMES, create_backend
from aiplanner.backends.ollama import OllamaBackend
from aiplanner.backends.openai import OpenAIBackend
from aiplanner.backends.scripted import ScriptedBackend, ScriptedReply
from aiplanner.behaviour import (
    ActionHandler,
    CandidateProposer,
    Proposal,
    ProposalContext,
    StepContext,
    StepDeferred,
    StepFailed,
    Upkeep,
)
from aiplanner.breaker import CircuitBreaker
from aiplanner.cache import PlanCache
from aiplanner.codec import ElementError, PlanCodec
from aiplanner.components import (
    ROLES,
    ActionQueue,
    Agent,
    Ammo,
    Battlefield,
    Health,
    Perception,
    PlanState,
    PlanStatus,
    Position,
    Team,
    Tier,
    Weapon,
)
from aiplanner.config import STRATEGIES, PlannerConfig
from aiplanner.errors import (
    BackendBusy,
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    BridgeClosed,
    CircuitOpen,
    ConfigError,
    ModelNotFoundError,
    ParseError,
    PlannerError,
    PlanRejected,
    ResponseTooLarge,
    SnapshotFormatError,
)
from aiplanner.evaluation import evaluate
from aiplanner.execution_system import ActionExecutionSystem
from aiplanner.gc_pacing import FrameCollector
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.metrics import Metrics
from aiplanner.places import FreeOptions, Place, free_options, pack_cell, unpack_cell
from aiplanner.planning_system import EVENT_PLAN_APPLIED, PlanningSystem
from aiplanner.plugin import (
    EXECUTION_PRIORITY,
    PLANNING_PRIORITY,
    SNAPSHOT_PRIORITY,
    PlannerPlugin,
)
from aiplanner.prompts import PromptBuilder
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.scenarios import Scenario, load_scenarios
from aiplanner.snapshot import SeenUnit, SelfView, WorldSnapshot
from aiplanner.snapshot_system import SnapshotSystem
from aiplanner.stream_parser import JsonArrayStream
from aiplanner.training.situations import Situation, generate_situations
from aiplanner.training.teacher import OutcomeTeacher
from aiplanner.validation import PlanView, RejectReason, validate_plan

__all__ = [
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
