"""ActionExecutionSystem: carries out agents' plans, one step at a time, as pure game data.

Each tick, in entity-id order, every agent whose :class:`PlanState` is ``EXECUTING`` runs the
current step of its :class:`ActionQueue` for ``dt`` seconds. What each action does:

* ``MoveTo`` / ``TakeCover`` / ``Retreat`` (x, y): an A* path is found once per step (kept in
  ``queue.path``) and walked at ``Agent.speed`` cells/s; the step ends on arrival. No path:
  impossible (``unreachable``).
* ``Attack`` (target): out of ``Weapon.range`` the agent walks toward the target (re-pathing
  when the target changes cell); in range it fires whenever its cooldown has run out, taking
  ``damage`` hp and one round. The step ends when the target dies or the magazine is empty.
* ``Reload``: ``Weapon.reload_time`` seconds, then the magazine is full.
* ``Heal`` (target, possibly itself): walks to within :data:`HEAL_REACH`, then adds
  ``heal_amount`` hp (capped at ``max_hp``).
* ``Scan``: :data:`SCAN_SECONDS`. ``Wait`` (ticks): that many ``process`` calls.

A plan that runs out puts the agent back to ``IDLE`` (the planner gives it a new one). A step
that cannot be carried out does the same with ``PlanState.invalid_reason`` set; before each step
the remaining steps are checked for targets that are gone or dead (``target_gone``), so a
doomed plan is dropped early instead of walking on.

An agent with no :class:`Weapon` gets a default one the first time an action needs it; one with
no :class:`Ammo` never runs dry. Entities whose ``Health.hp <= 0`` are deleted after the loop
(deferred, as esper does) when ``delete_dead`` is set. No randomness, threads or backends here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

import esper

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind
from aiplanner.components import (
    ActionQueue,
    Agent,
    Ammo,
    Battlefield,
    Health,
    PlanState,
    PlanStatus,
    Position,
    Weapon,
)
from aiplanner.errors import ConfigError
from aiplanner.pathfinding import find_path
from aiplanner.spatial import to_cell

__all__ = ["HEAL_REACH", "SCAN_SECONDS", "ActionExecutionSystem"]

HEAL_REACH: Final = 1.5
"""A healer must be this close (cells) to its patient."""
SCAN_SECONDS: Final = 0.5
_EPS: Final = 1e-9  # summed float dts land a hair short of round durations

_Handler = Callable[[int, Agent, Position, ActionQueue, tuple[int, ...], float], bool]


class _Impossible(Exception):
    """The current step cannot be carried out; ``args[0]`` is the reason."""


# Agents waiting for a plan carry out their provisional plan (see PlannerConfig.provisional).
_RUNNING = frozenset({PlanStatus.EXECUTING, PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT})


class ActionExecutionSystem(esper.Processor):
    """Runs the current step of every executing agent (see the module docstring).

    Raises :class:`ConfigError` if ``max_path_nodes < 1``.
    """

    def __init__(
        self,
        registry: ActionRegistry = DEFAULT_REGISTRY,
        *,
        delete_dead: bool = True,
        max_path_nodes: int = 4000,
    ) -> None:
        if max_path_nodes < 1:
            raise ConfigError(f"max_path_nodes must be at least 1, got {max_path_nodes}")
        self.registry = registry
        self.delete_dead = delete_dead
        self.max_path_nodes = max_path_nodes
        self._field: Battlefield | None = None
        # A fixed table: action names from plans select behaviour only through this dict.
        self._handlers: dict[str, _Handler] = {
            "MoveTo": self._move,
            "TakeCover": self._move,
            "Retreat": self._move,
            "Attack": self._attack,
            "Reload": self._reload,
            "Heal": self._heal,
            "Scan": self._scan,
            "Wait": self._wait,
        }

    def process(self, dt: float) -> None:
        """Tick cooldowns, run each executing agent's step, then delete the dead."""
        for _, weapon in esper.get_component(Weapon):
            if weapon.cooldown_left > 0:
                weapon.cooldown_left = max(0.0, weapon.cooldown_left - dt)
        fields = esper.get_component(Battlefield)
        self._field = min(fields, key=lambda pair: pair[0])[1] if fields else None
        rows = sorted(
            esper.get_components(Agent, Position, ActionQueue, PlanState), key=lambda r: r[0]
        )
        for ent, (agent, pos, queue, state) in rows:
            if state.status not in _RUNNING or not esper.entity_exists(ent):
                continue
            if queue.done and state.status is not PlanStatus.EXECUTING:
                continue  # waiting for a plan, provisional plan finished: stand by
            health = esper.try_component(ent, Health)
            if health is not None and health.hp <= 0:
                continue  # the dead do nothing; they are deleted below
            self._run(ent, agent, pos, queue, state, dt)
        if self.delete_dead:
            for ent, health in esper.get_component(Health):
                if health.hp <= 0 and esper.entity_exists(ent):
                    esper.delete_entity(ent)

    def _run(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        state: PlanState,
        dt: float,
    ) -> None:
        step = queue.current
        if step is None:
            self._stop(queue, state, "")
            return
        try:
            self._check_targets(queue)
            if not (math.isfinite(pos.x) and math.isfinite(pos.y)):
                raise _Impossible("bad_position")
            spec = self.registry.get(step.action)
            if spec is None:
                raise _Impossible("unknown_action")
            if len(step.args) != len(spec.args):
                raise _Impossible("bad_arguments")
            handler = self._handlers.get(step.action)
            if handler is None:
                raise _Impossible("unsupported_action")
            done = handler(ent, agent, pos, queue, step.args, dt)
        except _Impossible as exc:
            self._stop(queue, state, str(exc.args[0]))
            return
        if done:
            queue.advance()
            if queue.done:
                self._stop(queue, state, "")

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
        """Raise _Impossible('target_gone') if a remaining step names a gone or dead entity."""
        registry = self.registry
        for step in queue.steps[queue.index :]:
            spec = registry.get(step.action)
            if spec is None or len(spec.args) != len(step.args):
                continue  # reported when the step is reached
            for value, arg in zip(step.args, spec.args, strict=True):
                if arg.kind in (ArgKind.ENEMY, ArgKind.ALLY) and _living(value) is None:
                    raise _Impossible("target_gone")

    def _weapon(self, ent: int) -> Weapon:
        weapon = esper.try_component(ent, Weapon)
        if weapon is None:
            weapon = Weapon()
            esper.add_component(ent, weapon)
        return weapon

    # --- movement -------------------------------------------------------------------------

    def _path(self, pos: Position, goal: tuple[int, int]) -> list[tuple[int, int]]:
        if self._field is None:
            raise _Impossible("no_map")
        path = find_path(self._field, to_cell(pos.x, pos.y), goal, self.max_path_nodes)
        if path is None:
            raise _Impossible("unreachable")
        return path

    @staticmethod
    def _walk(pos: Position, path: list[tuple[int, int]], budget: float) -> None:
        """Move along ``path`` (consuming reached waypoints) by at most ``budget`` cells."""
        while path and budget > 0:
            wx, wy = path[0]
            d = math.hypot(wx - pos.x, wy - pos.y)
            if d <= budget:
                pos.x, pos.y = float(wx), float(wy)
                budget -= d
                path.pop(0)
            else:
                pos.x += (wx - pos.x) * budget / d
                pos.y += (wy - pos.y) * budget / d
                budget = 0.0

    def _approach(
        self, agent: Agent, pos: Position, queue: ActionQueue, target: Position, dt: float
    ) -> None:
        """Walk toward ``target``, re-pathing only when it has moved to another cell."""
        goal = to_cell(target.x, target.y)
        if not queue.path or queue.path[-1] != goal:
            queue.path = self._path(pos, goal)
        if queue.path:
            self._walk(pos, queue.path, agent.speed * dt)
        else:
            # Same cell, still too far (a very short reach): close in directly.
            d = math.hypot(target.x - pos.x, target.y - pos.y)
            step = min(d, agent.speed * dt)
            if d > 0:
                pos.x += (target.x - pos.x) * step / d
                pos.y += (target.y - pos.y) * step / d

    # --- actions: each returns True when the step is done ----------------------------------

    def _move(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        goal = (args[0], args[1])
        if not queue.path:
            # An empty path at this point means the step just started: path once per step.
            queue.path = self._path(pos, goal) or [goal]
        self._walk(pos, queue.path, agent.speed * dt)
        return not queue.path

    def _close_in(
        self,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        target_id: int,
        reach: float,
        dt: float,
    ) -> Health | None:
        """The target's Health once it is within ``reach``; None while still walking to it.

        Raises _Impossible('target_gone') if the target is gone or dead.
        """
        target = _living(target_id)
        if target is None:
            raise _Impossible("target_gone")
        target_pos, target_health = target
        if math.hypot(target_pos.x - pos.x, target_pos.y - pos.y) > reach:
            self._approach(agent, pos, queue, target_pos, dt)
            return None
        queue.path = []
        return target_health

    def _attack(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        weapon = self._weapon(ent)
        target_health = self._close_in(agent, pos, queue, args[0], weapon.range, dt)
        if target_health is None:
            return False
        ammo = esper.try_component(ent, Ammo)
        if ammo is not None and ammo.rounds <= 0:
            return True
        if weapon.cooldown_left > 0:
            return False
        target_health.hp -= weapon.damage
        weapon.cooldown_left = weapon.cooldown
        if ammo is not None:
            ammo.rounds -= 1
        return target_health.hp <= 0 or (ammo is not None and ammo.rounds <= 0)

    def _reload(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        queue.progress += dt
        if queue.progress + _EPS < self._weapon(ent).reload_time:
            return False
        ammo = esper.try_component(ent, Ammo)
        if ammo is not None:
            ammo.rounds = ammo.capacity
        return True

    def _heal(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        target_health = self._close_in(agent, pos, queue, args[0], HEAL_REACH, dt)
        if target_health is None:
            return False
        amount = self._weapon(ent).heal_amount
        target_health.hp = max(
            target_health.hp, min(target_health.max_hp, target_health.hp + amount)
        )
        return True

    def _scan(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        queue.progress += dt
        return queue.progress + _EPS >= SCAN_SECONDS

    def _wait(
        self,
        ent: int,
        agent: Agent,
        pos: Position,
        queue: ActionQueue,
        args: tuple[int, ...],
        dt: float,
    ) -> bool:
        queue.progress += 1
        return queue.progress >= args[0]


def _living(entity: int) -> tuple[Position, Health] | None:
    """Position and Health of ``entity`` if it exists and is alive."""
    if not esper.entity_exists(entity):
        return None
    comps = esper.try_components(entity, Position, Health)
    if comps is None or comps[1].hp <= 0:
        return None
    return comps
