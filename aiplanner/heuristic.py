"""HeuristicPlanner: rule-based plans, the tier below the model and the source of guided options.

The rules live with the actions: each action's ``propose`` (see :mod:`aiplanner.behaviour`)
offers ranked candidate plans that start with it, and this planner merges every action's
proposals by rank (ties: registry order, then the proposer's own order), drops repeats and any
plan that does not validate, and ends with a fallback step that is always legal. The built-in
verbs' rules are described in :mod:`aiplanner.combat`.

Every plan is built only from actions present in the registry and passed through
:func:`validate_plan`, so whatever this module returns is legal for the snapshot it was made for.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from itertools import islice
from operator import itemgetter

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry, ArgKind, Plan, Step
from aiplanner.behaviour import Proposal, ProposalContext
from aiplanner.combat import COVER_NEAR, WAIT_TICKS
from aiplanner.errors import ConfigError, PlanRejected
from aiplanner.snapshot import WorldSnapshot
from aiplanner.validation import validate_plan

__all__ = ["COVER_NEAR", "HeuristicPlanner"]

_rank = itemgetter(0)


class HeuristicPlanner:
    """Rule-based planner over one registry: the merged proposals of its actions.

    The fallback step, last of every ranking and the emergency plan when nothing else is legal,
    is the first action whose arguments are all COUNTs (``Wait``) with :data:`WAIT_TICKS`
    clamped into range, else the first action taking no arguments. Raises :class:`ConfigError`
    if the registry has neither: without one no plan could be promised legal.
    """

    __slots__ = ("_fallback", "_proposers", "registry")

    def __init__(self, registry: ActionRegistry = DEFAULT_REGISTRY) -> None:
        self.registry = registry
        self._proposers = tuple(s.propose for s in registry.actions if s.propose is not None)
        self._fallback = self._find_fallback()

    def _find_fallback(self) -> Step:
        actions = self.registry.actions
        for spec in actions:
            if spec.args and all(a.kind is ArgKind.COUNT for a in spec.args):
                return Step(spec.name, tuple(min(max(WAIT_TICKS, a.lo), a.hi) for a in spec.args))
        for spec in actions:
            if not spec.args:
                return Step(spec.name, ())
        raise ConfigError(
            "the registry needs an action legal in every situation (no arguments, or only "
            f"COUNT arguments) for the emergency plan; it has {', '.join(self.registry.names)}"
        )

    def _proposals(self, snap: WorldSnapshot, *, emergency: bool = False) -> Iterator[Proposal]:
        ctx = ProposalContext(snap, self.registry, emergency=emergency)
        # Each proposer yields in increasing rank and is advanced only as far as needed.
        return heapq.merge(*(propose(ctx) for propose in self._proposers), key=_rank)

    def _legal(self, snap: WorldSnapshot, *, emergency: bool = False) -> Iterator[Plan]:
        seen: set[Plan] = set()
        for _, plan in self._proposals(snap, emergency=emergency):
            if plan is None or plan in seen:
                continue
            seen.add(plan)
            try:
                validate_plan(plan, snap, self.registry)
            except PlanRejected:
                continue
            yield plan
        fallback = Plan((self._fallback,))
        if fallback not in seen:
            yield fallback

    def plan(self, snap: WorldSnapshot) -> Plan:
        """The best legal plan for ``snap``."""
        return next(self._legal(snap))

    def candidates(self, snap: WorldSnapshot, limit: int = 4) -> tuple[Plan, ...]:
        """Up to ``limit`` distinct legal plans, best first.

        The first is :meth:`plan`'s answer. Raises :class:`ConfigError` if ``limit < 1``.
        """
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}")
        return tuple(islice(self._legal(snap), limit))

    def emergency(self, snap: WorldSnapshot) -> Plan:
        """The first legal emergency proposal (built-in: TakeCover at the nearest free cover
        point), else the fallback step (see the class docstring). Never raises."""
        return next(self._legal(snap, emergency=True))
