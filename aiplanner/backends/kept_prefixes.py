"""KeptPrefixes: evaluated prompt prefixes the serial engine can restore instead of evaluating.

The serial engine has one sequence: it reuses what the previous prompt has in common with the
next one and evaluates the rest. Scored decisions start with text shared by every agent of a
role (the system message, then the role line: ~20 tokens), but agents of different roles take
turns, so the role line was evaluated again on most calls. The engine now keeps the sequence's
KV state at that point (llama.cpp's ``llama_state_seq_get_data``: ~23 KB a token for
SmolLM2-135M) and puts it back (``llama_state_seq_set_data``) when a prompt starts the same way
and the previous prompt shares less of it.

A plain LRU keyed by the prefix's tokens; looking up walks the few kept prefixes (8 by default)
and compares tokens. Not thread-safe: the worker thread that owns the model owns it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

__all__ = ["KEPT_PREFIXES", "KeptPrefixes"]

KEPT_PREFIXES: Final = 8
"""Prefixes kept by default: one per role of the default game (4) with room for a game's own."""


class KeptPrefixes:
    """Up to ``capacity`` (prefix tokens, saved state) pairs, least recently used dropped first.
    ``capacity == 0`` keeps nothing."""

    __slots__ = ("_kept", "capacity", "hits", "saved_tokens")

    def __init__(self, capacity: int = KEPT_PREFIXES) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must not be negative, got {capacity}")
        self.capacity = capacity
        self._kept: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.hits = 0  # prefixes restored
        self.saved_tokens = 0  # tokens those restores did not have to evaluate

    def __len__(self) -> int:
        return len(self._kept)

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
        """Keep ``state`` for ``prefix``, dropping the least recently used beyond capacity."""
        if self.capacity == 0:
            return
        key = tuple(prefix)
        self._kept[key] = state
        self._kept.move_to_end(key)
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)

    def restored(self, tokens: int) -> None:
        """Count one restore that spared ``tokens`` tokens of evaluation."""
        self.hits += 1
        self.saved_tokens += tokens

    def clear(self) -> None:
        self._kept.clear()
