"""AsyncBridge: the game thread never waits for the event loop; results stream per agent."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest
from scenario import make_request

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends.base import BackendInfo, CompletionRequest, Finished, StreamEvent, TextDelta
from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.breaker import CircuitBreaker
from aiplanner.bridge import AsyncBridge
from aiplanner.errors import BridgeClosed, ConfigError
from aiplanner.metrics import Metrics
from aiplanner.phrasing import CONTENT_FREE
from aiplanner.requests import PlanOutcome, PlanRequest
from aiplanner.strategies import Batch


def _bridge(backend: object, max_hold_s: float = 0.05) -> AsyncBridge:
    return AsyncBridge(
        backend,  # type: ignore[arg-type]
        registry=DEFAULT_REGISTRY,
        metrics=Metrics(),
        breaker=CircuitBreaker(),
        max_hold_s=max_hold_s,
    )


def _batch(*entities: int, strategy: str = "sequential") -> Batch:
    reqs: list[PlanRequest] = [make_request(e) for e in entities]  # type: ignore[misc]
    return Batch(tuple(reqs), strategy, "guided", "compressed", False, 0)


class LoopBlockingBackend:
    """Misbehaves on purpose: blocks the event loop thread itself until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    @property
    def info(self) -> BackendInfo:
        return BackendInfo("blocking")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        self.entered.set()
        self.release.wait(30)  # synchronous: the whole loop is stuck here
        yield TextDelta('{"c":0}')
        yield Finished()

    async def aclose(self) -> None:
        pass


def test_submit_and_cancel_never_wait_for_a_stuck_loop() -> None:
    backend = LoopBlockingBackend()
    bridge = _bridge(backend)
    bridge.start()
    try:
        bridge.submit(_batch(1))
        assert backend.entered.wait(10)  # the loop is now stuck inside the backend
        returned = threading.Event()

        def game_thread() -> None:
            bridge.submit(_batch(2))
            bridge.cancel({1})
            bridge.drain()
            returned.set()

        t = threading.Thread(target=game_thread, daemon=True)
        t.start()
        # If submit/cancel waited for the loop, this would deadlock until release.
        assert returned.wait(10), "the game thread waited for the event loop"
    finally:
        backend.release.set()
        bridge.close()


def test_outcomes_arrive_one_agent_at_a_time() -> None:
    gate = threading.Event()
    seen_first = threading.Event()

    def responder(call: CompletionRequest) -> str | None:
        if call.agents == (2,):
            # The second agent's call is held until the test has drained the first plan.
            assert seen_first.wait(10)
        return None

    backend = ScriptedBackend(responder, gate=gate, parallel=False, max_concurrency=1)
    bridge = _bridge(backend)
    bridge.start()
    try:
        bridge.submit(_batch(1, 2))
        gate.set()
        first: list[int] = []
        for _ in range(2000):
            first = [o.entity for o in bridge.drain()]
            if first:
                break
            threading.Event().wait(0.005)
        assert first == [1]  # agent 1's plan is out while agent 2's call is still open
        seen_first.set()
        assert bridge.wait_idle(10)
        assert [o.entity for o in bridge.drain()] == [2]
    finally:
        seen_first.set()
        bridge.close()


def test_bookkeeping_stays_bounded_by_the_work_in_flight() -> None:
    bridge = _bridge(ScriptedBackend())
    bridge.start()
    try:
        for i in range(50):
            bridge.submit(_batch(1000 + i))
            bridge.cancel({1000 + i, 5_000_000 + i})  # the second id was never submitted
        assert bridge.wait_idle(10)
        # A soak must not grow these: only entities of running batches are tracked.
        assert bridge._unwanted == set() and not bridge._in_batches
    finally:
        bridge.close()


