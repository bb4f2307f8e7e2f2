"""EmbeddedBackend.score: continuations scored from llama.cpp's logits, nothing generated."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import anyio
import pytest

from aiplanner.actions import DEFAULT_REGISTRY
from aiplanner.backends.base import Message, ScoreRequest, ScoreResult
from aiplanner.backends.embedded import EmbeddedBackend
from aiplanner.errors import BackendTimeout, ConfigError
from aiplanner.heuristic import HeuristicPlanner
from aiplanner.phrasing import LEAD, plan_phrase, situation_messages
from aiplanner.prompts import ROLE_INSTRUCTIONS
from backends.test_embedded import HANG_GUARD_S, _choice_request, _collect, _snapshot

pytestmark = pytest.mark.model

# Agreement of scores computed along different routes (float32 logits summed in float64).
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedBackend]:
    # The serial engine: exact to float rounding along any route. The batched one
    # is held to llama.cpp's batch-size noise in test_batched.py. The base model: the shipped
    # adapter (applied by default) widens that noise on the chain-rule route below (0.19 nats
    # against 0.04 without it; test_adapters.py covers scoring with it).
    b = EmbeddedBackend(n_threads=1, engine="serial", adapter=None)
    try:
        yield b
    finally:
        b.close()


def _phrases() -> tuple[str, ...]:
    snap = _snapshot()
    plans = HeuristicPlanner().candidates(snap, 4)
    return tuple(plan_phrase(p, snap, DEFAULT_REGISTRY) for p in plans)


def _request(
    continuations: tuple[str, ...], messages: tuple[Message, ...] | None = None, **kw: object
) -> ScoreRequest:
    return ScoreRequest(
        messages=situation_messages(_snapshot()) if messages is None else messages,
        continuations=continuations,
        lead=LEAD,
        timeout_s=HANG_GUARD_S,
        **kw,  # type: ignore[arg-type]
    )


def _score(backend: EmbeddedBackend, request: ScoreRequest) -> ScoreResult:
    async def run() -> ScoreResult:
        with anyio.fail_after(HANG_GUARD_S):
            return await backend.score(request)

    return anyio.run(run)


def test_scores_of_n_continuations_equal_n_separate_evaluations(backend: EmbeddedBackend) -> None:
    phrases = _phrases()
    assert len(phrases) >= 3
    together = _score(backend, _request(phrases))
    alone = [_score(backend, _request((p,))).logprobs[0] for p in phrases]
    assert len(together.logprobs) == len(phrases)
    for a, b in zip(together.logprobs, alone, strict=True):
        assert math.isclose(a, b, abs_tol=TOLERANCE)
    # Log-probabilities of real text: negative, finite, and not all the same.
    assert all(-200 < x < 0 for x in together.logprobs)
    assert len({round(x, 3) for x in together.logprobs}) > 1
    assert all(n >= 1 for n in together.tokens)


def test_the_score_is_the_sum_over_the_continuations_tokens(backend: EmbeddedBackend) -> None:
    """A two-word continuation scores the same as its first word plus the second word given the
    first: the chain rule holds only if each branch reads its own cells and nothing else."""
    whole = _score(backend, _request((" reload my weapon",)))
    assert whole.tokens[0] >= 2
    first = _score(backend, _request((" reload",)))
    rest = _score(
        backend,
        ScoreRequest(
            messages=situation_messages(_snapshot()),
            continuations=(" my weapon",),
            lead=LEAD + " reload",
            timeout_s=HANG_GUARD_S,
        ),
    )
    assert math.isclose(whole.logprobs[0], first.logprobs[0] + rest.logprobs[0], abs_tol=0.05)


def test_the_situation_changes_the_scores(backend: EmbeddedBackend) -> None:
    phrases = (" reload my weapon", " heal ally 8")
    a = _score(backend, _request(phrases))
    from dataclasses import replace

    snap = _snapshot()
    calm = replace(snap, me=replace(snap.me, ammo=6, hp=100), enemies=(), allies=())
    b = _score(
        backend,
        ScoreRequest(situation_messages(calm), phrases, LEAD, timeout_s=HANG_GUARD_S),
    )
    assert a.logprobs != b.logprobs


def test_generation_after_scoring_is_unchanged(backend: EmbeddedBackend) -> None:
    """Scoring leaves the context as generation expects it (no stale logits, no extra cells)."""

    async def text() -> str:
        deltas, _ = await _collect(backend, _choice_request())
        return "".join(deltas)

    before = anyio.run(text)
    _score(backend, _request(_phrases()))
    after = anyio.run(text)
    assert before == after


def test_a_request_without_continuations_is_refused(backend: EmbeddedBackend) -> None:
    with pytest.raises(ConfigError):
        _score(backend, _request(()))


def test_a_spent_budget_raises_backend_timeout(backend: EmbeddedBackend) -> None:
    with pytest.raises(BackendTimeout):
        _score(
            backend, ScoreRequest(situation_messages(_snapshot()), _phrases(), LEAD, timeout_s=0.0)
        )


def test_scores_are_counted_in_the_stats(backend: EmbeddedBackend) -> None:
    done = backend.stats().completed
    result = _score(backend, _request(_phrases()))
    assert backend.stats().completed == done + 1
    assert result.usage.prompt_tokens is not None and result.usage.completion_tokens == 0


def _role_request(role: str) -> ScoreRequest:
    snap = _snapshot()
    snap = dataclasses.replace(snap, me=dataclasses.replace(snap.me, role=role))
    return _request(_phrases(), situation_messages(snap, ROLE_INSTRUCTIONS[role]))


def test_kept_prefixes_spare_each_roles_shared_text_and_score_the_same(
    backend: EmbeddedBackend,
) -> None:
    """Roles taking turns: the previous prompt shares only the system message, so without kept
    prefixes each role line is evaluated again; with them it is put back, scores unchanged."""
    plain = EmbeddedBackend(n_threads=1, engine="serial", adapter=None, kept_prefixes=0)
    try:
        roles = ("tactical", "support", "stealth", "tactical", "support", "stealth")
        before_kept, before_plain = backend.stats(), plain.stats()
        for role in roles:
            request = _role_request(role)
            kept_scores = _score(backend, request).logprobs
            plain_scores = _score(plain, request).logprobs
            for a, b in zip(kept_scores, plain_scores, strict=True):
                assert math.isclose(a, b, abs_tol=TOLERANCE)
        kept, bare = backend.stats(), plain.stats()
    finally:
        plain.close()
    restores = kept.prefix_restores - before_kept.prefix_restores
    spared = kept.prefix_tokens_spared - before_kept.prefix_tokens_spared
    assert restores >= 3  # the second turn of each role at least
    assert spared >= 3 * 10  # a role line is ~20 tokens
    assert bare.prefix_restores == 0
    evaluated_kept = kept.prompt_tokens - before_kept.prompt_tokens
    evaluated_plain = bare.prompt_tokens - before_plain.prompt_tokens
    assert evaluated_kept <= evaluated_plain - spared + 3 * len(roles)  # marks cost nothing more


def test_kept_prefixes_must_not_be_negative() -> None:
    with pytest.raises(ConfigError):
        EmbeddedBackend(kept_prefixes=-1)
