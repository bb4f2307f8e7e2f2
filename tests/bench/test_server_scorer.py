"""ServerScorer against a loopback stand-in for llama-server's ``/completion``: the request forces
the continuation's token ids after the prompt's, the score is the sum of the reported
log-probabilities, and a server that generates something else, answers garbage or is too slow
is an error, never a score."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from aiplanner.backends.base import Message, ScoreRequest
from aiplanner.bench.server_scorer import ServerScorer, token_grammar
from aiplanner.errors import BackendError, BackendTimeout, ConfigError
from tests.fakeservers import FakeServer, RecordedRequest, Reply, json_reply, stall_reply

_PIECES = {" reload": [7, 8], " shoot": [9], " run": [10, 11, 12]}


class _Tokens:
    """Prompt: one token per character code of the joined contents, then the lead's."""

    def prompt(self, messages: Sequence[Message], lead: str) -> list[int]:
        return [len(m.content) for m in messages] + self.piece(lead)

    def piece(self, text: str) -> list[int]:
        return list(_PIECES.get(text, [ord(c) for c in text]))


def _logprob(token: int) -> float:
    return -0.25 * token  # distinct per token, so a wrong sum shows


def _honest(request: RecordedRequest) -> Reply:
    """Answers with the forced tokens read back from the grammar."""
    body = request.json()
    forced = [int(part[2:-2]) for part in body["grammar"].split()[2:]]
    probs = [{"id": t, "token": "x", "logprob": _logprob(t), "top_logprobs": []} for t in forced]
    return json_reply({"completion_probabilities": probs, "timings": {"prompt_n": 3}})


def _score(url: str, continuations: tuple[str, ...], timeout_s: float = 5.0) -> tuple[float, ...]:
    async def go() -> tuple[float, ...]:
        scorer = ServerScorer(url, _Tokens(), slots=2)
        try:
            request = ScoreRequest(
                (Message("system", "ab"), Message("user", "cde")),
                continuations,
                lead="I",
                timeout_s=timeout_s,
            )
            return (await scorer.score(request)).logprobs
        finally:
            await scorer.aclose()

    return anyio.run(go)


def test_token_grammar_allows_exactly_the_ids() -> None:
    assert token_grammar([5, 17]) == "root ::= <[5]> <[17]>"
    with pytest.raises(ConfigError):
        token_grammar([])


def test_each_continuation_is_forced_after_the_prompt_tokens_and_summed() -> None:
    with FakeServer(_honest) as srv:
        got = _score(srv.url, (" reload", " shoot", " run"))
    assert got == pytest.approx(tuple(sum(_logprob(t) for t in _PIECES[c]) for c in _PIECES))
    assert len(srv.requests) == 3
    for req in srv.requests:
        body = req.json()
        assert req.path == "/completion"
        assert body["prompt"] == [2, 3, ord("I")]
        assert body["n_probs"] == 1 and body["temperature"] == 0.0 and body["cache_prompt"]
        assert body["n_predict"] == len(body["grammar"].split()) - 2


def test_an_empty_continuation_scores_zero_without_a_request() -> None:
    with FakeServer(_honest) as srv:
        got = _score(srv.url, ("", " shoot"))
    assert got == (0.0, _logprob(9))
    assert len(srv.requests) == 1


def test_another_token_than_the_forced_one_is_an_error() -> None:
    probs = [{"id": 99, "logprob": -0.1}]
    reply = json_reply({"completion_probabilities": probs})
    with FakeServer(reply) as srv, pytest.raises(BackendError, match="another token"):
        _score(srv.url, (" shoot",))


@pytest.mark.parametrize(
    "answer",
    [
        {"completion_probabilities": [{"id": 9, "logprob": 0.5}]},  # not a log-probability
        {"completion_probabilities": [{"id": 9, "logprob": None}]},  # -inf as JSON gives
        {"completion_probabilities": []},
        {"content": "x"},
        ["not", "an", "object"],
    ],
)
def test_an_answer_without_valid_log_probabilities_is_an_error(answer: object) -> None:
    with FakeServer(json_reply(answer)) as srv, pytest.raises(BackendError):
        _score(srv.url, (" shoot",))


def test_a_server_slower_than_the_timeout_is_a_backend_timeout() -> None:
    with FakeServer(stall_reply()) as srv, pytest.raises(BackendTimeout):
        _score(srv.url, (" shoot",), timeout_s=0.3)


def test_a_request_without_continuations_is_refused() -> None:
    with pytest.raises(ConfigError):
        _score("http://127.0.0.1:9", ())
