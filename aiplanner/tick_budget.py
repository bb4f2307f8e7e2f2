"""TickBudget: the plugin's whole tick held to ``PlannerConfig.tick_budget_ms``.

What a player sees as stutter is the whole tick (snapshots, planning, execution), so that is
what the budget covers, not the planning step alone: the tick starts when the snapshot system
starts (:meth:`TickBudget.start`); the planning system takes on per-agent work (a snapshot and
the rules' ranking for an agent that asks, an arrived plan to validate and apply, a deadline
fallback) only while the work it is about to do is expected to end before
``start + budget - tail - rest``, where ``rest`` is what the rest of the tick (the execution
system, from the end of planning to the end of the tick) has recently cost and ``tail`` what
planning's own steps after its last per-agent work (sending the batches) have, each as its
running mean plus :data:`SPREADS` running mean deviations (a tick that sends a batch has a tail
several times the mean's: measured, 0.2-0.6 ms against a mean of 0.05 at 100 agents). Costs are
measured, never assumed: each kind of work keeps a running mean of its own recent cost and of how
far a cost strays from it (:meth:`TickBudget.fits` measures the time between two of its calls for
the same kind, and admits work when the mean plus :data:`SPREADS` deviations fits), the tail is
measured from the expected end of the last admitted work (or the last refusal) to
:meth:`TickBudget.planning_done`, and the rest of the tick between that and
:meth:`TickBudget.end`.

Progress whatever the budget: each tick, the kind whose oldest waiting work has waited longest
gets one agent's work done, within the budget if it fits, regardless if nothing of that kind
did (see :meth:`TickBudget.grant_to`); the kinds done before it leave room for that agent's
work (its running mean cost), so that it usually fits;
planning may always spend :data:`PLANNING_FLOOR` of the budget from its own start, however late
it starts; the planning system also serves agents left idle too long regardless
(``IDLE_LIMIT_TICKS``).

Between two ticks, the frame's idle time can take on the same per-agent work
(:meth:`TickBudget.open_idle`, used by ``PlannerPlugin.between_frames``): up to a given time, with
nothing regardless.

Times are the plugin clock's, in seconds. Not thread-safe: the game thread owns it.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["COST_WEIGHT", "PLANNING_FLOOR", "SPREADS", "TickBudget"]

COST_WEIGHT: Final = 0.2
"""Weight of the newest sample in each running mean (an exponential moving average)."""

SPREADS: Final = 2.0
"""Work is admitted if its running mean cost plus this many running mean deviations fits: an
agent's work in a real tick varies 2-3x around its mean (caches, the other thread)."""

PLANNING_FLOOR: Final = 0.5
"""The share of the budget planning may always spend from its own start, however late it starts."""


