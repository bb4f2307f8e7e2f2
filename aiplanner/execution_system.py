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

What runs every tick is only what can change: what a step needs (its handler, whether its
arguments fit, which entities the rest of the plan names) is worked out once per step, when the
plan, its length, its index or its current step changes (a step replaced in place further on
in a plan of the same length is not noticed by the early check), and a named entity's health
component is looked up once per tick, its ``hp`` read live (a target killed earlier in the same
tick counts as gone). A component added or removed by a handler during the loop is seen from
the next tick.

The game's components are read through a :class:`ComponentMap`: an agent is an entity with its
marker and position components plus ``PlanState`` and ``ActionQueue``; entities whose mapped
health is ``<= 0`` are deleted after the loop (deferred, as esper does) when ``delete_dead`` is
set. No randomness, threads or backends here.

At most ``max_paths_per_tick`` A* searches run per tick (each can take a millisecond on a
large map, and a burst of new plans asks for hundreds at once): an agent whose step needs a
path once they are used up waits for the next tick, its step unchanged
(:class:`~aiplanner.behaviour.StepDeferred`). Agents keep their id order, so a burst is served
over a few ticks, lowest ids first; ``None`` lifts the cap. A count, not a time budget, so
replays repeat exactly.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import esper

from aiplanner import queries
from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind, Step
from aiplanner.adapter import DEFAULT_COMPONENTS, ComponentMap
from aiplanner.behaviour import ActionHandler, StepContext, StepDeferred, StepFailed, Upkeep
from aiplanner.combat import HEAL_REACH, SCAN_SECONDS
from aiplanner.components import ActionQueue, PlanState, PlanStatus
from aiplanner.errors import ConfigError

__all__ = ["HEAL_REACH", "SCAN_SECONDS", "ActionExecutionSystem"]

_TARGET_KINDS: Final = (ArgKind.ENEMY, ArgKind.ALLY)
_MISSING: Final = object()

# What one step of one agent needs, worked out when its plan or step index changes: the plan's
# step list (by identity), its length, the index and the step (by identity) it was made for; the
# step's handler (None when the step cannot run) and the reason it cannot; the entities the rest
# of the plan names.
_StepView = tuple[list[Step], int, int, Step, "ActionHandler | None", str, tuple[int, ...]]


