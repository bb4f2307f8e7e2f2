"""BenchError: a benchmark could not measure (a child process or a server failed to start)."""

from __future__ import annotations

from aiplanner.errors import PlannerError

__all__ = ["BenchError"]


class BenchError(PlannerError, RuntimeError):
    """A benchmark step failed; the message says which and holds the end of any output."""
