"""AsyncBridge: the game thread never waits for the event loop; results stream per agent."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

from scenario import make_request

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends.base import BackendInfo, CompletionRequest, Finished, StreamEvent, TextDelta
from aiplanner.backends.scripted import ScriptedBackend
from aiplanner.breaker import CircuitBreaker
from aiplanner.bridge import AsyncBridge
from aiplanner.metrics import Metrics
from aiplanner.requests import PlanRequest
from aiplanner.strategies import Batch


def _bridge(backend: object) -> AsyncBridge:
    return AsyncBridge(
        backend,  # type: ignore[arg-type]
        registry=DEFAULT_REGISTRY,
        metrics=Metrics(),
        breaker=CircuitBreaker(),
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
