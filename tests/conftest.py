"""Shared fixtures. Every test that touches esper gets a fresh world of its own."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
# Converted model weights (aiplanner.backends.weights) go to a folder of this run's, not the
# user's cache: the suite starts from nothing as on a clean machine (a conversion takes ~1 s).
if "AIPLANNER_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="aiplanner-test-cache-")
    os.environ["AIPLANNER_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, True)

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
