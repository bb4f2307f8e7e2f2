"""KeptPrefixes: the serial engine's LRU of evaluated prompt prefixes (no model here)."""

from __future__ import annotations

import pytest

from aiplanner.backends.kept_prefixes import KeptPrefixes


def test_the_longest_kept_prefix_of_the_prompt_longer_than_what_is_shared_wins() -> None:
    kept = KeptPrefixes(4)
    kept.keep([1, 2], b"two")
    kept.keep([1, 2, 3, 4], b"four")
    kept.keep([1, 9, 9], b"other")
    assert kept.longest([1, 2, 3, 4, 5], longer_than=0) == (4, b"four")
    assert kept.longest([1, 2, 3, 7], longer_than=0) == (2, b"two")  # [1,2,3,4] does not match
    assert kept.longest([1, 2, 3, 4, 5], longer_than=4) is None  # the sequence shares more
    assert kept.longest([1, 2, 3, 4], longer_than=3) == (4, b"four")  # the whole prompt
    assert kept.longest([1, 2, 3], longer_than=0) == (2, b"two")  # a longer prefix cannot fit
    assert kept.longest([5], longer_than=0) is None


def test_least_recently_used_goes_first() -> None:
    kept = KeptPrefixes(2)
    kept.keep([1], b"a")
    kept.keep([2], b"b")
    assert kept.longest([1, 0], longer_than=0) == (1, b"a")  # [1] is now the most recent
    kept.keep([3], b"c")
    assert [2] not in kept
    assert [1] in kept and [3] in kept
    assert len(kept) == 2
    kept.keep([1], b"a2")  # kept again: replaced, not duplicated
    assert len(kept) == 2
    assert kept.longest([1], longer_than=0) == (1, b"a2")


def test_capacity_zero_keeps_nothing_and_negative_is_an_error() -> None:
    kept = KeptPrefixes(0)
    kept.keep([1, 2], b"x")
    assert len(kept) == 0
    assert kept.longest([1, 2, 3], longer_than=0) is None
    with pytest.raises(ValueError):
        KeptPrefixes(-1)


def test_restores_are_counted() -> None:
    kept = KeptPrefixes()
    kept.restored(15)
    kept.restored(5)
    assert (kept.hits, kept.spared_tokens) == (2, 20)
    kept.keep([1], b"a")
    kept.clear()
    assert len(kept) == 0


def test_bytes_are_bounded_too() -> None:
    kept = KeptPrefixes(8, max_bytes=10)
    kept.keep([1], b"12345")
    kept.keep([2], b"1234")
    assert kept.nbytes == 9
    kept.keep([3], b"123")  # 12 bytes: the least recently used goes
    assert [1] not in kept and [2] in kept and [3] in kept
    assert kept.nbytes == 7
    kept.keep([2], b"1")  # replaced: its old size is given back
    assert kept.nbytes == 4
    kept.keep([4], b"x" * 11)  # larger than the bound alone: not kept, nothing dropped
    assert [4] not in kept and len(kept) == 2
    kept.clear()
    assert kept.nbytes == 0
    with pytest.raises(ValueError):
        KeptPrefixes(1, max_bytes=-1)
