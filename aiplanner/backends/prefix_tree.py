"""The token tree of one pass of the batched engine: shared prefixes evaluated once.

Every sequence of a pass is a :class:`Path`: its tokens from position 0, the position from which
they still have to be evaluated (what lies before ``start`` is already in the KV memory of that
sequence, copied from the warm root sequence) and the positions whose next-token distribution the
caller wants. :func:`plan_pass` merges the paths into a tree, one node per distinct token prefix,
and lays the nodes out in preorder as :class:`Entry` rows of a ``llama_batch``: a node shared by
several sequences is one row carrying all their ids, so llama.cpp evaluates it once and every one
of them sees its cell (a unified KV cache). Preorder keeps each sequence's rows in increasing
position order, so the rows can be cut into consecutive chunks (one ``llama_decode`` each) and
every chunk still continues each sequence right where the memory ends, as llama.cpp requires.

Only paths with the same ``base`` and ``start`` share nodes: llama.cpp accepts a row with several
sequence ids only when those sequences hold the same positions in memory, and paths copied from
the same sequence (``base``: the warm root, or a kept prompt) up to the same start hold the same
tokens before it.

Pure Python, no llama.cpp: the engine feeds the entries to ``llama_decode``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Entry", "PassPlan", "Path", "common_prefix", "plan_pass", "shared_prefix"]


@dataclass(frozen=True, slots=True)
class Path:
    """One sequence's tokens in a pass.

    ``tokens[:start]`` are already in the sequence's KV memory; ``tokens[start:]`` are to be
    evaluated. Logits are wanted at the positions ``want_from <= p < want_to`` (the distribution
    of the token after position ``p``); ``start <= want_from`` unless nothing is wanted.
    """

    seq: int
    tokens: tuple[int, ...]
    start: int
    want_from: int = 0
    want_to: int = 0
    base: int = 0  # the sequence ``tokens[:start]`` were copied from (0: the root)


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of a ``llama_batch``: a token at a position, in one or more sequences."""

    token: int
    pos: int
    seqs: tuple[int, ...]
    logits: bool


@dataclass(frozen=True, slots=True)
class PassPlan:
    """The rows of a pass, in preorder, and where each wanted distribution will be.

    ``outputs[(seq, pos)]`` is the index into ``entries`` of the row whose logits are the
    distribution after position ``pos`` of sequence ``seq``.
    """

    entries: tuple[Entry, ...]
    outputs: dict[tuple[int, int], int]


class _Node:
    __slots__ = ("children", "logits", "pos", "seqs", "token")

    def __init__(self, token: int, pos: int) -> None:
        self.token = token
        self.pos = pos
        self.seqs: list[int] = []
        self.logits = False
        self.children: dict[int, _Node] = {}


def plan_pass(paths: Sequence[Path]) -> PassPlan:
    """Merge ``paths`` into one tree and lay it out as batch rows (see the module docstring).

    Raises ValueError for a sequence id used twice or a ``start`` outside the path.
    """
    roots: dict[tuple[int, int], dict[int, _Node]] = {}  # (base, start) -> first-level nodes
    where: dict[tuple[int, int], _Node] = {}
    seen: set[int] = set()
    for path in paths:
        if path.seq in seen:
            raise ValueError(f"sequence {path.seq} appears in two paths")
        seen.add(path.seq)
        if not 0 <= path.start <= len(path.tokens):
            raise ValueError(f"start {path.start} outside a path of {len(path.tokens)} tokens")
        if path.want_from < path.want_to and not (
            path.start <= path.want_from and path.want_to <= len(path.tokens)
        ):
            raise ValueError(f"wanted positions [{path.want_from}, {path.want_to}) not evaluated")
        level = roots.setdefault((path.base, path.start), {})
        for pos in range(path.start, len(path.tokens)):
            token = path.tokens[pos]
            node = level.get(token)
            if node is None:
                node = level[token] = _Node(token, pos)
            node.seqs.append(path.seq)
            if path.want_from <= pos < path.want_to:
                node.logits = True
                where[(path.seq, pos)] = node
            level = node.children
    entries: list[Entry] = []
    index: dict[int, int] = {}  # id(node) -> row
    for level in roots.values():
        stack = list(reversed(level.values()))
        while stack:
            node = stack.pop()
            index[id(node)] = len(entries)
            entries.append(Entry(node.token, node.pos, tuple(node.seqs), node.logits))
            stack.extend(reversed(node.children.values()))
    outputs = {key: index[id(node)] for key, node in where.items()}
    return PassPlan(tuple(entries), outputs)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefix(prompts: Sequence[Sequence[int]]) -> tuple[int, list[int]]:
    """The prefix worth keeping warm after a pass: its length and the prompts that share it.

    Follows, position by position, the token that most of the still-matching prompts have, while
    at least two do and each of them keeps at least one token beyond it (its last prompt token is
    evaluated in the pass, for its logits). Returns ``(0, [])`` when no two prompts share a token.
    """
    group = list(range(len(prompts)))
    pos = 0
    while True:
        counts: dict[int, list[int]] = {}
        for i in group:
            if len(prompts[i]) - 1 > pos:
                counts.setdefault(prompts[i][pos], []).append(i)
        best = max(counts.values(), key=len, default=[])
        if len(best) < 2:
            return (pos, group) if pos else (0, [])
        group = best
        pos += 1
