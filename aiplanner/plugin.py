"""PlannerPlugin: one object that installs LLM planning into the current esper world.

::

    plugin = PlannerPlugin(PlannerConfig(max_batch_size=8), backend)
    plugin.install()          # SnapshotSystem, PlanningSystem, ActionExecutionSystem
    ...
    esper.process(dt)         # never waits on the backend
    ...                       # draw, flip
    plugin.between_frames(idle_ms)   # optional: planning that waits, in the frame's idle time
    plugin.close()            # or: with PlannerPlugin(...) as plugin:

Install only registers things; it refuses to run twice; ``uninstall`` removes them again.
Processor priorities are published as constants so a game can order its own processors around them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import esper

from aiplanner import queries
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.bridge import AsyncBridge
from aiplanner.cache import PlanCache
from aiplanner.combat import check_components
from aiplanner.config import PlannerConfig
from aiplanner.engine_load import EngineLoad, EngineStatsSource
from aiplanner.errors import ConfigError
from aiplanner.execution_system import ActionExecutionSystem
from aiplanner.metrics import Metrics
from aiplanner.planning_system import PlanningSystem, ReplayLog
from aiplanner.snapshot_system import SnapshotSystem

if TYPE_CHECKING:
    from aiplanner.backends.batched import EngineStats

__all__ = ["EXECUTION_PRIORITY", "PLANNING_PRIORITY", "SNAPSHOT_PRIORITY", "PlannerPlugin"]

SNAPSHOT_PRIORITY = 300
PLANNING_PRIORITY = 200
EXECUTION_PRIORITY = 100

_TUNABLE = frozenset(
    {
        "max_batch_size",
        "max_wait_ms",
        "strategy",
        "cache_enabled",
        "mode",
        "prompt_tier",
        "plan_deadline_s",
        "simplified_retry",
        "provisional",
        "max_plans_per_tick",
    }
)


class PlannerPlugin:
    """Installs planning into the current esper world.

    ``backend=None`` plans with the heuristic alone. ``clock`` (seconds) drives deadlines and
    batching waits; pass a tick-driven clock for reproducible runs. ``replay`` applies recorded
    plans at their recorded ticks instead of planning (see ``PlanningSystem``).
    """

    def __init__(
        self,
        config: PlannerConfig | None = None,
        backend: Backend | None = None,
        *,
        clock: Callable[[], float] | None = None,
        replay: ReplayLog | None = None,
    ) -> None:
        self._config = config if config is not None else PlannerConfig()
        self.backend = backend
        self._clock = clock if clock is not None else time.monotonic
        self._replay = replay
        self.metrics = Metrics(self._clock)
        # Lockstep: the breaker reads the time of the last tick whose batches all answered, not
        # the live clock, which a tick-driven game moves on while the bridge thread still works.
        self._settled_at: float | None = None
        self.breaker = CircuitBreaker(
            self._config.breaker_failures, self._config.breaker_cooldown_s, self._breaker_clock
        )
        self.cache = PlanCache(self._config.cache_size)
        # The batched engine's load for stats(): on the wall clock, as the engine times decodes.
        self._engine_load = EngineLoad(self._engine_stats)
        self.snapshot_system: SnapshotSystem | None = None
        self.planning_system: PlanningSystem | None = None
        self.execution_system: ActionExecutionSystem | None = None
        self._bridge: AsyncBridge | None = None
        self._world: str | None = None

    def _engine_stats(self) -> EngineStats | None:
        backend = self.backend
        return backend.engine_stats() if isinstance(backend, EngineStatsSource) else None

    # -- configuration --------------------------------------------------------------------------
    @property
    def config(self) -> PlannerConfig:
        return self._config

    def tune(self, **changes: Any) -> PlannerConfig:
        """Change live settings (batch size, max wait, strategy, cache on/off, mode...).

        The next batch uses them. Raises ConfigError for an unknown name or a bad value; the
        current config is then left as it was.
        """
        unknown = set(changes) - _TUNABLE
        if unknown:
            raise ConfigError(
                f"cannot tune {sorted(unknown)} while running; tunable: {sorted(_TUNABLE)}"
            )
        self._config = dataclasses.replace(self._config, **changes)
        return self._config

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self.planning_system is not None

    def _breaker_clock(self) -> float:
        settled = self._settled_at
        return settled if settled is not None and self._config.lockstep else self._clock()

    def _settle(self, now: float) -> None:
        self._settled_at = now

    def _tick_start(self) -> None:
        """The snapshot system's first step: the tick's time budget starts, new agents get
        their planning components before anything reads the agents (see
        :meth:`PlanningSystem.adopt_new_agents`), and the bridge's loop waits until the tick
        ends (see AsyncBridge.hold)."""
        if self.planning_system is not None:
            self.planning_system.tick_budget.start(self._clock())
            self.planning_system.adopt_new_agents()
        if self._bridge is not None:
            self._bridge.hold()

    def _tick_end(self) -> None:
        """The execution system's last step (even when a step raised): the budget measures the
        rest of the tick, the bridge's loop goes on."""
        if self.planning_system is not None:
            self.planning_system.tick_budget.end(self._clock())
        if self._bridge is not None:
            self._bridge.release()

    def between_frames(self, idle_ms: float) -> int:
        """Use up to ``idle_ms`` of the frame's idle time (after drawing, before the game loop
        sleeps until the next frame) for planning work that is waiting: agents that need a plan,
        plans that arrived, deadline fallbacks, batches to send (see
        :meth:`PlanningSystem.between_frames`). What is done here the next tick need not do, so
        ticks get shorter and an agent whose plan ran out this tick gets its next one before
        the next tick. Returns how many agents' work was done; 0 when not installed, with no
        time, in lockstep or replay runs, or while another esper world than the plugin's is
        current (its ticks would not run either). Call it from the game thread, as
        ``esper.process``. The bridge's loop waits meanwhile, as in a tick.
        """
        planning = self.planning_system
        if planning is None or not idle_ms > 0 or esper.current_world != self._world:
            return 0
        queries.release()  # the query results the ticks replaced are freed here, not in a tick
        bridge = self._bridge
        if bridge is not None:
            bridge.hold()
        try:
            return planning.between_frames(self._clock() + idle_ms / 1000.0)
        finally:
            if bridge is not None:
                bridge.release()

    @property
    def backend_busy(self) -> bool:
        """Whether the backend has submitted work not finished yet (a batch in flight)."""
        return self._bridge is not None and self._bridge.active_batches > 0

    def install(self) -> PlannerPlugin:
        """Register the processors into the current esper world and start the bridge.

        Raises ConfigError if already installed, if an action of the registry has no handler (or
        a built-in one that cannot play on ``config.components``), or if an existing agent has an
        unknown role.
        """
        if self.installed:
            raise ConfigError("this PlannerPlugin is already installed; uninstall() it first")
        cfg = self._config
        cfg.registry.require_handlers()
        components = cfg.components
        check_components(cfg.registry, components)
        for ent, agent in esper.get_component(components.agent):
            cfg.check_role(ent, components.role_of(agent))
        if self.backend is not None and self._replay is None and self._bridge is None:
            self._bridge = AsyncBridge(
                self.backend,
                registry=cfg.registry,
                metrics=self.metrics,
                breaker=self.breaker,
                max_response_bytes=cfg.max_response_bytes,
                temperature=cfg.temperature,
                seed=cfg.seed,
                serial=cfg.lockstep,
                guided_decision=cfg.guided_decision,
                rank_prior=cfg.rank_prior,
                calibrated=cfg.calibrated,
                memo=cfg.score_memo,
            )
            self._bridge.start()
        self.snapshot_system = SnapshotSystem(components=components, on_tick_start=self._tick_start)
        self.planning_system = PlanningSystem(
            lambda: self._config,
            self.snapshot_system,
            bridge=self._bridge,
            breaker=self.breaker,
            cache=self.cache,
            metrics=self.metrics,
            clock=self._clock,
            replay=self._replay,
            on_settled=self._settle,
        )
        self.execution_system = ActionExecutionSystem(
            cfg.registry,
            components=components,
            delete_dead=cfg.delete_dead,
            on_tick_end=self._tick_end,
        )
        esper.add_processor(self.snapshot_system, priority=SNAPSHOT_PRIORITY)
        esper.add_processor(self.planning_system, priority=PLANNING_PRIORITY)
        esper.add_processor(self.execution_system, priority=EXECUTION_PRIORITY)
        self._world = esper.current_world
        return self

    def uninstall(self) -> None:
        """Remove the processors (from the world they were installed in) and cancel the calls in
        flight. The bridge thread and the backend stay up for a later ``install``; ``close``
        stops them."""
        if not self.installed:
            return
        if self.planning_system is not None:
            self.planning_system.abandon_all()
        if self._bridge is not None:
            self._bridge.cancel_all()
        current = esper.current_world
        if (
            self._world is not None
            and self._world != current
            and self._world in esper.list_worlds()
        ):
            esper.switch_world(self._world)
        try:
            for proc in (self.snapshot_system, self.planning_system, self.execution_system):
                if proc is not None:
                    esper.remove_processor(type(proc))
        finally:
            if esper.current_world != current:
                esper.switch_world(current)
        self.snapshot_system = self.planning_system = None
        self.execution_system = None
        self._world = None

    def close(self) -> None:
        """Stop planning: remove the processors, cancel requests in flight, stop the bridge
        thread and close the backend (which cannot be used again). Idempotent."""
        self.uninstall()
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def __enter__(self) -> PlannerPlugin:
        if not self.installed:
            self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """Metrics plus live state: cache, breaker, queue sizes, the settings in force, and the
        embedded batched engine's load over the last 10 s (``engine_busy``: the share of the time
        inside ``llama_decode``, near 1 when the agents' requests wait for one another;
        ``engine_rows_per_s``: its rate there; None for other backends, or until two calls lie
        0.5 s apart: each call samples the engine's counters), and its totals since it started
        (``engine_decode_s``, ``engine_rows``; None likewise), for a load over a whole run."""
        out = self.metrics.stats()
        ps = self.planning_system
        cfg = self._config
        load = self._engine_load
        load.sample()
        totals = load.totals
        out.update(
            engine_busy=load.busy,
            engine_rows_per_s=load.rows_per_s,
            engine_decode_s=totals[0] if totals else None,
            engine_rows=totals[1] if totals else None,
            cache_hit_rate=self.cache.hit_rate,
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            cache_size=len(self.cache),
            breaker=self.breaker.state,
            in_flight=ps.in_flight if ps else 0,
            pending=ps.pending if ps else 0,
            max_batch_size=cfg.max_batch_size,
            max_wait_ms=cfg.max_wait_ms,
            strategy=cfg.strategy,
            cache_enabled=cfg.cache_enabled,
            backend=self.backend.info.name if self.backend is not None else "heuristic",
        )
        return out
