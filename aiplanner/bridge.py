"""AsyncBridge: an anyio event loop on a background thread, between the game and the backend.

The game thread calls :meth:`submit` (non-blocking: the batch is handed to the loop with
``call_soon_threadsafe`` underneath) and :meth:`drain` (non-blocking: whatever outcomes have
arrived).
Outcomes are pushed one agent at a time, as each completes, never only at the end of a batch.
Each agent's budget counts from its batch's submission, so time spent queued counts against it.
``serial=True`` is for lockstep runs: one batch at a time in submission order, and a packed call's
plans released at its end with the call's ``ready_at`` (the game waits for whole batches anyway).
:meth:`close` cancels everything in flight, closes the backend and joins the loop thread.

The loop yields to the game's tick. Python threads share one GIL, so any Python the loop thread
runs while the game thread is inside ``esper.process`` (building prompts, parsing answers,
waking up for a timer or a socket) is time the tick waits, up to ``sys.getswitchinterval()``
(5 ms) per hand-over: measured at 100 agents, the slowest ticks were the game thread's own
4-5 ms of CPU plus 2-7 ms of the bridge's, whatever the switch interval (5, 1 or 0.5 ms). So the
plugin's first processor calls :meth:`hold` and its last :meth:`release`; while held, the loop
stops at its next turn (after the selector returns, before it runs any callback) and goes on
once the tick is over, in the frame's idle time. A hold never stops the loop longer than
``max_hold_s``, and a loop that has waited through one hold goes on after the next release
even if another tick has begun, so a game that ticks back to back still gets its plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import queue
import selectors
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Final

import anyio
from anyio import CancelScope
from anyio.from_thread import BlockingPortal, start_blocking_portal

from aiplanner.actions import ActionRegistry
from aiplanner.backends.base import Backend
from aiplanner.breaker import CircuitBreaker
from aiplanner.decision import DEFAULT_RANK_PRIOR, ScoreMemo
from aiplanner.errors import BridgeClosed, ConfigError, PlannerError
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanOutcome
from aiplanner.strategies import Batch, PlanContext, run_batch

__all__ = ["AsyncBridge"]


class AsyncBridge:
    def __init__(
        self,
        backend: Backend,
        *,
        registry: ActionRegistry,
        metrics: Metrics,
        breaker: CircuitBreaker,
        max_response_bytes: int = 65_536,
        temperature: float = 0.0,
        seed: int = 0,
        serial: bool = False,
        guided_decision: str = "score",
        rank_prior: float = DEFAULT_RANK_PRIOR,
        calibrated: bool = True,
        memo: bool = False,
        max_hold_s: float = 0.05,
    ) -> None:
        self.backend = backend
        self._gate = _TickGate(max_hold_s)
        self._serial = serial
        self._serial_lock: anyio.Lock | None = None
        self._outbox: queue.SimpleQueue[PlanOutcome] = queue.SimpleQueue()
        self._metrics = metrics
        self._ctx = PlanContext(
            backend=backend,
            registry=registry,
            metrics=metrics,
            breaker=breaker,
            emit=self._emit,
            wanted=self._wanted,
            scope=self._scope,
            max_response_bytes=max_response_bytes,
            temperature=temperature,
            seed=seed,
            guided_decision=guided_decision,
            rank_prior=rank_prior,
            calibrated=calibrated,
            memo=ScoreMemo() if memo else None,
            lockstep=serial,
        )
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        # Loop-thread state (touched only on the loop thread). Batches and calls draw their
        # scope keys from one counter, so an open call's key is never handed out again.
        self._scopes: dict[int, tuple[CancelScope, frozenset[int]]] = {}
        self._keys = itertools.count()
        # Shared state, under the lock:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._unwanted: set[int] = set()  # only entities of running batches: bounded
        self._in_batches: Counter[int] = Counter()
        self._active = 0
        # Game thread -> loop: an inbox and a wake-up that never waits for the loop.
        self._inbox: queue.SimpleQueue[tuple[Batch, float] | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: anyio.Event | None = None

    # -- lifecycle (game thread) ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._portal is not None

    def start(self) -> None:
        if self._portal is not None:
            return
        gate = self._gate
        self._portal_cm = start_blocking_portal(
            backend="asyncio",
            backend_options={
                "loop_factory": lambda: asyncio.SelectorEventLoop(_GatedSelector(gate))
            },
        )
        self._portal = self._portal_cm.__enter__()
        self._loop = self._portal.call(self._attach)
        self._portal.start_task_soon(self._dispatcher)

    def close(self, timeout_s: float = 2.0) -> None:
        """Cancel work in flight, close the backend and stop the loop thread. Idempotent."""
        portal, cm = self._portal, self._portal_cm
        if portal is None or cm is None:
            return
        self._portal = None
        self._portal_cm = None
        self._gate.open()  # the game thread now waits for the loop: it must not wait for us
        try:
            portal.call(self._shutdown, timeout_s)
        finally:
            with contextlib.suppress(Exception):
                portal.call(portal.stop, True)
            cm.__exit__(None, None, None)

    # -- game thread API -----------------------------------------------------------------------
    def hold(self) -> None:
        """The game thread begins its tick: the loop waits at its next turn until :meth:`release`
        (at most ``max_hold_s``). Never blocks. A lockstep (``serial``) bridge is never held:
        the game waits for its work there anyway, and must find it done when it looks."""
        if not self._serial:
            self._gate.close()

    def release(self) -> None:
        """The game thread's tick is over: the loop goes on. Never blocks."""
        self._gate.open()

    def submit(self, batch: Batch) -> None:
        """Hand a batch to the loop. Never blocks; raises :class:`BridgeClosed` when not running."""
        portal = self._portal
        if portal is None:
            raise BridgeClosed("the bridge is not running")
        with self._lock:
            self._active += 1
            for r in batch.requests:
                self._unwanted.discard(r.entity)
                self._in_batches[r.entity] += 1
        self._inbox.put((batch, self._ctx.clock()))
        self._notify()

    def cancel(self, entities: set[int]) -> None:
        """The game no longer needs plans for these entities; stop their calls where possible."""
        if not entities:
            return
        with self._lock:
            self._unwanted |= {e for e in entities if e in self._in_batches}
        if self._portal is not None:
            self._inbox.put(None)  # None: re-check which calls are still wanted
            self._notify()

    def cancel_all(self) -> None:
        """Nobody needs any plan in flight any more (the plugin was uninstalled)."""
        self._gate.open()  # no tick of ours may follow to open it
        with self._lock:
            everyone = set(self._in_batches)
        self.cancel(everyone)

    def _notify(self) -> None:
        # call_soon_threadsafe only queues a callback: the game thread never waits for the loop
        # (a portal's start_task_soon would wait until the loop had started the task).
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._set_wake)

    def drain(self) -> list[PlanOutcome]:
        out: list[PlanOutcome] = []
        while True:
            try:
                out.append(self._outbox.get_nowait())
            except queue.Empty:
                return out

    @property
    def active_batches(self) -> int:
        with self._lock:
            return self._active

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no batch is running (lockstep mode only). Returns False on timeout."""
        self._gate.open()  # the tick waits for the loop here: let it run
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout=timeout_s)

    # -- loop thread -------------------------------------------------------------------------
    async def _attach(self) -> asyncio.AbstractEventLoop:
        self._wake = anyio.Event()
        return asyncio.get_running_loop()

    def _set_wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _dispatcher(self) -> None:
        """Start a task per submitted batch; re-check cancellations. Runs until shutdown."""
        async with anyio.create_task_group() as tg:
            while True:
                assert self._wake is not None
                await self._wake.wait()
                self._wake = anyio.Event()
                recheck = False
                while True:
                    try:
                        item = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        recheck = True
                    else:
                        tg.start_soon(self._run, *item)
                if recheck:
                    await self._cancel_scopes()

    def _wanted(self, entity: int) -> bool:
        with self._lock:
            return entity not in self._unwanted

    def _emit(self, outcome: PlanOutcome) -> None:
        self._outbox.put(outcome)

    async def _run(self, batch: Batch, submitted_at: float) -> None:
        batch_id = next(self._keys)
        entities = frozenset(r.entity for r in batch.requests)
        submitted = time.monotonic()
        first = True
        emit = self._ctx.emit

        def emit_first(outcome: PlanOutcome) -> None:
            nonlocal first
            if first and outcome.ok:
                first = False
                self._metrics.record_first_plan(time.monotonic() - submitted)
            emit(outcome)

        ctx = dataclasses.replace(self._ctx, emit=emit_first)  # prompt/codec caches stay shared
        if self._serial:
            # Lockstep: a batch runs at the instant it was submitted. Budgets are not spent by
            # how long the thread took to get to it (a virtual-time backend models latency
            # with ``ready_at``), so a retry never depends on the machine's speed.
            ctx = dataclasses.replace(ctx, clock=functools.partial(float, submitted_at))
        try:
            with anyio.CancelScope() as scope:
                self._scopes[batch_id] = (scope, entities)
                try:
                    if self._serial:
                        # One batch at a time, in submission order: breaker and retry decisions
                        # then do not depend on how threads happened to interleave.
                        if self._serial_lock is None:
                            self._serial_lock = anyio.Lock()
                        async with self._serial_lock:
                            await run_batch(ctx, batch, started=submitted_at)
                    else:
                        await run_batch(ctx, batch, started=submitted_at)
                except (
                    PlannerError
                ) as exc:  # pragma: no cover - strategies turn these into outcomes
                    for r in batch.requests:
                        emit(PlanOutcome(r.entity, r.plan_id, None, None, exc))
        finally:
            self._scopes.pop(batch_id, None)
            with self._idle:
                self._active -= 1
                for r in batch.requests:
                    self._in_batches[r.entity] -= 1
                    if self._in_batches[r.entity] <= 0:
                        del self._in_batches[r.entity]
                        self._unwanted.discard(r.entity)
                self._idle.notify_all()

    @contextlib.contextmanager
    def _scope(self, entities: frozenset[int]) -> Iterator[CancelScope]:
        """A cancel scope for one call, cancelled once none of ``entities`` is wanted any more."""
        key = next(self._keys)
        with anyio.CancelScope() as scope:
            self._scopes[key] = (scope, entities)
            try:
                yield scope
            finally:
                self._scopes.pop(key, None)

    async def _cancel_scopes(self) -> None:
        with self._lock:
            unwanted = set(self._unwanted)
        for scope, entities in list(self._scopes.values()):
            if entities <= unwanted:
                scope.cancel()

    async def _shutdown(self, timeout_s: float) -> None:
        for scope, _ in list(self._scopes.values()):
            scope.cancel()
        with anyio.move_on_after(timeout_s):
            while self._scopes:
                await anyio.sleep(0.005)
            await self.backend.aclose()


class _TickGate:
    """Open, or closed while the game thread runs its tick (see the module docstring).

    The game thread closes and opens it (``threading.Event``: never blocks); the loop thread
    waits in :meth:`wait` while it is closed, for at most ``max_hold_s`` at a time, and goes on
    once it has opened even if it has closed again since (a tick right after the last one)."""

    SLICE_S: Final = 0.002

    def __init__(self, max_hold_s: float) -> None:
        if not max_hold_s >= 0:
            raise ConfigError(f"max_hold_s must be >= 0, got {max_hold_s}")
        self._max_hold_s = max_hold_s
        self._open = threading.Event()
        self._open.set()
        self._openings = 0  # written by the game thread only
        self._pass_until = 0.0  # loop thread only: see wait()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._openings += 1
        self._open.set()

    def wait(self) -> None:
        """Loop thread: return once the gate is open, has opened since the call, or has held
        the loop ``max_hold_s``. Waiting releases the GIL. Let on while a tick may be running
        (ticks back to back, or a hold past its limit), the loop keeps going for
        ``SLICE_S`` before it looks at the gate again: enough for a few turns, so the plans
        of a game that never idles still flow, at a bounded cost to the tick it lands in."""
        is_open = self._open
        if is_open.is_set():
            return
        now = time.monotonic()
        if now < self._pass_until:
            return
        seen = self._openings
        until = now + self._max_hold_s
        while not is_open.is_set() and self._openings == seen:
            left = until - time.monotonic()
            if left <= 0:
                break
            is_open.wait(left)
        if not is_open.is_set():
            self._pass_until = time.monotonic() + self.SLICE_S


class _GatedSelector(selectors.DefaultSelector):
    """The loop's selector: after each poll, wait at the tick gate before the loop runs the
    callbacks of what the poll found (the one place every turn of an asyncio loop passes)."""

    def __init__(self, gate: _TickGate) -> None:
        super().__init__()
        self._gate = gate

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(timeout)
        self._gate.wait()
        return ready
