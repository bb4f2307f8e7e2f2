"""Scoring examples: labelled situations turned into what the scored guided decision sees.

The guided decision (:mod:`aiplanner.decision`) scores each candidate's phrase as the
continuation of the situation's chat prompt (with the guided prompt's role instruction) after
:data:`aiplanner.phrasing.LEAD`; both come from :func:`aiplanner.phrasing.decision_prompt`, here
as there. A :class:`ScoringExample` holds exactly those texts plus the teacher's answer, so
training and the game see the same words.

:func:`prompt_pieces` spells out how the embedded engine turns messages into tokens (ChatML
markers as special tokens, every text tokenized on its own as plain text, the lead after the
opened assistant turn, each continuation tokenized on its own): the trainer tokenizes the same
pieces with the model's tokenizer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aiplanner.actions import ActionRegistry
from aiplanner.backends.base import Message
from aiplanner.errors import ConfigError
from aiplanner.phrasing import LEAD, decision_prompt
from aiplanner.prompts import PromptBuilder
from aiplanner.training.situations import situation_snapshot
from aiplanner.training.teacher import Label

__all__ = ["ScoringExample", "make_examples", "prompt_pieces", "split_labels"]


@dataclass(frozen=True, slots=True)
class ScoringExample:
    """One decision to learn: the prompt, each candidate's phrase (rules' order) and the best."""

    messages: tuple[Message, ...]
    phrases: tuple[str, ...]
    best: int
    margin: float
    kind: str


def prompt_pieces(messages: Sequence[Message], lead: str = LEAD) -> list[tuple[str, bool]]:
    """The prompt as ``(text, special)`` pieces, in order, each tokenized on its own.

    ``special`` pieces are ChatML markers (tokenized with special tokens parsed); the others are
    plain text. This mirrors the embedded backend's ChatML prompt for scoring.
    """
    pieces: list[tuple[str, bool]] = []
    for m in messages:
        pieces.append((f"<|im_start|>{m.role}\n", True))
        pieces.append((m.content, False))
        pieces.append(("<|im_end|>\n", True))
    pieces.append(("<|im_start|>assistant\n", True))
    if lead:
        pieces.append((lead, False))
    return pieces


def make_examples(
    labels: Sequence[Label], registry: ActionRegistry, *, min_margin: float = 0.0
) -> tuple[list[ScoringExample], Counter[str]]:
    """Scoring examples for ``labels``, and a count of those left out and why.

    Left out: a single candidate (nothing to choose), a margin under ``min_margin`` (a near tie
    teaches nothing), and a best candidate whose phrase another candidate shares (the model
    could not tell them apart).
    """
    builder = PromptBuilder(registry, tier="compressed", mode="guided")
    examples: list[ScoringExample] = []
    dropped: Counter[str] = Counter()
    for label in labels:
        if len(label.candidates) < 2:
            dropped["single_candidate"] += 1
            continue
        if label.margin < min_margin:
            dropped["small_margin"] += 1
            continue
        snap, _ = situation_snapshot(label.situation)
        instruction = builder.role_instruction(snap.me.role)
        messages, phrases = decision_prompt(snap, label.candidates, registry, instruction)
        if phrases.count(phrases[label.best]) > 1:
            dropped["ambiguous_phrase"] += 1
            continue
        examples.append(
            ScoringExample(messages, phrases, label.best, label.margin, label.situation.kind)
        )
    return examples, dropped


def split_labels(labels: Sequence[Label], holdout: float) -> tuple[list[Label], list[Label]]:
    """(train, held out): the last ``holdout`` fraction is held out (situations are drawn
    independently, so the tail is as good a sample as any). Raises :class:`ConfigError` unless
    ``0 <= holdout < 1``."""
    if not 0 <= holdout < 1:
        raise ConfigError(f"holdout must be in [0, 1), got {holdout}")
    n_hold = round(len(labels) * holdout)
    cut = len(labels) - n_hold
    return list(labels[:cut]), list(labels[cut:])
