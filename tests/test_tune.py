"""tune: with a scripted latency model, it picks the batch size the model implies."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aiplanner.backends import factory
from aiplanner.backends.base import CompletionRequest
from aiplanner.backends.scripted import ScriptedBackend, ScriptedReply
from aiplanner.cli import main
from aiplanner.config import PlannerConfig
from aiplanner.tune import Trial, batch_sizes, choose, explain

# The latency model: a call costs a fixed part plus a part per agent in it, and the engine serves
# one call at a time. Margins of 50 ms or more around the deadline keep a loaded machine from
# changing the answer.
FIXED_S, PER_AGENT_S, DEADLINE_S, AGENTS = 0.10, 0.05, 0.55, 12
SIZES = (1, 2, 4, 8, 12)


def _call_s(agents_in_call: int) -> float:
    return FIXED_S + PER_AGENT_S * agents_in_call


def implied_batch_size() -> int:
    """The batch size the model implies: batches of ``b`` go one after another, batch ``k``
    (from 1) arrives at ``k * call_s(b)``; most agents on time wins, then the lower mean wait."""

    def score(b: int) -> tuple[int, float]:
        arrivals = [(k + 1) * _call_s(b) for k in range(math.ceil(AGENTS / b)) for _ in range(b)][
            :AGENTS
        ]
        return (-sum(1 for t in arrivals if t <= DEADLINE_S), sum(arrivals) / AGENTS)

    return min(SIZES, key=score)


def _model_backend() -> ScriptedBackend:
    def respond(request: CompletionRequest) -> ScriptedReply:
        return ScriptedReply(delay_s=_call_s(len(request.agents)))

    return ScriptedBackend(respond, max_concurrency=1, parallel=False)


def test_tune_picks_the_batch_size_the_latency_model_implies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = implied_batch_size()
    assert expected not in (1, AGENTS)  # the model has an interior optimum: a real choice
    monkeypatch.setattr(factory, "create_backend", lambda *a, **k: _model_backend())
    out = tmp_path / "tuned.toml"
    argv = ["tune", "--backend", "scripted", "--agents", str(AGENTS), "--quiet"]
    argv += ["--deadline", str(DEADLINE_S), "--repeat", "1", "--out", str(out)]
    argv += ["--sizes", *map(str, SIZES)]
    assert main(argv) == 0
    config = PlannerConfig.from_toml(out)
    assert config.max_batch_size == expected
    assert config.strategy == "packed"  # one-agent calls cannot beat it on a serial engine
    assert config.plan_deadline_s == DEADLINE_S
    printed = capsys.readouterr().out
    assert f"packed with batches of {expected}" in printed and "<- chosen" in printed
    text = out.read_text()
    assert text.startswith("# Written by python -m aiplanner tune")
    assert "cache_size" not in text  # only what tune decided


def test_choose_prefers_on_time_then_wait_then_smaller_batches() -> None:
    trials = [
        Trial("packed", 8, 0.5, 0.2),
        Trial("packed", 4, 0.75, 0.4),
        Trial("concurrent", 4, 0.75, 0.3),
        Trial("sequential", 2, 0.75, 0.3),
    ]
    best = choose(trials)
    assert best == Trial("sequential", 2, 0.75, 0.3)
    text = explain(trials, best, 4.0, 10)
    assert "did as well" in text and text.splitlines()[1].endswith("<- chosen")
    with pytest.raises(ValueError):
        choose([])


def test_batch_sizes_are_powers_of_two_then_the_agent_count() -> None:
    assert batch_sizes(10) == [1, 2, 4, 8, 10]
    assert batch_sizes(1) == [1]
    assert batch_sizes(1000)[-1] == 256


def test_nothing_to_tune_without_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.toml"
    assert main(["tune", "--backend", "heuristic", "--out", str(out), "--quiet"]) == 2
    assert "nothing to tune" in capsys.readouterr().err and not out.exists()
    assert main(["tune", "--backend", "scripted", "--strategies", "fastest", "--quiet"]) == 2
