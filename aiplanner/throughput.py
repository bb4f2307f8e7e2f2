"""ServiceRate: how many seconds of a parallel backend one more plan costs, measured.

A backend that serves many requests at once (the batched embedded engine, a server with slots)
has no fixed "call time": a request's latency is the work queued ahead of it. What stays put is
the backend's rate: seconds of busy time per plan answered. It is measured the plain way: while
at least one request is in flight, the time between one answer and the next (or since the engine
became busy) is one sample; idle time is never counted. The mean of the recent samples is the
cost of one plan, so the k-th request sent now, behind ``n`` in flight, can expect its answer
after about ``(n + k) * per_plan_s`` seconds.

The planning system uses it to admit only the agents whose answer can arrive before their
deadline; the others keep their provisional plan and wait for room, or fall back at once when
not even a plan of their own would arrive in time.
"""

from __future__ import annotations

from collections import deque

from aiplanner.errors import ConfigError

__all__ = ["ServiceRate"]


class ServiceRate:
    """Seconds of busy backend time per answer, the mean of the last ``window`` answers.

    Call :meth:`busy` when a request goes out, :meth:`answered` for each answer that comes back
    and :meth:`idle` once nothing is in flight. Times are the caller's clock, in seconds. Not
    thread-safe (the game thread owns it).
    """

    def __init__(self, window: int = 32) -> None:
        if window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        self._samples: deque[float] = deque(maxlen=window)
        self._total = 0.0
        self._mark: float | None = None  # last answer, or when the backend became busy

    @property
    def per_plan_s(self) -> float | None:
        """The recent mean busy seconds per answer; None before the first answer."""
        if not self._samples:
            return None
        return self._total / len(self._samples)

    def busy(self, now: float) -> None:
        """A request went out: if the backend was idle, its busy time starts now."""
        if self._mark is None:
            self._mark = now

    def answered(self, now: float) -> None:
        """One answer came back (a plan or an error: both took the backend's time)."""
        if self._mark is None:
            return  # an answer after idle(): its time was not watched
        sample = max(0.0, now - self._mark)
        if len(self._samples) == self._samples.maxlen:
            self._total -= self._samples[0]
        self._samples.append(sample)
        self._total += sample
        self._mark = now

    def idle(self) -> None:
        """Nothing is in flight any more: time from here on is not the backend's."""
        self._mark = None
