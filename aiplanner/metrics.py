"""Metrics: counters, bounded histograms, and the ``stats()`` snapshot the HUD and benchmarks read.

Everything is bounded: histograms keep the most recent ``window`` samples, counters are integers.
Thread-safe: the game thread and the event loop both record.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

__all__ = ["Histogram", "Metrics"]

_MODEL_TIERS = frozenset({"llm", "llm_simple"})  # Tier values of plans the model made


class Histogram:
    """The last ``window`` samples, with percentiles on demand (nearest-rank)."""

    __slots__ = ("_samples", "count", "total")

    def __init__(self, window: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self._samples.append(value)
        self.count += 1
        self.total += value

    def percentile(self, p: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100.0 * len(ordered)) - 1))
        return ordered[rank]

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Metrics:
    """What the planner did. Read it with :meth:`stats`."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, rate_window_s: float = 5.0
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rate_window_s = rate_window_s
        self._applied_times: deque[float] = deque(maxlen=4096)
        self.requests = 0  # backend calls made
        self.plans = 0  # plans applied, any tier
        self.tiers: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.provisional = 0  # stop-gap heuristic plans run while waiting for the model
        self.dropped = 0  # outcomes for deleted entities or superseded requests
        self.rescued = 0  # stale answers replaced by the model's next choice that still fits
        self.remembered = 0  # decisions from the model's scores of a situation seen before
        self.deadline_misses = 0
        self.budget_cuts = 0  # planning steps the tick's time budget cut short (work deferred)
        self.between_frames = 0  # agents' work done in the frames' idle time (between_frames)
        self.latency_s = Histogram()  # request -> plan applied (plugin clock)
        self.model_latency_s = Histogram()  # the same, for plans from the model (llm tiers)
        self.call_s = Histogram()  # one backend call, wall time
        self.ttft_s = Histogram()  # one backend call, time to first token
        self.ttfp_s = Histogram()  # one batch, submission -> first plan out of the backend
        self.in_tokens = Histogram()  # per agent and call
        self.out_tokens = Histogram()  # per agent and call
        self.decisions = 0  # guided decisions made by the model (scored or generated)
        self.agreements = 0  # ... that picked the rules' first candidate

    # -- recording ------------------------------------------------------------------------------
    def count_request(self, n: int = 1) -> None:
        with self._lock:
            self.requests += n

    def record_call(self, total_s: float | None, ttft_s: float | None) -> None:
        with self._lock:
            if total_s is not None:
                self.call_s.add(total_s)
            if ttft_s is not None:
                self.ttft_s.add(ttft_s)

    def record_first_plan(self, seconds: float) -> None:
        with self._lock:
            self.ttfp_s.add(seconds)

    def record_plan(self, tier: str, latency_s: float | None) -> None:
        with self._lock:
            self.plans += 1
            self.tiers[tier] += 1
            self._applied_times.append(self._clock())
            if latency_s is not None:
                self.latency_s.add(latency_s)
                if tier in _MODEL_TIERS:
                    self.model_latency_s.add(latency_s)

    def record_tokens(self, prompt: int | None, completion: int | None, agents: int) -> None:
        """One call's tokens, shared evenly among the ``agents`` it planned for."""
        n = max(1, agents)
        with self._lock:
            for _ in range(n):
                if prompt is not None:
                    self.in_tokens.add(prompt / n)
                if completion is not None:
                    self.out_tokens.add(completion / n)

    def record_decision(self, index: int) -> None:
        """The model picked candidate ``index`` (0: the rules' first choice)."""
        with self._lock:
            self.decisions += 1
            self.agreements += index == 0

    def record_invalid(self, reason: str) -> None:
        with self._lock:
            self.invalid[reason] += 1

    def record_rescued(self) -> None:
        """A stale answer was replaced by the decision's next choice that still fits."""
        with self._lock:
            self.rescued += 1

    def record_remembered(self) -> None:
        """A decision was made from the model's earlier scores of the same situation."""
        with self._lock:
            self.remembered += 1

    def record_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def record_provisional(self) -> None:
        with self._lock:
            self.provisional += 1

    def record_dropped(self) -> None:
        with self._lock:
            self.dropped += 1

    def record_deadline_miss(self) -> None:
        with self._lock:
            self.deadline_misses += 1

    def record_budget_cut(self) -> None:
        with self._lock:
            self.budget_cuts += 1

    def record_between_frames(self, n: int) -> None:
        with self._lock:
            self.between_frames += n

    # -- reading --------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        """A JSON-ready snapshot. Times in milliseconds; None where nothing was measured yet."""
        with self._lock:
            now = self._clock()
            recent = sum(1 for t in self._applied_times if now - t <= self._rate_window_s)
            return {
                "requests": self.requests,
                "plans": self.plans,
                "plans_per_s": recent / self._rate_window_s,
                "tiers": dict(self.tiers),
                "invalid": dict(self.invalid),
                "errors": dict(self.errors),
                "dropped": self.dropped,
                "rescued": self.rescued,
                "remembered": self.remembered,
                "provisional": self.provisional,
                "deadline_misses": self.deadline_misses,
                "budget_cuts": self.budget_cuts,
                "between_frames": self.between_frames,
                "latency_p50_ms": _ms(self.latency_s.percentile(50)),
                "latency_p95_ms": _ms(self.latency_s.percentile(95)),
                "latency_p99_ms": _ms(self.latency_s.percentile(99)),
                "model_latency_p50_ms": _ms(self.model_latency_s.percentile(50)),
                "model_latency_p99_ms": _ms(self.model_latency_s.percentile(99)),
                "call_p50_ms": _ms(self.call_s.percentile(50)),
                "ttft_p50_ms": _ms(self.ttft_s.percentile(50)),
                "ttfp_ms": _ms(self.ttfp_s.percentile(50)),
                "in_tokens_per_plan": self.in_tokens.mean,
                "out_tokens_per_plan": self.out_tokens.mean,
                "decisions": self.decisions,
                "agree_rate": self.agreements / self.decisions if self.decisions else None,
            }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)