class ActionExecutionSystem(esper.Processor):
    """Runs the current step of every executing agent (see the module docstring).

    Raises :class:`ConfigError` if ``max_path_nodes < 1``, ``max_paths_per_tick < 1`` or an
    action of ``registry`` has no handler.
    """

    def __init__(
        self,
        registry: ActionRegistry = DEFAULT_REGISTRY,
        *,
        components: ComponentMap = DEFAULT_COMPONENTS,
        delete_dead: bool = True,
        max_path_nodes: int = 4000,
        max_paths_per_tick: int | None = 16,
        on_tick_end: Callable[[], None] | None = None,
    ) -> None:
        if max_path_nodes < 1:
            raise ConfigError(f"max_path_nodes must be at least 1, got {max_path_nodes}")
        if max_paths_per_tick is not None and max_paths_per_tick < 1:
            raise ConfigError(f"max_paths_per_tick must be at least 1, got {max_paths_per_tick}")
        self.max_paths_per_tick = max_paths_per_tick
        # Called last thing each tick, even when a step raised (the plugin releases its bridge's
        # loop: see AsyncBridge.release).
        self.on_tick_end = on_tick_end
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
        # Per action: its handler, its argument count and which arguments name an entity (only
        # those need the early check for gone targets). The registry is immutable.
        self._actions: dict[str, tuple[ActionHandler, int, tuple[int, ...]]] = {}
        for spec in registry.actions:
            assert spec.handler is not None  # require_handlers() above
            where = tuple(i for i, a in enumerate(spec.args) if a.kind in _TARGET_KINDS)
            self._actions[spec.name] = (spec.handler, len(spec.args), where)
        # queries.generation() when the rows were made, and the rows (see _agent_rows).
        self._seen: object = None
        self._rows: list[tuple[int, Any, Any, ActionQueue, PlanState, Any]] = []
        self._rows_with_health = 0  # rows whose health component is not None
        self._views: dict[int, _StepView] = {}  # entity -> its current step, worked out
        # Entity -> its health component, or None without the mapped health or position: the
        # part of the gone-target test that only changes when a component comes or goes.
        self._healths: dict[int, Any] = {}

    def process(self, dt: float) -> None:
        """Run the upkeep, each executing agent's step, then delete the dead."""
        try:
            self._run_tick(dt)
        finally:
            if self.on_tick_end is not None:
                self.on_tick_end()

    def _run_tick(self, dt: float) -> None:
        for upkeep in self._upkeep:
            upkeep(dt)
        cm = self.components
        ctx = self._ctx
        ctx.field = cm.read_map()
        ctx.dt = dt
        ctx.paths_left = self.max_paths_per_tick or sys.maxsize
        health_type = cm.health
        hp = cm.hp
        xy = cm.xy
        exists = esper.entity_exists
        executing = PlanStatus.EXECUTING
        # Every status but IDLE runs: agents waiting for a plan carry out their provisional plan
        # (see PlannerConfig.provisional). An identity test: hashing an Enum runs Python code.
        idle = PlanStatus.IDLE
        views = self._views
        view_of = self._view
        healths = self._healths
        healths.clear()  # hp is read live; which component holds it is looked up once a tick
        health_of = self._health_of
        for ent, agent, pos, queue, state, health in self._agent_rows(cm):
            status = state.status
            if status is idle:
                continue
            steps = queue.steps
            index = queue.index
            n = len(steps)
            if index >= n:  # the plan ran out
                if status is not executing or not exists(ent):
                    continue  # waiting for a plan, provisional plan finished: stand by
                if health is None or hp(health) > 0:  # the dead do nothing; deleted below
                    self._stop(queue, state, "")
                continue
            if (health is not None and hp(health) <= 0) or not exists(ent):
                continue
            view = views.get(ent)
            step = steps[index]
            if (
                view is None
                or view[3] is not step
                or view[0] is not steps
                or view[1] != n
                or view[2] != index
            ):
                view = views[ent] = view_of(steps, index)
            try:
                # Steps naming a gone or dead entity (this one or later): drop the doomed plan.
                for target in view[6]:
                    if not exists(target):
                        raise StepFailed("target_gone")
                    target_health = healths.get(target, _MISSING)
                    if target_health is _MISSING:
                        target_health = healths[target] = health_of(target)
                    if target_health is None or hp(target_health) <= 0:
                        raise StepFailed("target_gone")
                x, y = xy(pos)
                # v - v is 0 for a finite number, NaN for an infinite one or NaN: the test of
                # math.isfinite without two calls per agent and tick.
                if x - x != 0 or y - y != 0:
                    raise StepFailed("bad_position")
                handler = view[4]
                if handler is None:
                    raise StepFailed(view[5])
                ctx.entity = ent
                ctx.agent = agent
                ctx.position = pos
                ctx.queue = queue
                done = handler(ctx, step.args)
            except StepDeferred:
                continue  # no path left this tick: the same step runs again next tick
            except StepFailed as exc:
                self._stop(queue, state, exc.reason)
                continue
            if done:
                queue.advance()
                if queue.done:
                    self._stop(queue, state, "")
        if self.delete_dead:
            self._delete_dead(health_type, hp)

    def _delete_dead(self, health_type: type[Any], hp: Callable[[Any], float]) -> None:
        """Delete (deferred, as esper does) every entity whose health is ``<= 0``: from the rows
        when they are current and every holder of health is an agent in them (no query to
        rebuild after a death or a respawn), else from esper's column of health."""
        exists = esper.entity_exists
        if queries.generation() is self._seen and self._rows_with_health == len(
            queries.entities(health_type)
        ):
            for ent, _, _, _, _, health in self._rows:
                if health is not None and hp(health) <= 0 and exists(ent):
                    esper.delete_entity(ent)
            return
        for ent, health in zip(*queries.column(health_type), strict=True):
            if hp(health) <= 0 and exists(ent):
                esper.delete_entity(ent)

    def _agent_rows(
        self, cm: ComponentMap
    ) -> list[tuple[int, Any, Any, ActionQueue, PlanState, Any]]:
        """Every agent (an entity with the map's agent and position components, ActionQueue and
        PlanState) in entity-id order, with its health component (None without one).

        Made again only after an entity or component came or went (:mod:`aiplanner.queries`),
        from the map's rows (:meth:`ComponentMap.rows`, which the SnapshotSystem read this
        tick), each with its queue and state. Agents without the map's team or health
        component are found by a join without them.
        """
        seen = queries.generation()
        if seen is self._seen:
            return self._rows
        self._seen = seen
        ia = cm.agent_index
        ip = cm.position_index
        ih = cm.health_index
        table = queries.entity_table()
        # Sorted as pairs (ids are unique, so only they are compared): no key function called
        # per row. The map's rows all hold health (it is one of the map's query).
        if table is not None:  # the map's rows, each with its queue and state looked up
            aq, ps = ActionQueue, PlanState
            rows = [
                (ent, comps[ia], comps[ip], held[aq], held[ps], comps[ih])
                for ent, comps in sorted(cm.rows())
                if aq in (held := table[ent]) and ps in held
            ]
        else:
            iq = len(cm.query)
            rows = [
                (ent, comps[ia], comps[ip], comps[iq], comps[iq + 1], comps[ih])
                for ent, comps in sorted(queries.components(*cm.query, ActionQueue, PlanState))
            ]
        with_health = len(rows)
        if len(rows) != len(queries.entities(PlanState)):
            # some agents lack the map's team or health component
            health = cm.health
            rows = [
                (ent, agent, pos, queue, state, esper.try_component(ent, health))
                for ent, (agent, pos, queue, state) in sorted(
                    queries.components(cm.agent, cm.position, ActionQueue, PlanState)
                )
            ]
            with_health = len(rows) - [row[5] for row in rows].count(None)
        queries.retire(self._rows)  # freed in the frame's idle time, not in this tick
        self._rows = rows
        self._rows_with_health = with_health
        views = self._views
        if len(views) > len(rows):  # forget the steps of agents gone since
            kept = {row[0] for row in rows}
            for ent in [e for e in views if e not in kept]:
                del views[ent]
        return rows

    @staticmethod
    def _stop(queue: ActionQueue, state: PlanState, reason: str) -> None:
        queue.path = []
        if state.status is PlanStatus.EXECUTING:
            state.status = PlanStatus.IDLE
        else:  # a provisional plan ran out while the real one is on its way: just stand by
            queue.steps = []
            queue.index = 0
        state.invalid_reason = reason

    def _view(self, steps: list[Step], index: int) -> _StepView:
        """What the step at ``index`` of ``steps`` needs (see ``_StepView``): the entities named
        by it and the steps after it, in order (an unknown action or one with the wrong number
        of arguments names none), its handler, or None and the reason it cannot run."""
        actions = self._actions
        targets: list[int] = []
        for k in range(index, len(steps)):
            step = steps[k]
            known = actions.get(step.action)
            if known is not None and known[1] == len(step.args):
                targets.extend(step.args[i] for i in known[2])
        step = steps[index]
        known = actions.get(step.action)
        n = len(steps)
        if known is None:
            return steps, n, index, step, None, "unknown_action", tuple(targets)
        if known[1] != len(step.args):
            return steps, n, index, step, None, "bad_arguments", tuple(targets)
        return steps, n, index, step, known[0], "", tuple(targets)

    def _health_of(self, entity: int) -> Any:
        """The mapped health component of ``entity``, or None if it lacks it or the mapped
        position (the target test of :meth:`ComponentMap.living_position`, hp read apart)."""
        cm = self.components
        if esper.try_component(entity, cm.position) is None:
            return None
        return esper.try_component(entity, cm.health)
