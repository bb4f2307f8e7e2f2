"""The pass layout of the batched engine, checked against what llama.cpp requires of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiplanner.backends.prefix_tree import (
    Entry,
    PassPlan,
    Path,
    common_prefix,
    plan_pass,
    shared_prefix,
)


def _check_layout(paths: Sequence[Path], plan: PassPlan) -> None:
    """Each sequence gets exactly its tokens from ``start`` on, in order, consecutive positions,
    and the rows of one sequence can be cut anywhere: every prefix of the rows is a prefix of
    each sequence's rows (llama.cpp: positions continue right after the memory)."""
    for path in paths:
        mine = [e for e in plan.entries if path.seq in e.seqs]
        assert [e.pos for e in mine] == list(range(path.start, len(path.tokens)))
        assert [e.token for e in mine] == list(path.tokens[path.start :])
        for pos in range(path.want_from, path.want_to):
            entry = plan.entries[plan.outputs[(path.seq, pos)]]
            assert entry.logits and path.seq in entry.seqs and entry.pos == pos
    # Sequences on one row hold the same positions before it (llama.cpp's coupling rule).
    starts = {p.seq: p.start for p in paths}
    for e in plan.entries:
        assert len({starts[q] for q in e.seqs}) == 1


def test_shared_prefix_is_one_row_for_every_sequence() -> None:
    system = (1, 2, 3, 4)
    paths = [
        Path(1, (*system, 10, 11), 0, 5, 6),
        Path(2, (*system, 10, 12), 0, 5, 6),
        Path(3, (*system, 20), 0, 4, 5),
    ]
    plan = plan_pass(paths)
    _check_layout(paths, plan)
    # 4 shared system tokens + "10" shared by 1 and 2 + 11, 12, 20.
    assert len(plan.entries) == 8
    assert plan.entries[0] == Entry(1, 0, (1, 2, 3), False)
    assert sum(e.logits for e in plan.entries) == 3


def test_rows_already_in_memory_are_not_evaluated() -> None:
    paths = [Path(1, (1, 2, 3, 4, 5), 3, 4, 5), Path(2, (1, 2, 3, 4, 6), 3, 4, 5)]
    plan = plan_pass(paths)
    _check_layout(paths, plan)
    assert [e.token for e in plan.entries] == [4, 5, 6]
    assert plan.entries[0].seqs == (1, 2)


def test_paths_with_different_starts_never_share_a_row() -> None:
    # Sequence 2's memory ends earlier: a row for both would couple sequences that diverged.
    paths = [Path(1, (1, 2, 3), 2, 2, 3), Path(2, (1, 2, 3), 1, 2, 3)]
    plan = plan_pass(paths)
    _check_layout(paths, plan)
    assert len(plan.entries) == 3


def test_bad_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="two paths"):
        plan_pass([Path(1, (1,), 0), Path(1, (2,), 0)])
    with pytest.raises(ValueError, match="start"):
        plan_pass([Path(1, (1,), 2)])
    with pytest.raises(ValueError, match="not evaluated"):
        plan_pass([Path(1, (1, 2), 1, 0, 2)])


_tokens = st.lists(st.integers(0, 3), max_size=8).map(tuple)


@given(_tokens, st.lists(st.tuples(st.integers(0, 8), _tokens), min_size=1, max_size=8))
def test_any_paths_are_laid_out_as_llama_cpp_needs(
    root: tuple[int, ...], raw: list[tuple[int, tuple[int, ...]]]
) -> None:
    # As in the engine: what lies before a path's start was copied from the root.
    paths = []
    for seq, (start, suffix) in enumerate(raw, start=1):
        s = min(start, len(root))
        tokens = root[:s] + (suffix or (0,))
        paths.append(Path(seq, tokens, s, s, len(tokens)))
    plan = plan_pass(paths)
    _check_layout(paths, plan)
    # Nothing is evaluated twice: one row per distinct (start, prefix).
    distinct = {(p.start, p.tokens[: i + 1]) for p in paths for i in range(p.start, len(p.tokens))}
    assert len(plan.entries) == len(distinct)


def test_common_prefix() -> None:
    assert common_prefix((1, 2, 3), (1, 2, 4, 5)) == 2
    assert common_prefix((1, 2), (1, 2, 3)) == 2
    assert common_prefix((), (1,)) == 0


def test_shared_prefix_follows_the_largest_group_and_leaves_each_a_token() -> None:
    prompts = [(1, 2, 3, 9), (1, 2, 3, 8), (1, 2, 4), (5, 6)]
    assert shared_prefix(prompts) == (3, [0, 1])
    # Identical prompts: each keeps its last token to evaluate.
    assert shared_prefix([(1, 2, 3), (1, 2, 3)]) == (2, [0, 1])
    assert shared_prefix([(1, 2), (3, 4)]) == (0, [])
    assert shared_prefix([(1, 2)]) == (0, [])
