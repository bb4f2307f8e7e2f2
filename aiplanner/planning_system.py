"""PlanningSystem: decides who needs a plan, batches them for the bridge, applies what comes back.

Each tick, in this order (all on the game thread, never waiting on the backend):

1. agents that need a plan (no plan yet, queue finished, plan invalidated), longest idle first,
   are looked up in the plan cache, else queued for a batch (or, with no backend / an open
   circuit breaker, given the heuristic plan at once). They come first: an idle agent stands
   still, the others below are busy with their provisional plans;
2. apply the outcomes that have arrived (those left over from the last tick first, then the new
   ones in entity-id order): a plan for a deleted entity or a superseded request is dropped; a
   plan past its deadline is discarded; every plan is re-validated against the agent's current
   snapshot; a failure gets the fallback tier; an agent still waiting whose provisional plan ran
   out (its target died) gets the rules' plan for now;
3. agents whose deadline has passed while waiting have their calls cancelled and get the fallback
   tier, in deadline order (found through a heap, not a scan of everyone waiting);
4. queued agents are sent in batches of ``max_batch_size``, or when the oldest has waited
   ``max_wait_ms``, with the snapshot and ranked candidates computed when they asked (unless
   those are older than :data:`FRESH_S`).

Time budget (``PlannerConfig.tick_budget_ms``, on the plugin clock, for the plugin's whole tick:
see :mod:`aiplanner.tick_budget`): steps 1-3 take on per-agent work (a snapshot, a validation,
the rules' ranking) only while it is expected to end within the budget, and carry on where they
stopped on the next tick. Each step serves its queue first come, first served; each tick the
step whose oldest waiting work has waited longest gets one agent's work done, within the budget
or, if none of its work fitted, whatever the budget, and agents idle :data:`IDLE_LIMIT_TICKS`
ticks are served regardless (a share of them each tick; all of them at twice that), so nobody
starves; an agent that misses a tick keeps running its provisional plan (or, idle, waits a
frame). Lockstep and replay runs ignore the budget: they must repeat exactly.

Idle time (:meth:`PlanningSystem.between_frames`, called by ``PlannerPlugin.between_frames`` after
the frame is drawn): steps 1-4 again, for what waits, within the time the game offers and with
nothing regardless. A tick that follows a pass which did all it found leaves steps 1-4 to the
next pass (the frame's idle time does them, the tick stays short); after a pass cut short, or a
frame without one, the tick does them as above.

Fallback tiers: LLM → simplified prompt (on the event loop) → heuristic → emergency (here).
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import esper

from aiplanner import queries
from aiplanner.actions import ActionRegistry, Plan
from aiplanner.breaker import CircuitBreaker
from aiplanner.bridge import AsyncBridge
from aiplanner.cache import PlanCache
from aiplanner.components import ActionQueue, PlanState, PlanStatus, Tier
from aiplanner.config import PlannerConfig
from aiplanner.errors import BackendBusy, PlannerError, PlanRejected
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.snapshot import WorldSnapshot, quantised_key
from aiplanner.snapshot_system import SnapshotSystem
from aiplanner.strategies import Batch
from aiplanner.throughput import ServiceRate
from aiplanner.tick_budget import TickBudget
from aiplanner.validation import PlanView, validate_plan

__all__ = ["EVENT_PLAN_APPLIED", "FRESH_S", "PlanningSystem", "ReplayLog"]

FRESH_S: Final = 0.25
"""A waiting agent's snapshot and ranked candidates younger than this (plugin clock, seconds)
are sent as they are when its batch goes out; older ones are rebuilt first."""

EVENT_PLAN_APPLIED = "aiplanner_plan_applied"
"""esper event dispatched as ``(entity, plan, tier, tick)`` whenever a plan is applied."""

ReplayLog = Mapping[int, Sequence[tuple[int, Plan, Tier]]]
"""tick -> [(entity, plan, tier)]: the plans to apply at each tick, instead of planning.

