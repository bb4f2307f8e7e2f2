"""The embedded backend's worker threads, as the backend tests look for them (not a test
module): ``test_embedded``, ``test_batched`` and ``test_abort`` share it."""

from __future__ import annotations

import threading

from aiplanner.backends.embedded import THREAD_NAME


def worker_threads() -> list[threading.Thread]:
    """The embedded backend's worker threads still alive."""
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def no_worker_left(timeout_s: float) -> bool:
    """Whether the worker threads end, each waited for up to ``timeout_s`` (a bounded wait)."""
    for thread in worker_threads():
        thread.join(timeout_s)
    return not worker_threads()
