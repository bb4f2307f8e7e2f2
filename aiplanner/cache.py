"""PlanCache: a bounded LRU of plans keyed by role, quantised snapshot key and registry version.

Used on the game thread only (no lock). A hit is only a candidate: the planning system re-validates
the cached plan against the current snapshot before using it, and drops it if it no longer holds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from aiplanner.actions import Plan
from aiplanner.errors import ConfigError

__all__ = ["PlanCache"]


class PlanCache:
    """Raises :class:`ConfigError` for a capacity that is not positive."""

    __slots__ = ("_entries", "capacity", "evictions", "hits", "misses", "stale")

    def __init__(self, capacity: int = 2048) -> None:
        if capacity <= 0:
            raise ConfigError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Plan] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.stale = 0

    def get(self, key: Hashable) -> Plan | None:
        plan = self._entries.get(key)
        if plan is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return plan

    def put(self, key: Hashable, plan: Plan) -> None:
        self._entries[key] = plan
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1

    def discard(self, key: Hashable) -> None:
        """Forget a stale entry (counted as a hit that could not be used)."""
        if self._entries.pop(key, None) is not None:
            self.stale += 1
            self.hits -= 1
            self.misses += 1

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
