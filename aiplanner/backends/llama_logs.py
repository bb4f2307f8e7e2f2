"""What llama.cpp prints: nothing unless the backend is verbose.

llama-cpp-python 0.3.36 sends llama.cpp's log through a callback that prints what the
``llama-cpp-python`` logger's level lets through, mapping llama.cpp's levels with a table written
for an older ggml (NONE, INFO, WARN, ERROR, DEBUG). The ggml it builds numbers them NONE, DEBUG,
INFO, WARN, ERROR, so at the level ``Llama(verbose=False)`` sets (``logging.ERROR``) llama.cpp's
warnings are printed and its errors are not: a decode ended at close (:mod:`.abort`) printed a
warning for every sequence in it. Quiet means quiet here: the logger's level is set above
everything the table can give (llama.cpp's failures reach the caller as exceptions anyway);
verbose lets everything through. It is the process's logger, which every ``Llama(...)`` sets
again, so the backends call this after the ``Llama`` they construct (the engines' model, the
weights' conversion); the training evaluator and the bench's token counter and server scorer
construct theirs without it, and a warning of llama.cpp after one of those prints as before.

Quiet hid why a load failed, though: llama.cpp logs the reason ("this GGUF file is version
392573839 but this software only supports up to version 3") and returns only a null model, which
llama-cpp-python reports as "Failed to load model from file". :func:`llama_errors` collects the
error lines llama.cpp logs while a block runs, printed or not, so a load's failure can say why:
a callback of ours stands in front of llama-cpp-python's (which still prints what its logger's
level lets through), installed on first use. Like llama-cpp-python's, it is a ctypes callback
and takes the GIL when llama.cpp logs; llama.cpp logs while it loads, rarely after.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from typing import Any, Final

__all__ = ["LOGGER", "llama_errors", "reason", "set_llama_log_level"]

LOGGER = "llama-cpp-python"
"""The logger whose level llama-cpp-python's log callback reads."""


def set_llama_log_level(verbose: bool) -> None:
    """Let llama.cpp print everything (``verbose``) or nothing."""
    logging.getLogger(LOGGER).setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)


# llama.cpp's log levels in the ggml llama-cpp-python 0.3.x builds (ggml.h): a CONT piece
# continues the line of the level before it.
_ERROR: Final = 4
_CONT: Final = 5
# Most error lines one block collects, and characters kept of each (a file's own text can be
# quoted in them).
_MAX_LINES: Final = 16
_MAX_CHARS: Final = 300

_lock = threading.Lock()
_open: list[list[str]] = []  # the lists of the blocks running now
_line: list[str] = []  # pieces of the error line being logged
_last_level = 0
_installed: Any = None  # the ctypes callback llama.cpp holds: kept alive here


@contextlib.contextmanager
def llama_errors() -> Iterator[list[str]]:
    """The error lines llama.cpp logs while the block runs (from any thread, whatever the log
    level), in order; at most the first ``_MAX_LINES``, each cut to ``_MAX_CHARS`` characters.
    Needs llama-cpp-python (ImportError)."""
    _install()
    lines: list[str] = []
    with _lock:
        _open.append(lines)
    try:
        yield lines
    finally:
        with _lock:
            _open.remove(lines)


def reason(lines: list[str]) -> str:
    """``lines`` of :func:`llama_errors` as the end of an error message: ``" (llama.cpp: a;
    b)"``, or nothing when there are none."""
    return f" (llama.cpp: {'; '.join(lines)})" if lines else ""


def _install() -> None:
    global _installed
    import llama_cpp  # before the lock: nothing logged meanwhile can wait on it
    from llama_cpp._logger import llama_log_callback as printer

    with _lock:
        if _installed is not None:
            return

        @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            _collect(level, text)
            printer(level, text, user_data)

        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        _installed = callback


def _collect(level: int, text: bytes) -> None:
    global _last_level
    with _lock:
        if level != _CONT:
            _last_level = level
        if _last_level != _ERROR or not _open:
            _line.clear()
            return
        piece = text.decode("utf-8", "replace")
        if sum(map(len, _line)) <= _MAX_CHARS:  # a line in endless pieces stays bounded
            _line.append(piece)
        if not piece.endswith("\n"):
            return  # the rest of the line comes as a CONT piece
        line = "".join(_line).strip()[:_MAX_CHARS]
        _line.clear()
        for lines in _open:
            if line and len(lines) < _MAX_LINES:
                lines.append(line)
