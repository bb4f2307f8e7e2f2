"""ActionExecutionSystem: carries out agents' plans, one step at a time, as pure game data.

Each tick, in entity-id order, every agent whose :class:`PlanState` is ``EXECUTING`` (or that
runs its provisional plan while it waits) runs the current step of its :class:`ActionQueue` for
``dt`` seconds, through the step's action handler (declared on its :class:`ActionSpec`, see
:mod:`aiplanner.behaviour`; the built-in ones in :mod:`aiplanner.combat`). Before any step, each
distinct ``upkeep`` of the registry's actions runs once.

A plan that runs out puts the agent back to ``IDLE`` (the planner gives it a new one). A step
that cannot be carried out does the same with ``PlanState.invalid_reason`` set (the handler's
:class:`StepFailed` reason); before each step the remaining steps are checked for targets that
are gone or dead (``target_gone``), so a doomed plan is dropped early instead of walking on.

The game's components are read through a :class:`ComponentMap`: an agent is an entity with its
marker and position components plus ``PlanState`` and ``ActionQueue``; entities whose mapped
health is ``<= 0`` are deleted after the loop (deferred, as esper does) when ``delete_dead`` is
set. No randomness, threads or backends here.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Final

import esper

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.behaviour import StepContext, StepFailed, Upkeep
from aiplanner.combat import HEAL_REACH, SCAN_SECONDS
from aiplanner.components import ActionQueue, PlanState, PlanStatus
from aiplanner.errors import ConfigError

__all__ = ["HEAL_REACH", "SCAN_SECONDS", "ActionExecutionSystem"]

_TARGET_KINDS: Final = (ArgKind.ENEMY, ArgKind.ALLY)
_entity: Final = itemgetter(0)


class ActionExecutionSystem(esper.Processor):
    """Runs the current step of every executing agent (see the module docstring).

    Raises :class:`ConfigError` if ``max_path_nodes < 1`` or an action of ``registry`` has no
    handler.
    """

    def __init__(
        self,
        registry: ActionRegistry = DEFAULT_REGISTRY,
        *,
        components: ComponentMap = DEFAULT_COMPONENTS,
        delete_dead: bool = True,
        max_path_nodes: int = 4000,
    ) -> None:
        if max_path_nodes < 1:
            raise ConfigError(f"max_path_nodes must be at least 1, got {max_path_nodes}")
        registry.require_handlers()
        self.registry = registry
        self.components = components
        self.delete_dead = delete_dead
        self.max_path_nodes = max_path_nodes
        self._ctx = StepContext(components, max_path_nodes)
        upkeep: list[Upkeep] = []
        for spec in registry.actions:
            if spec.upkeep is not None and spec.upkeep not in upkeep:
                upkeep.append(spec.upkeep)
        self._upkeep = tuple(upkeep)
        # Only actions with a target argument need the early check for gone targets.
        self._targets = {
            spec.name: (len(spec.args), where)
            for spec in registry.actions
            if (where := tuple(i for i, a in enumerate(spec.args) if a.kind in _TARGET_KINDS))
        }

    def process(self, dt: float) -> None:
        """Run the upkeep, each executing agent's step, then delete the dead."""
        for upkeep in self._upkeep:
            upkeep(dt)
        cm = self.components
        ctx = self._ctx
        ctx.field = cm.read_map()
        ctx.dt = dt
        health_type = cm.health
        hp = cm.hp
        xy = cm.xy
        exists = esper.entity_exists
        try_component = esper.try_component
        isfinite = math.isfinite
        registry_get = self.registry.get
        check_targets = self._check_targets
        executing = PlanStatus.EXECUTING
        # Every status but IDLE runs: agents waiting for a plan carry out their provisional plan
        # (see PlannerConfig.provisional). An identity test: hashing an Enum runs Python code.
        idle = PlanStatus.IDLE
        rows = sorted(
            esper.get_components(cm.agent, cm.position, ActionQueue, PlanState), key=_entity
        )
        for ent, (agent, pos, queue, state) in rows:
            status = state.status
            if status is idle or not exists(ent):
                continue
            steps = queue.steps
            index = queue.index
            finished = index >= len(steps)
            if finished and status is not executing:
                continue  # waiting for a plan, provisional plan finished: stand by
            health = try_component(ent, health_type)
            if health is not None and hp(health) <= 0:
                continue  # the dead do nothing; they are deleted below
            if finished:
                self._stop(queue, state, "")
                continue
            step = steps[index]
            try:
                check_targets(queue)
                x, y = xy(pos)
                if not (isfinite(x) and isfinite(y)):
                    raise StepFailed("bad_position")
                spec = registry_get(step.action)
                if spec is None:
                    raise StepFailed("unknown_action")
                if len(step.args) != len(spec.args):
                    raise StepFailed("bad_arguments")
                handler = spec.handler
                assert handler is not None  # require_handlers() at construction
                ctx.entity = ent
                ctx.agent = agent
                ctx.position = pos
                ctx.queue = queue
                done = handler(ctx, step.args)
            except StepFailed as exc:
                self._stop(queue, state, exc.reason)
                continue
            if done:
                queue.advance()
                if queue.done:
                    self._stop(queue, state, "")
        if self.delete_dead:
            for ent, health in esper.get_component(health_type):
                if hp(health) <= 0 and exists(ent):
                    esper.delete_entity(ent)

    @staticmethod
    def _stop(queue: ActionQueue, state: PlanState, reason: str) -> None:
        queue.path = []
        if state.status is PlanStatus.EXECUTING:
            state.status = PlanStatus.IDLE
        else:  # a provisional plan ran out while the real one is on its way: just stand by
            queue.steps = []
            queue.index = 0
        state.invalid_reason = reason

    def _check_targets(self, queue: ActionQueue) -> None:
        """Raise StepFailed('target_gone') if a remaining step names a gone or dead entity."""
        targets = self._targets
        steps = queue.steps
        for k in range(queue.index, len(steps)):  # no slice copied per agent and tick
            step = steps[k]
            found = targets.get(step.action)
            if found is None or found[0] != len(step.args):
                continue  # no target argument; or a bad step, reported when it is reached
            args = step.args
            living = self.components.living_position
            for i in found[1]:
                if living(args[i]) is None:
                    raise StepFailed("target_gone")