A replay applies exactly these plans at these ticks and asks no backend; agents between plans wait
(busy with their provisional plan) as they did in the recorded run, so the run repeats exactly."""


IDLE_LIMIT_TICKS = 6
"""An agent the time budget has left without a plan this many ticks is served regardless (a
share of them each tick: :data:`OVERDUE_SHARE`); one left twice as long, at once."""
OVERDUE_SHARE = 3
"""Each tick, one in this many agents idle :data:`IDLE_LIMIT_TICKS` ticks or more (rounded up) is
served regardless of the budget, oldest first; all of those idle twice as long."""
_since = operator.itemgetter(0)
_since_and_id = operator.itemgetter(0, 1)  # idle agents: longest idle first, then by id

# The kinds of per-agent work the time budget weighs (TickBudget), in the order a tick does them.
_KINDS = (_NEEDS, _OUTCOMES, _LATE, _REFRESH) = tuple(range(4))


class PlanningSystem(esper.Processor):
    def __init__(
        self,
        config: Callable[[], PlannerConfig],
        snapshots: SnapshotSystem,
        *,
        bridge: AsyncBridge | None,
        breaker: CircuitBreaker,
        cache: PlanCache,
        metrics: Metrics,
        clock: Callable[[], float],
        replay: ReplayLog | None = None,
        on_settled: Callable[[float], None] | None = None,
    ) -> None:
        self._config = config
        self._snapshots = snapshots
        self._bridge = bridge
        self._breaker = breaker
        self.cache = cache
        self._metrics = metrics
        self._clock = clock
        self._replay = replay
        self._on_settled = on_settled
        self._heuristic = HeuristicPlanner(config().registry)
        self._known: set[int] = set()
        self._agents_seen: object = None  # queries.generation() when last adopted
        self._pending: list[int] = []  # REQUESTED, oldest first
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, entity) of askers
        # (tick queued, entity) past their deadline, waiting for their fallback
        self._late: deque[tuple[int, int]] = deque()
        self._idle_since: dict[int, int] = {}  # idle agents not served yet -> tick first seen
        # The tick's time budget: the plugin starts and ends the tick on it (without that, the
        # tick counts from the start of planning and the rest of it is not weighed).
        self.tick_budget = TickBudget(len(_KINDS))
        self._in_flight: dict[int, PlanRequest] = {}  # entity -> the request sent
        self._held: list[tuple[float, int, PlanOutcome]] = []  # lockstep: waiting for ready_at
        self._held_seq = 0
        self._backlog: list[PlanOutcome] = []  # arrived, left for the next tick by the budget
        self._backlog_tick = 0  # the tick the oldest of the backlog arrived
        self._budget = 0  # agents this tick may still handle (max_plans_per_tick)
        # Snapshot, ranked candidates and when they were made, per waiting agent: made once when
        # it asks, reused for its provisional plan and (if still fresh) for its request.
        self._candidates: dict[int, tuple[WorldSnapshot, tuple[Plan, ...], float]] = {}
        self._next_plan_id = 0
        # The rules' plan each waiting agent carries out meanwhile: (its queue's plan id, the
        # plan, its tier). Past the deadline it is the agent's fallback, as it stands.
        self._stopgaps: dict[int, tuple[int, Plan, Tier]] = {}
        # Busy seconds per answer of a backend serving many calls at once (admission, step 4).
        self._service = ServiceRate()
        self._between = False  # in between_frames: the frame's idle time, not a tick
        self._served_between = 0
        self._cut_between = False  # some work did not fit in this between_frames pass
        self._cleared_at = -1  # the last tick after which a between_frames pass did all it found

    # -- queries ---------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- the tick ----------------------------------------------------------------------------------
    def process(self, dt: float) -> None:
        cfg = self._config()
        tick = self._snapshots.tick
        now = self._clock()
        self._budget = cfg.max_plans_per_tick or len(self._known) + 1_000_000
        budget_ms = cfg.tick_budget_ms
        if cfg.lockstep or self._replay is not None:
            budget_ms = None
        self.tick_budget.open(now, budget_ms, self._waited(tick), tick)
        try:
            self._plan_tick(cfg, tick, now)
        finally:
            self.tick_budget.planning_done(self._clock())

    def between_frames(self, until: float) -> int:
        """Waiting per-agent work done in the frame's idle time, until ``until`` (plugin clock):
        what the next tick would otherwise do first. Returns how many agents' work was done.

        The same steps as a tick, in its order (agents that need a plan, arrived plans, deadline
        fallbacks, batches), each agent's work taken on only while it is expected to end by
        ``until`` (measured costs, :meth:`TickBudget.open_idle`), nothing regardless: the ticks
        keep the progress guarantee. Agents are read from this tick's index (positions as of the
        tick's start, health live), as the tick's own planning reads them.
        ``max_plans_per_tick`` caps each pass as it caps each tick. Does nothing before the
        first tick, in lockstep or replay runs (they must repeat exactly), or with no time.
        """
        cfg = self._config()
        now = self._clock()
        if cfg.lockstep or self._replay is not None or self._snapshots.tick == 0 or now >= until:
            return 0
        tick = self._snapshots.tick
        self._budget = cfg.max_plans_per_tick or len(self._known) + 1_000_000
        self.tick_budget.open_idle(until)
        self._between = True
        self._served_between = 0
        self._cut_between = False
        try:
            self._steps(cfg, tick, now)
        finally:
            self._between = False
        if not self._cut_between:
            self._cleared_at = tick
        if self._served_between:
            self._metrics.record_between_frames(self._served_between)
        return self._served_between

    def _waited(self, tick: int) -> list[float]:
        """Per kind of work, how many ticks its oldest waiting work has waited (-inf: none
        known). Idle agents not seen before count as just arrived: the scan that finds them is
        the step itself."""
        since = self._idle_since
        return [
            float(tick - min(since.values())) if since else 0.0,
            float(tick - self._backlog_tick) if self._backlog else -math.inf,
            float(tick - self._late[0][0]) if self._late else -math.inf,
            -math.inf,
        ]

    def _plan_tick(self, cfg: PlannerConfig, tick: int, now: float) -> None:
        self._adopt_new_agents(cfg)
        if self._replay is not None:
            self._apply_replay(tick, now)
            self._collect_needs(cfg, tick, now, replaying=True)
            self._renew_provisional(cfg, now)
            return
        # Lockstep: all submitted work answers before anything reads what the bridge thread
        # changes (outcomes, the breaker), so a run repeats exactly.
        bridge, limit_s = self._bridge, cfg.lockstep_timeout_s
        if cfg.lockstep and bridge is not None:
            # Also batches whose agents all left (expired, deleted): they still touch the breaker.
            busy = self._in_flight or bridge.active_batches
            if busy and not bridge.wait_idle(limit_s):
                raise PlannerError(
                    f"lockstep: the backend did not answer within {cfg.lockstep_timeout_s}s"
                )
            if self._on_settled is not None:
                self._on_settled(now)  # the bridge thread is idle: time may move on for it
        self._drop_stale_candidates(now)
        if self._cleared_at != tick - 1:
            self._steps(cfg, tick, now)
        # else: the last frame's idle time did all the work it found (between_frames), and the
        # next one will do this tick's: the tick leaves it there and stays short.
        if not self._in_flight:
            self._service.idle()

    def _steps(self, cfg: PlannerConfig, tick: int, now: float) -> None:
        """Steps 1-4 of the module docstring, in order: a tick's, or a pass between frames'."""
        self._collect_needs(cfg, tick, now)
        self._apply_outcomes(cfg, tick, now)
        self._renew_provisional(cfg, now)
        self._expire(tick, now)
        self._serve_late(tick, now)
        self._dispatch(cfg, tick, now)

    def _has_time(self, kind: int, *, regardless: bool = False) -> bool:
        """Whether one more agent's work of ``kind`` fits in this tick's time budget (measured
        either way: see :meth:`TickBudget.fits`). One agent a tick goes ahead regardless unless
        the longest-waiting kind already had one done (see :meth:`TickBudget.grant_to`), as does
        one that is ``regardless``."""
        budget = self.tick_budget
        if self._between:  # the frame's idle time: only what fits, and no cut counted
            if budget.fits(kind, self._clock()):
                self._served_between += 1
                return True
            self._cut_between = True
            return False
        if budget.fits(kind, self._clock()) or regardless:
            budget.served(kind)
            return True
        if budget.grant_to(kind):
            return True
        self._metrics.record_budget_cut()
        return False

    def adopt_new_agents(self) -> None:
        """Give new agents the components planning needs now (the plugin does it as its tick
        starts, before the snapshot system reads the agents: each component added makes every
        query be built again, :mod:`aiplanner.queries`' as esper's; the tick's planning step
        finds nothing left to do then)."""
        self._adopt_new_agents(self._config())

    def _adopt_new_agents(self, cfg: PlannerConfig) -> None:
        """Give every new agent (``cfg.components.agent``) the components planning needs; check
        its role."""
        components = cfg.components
        seen = queries.generation()
        if seen is self._agents_seen:
            return  # no entity or component came or went
        agent_type = components.agent
        for ent in sorted(queries.entities(agent_type) - self._known):  # the new ones, in C
            cfg.check_role(ent, components.role_of(esper.component_for_entity(ent, agent_type)))
            self._known.add(ent)
            if not esper.has_component(ent, PlanState):
                esper.add_component(ent, PlanState())
            if not esper.has_component(ent, ActionQueue):
                esper.add_component(ent, ActionQueue())
        self._agents_seen = seen  # not before: a refused role is refused again next tick

    def _state(self, ent: int) -> PlanState | None:
        if not esper.entity_exists(ent):
            return None
        return esper.try_component(ent, PlanState)

    # 2. outcomes -------------------------------------------------------------------------------
    def _apply_outcomes(self, cfg: PlannerConfig, tick: int, now: float) -> None:
        if self._bridge is None:
            return
        arrived: list[PlanOutcome] = []
        for outcome in self._bridge.drain():
            if cfg.lockstep and outcome.ready_at is not None and outcome.ready_at > now:
                self._held_seq += 1
                heapq.heappush(self._held, (outcome.ready_at, self._held_seq, outcome))
            else:
                arrived.append(outcome)
        while self._held and self._held[0][0] <= now:
            arrived.append(heapq.heappop(self._held)[2])
        arrived.sort(key=lambda o: o.entity)
        if not self._backlog:
            self._backlog_tick = tick
        ready, self._backlog = self._backlog + arrived, []  # left over from last tick go first
        for i, outcome in enumerate(ready):
            if self._budget <= 0 or not self._has_time(_OUTCOMES):
                self._backlog = ready[i:]  # time-slicing: the rest waits for the next tick
                return
            self._budget -= 1
            self._apply_outcome(cfg, outcome, tick, now)

    def _apply_outcome(
        self, cfg: PlannerConfig, outcome: PlanOutcome, tick: int, now: float
    ) -> None:
        ent = outcome.entity
        req = self._in_flight.get(ent)
        st = self._state(ent)
        if req is None or req.plan_id != outcome.plan_id or st is None:
            self._metrics.record_dropped()  # deleted entity, or an answer nobody waits for
            if req is not None and st is None:
                del self._in_flight[ent]
            return
        del self._in_flight[ent]
        if not isinstance(outcome.error, BackendBusy):  # a shed request took no service
            self._service.answered(now)
        if now > st.deadline:
            self._metrics.record_deadline_miss()
            self._fallback(ent, st, tick, now, "deadline")
            return
        if outcome.plan is None or outcome.tier is None:
            st.failures += 1
            self._fallback(ent, st, tick, now, type(outcome.error).__name__)
            return
        # Checked against what the agent sees now; a Sight finds its units only if the plan
        # names one (the same verdict as its full snapshot, at a fraction of the cost).
        snap = self._snapshots.sight(ent)
        if snap is None:
            self._metrics.record_dropped()
            return
        try:
            plan = validate_plan(outcome.plan, snap, cfg.registry)
        except PlanRejected as exc:  # the world moved on since the request
            self._metrics.record_invalid("stale_" + exc.reason)
            rescued = _first_valid(outcome.alternatives, snap, cfg.registry)
            if rescued is None:
                self._fallback(ent, st, tick, now, "stale")
                return
            self._metrics.record_rescued()
            # The model's next choice that still fits; not cached: it was not the decision for
            # the situation the request described.
            self._apply(ent, st, rescued, outcome.tier, tick, now)
            return
        if cfg.cache_enabled and outcome.tier in (Tier.LLM, Tier.LLM_SIMPLE):
            self.cache.put(self._cache_key(cfg, req.snapshot), plan)
        self._apply(ent, st, plan, outcome.tier, tick, now)

    # 3. deadlines -------------------------------------------------------------------------------
    def _expire(self, tick: int, now: float) -> None:
        """Cancel the calls of agents past their deadline and queue them for their fallback."""
        heap = self._deadlines
        expired: list[int] = []
        while heap and heap[0][0] < now:
            deadline, ent = heapq.heappop(heap)
            req = self._in_flight.get(ent)
            if req is not None:
                if req.deadline == deadline:
                    expired.append(ent)
                continue
            st = self._state(ent)  # an entry whose agent has moved on since is dropped
            if st is not None and st.status is PlanStatus.REQUESTED and st.deadline == deadline:
                expired.append(ent)
        if not expired:
            return
        gone = set(expired)
        waiting = {e for _, e in self._late}  # already queued for their fallback (_fallback)
        for ent in expired:
            self._in_flight.pop(ent, None)
            self._candidates.pop(ent, None)
            st = self._state(ent)
            if st is not None and ent not in waiting:
                self._metrics.record_deadline_miss()
                st.invalid_reason = "deadline"
                self._late.append((tick, ent))  # busy with its provisional plan until served
        self._pending = [e for e in self._pending if e not in gone]
        if self._held:
            self._held = [h for h in self._held if h[2].entity not in gone]
            heapq.heapify(self._held)
        if self._bridge is not None:
            self._bridge.cancel(gone)

    def _serve_late(self, tick: int, now: float) -> None:
        """The fallback for agents past their deadline, oldest deadline first, within budget."""
        late = self._late
        while late:
            st = self._state(late[0][1])
            if st is None or st.status not in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT):
                late.popleft()  # deleted, or given a plan some other way meanwhile
                continue
            if not self._has_time(_LATE):
                return
            ent = late.popleft()[1]
            self._fallback(ent, st, tick, now, st.invalid_reason or "deadline", defer=False)

    # 1. who needs a plan -------------------------------------------------------------------------
    def _collect_needs(
        self, cfg: PlannerConfig, tick: int, now: float, *, replaying: bool = False
    ) -> None:
        known = self._known
        holders, states = queries.column(PlanState)
        deleted = known - queries.entities(PlanState)
        if deleted:
            self._forget(deleted)
        llm_ok = self._bridge is not None and self._breaker.accepting()
        # First come, first served: an agent the budget left waiting keeps its place.
        since = self._idle_since
        idle_status = PlanStatus.IDLE  # a local: an Enum member on its class costs ~0.1 us
        idle = [
            (since.get(ent, tick), ent, st)
            for ent, st in zip(holders, states, strict=True)
            if st.status is idle_status and ent in known
        ]
        idle.sort(key=_since_and_id)
        since = self._idle_since = {ent: first for first, ent, _ in idle}
        exists = esper.entity_exists
        # Agents idle for IDLE_LIMIT_TICKS are served whatever the budget, a third of them (at
        # least one) a tick, and all of those idle twice that long: a budget below the demand
        # would otherwise leave agents standing for seconds (measured: 60% of 1000 agents idle
        # with a 2 ms budget), and serving them all at once made the slowest ticks (a burst of
        # agents idle together). Oldest first.
        overdue = bisect.bisect_right(idle, tick - IDLE_LIMIT_TICKS, key=_since)
        long_overdue = bisect.bisect_right(idle, tick - 2 * IDLE_LIMIT_TICKS, key=_since)
        regardless = long_overdue + -(-(overdue - long_overdue) // OVERDUE_SHARE)
        for _, ent, st in idle:
            if self._budget <= 0 or not self._has_time(_NEEDS, regardless=regardless > 0):
                break  # time-slicing: the others ask on the next tick
            regardless -= 1
            if not exists(ent):
                continue
            self._budget -= 1
            del since[ent]
            snap = self._snapshots.snapshot(ent)
            if snap is None:
                continue
            st.requested_tick = tick
            st.requested_at = now
            st.deadline = now + cfg.plan_deadline_s
            if replaying:  # wait (busy with the provisional plan) for the recorded plan
                st.status = PlanStatus.REQUESTED
                if cfg.provisional:
                    self._provisional(ent, snap, cfg, now)
                continue
            if cfg.model_teams is not None and snap.me.team not in cfg.model_teams:
                plan, tier = self._heuristic_plan(snap)  # a rules-only team: no model, no cache
                self._apply(ent, st, plan, tier, tick, now)
                continue
            if cfg.cache_enabled:
                key = self._cache_key(cfg, snap)
                cached = self.cache.get(key)
                if cached is not None:
                    try:
                        plan = validate_plan(cached, snap, cfg.registry)
                    except PlanRejected:
                        self.cache.discard(key)  # stale: not used
                    else:
                        self._apply(ent, st, plan, Tier.CACHE, tick, now)
                        continue
            if not llm_ok:
                self._fallback(
                    ent, st, tick, now, "no_backend" if self._bridge is None else "breaker"
                )
                continue
            st.status = PlanStatus.REQUESTED
            self._pending.append(ent)
            heapq.heappush(self._deadlines, (st.deadline, ent))
            if cfg.provisional:
                self._provisional(ent, snap, cfg, now)

    def _renew_provisional(self, cfg: PlannerConfig, now: float) -> None:
        """An agent whose provisional plan ran out (its steps done, or one failed: its target
        died) while its request is out gets the rules' plan for its situation now and waits on
        for the model's, as the rules' own agents get a new plan at once. Standing by until the
        answer came (seconds, with the engine busy) lost a squad its fights: in the live A/B
        battle at 10v10 a squad answered with the rules' own first choice 0.2-2 s late lost 10 of
        10 rounds to the rules' squad. The answer, when it comes, is checked against the
        situation then, as any (one that no longer fits gives way). Per-agent work as a need's
        (a snapshot, a rules pass), within the tick's budget; the rest waits a tick."""
        if not cfg.provisional or not self._stopgaps:
            return
        waiting = (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)
        for ent, stopgap in list(self._stopgaps.items()):
            st = self._state(ent)
            if st is None or st.status not in waiting:
                continue
            queue = esper.try_component(ent, ActionQueue)
            if queue is None or queue.plan_id != stopgap[0] or _runs(queue, stopgap):
                continue  # given another plan meanwhile, or still running this one
            if self._budget <= 0 or not self._has_time(_NEEDS):
                return
            snap = self._snapshots.snapshot(ent)
            if snap is None:
                continue
            self._budget -= 1
            self._provisional(ent, snap, cfg, now)

    def _ranked(
        self, ent: int, snap: WorldSnapshot, cfg: PlannerConfig, now: float
    ) -> tuple[Plan, ...]:
        """The rules' ranked candidates for this snapshot, computed once per agent and tick."""
        kept = self._candidates.get(ent)
        if kept is not None and kept[0] is snap:  # snapshots are memoised per tick
            return kept[1]
        ranked = self._heuristic.candidates(snap, cfg.max_candidates)
        self._candidates.pop(ent, None)  # re-inserted at the end: the dict stays oldest first
        self._candidates[ent] = (snap, ranked, now)
        return ranked

    def _drop_stale_candidates(self, now: float) -> None:
        """Forget snapshots and candidates older than FRESH_S: a request never sends them (it
        makes new ones), and an agent waiting seconds for its batch would keep them alive long
        enough to reach the garbage collector's oldest generation, whose passes are the longest.
        Oldest first in the dict, so this stops at the first fresh one."""
        candidates = self._candidates
        stale = []
        for ent, kept in candidates.items():
            if now - kept[2] <= FRESH_S:
                break
            stale.append(ent)
        for ent in stale:
            del candidates[ent]

    def _provisional(self, ent: int, snap: WorldSnapshot, cfg: PlannerConfig, now: float) -> None:
        """Keep the agent busy with the rules' plan until the model's plan arrives."""
        queue = esper.try_component(ent, ActionQueue)
        if queue is None:
            return
        ranked = self._ranked(ent, snap, cfg, now)  # the rules' best plan comes first
        plan, tier = (ranked[0], Tier.HEURISTIC) if ranked else self._heuristic_plan(snap)
        self._next_plan_id += 1
        queue.replace(list(plan.steps), self._next_plan_id)
        self._stopgaps[ent] = (self._next_plan_id, plan, tier)
        self._metrics.record_provisional()

    def _forget(self, deleted: set[int]) -> None:
        self._known -= deleted
        self._agents_seen = None  # an agent that only lost its PlanState is adopted again
        for ent in deleted:
            self._candidates.pop(ent, None)
            self._idle_since.pop(ent, None)
            self._stopgaps.pop(ent, None)
        self._pending = [e for e in self._pending if e not in deleted]
        cancelled = {e for e in deleted if self._in_flight.pop(e, None) is not None}
        if cancelled and self._bridge is not None:
            self._bridge.cancel(cancelled)

    # 4. batching --------------------------------------------------------------------------------
    def _dispatch(self, cfg: PlannerConfig, tick: int, now: float) -> None:
        if self._bridge is None or not self._pending:
            return
        info = self._bridge.backend.info
        # An engine that serves one call at a time gets one batch at a time: the others wait
        # here, busy with their provisional plan, and go out later with fresher snapshots
        # instead of queueing inside the engine until their deadline cancels them.
        serial = not info.parallel
        batch_limit = 1 if serial else max(1, info.max_concurrency)
        while self._pending and len(self._in_flight) < cfg.max_in_flight:
            if not cfg.lockstep and self._bridge.active_batches >= batch_limit:
                return
            oldest = self._state(self._pending[0])
            waited_ms = (now - oldest.requested_at) * 1000.0 if oldest else 0.0
            full = len(self._pending) >= cfg.max_batch_size
            if not (full or waited_ms >= cfg.max_wait_ms or cfg.lockstep):
                return
            limit = min(cfg.max_batch_size, cfg.max_in_flight - len(self._in_flight))
            if cfg.lockstep:
                take = self._pending[:limit]
                self._pending = self._pending[len(take) :]
            else:
                take = self._select_in_time(limit, tick, now, serial=serial)
                if not take:
                    return
            requests: list[PlanRequest] = []
            out_of_time = False
            for i, ent in enumerate(take):
                st = self._state(ent)
                if st is None:
                    continue
                kept = self._candidates.pop(ent, None)
                if kept is not None and now - kept[2] <= FRESH_S:
                    snap, ranked = kept[0], kept[1]  # made when it asked: not made twice
                else:
                    if not self._has_time(_REFRESH, regardless=not requests):
                        self._pending[:0] = take[i:]  # these go out on a later tick
                        out_of_time = True
                        break
                    fresh = self._snapshots.snapshot(ent)
                    if fresh is None:
                        continue
                    snap, ranked = fresh, self._ranked(ent, fresh, cfg, now)
                    self._candidates.pop(ent, None)
                self._next_plan_id += 1
                st.plan_id = self._next_plan_id
                st.status = PlanStatus.IN_FLIGHT
                req = PlanRequest(
                    entity=ent,
                    plan_id=st.plan_id,
                    snapshot=snap,
                    candidates=ranked,
                    requested_tick=st.requested_tick,
                    requested_at=st.requested_at,
                    deadline=st.deadline,
                    budget_s=max(0.0, st.deadline - now),
                )
                self._in_flight[ent] = req
                requests.append(req)
            if requests:
                self._bridge.submit(
                    Batch(
                        tuple(requests),
                        cfg.strategy,
                        cfg.mode,
                        cfg.prompt_tier,
                        cfg.simplified_retry,
                        tick,
                    )
                )
                self._service.busy(now)
            if out_of_time:
                return

    def _select_in_time(self, limit: int, tick: int, now: float, *, serial: bool) -> list[int]:
        """Up to ``limit`` waiting agents whose plan can arrive before their deadline.

        One-call-at-a-time engine: the k-th agent of a sequential batch waits for k calls, each
        the recent median call time. A backend serving many calls at once: the k-th agent sent
        now waits behind the ``n`` already in flight, ``(n + k)`` times the busy seconds per
        answer it was measured to take (:class:`~aiplanner.throughput.ServiceRate`). An agent
        joins only if its plan can arrive in time; one that cannot make even a plan of its own
        (less time left than the median call's latency, or than one answer's busy time) gets the
        fallback now instead of burning engine time (and delaying the others), and instead of a
        call that would time out and count against the circuit breaker (measured: at 1000
        agents such timeouts opened it); the rest keep their provisional plan and wait for room.
        Before anything is measured, all go.

        Oldest first, and only until ``limit`` are chosen: the agents after them asked later,
        so (deadlines following the order of asking) they have at least as much time left and
        keep their place unexamined; one that does not (the deadline setting changed since)
        meets its deadline in :meth:`_expire` as any waiting agent does. The work is the
        batch's, not the queue's (measured in ``whole_tick.py``'s 1000-agent battle: ~500
        agents waiting in the slowest ticks).
        """
        alone_s = self._metrics.call_s.percentile(50) or 0.0  # one call's own latency
        if serial:
            call_s, ahead = alone_s, 0
        else:
            call_s, ahead = self._service.per_plan_s or 0.0, len(self._in_flight)
        chosen: list[int] = []
        keep: list[int] = []
        pending = self._pending
        for i, ent in enumerate(pending):
            if len(chosen) >= limit:
                keep += pending[i:]
                break
            st = self._state(ent)
            if st is None:
                continue
            left = st.deadline - now
            if left < alone_s or left < call_s:  # not even a call of its own would make it
                self._metrics.record_deadline_miss()
                self._fallback(ent, st, tick, now, "no_time")
            elif len(chosen) < limit and left >= (ahead + len(chosen) + 1) * call_s:
                chosen.append(ent)
            else:
                keep.append(ent)
        self._pending = keep
        return chosen

    # -- applying ---------------------------------------------------------------------------------
    def _fallback(
        self, ent: int, st: PlanState, tick: int, now: float, why: str, *, defer: bool = True
    ) -> None:
        """Heuristic plan, or the emergency plan if even that does not validate.

        An agent still waiting on its request (busy with its provisional plan) once the tick's
        time budget is spent is queued for :meth:`_serve_late` instead (``why`` kept as its
        ``invalid_reason``): a burst of fallbacks (a batch past its deadline, many agents with
        no time left) is spread over ticks rather than computed in one.

        An agent still carrying out the provisional plan it got when it asked keeps that plan as
        its fallback, as it stands (no new snapshot, no rules pass, no restart of its step): it
        is the rules' plan, a few seconds old at most, and validated as it runs."""
        stopgap = self._stopgaps.pop(ent, None)
        if stopgap is not None and st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT):
            queue = esper.try_component(ent, ActionQueue)
            if queue is not None and _runs(queue, stopgap):
                st.invalid_reason = why
                self._adopt(ent, st, queue.plan_id, stopgap[1], stopgap[2], tick, now)
                return
        if (
            defer
            and st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)
            and self.tick_budget.spent(self._clock())
        ):
            st.invalid_reason = why
            if not self._between:
                self._metrics.record_budget_cut()
            self._late.append((tick, ent))
            return
        snap = self._snapshots.snapshot(ent)
        if snap is None:
            return
        st.invalid_reason = why
        plan, tier = self._heuristic_plan(snap)
        self._apply(ent, st, plan, tier, tick, now)

    def _heuristic_plan(self, snap: WorldSnapshot) -> tuple[Plan, Tier]:
        registry = self._config().registry
        try:
            return validate_plan(self._heuristic.plan(snap), snap, registry), Tier.HEURISTIC
        except PlanRejected:
            return self._heuristic.emergency(snap), Tier.EMERGENCY

    def _apply(
        self, ent: int, st: PlanState, plan: Plan, tier: Tier, tick: int, now: float
    ) -> None:
        """Put ``plan`` in the agent's queue from its first step, unless it is the provisional
        plan the agent is running (the model agreed with the rules, or the fallback is the same
        plan): that one carries on where it is, now as ``tier``'s. Restarting it would repeat the
        steps already done and lose the current step's progress (a reload, a scan)."""
        queue = esper.try_component(ent, ActionQueue)
        if queue is None:
            return
        stopgap = self._stopgaps.get(ent)
        if stopgap is not None and _runs(queue, stopgap) and stopgap[1].steps == plan.steps:
            self._adopt(ent, st, queue.plan_id, plan, tier, tick, now)
            return
        self._next_plan_id += 1
        queue.replace(list(plan.steps), self._next_plan_id)
        self._adopt(ent, st, self._next_plan_id, plan, tier, tick, now)

    def _adopt(
        self, ent: int, st: PlanState, plan_id: int, plan: Plan, tier: Tier, tick: int, now: float
    ) -> None:
        """Make ``plan``, already in the agent's queue as ``plan_id``, its plan."""
        self._stopgaps.pop(ent, None)
        # Latency is measured for agents that waited on the backend; a cache hit or an
        # immediate rules plan would only drag the percentiles towards zero.
        waited = st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT)
        st.plan_id = plan_id
        st.status = PlanStatus.EXECUTING
        st.tier = tier
        self._metrics.record_plan(tier.value, max(0.0, now - st.requested_at) if waited else None)
        esper.dispatch_event(EVENT_PLAN_APPLIED, ent, plan, tier, tick)

    def _apply_replay(self, tick: int, now: float) -> None:
        assert self._replay is not None
        for ent, plan, tier in sorted(self._replay.get(tick, ()), key=lambda r: r[0]):
            st = self._state(ent)
            if st is not None:
                st.requested_at = now
                self._apply(ent, st, plan, tier, tick, now)

    def _cache_key(self, cfg: PlannerConfig, snap: WorldSnapshot) -> tuple[object, ...]:
        return (cfg.registry.version, cfg.mode, quantised_key(snap, cfg.cache_cell))

    def abandon_all(self) -> None:
        """Forget every pending and in-flight request (the plugin is closing)."""
        for ent in [*self._pending, *self._in_flight, *(e for _, e in self._late)]:
            st = self._state(ent)
            if st is not None and st.status in (PlanStatus.REQUESTED, PlanStatus.IN_FLIGHT):
                st.status = PlanStatus.IDLE
        self._pending.clear()
        self._in_flight.clear()
        self._late.clear()
        self._deadlines.clear()
        self._idle_since.clear()
        self._held.clear()
        self._backlog.clear()
        self._candidates.clear()
        self._stopgaps.clear()


def _runs(queue: ActionQueue, stopgap: tuple[int, Plan, Tier]) -> bool:
    """Whether ``queue`` is still carrying out the provisional plan ``stopgap``."""
    return queue.plan_id == stopgap[0] and not queue.done


def _first_valid(plans: Sequence[Plan], snap: PlanView, registry: ActionRegistry) -> Plan | None:
    """The first of ``plans`` that fits ``snap`` (validated again), or None."""
    for candidate in plans:
        try:
            return validate_plan(candidate, snap, registry)
        except PlanRejected:
            continue
    return None