class TickBudget:
    """One tick's time budget over ``kinds`` kinds of per-agent work (numbered ``0..kinds-1``,
    in the order the tick does them)."""

    __slots__ = (
        "_cost",
        "_granted",
        "_last_at",
        "_last_kind",
        "_mark",
        "_planning_done",
        "_progressed",
        "_reserving",
        "_rest",
        "_rest_spread",
        "_spread",
        "_started",
        "_tail",
        "_tail_spread",
        "_until",
        "preferred",
    )

    def __init__(self, kinds: int) -> None:
        self._cost = [0.0] * kinds  # running mean seconds of one agent's work, per kind
        self._spread = [0.0] * kinds  # running mean absolute deviation from it, per kind
        self._rest = 0.0  # running mean seconds from the end of planning to the end of the tick
        self._tail = 0.0  # running mean seconds of planning after its last per-agent work
        self._rest_spread = 0.0  # running mean absolute deviations from those two
        self._tail_spread = 0.0
        self._mark: float | None = None  # when this tick's last per-agent work should end
        self._reserving = False  # kinds before the preferred one leave room for its agent
        self._started: float | None = None  # this tick's start, if the tick was started
        self._planning_done: float | None = None
        self._until = math.inf  # per-agent work should end by then
        self._last_kind = -1
        self._last_at = 0.0
        self._granted = False  # this tick's one agent regardless given out
        self._progressed = False  # the preferred kind had an agent's work done this tick
        self.preferred = 0  # the kind that gets that agent (see grant_to)

    @property
    def agent_cost_s(self) -> tuple[float, ...]:
        """The running mean of one agent's work, per kind (0.0 before it was measured)."""
        return tuple(self._cost)

    @property
    def rest_s(self) -> float:
        """The running mean of the rest of the tick after planning (0.0 before measured)."""
        return self._rest

    @property
    def tail_s(self) -> float:
        """The running mean of planning's own time after its last per-agent work (0.0 before
        measured)."""
        return self._tail

    @property
    def reserved_s(self) -> float:
        """What a tick's window for per-agent work leaves for planning's tail and the rest of
        the tick: their running means plus :data:`SPREADS` running mean deviations."""
        return self._tail + self._rest + SPREADS * (self._tail_spread + self._rest_spread)

    def start(self, now: float) -> None:
        """The plugin's tick starts (the snapshot system's first step)."""
        self._started = now
        self._planning_done = None

    def open(self, now: float, budget_ms: float | None, oldest: list[float], tick: int) -> None:
        """Planning starts: per-agent work should end by the tick's start (``now`` if the tick
        was not started through :meth:`start`) plus ``budget_ms`` (None: no limit) less the
        planning's tail and the rest of the tick (each its running mean plus :data:`SPREADS`
        running mean deviations), and no sooner than :data:`PLANNING_FLOOR` of
        the budget after ``now``. ``oldest[k]`` is how long kind ``k``'s oldest waiting work has
        waited (any unit, ``-inf`` when it has none): the longest waiting kind gets this tick's
        one agent regardless, and the kinds before it leave room for it; ties take turns by
        ``tick``."""
        started = self._started if self._started is not None else now
        self._started = None
        if budget_ms is None:
            self._until = math.inf
        else:
            budget = budget_ms / 1000.0
            # Planning's own floor: a tick already over budget before planning (a thousand agents
            # to index and move) still lets it work a share of the budget, or waiting agents
            # would only move on by the one agent a tick and reach their deadlines unserved.
            self._until = max(started + budget - self.reserved_s, now + budget * PLANNING_FLOOR)
        self._last_kind = -1
        self._mark = None
        self._granted = False
        self._progressed = False
        longest = max(oldest, default=0.0)
        tied = [k for k, waited in enumerate(oldest) if waited == longest]
        self.preferred = tied[tick % len(tied)] if tied else 0
        self._reserving = longest > -math.inf

    def open_idle(self, until: float) -> None:
        """Per-agent work in the frame's idle time, between two ticks: it should end by ``until``
        (the plugin clock). Nothing goes ahead regardless (:meth:`grant_to` gives nothing): the
        ticks keep the progress guarantee. Costs are measured as in a tick; the next
        :meth:`open` starts a tick's window again."""
        self._until = until
        self._last_kind = -1
        self._mark = None
        self._granted = True
        self._progressed = True

    def fits(self, kind: int, now: float) -> bool:
        """Whether one more agent's work of ``kind`` is expected to end within the budget: its
        running mean cost plus :data:`SPREADS` running mean deviations, and, for a kind done
        before :attr:`preferred` while that kind has had nothing done this tick, the running
        mean cost of the preferred kind's one agent too.

        Also measures: the time since the previous call for the same kind, with nothing else in
        between, is one sample of that kind's cost."""
        cost = self._cost
        spread = self._spread
        if self._last_kind == kind:
            cost[kind], spread[kind] = _running(cost[kind], spread[kind], now - self._last_at)
        self._last_kind = kind
        self._last_at = now
        need = cost[kind] + SPREADS * spread[kind]
        if self._reserving and kind < self.preferred and not self._progressed:
            need += cost[self.preferred]
        self._mark = now  # planning's tail counts from here unless this work goes ahead (served)
        return now + need <= self._until

    def spent(self, now: float) -> bool:
        """Whether the budget for per-agent work is used up."""
        return now >= self._until

    def served(self, kind: int) -> None:
        """One agent's work of ``kind`` goes ahead this tick (it fitted, or was due regardless):
        if ``kind`` is :attr:`preferred`, that is this tick's progress for it, and no agent goes
        ahead by :meth:`grant_to`. Planning's tail counts from when that work should end."""
        if kind == self.preferred:
            self._progressed = True
        self._mark = self._last_at + self._cost[kind]

    def grant_to(self, kind: int) -> bool:
        """Whether ``kind``, which has work that did not fit, does this tick's one agent
        regardless: it goes to :attr:`preferred`, or to a later kind when the preferred one
        (done before it) did not take it; to nobody once the preferred kind had an agent's work
        done this tick (:meth:`served`): that agent was the tick's progress, and another one past
        the budget would only lengthen the tick. Once a tick."""
        if self._granted or self._progressed or kind < self.preferred:
            return False
        self._granted = True
        self._mark = self._last_at + self._cost[kind]
        return True

    def planning_done(self, now: float) -> None:
        """Planning is over for this tick; the rest of the tick starts. Measures planning's tail:
        the time since its last per-agent work was expected to end (when it weighed any)."""
        self._planning_done = now
        self._last_kind = -1
        if self._mark is not None:
            self._tail, self._tail_spread = _running(
                self._tail, self._tail_spread, max(0.0, now - self._mark)
            )
            self._mark = None

    def end(self, now: float) -> None:
        """The plugin's tick is over (the execution system's last step): measure its rest."""
        done = self._planning_done
        if done is not None:
            self._rest, self._rest_spread = _running(
                self._rest, self._rest_spread, max(0.0, now - done)
            )
        self._planning_done = None


def _running(mean: float, spread: float, sample: float) -> tuple[float, float]:
    """A running mean and its running mean absolute deviation, after one more ``sample``
    (the deviation measured from the mean before it moves)."""
    spread += COST_WEIGHT * (abs(sample - mean) - spread)
    return mean + COST_WEIGHT * (sample - mean), spread
