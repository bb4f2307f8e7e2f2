from __future__ import annotations

import pytest

from aiplanner.breaker import CircuitBreaker
from aiplanner.errors import BackendBusy, BackendTimeout


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    b.record_success()  # resets the count: failures must be consecutive
    for _ in range(3):
        b.record_failure()
    assert b.state == "open"
    assert not b.allow() and not b.accepting()
    clock.now = 10.0
    assert b.state == "half_open"
    assert b.allow()  # one trial
    assert not b.allow()  # and only one
    b.record_failure()  # the trial failed: open again for a full cool-down
    assert b.state == "open"
    clock.now = 20.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()
    assert b.opened_count == 2


def test_cancelled_trial_lets_another_through() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failures=1, cooldown_s=1.0, clock=clock)
    b.record_failure()
    clock.now = 1.0
    assert b.allow()
    b.release_trial()
    assert b.allow()


def test_a_busy_backend_is_not_a_failing_one() -> None:
    b = CircuitBreaker(failures=2, cooldown_s=10.0, clock=FakeClock())
    for _ in range(5):  # an engine full of others' work, answering them
        with pytest.raises(BackendBusy), b.guard("embedded"):
            raise BackendBusy("shed")
    assert b.state == "closed"
    for _ in range(2):  # a timeout of any other kind is a fault
        with pytest.raises(BackendTimeout), b.guard("server"):
            raise BackendTimeout("no answer")
    assert b.state == "open"
