"""The outcome teacher as a planner in a running game: a scoring backend whose scores are the
candidates' rollout scores.

:class:`TeacherBackend` is a scoring backend (guided mode, ``guided_decision="score"``): for a
request it answers each candidate's mean rollout score (:func:`~aiplanner.training.teacher.
label_snapshot`, in the world the agent's snapshot describes), so with ``rank_prior=0`` and
``calibrated=False`` the squad plays the teacher's best candidate. Content-free (calibration)
requests get zeros.

Threads. esper's worlds are module-wide state, and a rollout switches to a world of its own; it
must not run on the bridge's thread while the game thread runs systems. So ``score`` hands the
request to the game thread and waits for the answer, and :class:`TeacherServer`, a processor
placed between the snapshot system and the planning system (:data:`SERVER_PRIORITY`), runs the
rollouts there: on each tick it serves requests until the backend has no work left (a lockstep
run then applies the answers on that same tick, as it would a model's). Meant for lockstep runs
(A/B battles), where every tick waits for the answers anyway.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Final

import anyio
import esper

from aiplanner.backends.base import (
    BackendInfo,
    CompletionRequest,
    ScoreRequest,
    ScoreResult,
    StreamEvent,
)
from aiplanner.errors import BackendError, BackendTimeout, ConfigError
from aiplanner.plugin import PLANNING_PRIORITY, SNAPSHOT_PRIORITY
from aiplanner.requests import PlanRequest
from aiplanner.training.teacher import Label, OutcomeTeacher, label_snapshot

__all__ = ["SERVER_PRIORITY", "TeacherBackend", "TeacherServer"]

SERVER_PRIORITY: Final = (SNAPSHOT_PRIORITY + PLANNING_PRIORITY) // 2
"""After the snapshots, before the planning system (which applies the answers)."""

_POLL_S: Final = 0.01
"""How often the server looks whether the backend has gone idle while it waits for a request."""

_Job = tuple[PlanRequest, "Future[tuple[float, ...]]"]


class TeacherBackend:
    """Scores a guided request's candidates by the teacher's rollouts (see the module).

    ``timeout_s``: how long a score call waits for the game thread before it fails with
    :class:`BackendTimeout`. ``decided``/``failed`` count the requests served and those whose
    snapshot made no legal world (they get equal scores: the rules' first candidate wins);
    ``positions`` and ``actions`` the spread of the teacher's choices (rank, first action).
    ``keep_labels``: keep each decision's :class:`Label` in ``labels`` (situations drawn as the
    game draws them, for ``python -m aiplanner train --labels``).
    """

    def __init__(
        self,
        teacher: OutcomeTeacher | None = None,
        *,
        timeout_s: float = 600.0,
        keep_labels: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
        self.teacher = teacher if teacher is not None else OutcomeTeacher()
        self._timeout = timeout_s
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._info = BackendInfo(
            name="teacher", model="rollouts", max_concurrency=4, parallel=True, scoring=True
        )
        self.decided = 0
        self.failed = 0
        self.positions: Counter[int] = Counter()  # the rules' rank of each chosen candidate
        self.actions: Counter[str] = Counter()  # the first action of each chosen candidate
        self.labels: list[Label] = []  # with keep_labels: every decision, as training data
        self._keep = keep_labels

    @property
    def info(self) -> BackendInfo:
        return self._info

    async def aclose(self) -> None:
        return None

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """The teacher writes nothing: always raises :class:`BackendError`."""
        raise BackendError("the teacher backend only scores (guided_decision='score')")
        yield  # pragma: no cover - makes this an async generator

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Each continuation's rollout score (zeros for a content-free request).

        Raises :class:`ConfigError` for a request that is not one guided plan request with a
        continuation per candidate, :class:`BackendTimeout` if the game thread does not serve it
        in time.
        """
        n = len(request.continuations)
        if n == 0:
            raise ConfigError("a score request needs at least one continuation")
        reqs = request.tag.get("requests", ())
        if request.tag.get("shape") != "score" or not reqs:
            return _result((0.0,) * n)  # calibration: nothing to subtract
        req = reqs[0]
        if len(reqs) != 1 or not isinstance(req, PlanRequest) or len(req.candidates) != n:
            raise ConfigError("the teacher scores one plan request's candidates at a time")
        job: Future[tuple[float, ...]] = Future()
        self._jobs.put((req, job))
        try:
            scores = await anyio.to_thread.run_sync(job.result, self._timeout)
        except FutureTimeout as exc:
            job.cancel()
            raise BackendTimeout(
                f"the game thread did not serve the teacher in {self._timeout}s"
            ) from exc
        return _result(scores)

    def serve_one(self, wait_s: float) -> PlanRequest | None:
        """Game thread: run the rollouts of the next request (waiting up to ``wait_s`` for one)
        and answer it; return it, or None if none came."""
        try:
            req, job = self._jobs.get(timeout=wait_s)
        except queue.Empty:
            return None
        if not job.set_running_or_notify_cancel():
            return req
        try:
            label = label_snapshot(
                self.teacher, req.snapshot, req.candidates, req.snapshot.tick, separate=True
            )
        except ConfigError:
            self.failed += 1
            job.set_result((0.0,) * len(req.candidates))
            return req
        self.decided += 1
        if self._keep:
            self.labels.append(label)
        self.positions[label.best] += 1
        self.actions[req.candidates[label.best].steps[0].action] += 1
        job.set_result(label.scores)
        return req


class TeacherServer(esper.Processor):
    """Serves :class:`TeacherBackend`'s requests on the game thread (see the module docstring).

    Each tick it serves requests until ``busy()`` (``PlannerPlugin.backend_busy``: a batch in
    flight) says the backend has nothing left to do, which is what the planning system's
    lockstep wait that follows waits for: a batch waiting for the teacher stays busy, even one
    whose agent has died meanwhile (a call waiting in a thread is not cancelled), while a batch
    whose requests need no call (a single candidate) finishes on its own. ``wait_s`` bounds the
    wait of a tick (``missed`` counts the ticks that ran out of it).
    """

    def __init__(
        self, backend: TeacherBackend, busy: Callable[[], bool], *, wait_s: float = 60.0
    ) -> None:
        self.backend = backend
        self._busy = busy
        self._wait = wait_s
        self.missed = 0

    def process(self, dt: float) -> None:
        until = time.monotonic() + self._wait
        while True:
            if not self._busy():
                # one put in just before the batch looked idle? (then it is done, not idle)
                if self.backend.serve_one(0.0) is None:
                    return
            elif self.backend.serve_one(_POLL_S) is None and time.monotonic() > until:
                self.missed += 1
                return


def _result(scores: tuple[float, ...]) -> ScoreResult:
    return ScoreResult(logprobs=scores, tokens=(1,) * len(scores))
