"""``python -m aiplanner train``'s teacher settings: they reach the labeller and the report's
command, and that command parses back to the same settings (no model or torch needed)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from aiplanner.errors import ConfigError
from aiplanner.training.teacher import TeacherConfig
from aiplanner.training.train import (
    TrainSettings,
    _argv_of,
    add_train_parser,
    teacher_config,
)


def _parse(argv: list[str]) -> TrainSettings:
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    names = {f for f in TrainSettings.__dataclass_fields__ if f != "quick"}
    return TrainSettings(**{k: v for k, v in vars(args).items() if k in names})


def test_the_default_teacher_is_the_shipped_adapters() -> None:
    assert teacher_config(TrainSettings()) == TeacherConfig()
    assert _parse([]) == TrainSettings()


def test_teacher_settings_reach_the_labeller_and_round_trip_through_the_command() -> None:
    s = TrainSettings(horizon_s=10.0, weights="hold=20,win=200", round_rules=True, variants=2)
    cfg = teacher_config(s)
    assert (cfg.horizon_s, cfg.round_rules, cfg.variants) == (10.0, True, 2)
    assert (cfg.weights.hold, cfg.weights.win, cfg.weights.loss) == (20.0, 200.0, 0.0)
    argv = shlex.split(" ".join(_argv_of(s)))
    assert "--round-rules" in argv and _parse(argv) == s
    with pytest.raises(ConfigError):
        teacher_config(TrainSettings(weights="hold"))


def test_the_command_names_the_labels_it_read() -> None:
    s = TrainSettings(steps=240, warmup=10)
    labels = Path("/tmp/game labels.jsonl")
    argv = shlex.split(" ".join(_argv_of(s, labels)))
    assert argv[:2] == ["--labels", str(labels)]
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["train", *argv]).labels == labels
    assert _parse(argv[2:]) == s
    assert "--labels" not in _argv_of(s)