class EndWatchBackend:
    """A gated, parallel ScriptedBackend whose calls say when they start and when they end."""

    def __init__(self, agents: tuple[int, ...]) -> None:
        self.gate = threading.Event()
        self.started = {a: threading.Event() for a in agents}
        self.ended = {a: threading.Event() for a in agents}
        self.inner = ScriptedBackend(
            self._responder, gate=self.gate, parallel=True, max_concurrency=4
        )

    def _responder(self, call: CompletionRequest) -> None:
        self.started[call.agents[0]].set()

    @property
    def info(self) -> BackendInfo:
        return self.inner.info

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self.inner.stream(request):
                yield event
        finally:
            self.ended[request.agents[0]].set()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _drain_until(bridge: AsyncBridge, entities: set[int]) -> dict[int, PlanOutcome]:
    got: dict[int, PlanOutcome] = {}
    for _ in range(2000):  # deadlock guard: 10 s of 5 ms waits
        got.update((o.entity, o) for o in bridge.drain())
        if entities <= set(got):
            break
        threading.Event().wait(0.005)
    return got


@pytest.mark.parametrize("victim", [1, 2, 3])
def test_cancelling_one_agent_of_overlapping_batches_ends_its_call_at_once(victim: int) -> None:
    # Batch A (agents 1 and 2, one call each) is open when batch B (agent 3) starts: on a
    # parallel backend their calls overlap. Every call's cancel scope must stay reachable.
    backend = EndWatchBackend((1, 2, 3))
    bridge = _bridge(backend)
    bridge.start()
    try:
        bridge.submit(_batch(1, 2, strategy="concurrent"))
        assert backend.started[1].wait(10) and backend.started[2].wait(10)
        bridge.submit(_batch(3, strategy="concurrent"))
        assert backend.started[3].wait(10)
        bridge.cancel({victim})
        # The gate stays shut and every budget is 5 s: only the cancellation can end the call
        # before this guard does.
        assert backend.ended[victim].wait(4), f"agent {victim}'s call ran on after its cancel"
        others = {1, 2, 3} - {victim}
        assert not any(backend.ended[a].is_set() for a in others)
        backend.gate.set()
        assert bridge.wait_idle(10)
        got = _drain_until(bridge, others)
        assert all(got[a].ok for a in others)
        assert victim not in got or not got[victim].ok
    finally:
        backend.gate.set()
        bridge.close()


def test_a_lockstep_bridge_releases_packed_plans_with_their_ready_at() -> None:
    # Lockstep runs hold each plan until the plugin clock reaches its ready_at: a packed call's
    # simulated latency must reach every one of its agents.
    backend = ScriptedBackend(virtual_time=True, latency_s=0.5)
    bridge = AsyncBridge(
        backend, registry=DEFAULT_REGISTRY, metrics=Metrics(), breaker=CircuitBreaker(), serial=True
    )
    bridge.start()
    try:
        bridge.submit(_batch(1, 2, 3, strategy="packed"))
        assert bridge.wait_idle(10)
        got = bridge.drain()
        assert len(backend.calls) == 1 and sorted(o.entity for o in got) == [1, 2, 3]
        assert all(o.ok for o in got)
        assert {o.ready_at for o in got} == {0.5}  # requested at 0.0, 0.5 s of virtual latency
        assert all(o.usage.prompt_tokens for o in got)
    finally:
        bridge.close()


def test_submitting_to_a_bridge_that_is_not_running_raises_bridge_closed() -> None:
    bridge = _bridge(ScriptedBackend())
    with pytest.raises(BridgeClosed):
        bridge.submit(_batch(1))
    bridge.start()
    bridge.close()
    with pytest.raises(RuntimeError):  # BridgeClosed is a RuntimeError too
        bridge.submit(_batch(1))


class CalledBackend(ScriptedBackend):
    """A ScriptedBackend that says when its first call has begun."""

    def __init__(self) -> None:
        self.called = threading.Event()
        super().__init__(self._responder)

    def _responder(self, call: CompletionRequest) -> None:
        self.called.set()


