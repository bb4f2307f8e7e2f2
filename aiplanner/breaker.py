"""CircuitBreaker: stop calling a backend that keeps failing, try again after a cool-down.

closed --(``failures`` consecutive failures)--> open --(``cooldown_s``)--> half-open
half-open lets one trial call through: success closes, failure re-opens. Thread-safe: the game
thread asks ``allow()`` before submitting; the event loop records outcomes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiplanner.errors import BackendBusy, BackendError, CircuitOpen, PlannerError

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def accepting(self) -> bool:
        """Is it worth queueing work for this backend? (Not open; consumes no trial.)"""
        with self._lock:
            return self._state_locked() != "open"

    def allow(self) -> bool:
        """May a call be made now? In half-open state only one trial call is let through."""
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            was_trial = self._trial_in_flight
            self._trial_in_flight = False
            if was_trial or (self._opened_at is None and self._consecutive >= self.threshold):
                self._opened_at = self._clock()
                self.opened_count += 1

    @contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """One call to backend ``name`` through the breaker.

        Raises :class:`CircuitOpen` when no call may be made. Inside, a ``BackendError`` counts as
        a failure, except :class:`BackendBusy` (the backend works, but was full); that or any
        other ``PlannerError`` (the engine answered, the model's text was bad) or a
        normal exit as a success; leaving without a verdict (cancelled) releases a trial.
        """
        if not self.allow():
            raise CircuitOpen(f"circuit open for backend {name}")
        verdict = False
        try:
            yield
            self.record_success()
            verdict = True
        except BackendBusy:  # alive and working on others' requests: not a fault
            self.record_success()
            verdict = True
            raise
        except BackendError:
            self.record_failure()
            verdict = True
            raise
        except PlannerError:
            self.record_success()
            verdict = True
            raise
        finally:
            if not verdict:
                self.release_trial()

    def release_trial(self) -> None:
        """A trial call ended without a verdict (cancelled): let another one through."""
        with self._lock:
            self._trial_in_flight = False
