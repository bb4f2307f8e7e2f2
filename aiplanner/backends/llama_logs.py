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
"""

from __future__ import annotations

import logging

__all__ = ["LOGGER", "set_llama_log_level"]

LOGGER = "llama-cpp-python"
"""The logger whose level llama-cpp-python's log callback reads."""


def set_llama_log_level(verbose: bool) -> None:
    """Let llama.cpp print everything (``verbose``) or nothing."""
    logging.getLogger(LOGGER).setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
