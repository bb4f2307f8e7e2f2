"""PlannerConfig.from_toml / to_toml: round trips, and every bad file is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiplanner.config import PlannerConfig
from aiplanner.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "planner.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "config",
    [
        PlannerConfig(),
        PlannerConfig(
            max_batch_size=3,
            strategy="packed",
            mode="free",
            prompt_tier="full",
            plan_deadline_s=2.5,
            max_plans_per_tick=7,
            provisional=False,
            temperature=0.2,
            roles=("tactical", "support"),
        ),
    ],
)
def test_round_trip(tmp_path: Path, config: PlannerConfig) -> None:
    path = _write(tmp_path, config.to_toml("chosen by a test\nsecond line"))
    assert PlannerConfig.from_toml(path) == config


def test_header_is_comments_and_absent_keys_keep_defaults(tmp_path: Path) -> None:
    text = PlannerConfig(max_batch_size=5).to_toml("why: it won")
    assert text.startswith("# why: it won\n")
    assert "max_plans_per_tick" not in text  # None has no TOML form: left out means None
    path = _write(tmp_path, "max_batch_size = 5\nplan_deadline_s = 3\n")
    loaded = PlannerConfig.from_toml(path)
    assert loaded.max_batch_size == 5
    assert loaded.plan_deadline_s == 3.0 and isinstance(loaded.plan_deadline_s, float)
    assert loaded.strategy == PlannerConfig().strategy
    assert PlannerConfig.from_toml(_write(tmp_path, "")) == PlannerConfig()


def test_strings_with_quotes_survive(tmp_path: Path) -> None:
    config = PlannerConfig(roles=("tactical", "odd_role"))
    path = _write(tmp_path, config.to_toml('a "quoted" header \\ with a backslash'))
    assert PlannerConfig.from_toml(path).roles == ("tactical", "odd_role")


@pytest.mark.parametrize(
    ("text", "key", "detail"),
    [
        ("max_batch_sise = 4\n", "max_batch_sise", "unknown key"),
        ("registry = 'mine'\n", "registry", "unknown key"),
        ('max_batch_size = "8"\n', "max_batch_size", "expected int"),
        ("max_batch_size = true\n", "max_batch_size", "expected int"),
        ("max_batch_size = 2.5\n", "max_batch_size", "expected int"),
        ("provisional = 1\n", "provisional", "expected bool"),
        ("strategy = 3\n", "strategy", "expected str"),
        ("roles = [1, 2]\n", "roles", "list of str"),
        ("max_batch_size = 0\n", "max_batch_size", "at least 1"),
        ("strategy = 'fastest'\n", "strategy", "unknown strategy"),
        ("mode = 'creative'\nmax_batch_size = 4\n", "mode", "unknown mode"),
        ("plan_deadline_s = -1\n", "plan_deadline_s", "positive"),
        ("[planner]\nmax_batch_size = 4\n", "planner", "unknown key"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str, detail: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        PlannerConfig.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert key in message and detail in message


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        PlannerConfig.from_toml(_write(tmp_path, "max_batch_size = = 4\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        PlannerConfig.from_toml(tmp_path / "missing.toml")


def test_only_the_named_keys_are_written(tmp_path: Path) -> None:
    config = PlannerConfig(max_batch_size=6, strategy="packed", cache_size=99)
    text = config.to_toml(only=("max_batch_size", "strategy", "mode"))
    assert [line.split(" = ")[0] for line in text.splitlines()] == [
        "max_batch_size",
        "strategy",
        "mode",
    ]
    loaded = PlannerConfig.from_toml(_write(tmp_path, text))
    assert (loaded.max_batch_size, loaded.strategy) == (6, "packed")
    assert loaded.cache_size == PlannerConfig().cache_size
