"""Shared fixtures. Every test that touches esper gets a fresh world of its own."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import esper
import pytest

_worlds = itertools.count()


@pytest.fixture
def world() -> Iterator[str]:
    """Switch esper to a fresh, uniquely named world; delete it afterwards."""
    name = f"test-{os.getpid()}-{next(_worlds)}"
    esper.switch_world(name)
    try:
        yield name
    finally:
        esper.switch_world("default")
        esper.delete_world(name)
