"""Decision accuracy of the model as the game runs it: llama.cpp, the GGUF, optionally an adapter.

Scores every candidate phrase of every example after its prompt and after the content-free
context, through llama-cpp-python (the same tokens as the embedded backend's scoring: see
:func:`aiplanner.training.dataset.prompt_pieces`), and counts how often the calibrated (or raw)
arg-max is the teacher's best candidate. Needs the ``embedded`` extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiplanner.actions import DEFAULT_REGISTRY, ActionRegistry
from aiplanner.backends.base import Message
from aiplanner.decision import choose
from aiplanner.evaluation import Case, Decision, evaluate
from aiplanner.phrasing import LEAD, content_free_messages, decision_prompt
from aiplanner.prompts import PromptBuilder
from aiplanner.scenarios import load_scenarios
from aiplanner.training.dataset import ScoringExample, prompt_pieces

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["Accuracy", "LlamaScorer", "ScoredPlanner", "accuracy", "pick", "suite_scores"]


@dataclass(frozen=True, slots=True)
class Accuracy:
    """How often a decision rule picked the teacher's best, over ``n`` examples.

    ``overrules``: picks other than the rules' first candidate; ``overrules_right``: those that
    were the teacher's best.
    """

    n: int
    right: int
    overrules: int
    overrules_right: int

    @property
    def rate(self) -> float:
        return self.right / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "right": self.right,
            "rate": round(self.rate, 4),
            "overrules": self.overrules,
            "overrules_right": self.overrules_right,
        }


def accuracy(picks: Sequence[int], examples: Sequence[ScoringExample]) -> Accuracy:
    right = sum(1 for p, e in zip(picks, examples, strict=True) if p == e.best)
    over = [(p, e) for p, e in zip(picks, examples, strict=True) if p != 0]
    return Accuracy(len(examples), right, len(over), sum(1 for p, e in over if p == e.best))


class LlamaScorer:
    """Summed log-probabilities of phrases with llama.cpp (logits of every evaluated token kept).

    The evaluated prefix is reused between calls, as the embedded backend does.
    """

    def __init__(
        self, model_path: Path, lora_path: Path | None = None, *, n_threads: int = 2
    ) -> None:
        from llama_cpp import Llama

        from aiplanner.backends import cpu_buffers

        with cpu_buffers.loading():
            self.llama: Llama = Llama(
                model_path=str(model_path),
                lora_path=str(lora_path) if lora_path is not None else None,
                n_ctx=1024,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                logits_all=True,
                verbose=False,
            )

    def close(self) -> None:
        self.llama.close()

    def _tokens(self, messages: Sequence[Message]) -> list[int]:
        out: list[int] = []
        for text, special in prompt_pieces(messages, LEAD):
            out += self.llama.tokenize(text.encode(), add_bos=False, special=special)
        return out

    def phrase_scores(self, messages: Sequence[Message], phrases: Sequence[str]) -> list[float]:
        import numpy as np

        llama = self.llama
        ctx = self._tokens(messages)
        out: list[float] = []
        for phrase in phrases:
            toks = list(llama.tokenize(phrase.encode(), add_bos=False, special=False))
            full = ctx + toks
            cached = list(llama.input_ids[: llama.n_tokens])
            reuse = 0
            for a, b in zip(cached, full, strict=False):
                if a != b:
                    break
                reuse += 1
            # rows before ``reuse`` are still in llama.scores; evaluate at least one token
            reuse = min(reuse, len(full) - 1)
            llama.n_tokens = reuse
            llama.eval(full[reuse:])
            rows: Any = llama.scores[len(ctx) - 1 : len(full) - 1].astype(np.float64)
            top = rows.max(axis=1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
            out.append(float(sum(rows[k, t] - logz[k] for k, t in enumerate(toks))))
        return out

    def example_scores(
        self, examples: Sequence[ScoringExample]
    ) -> tuple[list[list[float]], list[list[float]]]:
        """(raw, content-free) scores per example."""
        raw = [self.phrase_scores(e.messages, e.phrases) for e in examples]
        distinct = list(dict.fromkeys(p for e in examples for p in e.phrases))
        free = dict(
            zip(distinct, self.phrase_scores(content_free_messages(), distinct), strict=True)
        )
        return raw, [[free[p] for p in e.phrases] for e in examples]


def pick(scores: Sequence[float], base: Sequence[float] | None = None) -> int:
    values = [s - (base[i] if base is not None else 0.0) for i, s in enumerate(scores)]
    return max(range(len(values)), key=lambda j: (values[j], -j))


class ScoredPlanner:
    """A scenario-suite planner (:class:`aiplanner.evaluation.ScenarioPlanner`): the scored
    guided decision (:func:`aiplanner.decision.choose`, calibrated) computed with llama.cpp, so a
    model with an adapter can be judged before the embedded backend loads adapters itself."""

    def __init__(
        self, scorer: LlamaScorer, *, rank_prior: float, label: str, registry: ActionRegistry
    ) -> None:
        self._scorer = scorer
        self._prior = rank_prior
        self._label = label
        self._registry = registry
        self._builder = PromptBuilder(registry, tier="compressed", mode="guided")
        self._free: dict[str, float] = {}

    @property
    def name(self) -> str:
        return f"{self._label} prior={self._prior:g}"

    def decide(self, cases: Sequence[Case]) -> list[Decision]:
        out = []
        for case in cases:
            snap = case.scenario.snapshot
            if len(case.candidates) == 1:
                out.append(Decision(plan=case.candidates[0]))
                continue
            role = self._builder.role_instruction(snap.me.role)
            messages, phrases = decision_prompt(snap, case.candidates, self._registry, role)
            raw = self._scorer.phrase_scores(messages, phrases)
            missing = [p for p in dict.fromkeys(phrases) if p not in self._free]
            if missing:
                free = self._scorer.phrase_scores(content_free_messages(), missing)
                self._free.update(zip(missing, free, strict=True))
            choice = choose(raw, [self._free[p] for p in phrases], rank_prior=self._prior)
            out.append(Decision(plan=case.candidates[choice.index], raw=choice.describe()))
        return out


def suite_scores(
    gguf: Path,
    adapter: Path | None,
    rank_priors: Sequence[float] = (0.0, 1.0),
    *,
    registry: ActionRegistry = DEFAULT_REGISTRY,
) -> dict[str, dict[str, object]]:
    """The scenario suite (the test set: never trained on) judged for the scored decision with
    each rank prior: ``{name: {sensible, decisions, overrides, overrides_right, fixes, breaks,
    rules_wrong}}``. One llama.cpp thread (see :func:`aiplanner.training.train.train`)."""
    scenarios = load_scenarios()
    scorer = LlamaScorer(gguf, adapter, n_threads=1)
    out: dict[str, dict[str, object]] = {}
    try:
        for prior in rank_priors:
            label = "adapter" if adapter is not None else "base"
            planner = ScoredPlanner(scorer, rank_prior=prior, label=label, registry=registry)
            f = evaluate(planner, scenarios, registry=registry).overall
            out[planner.name] = {
                "decisions": f.decisions,
                "sensible": f.sensible,
                "agree": f.agree,
                "overrides": f.overrides,
                "overrides_right": f.overrides_right,
                "fixes": f.fixes,
                "breaks": f.breaks,
                "rules_wrong": f.rules_wrong,
            }
    finally:
        scorer.close()
    return out
