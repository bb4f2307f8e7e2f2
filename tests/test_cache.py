from __future__ import annotations

import pytest

from aiplanner.actions import Plan, Step
from aiplanner.cache import PlanCache
from aiplanner.errors import ConfigError


def _plan(n: int) -> Plan:
    return Plan((Step("Wait", (n,)),))


def test_hit_miss_and_lru_eviction() -> None:
    cache = PlanCache(capacity=2)
    cache.put("a", _plan(1))
    cache.put("b", _plan(2))
    assert cache.get("a") == _plan(1)  # a is now most recent
    cache.put("c", _plan(3))  # evicts b, the least recently used
    assert cache.get("b") is None
    assert cache.get("c") == _plan(3)
    assert (cache.hits, cache.misses, cache.evictions) == (2, 1, 1)
    assert len(cache) == 2
    assert cache.hit_rate == pytest.approx(2 / 3)


def test_discard_turns_a_hit_into_a_stale_miss() -> None:
    cache = PlanCache(capacity=4)
    cache.put("k", _plan(1))
    assert cache.get("k") is not None
    cache.discard("k")
    assert cache.get("k") is None
    assert (cache.hits, cache.misses, cache.stale) == (0, 2, 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PlanCache(0)


def test_a_bad_capacity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        PlanCache(-3)
