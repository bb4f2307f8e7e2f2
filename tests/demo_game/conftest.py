"""Fixtures for the demo's tests: headless pygame, and games built in a fresh esper world.

There is deliberately no ``__init__.py`` in this folder: with pytest's default import mode it
would make this folder the top-level package ``demo_game`` and hide the real one.
"""

from __future__ import annotations

import os

# Before anything imports pygame: no window, no sound device.
os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from collections.abc import Callable, Iterator
from pathlib import Path

import pygame
import pytest

import aiplanner
from demo_game.game import Game, GameSettings

GameFactory = Callable[..., Game]


@pytest.fixture
def make_game(world: str) -> Iterator[GameFactory]:
    """Build games in the test's own esper world; all of them are closed afterwards.

    Defaults: the scripted backend on virtual time (``scripted=False``: no backend, the heuristic
    plans), a lockstep planner and a tick-driven clock, so runs with the same seed are identical.
    """
    games: list[Game] = []

    def make(
        *,
        map_name: str = "crossroads",
        squad_size: int = 3,
        seed: int = 0,
        scripted: bool = True,
        intermission_s: float = 1.0,
        **kwargs: object,
    ) -> Game:
        settings = GameSettings(
            map_name=map_name, squad_size=squad_size, seed=seed, intermission_s=intermission_s
        )
        if "config" not in kwargs and "replay" not in kwargs:
            kwargs["config"] = aiplanner.PlannerConfig(seed=seed, lockstep=True)
        if "backend" not in kwargs and "replay" not in kwargs and scripted:
            kwargs["backend"] = aiplanner.ScriptedBackend(
                latency_s=(0.05, 0.3), seed=seed, virtual_time=True
            )
        kwargs.setdefault("virtual_clock", True)
        game = Game(settings, **kwargs)  # type: ignore[arg-type]
        games.append(game)
        return game

    try:
        yield make
    finally:
        for game in games:
            game.close()


@pytest.fixture
def display() -> Iterator[None]:
    """pygame's display and fonts on the dummy driver, shut down afterwards."""
    pygame.display.init()
    pygame.font.init()
    try:
        yield
    finally:
        pygame.display.quit()


@pytest.fixture
def map_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a map file from its JSON text and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "custom.json"
        path.write_text(text)
        return path

    return write
