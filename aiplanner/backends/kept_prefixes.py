"""KeptPrefixes: evaluated prompt prefixes the serial engine can restore instead of evaluating.

The serial engine has one sequence: it reuses what the previous prompt has in common with the
next one and evaluates the rest. Scored decisions start with text shared by every agent of a
role (the system message, then the role line: ~20 tokens), but agents of different roles take
turns, so the role line was evaluated again on most calls. The engine now keeps the sequence's
KV state at that point (llama.cpp's ``llama_state_seq_get_data``: ~23 KB a token for
SmolLM2-135M) and puts it back (``llama_state_seq_set_data``) when a prompt starts the same way
and the previous prompt shares less of it.

A plain LRU keyed by the prefix's tokens, bounded by count (8 by default) and by bytes (64 MiB:
a larger model's states are larger, ~0.5 MB a token for a 7B model); looking up walks the few
kept prefixes and compares tokens. Not thread-safe: the worker thread that owns the model owns
it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

__all__ = ["KEPT_BYTES", "KEPT_PREFIXES", "KeptPrefixes"]

KEPT_PREFIXES: Final = 8
"""Prefixes kept by default: one per role of the default game (4) with room for a game's own."""

KEPT_BYTES: Final = 64 << 20
"""The most bytes of saved state kept in all (a state larger than this alone is not kept)."""


class KeptPrefixes:
    """Up to ``capacity`` (prefix tokens, saved state) pairs holding at most ``max_bytes`` of
    state, least recently used dropped first. ``capacity == 0`` keeps nothing."""

    __slots__ = ("_bytes", "_kept", "capacity", "hits", "max_bytes", "spared_tokens")

    def __init__(self, capacity: int = KEPT_PREFIXES, max_bytes: int = KEPT_BYTES) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0
        self._kept: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.hits = 0  # prefixes restored
        self.spared_tokens = 0  # tokens those restores did not have to evaluate

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def nbytes(self) -> int:
        """Bytes of saved state kept now."""
        return self._bytes

    def __contains__(self, prefix: Sequence[int]) -> bool:
        return tuple(prefix) in self._kept

    def longest(self, prompt: Sequence[int], longer_than: int) -> tuple[int, bytes] | None:
        """The longest kept prefix of ``prompt`` with more than ``longer_than`` tokens, as
        (its length, its state), or None. Marks it recently used."""
        best: tuple[int, ...] | None = None
        for prefix in self._kept:
            n = len(prefix)
            if (
                longer_than < n <= len(prompt)
                and (best is None or n > len(best))
                and tuple(prompt[:n]) == prefix
            ):
                best = prefix
        if best is None:
            return None
        self._kept.move_to_end(best)
        return len(best), self._kept[best]

    def keep(self, prefix: Sequence[int], state: bytes) -> None:
        """Keep ``state`` for ``prefix``, dropping the least recently used beyond the bounds."""
        if self.capacity == 0 or len(state) > self.max_bytes:
            return
        key = tuple(prefix)
        old = self._kept.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._kept[key] = state
        self._bytes += len(state)
        while len(self._kept) > self.capacity or self._bytes > self.max_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= len(dropped)

    def restored(self, tokens: int) -> None:
        """Count one restore that spared ``tokens`` tokens of evaluation."""
        self.hits += 1
        self.spared_tokens += tokens

    def clear(self) -> None:
        self._kept.clear()
        self._bytes = 0