def test_a_held_loop_starts_no_work_until_released() -> None:
    backend = CalledBackend()
    bridge = _bridge(backend, max_hold_s=60.0)  # only release() can let it go on
    bridge.start()
    try:
        bridge.hold()  # the game's tick begins
        bridge.submit(_batch(1))  # wakes the loop: it must stop at its next turn
        assert not backend.called.wait(0.3), "the loop ran a batch during the tick"
        bridge.release()
        assert backend.called.wait(10)
        assert _drain_until(bridge, {1})[1].ok
    finally:
        bridge.close()


def test_a_hold_that_is_never_released_stops_the_loop_no_longer_than_max_hold() -> None:
    backend = CalledBackend()
    bridge = _bridge(backend, max_hold_s=0.02)
    bridge.start()
    try:
        bridge.hold()  # a tick that raised before its end, say
        bridge.submit(_batch(1))
        assert _drain_until(bridge, {1})[1].ok  # every turn waits 20 ms at most
    finally:
        bridge.close()


def test_ticks_back_to_back_still_let_the_loop_on_after_each_release() -> None:
    # A game that never sleeps between ticks: the gate opens for an instant only. The loop,
    # waiting through a hold, goes on once it has opened, even if the next tick has begun.
    backend = CalledBackend()
    bridge = _bridge(backend, max_hold_s=60.0)
    bridge.start()
    try:
        bridge.hold()
        bridge.submit(_batch(1))
        got: list[PlanOutcome] = []
        for _ in range(200_000):  # deadlock guard: the 60 s hold is never what lets it on
            bridge.release()
            bridge.hold()
            got += bridge.drain()
            if got:
                break
        assert [o.entity for o in got] == [1] and got[0].ok
    finally:
        bridge.release()
        bridge.close()


def test_a_lockstep_bridge_is_never_held_and_wait_idle_and_close_release_the_loop() -> None:
    backend = ScriptedBackend(virtual_time=True)
    lockstep = AsyncBridge(
        backend,
        registry=DEFAULT_REGISTRY,
        metrics=Metrics(),
        breaker=CircuitBreaker(),
        serial=True,
        max_hold_s=60.0,
    )
    lockstep.start()
    try:
        lockstep.hold()
        lockstep.submit(_batch(1))
        assert _drain_until(lockstep, {1})[1].ok  # answered with the hold still in place
    finally:
        lockstep.close()
    bridge = _bridge(ScriptedBackend(), max_hold_s=60.0)
    bridge.start()
    bridge.hold()  # a tick that waits for the bridge (a lockstep wait, the plugin closing)
    bridge.submit(_batch(1))
    assert bridge.wait_idle(10)  # opens the gate: no deadlock until the hold's limit
    bridge.hold()
    closer = threading.Thread(target=bridge.close, daemon=True)
    closer.start()
    closer.join(10)
    assert not closer.is_alive() and not bridge.running


def test_max_hold_must_not_be_negative() -> None:
    with pytest.raises(ConfigError):
        _bridge(ScriptedBackend(), max_hold_s=-1.0)


@pytest.mark.parametrize("memo", [True, False])
def test_a_bridge_with_a_memo_decides_a_situation_scored_before_without_a_call(memo: bool) -> None:
    backend = ScriptedBackend(scoring=True)
    metrics = Metrics()
    bridge = AsyncBridge(
        backend, registry=DEFAULT_REGISTRY, metrics=metrics, breaker=CircuitBreaker(), memo=memo
    )
    bridge.start()
    try:
        for _ in range(2):  # the same agent in the same situation, asking twice
            bridge.submit(_batch(1, strategy="concurrent"))
            assert bridge.wait_idle(10)
            (out,) = bridge.drain()
            assert out.ok
        situations = [c for c in backend.score_calls if c.messages[-1].content != CONTENT_FREE]
        assert len(situations) == (1 if memo else 2)
        assert metrics.stats()["remembered"] == (1 if memo else 0)
    finally:
        bridge.close()
