"""llama.cpp prints nothing unless the backend is verbose (aiplanner/backends/llama_logs.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aiplanner.backends.llama_logs import LOGGER, set_llama_log_level

pytest.importorskip("llama_cpp")

# llama.cpp's log levels in the ggml that llama-cpp-python 0.3.36 builds (ggml.h).
DEBUG, INFO, WARN, ERROR = 1, 2, 3, 4


@pytest.fixture(autouse=True)
def _level_restored() -> Iterator[None]:
    logger = logging.getLogger(LOGGER)
    level = logger.level
    yield
    logger.setLevel(level)


def _printed(capsys: pytest.CaptureFixture[str], level: int) -> str:
    # llama-cpp-python's own callback, called as llama.cpp calls it.
    from llama_cpp._logger import llama_log_callback

    capsys.readouterr()
    llama_log_callback(level, b"llama.cpp says something\n", None)
    return capsys.readouterr().err


def test_quiet_prints_no_warning_nor_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    set_llama_log_level(False)
    for level in (DEBUG, INFO, WARN, ERROR):
        assert _printed(capsys, level) == "", level


def test_verbose_prints_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    set_llama_log_level(True)
    for level in (DEBUG, INFO, WARN, ERROR):
        assert "llama.cpp says something" in _printed(capsys, level), level
