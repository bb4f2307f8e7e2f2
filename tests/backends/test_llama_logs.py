"""llama.cpp prints nothing unless the backend is verbose, and a failure says what llama.cpp
logged as errors (aiplanner/backends/llama_logs.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiplanner.backends import llama_logs
from aiplanner.backends.llama_logs import LOGGER, llama_errors, reason, set_llama_log_level

pytest.importorskip("llama_cpp")

# llama.cpp's log levels in the ggml that llama-cpp-python 0.3.36 builds (ggml.h).
DEBUG, INFO, WARN, ERROR, CONT = 1, 2, 3, 4, 5


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


# --- the error lines a load collects (llama_errors) ---------------------------------------------


def _log(level: int, text: bytes) -> None:
    """The callback llama_errors installs, called as llama.cpp calls it."""
    llama_logs._installed(level, text, None)


def test_a_failed_load_says_why_and_quiet_still_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import llama_cpp

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + bytes(64))  # version 0
    set_llama_log_level(False)
    capsys.readouterr()
    loaded: list[object] = []
    with llama_errors() as errors:  # llama.cpp logs on whichever thread loads
        thread = threading.Thread(
            target=lambda: loaded.append(
                llama_cpp.llama_model_load_from_file(
                    str(fake).encode(), llama_cpp.llama_model_default_params()
                )
            )
        )
        thread.start()
        thread.join(60)
    assert loaded and not loaded[0], "llama.cpp loaded no model"
    assert any("bad GGUF version: 0" in line for line in errors), errors
    assert reason(errors).startswith(" (llama.cpp: ") and "bad GGUF version: 0" in reason(errors)
    assert capsys.readouterr().err == ""


def test_only_error_lines_inside_the_block_are_collected_whole_and_bounded() -> None:
    with llama_errors():  # installs the callback
        pass
    _log(ERROR, b"before the block\n")
    with llama_errors() as errors:
        _log(ERROR, b"one line ")
        _log(CONT, b"in two pieces\n")
        _log(WARN, b"a warning\n")
        _log(CONT, b"its continuation\n")
        _log(INFO, b"information\n")
        _log(ERROR, b"x" * 1000 + b"\n")
        for _ in range(1000):  # a line in endless pieces
            _log(CONT, b"y" * 100)
        _log(CONT, b"\n")
        for i in range(30):
            _log(ERROR, b"error %d\n" % i)
    _log(ERROR, b"after the block\n")
    assert errors[:3] == ["one line in two pieces", "x" * 300, "y" * 300]
    assert errors[3:] == [f"error {i}" for i in range(13)]
    assert llama_logs._line == []
    assert reason([]) == ""
