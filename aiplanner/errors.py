"""The one exception tree of aiplanner.

::

    PlannerError
    ├── ConfigError (ValueError)           usage mistakes, raised at install / construction time
    ├── BridgeClosed (RuntimeError)        work handed to a bridge that is not running
    ├── SnapshotFormatError (ValueError)   a snapshot dict (``--snapshot`` file) of the wrong shape
    ├── PlanRejected (ValueError)          a plan failed validation; carries ``reason`` and ``raw``
    ├── ParseError (ValueError)            model text that is not the expected JSON; carries ``raw``
    ├── ModelNotFoundError (FileNotFoundError)   a GGUF path that is missing or not a GGUF
    └── BackendError                       a backend call failed; has ``retryable`` and the cause
        ├── BackendUnavailable (ConnectionError)  refused / reset / DNS: retryable
        ├── BackendHTTPError                 non-2xx answer; 429 and 5xx are retryable
        ├── BackendTimeout (TimeoutError)    deadline or read timeout passed
        ├── CircuitOpen                      the circuit breaker refused the call
        └── ResponseTooLarge                 the answer passed the size bound

Errors raised from an underlying exception keep it as ``__cause__`` (``raise ... from exc``).
"""

from __future__ import annotations

__all__ = [
    "BackendBusy",
    "BackendError",
    "BackendHTTPError",
    "BackendTimeout",
    "BackendUnavailable",
    "BridgeClosed",
    "CircuitOpen",
    "ConfigError",
    "ModelNotFoundError",
    "ParseError",
    "PlanRejected",
    "PlannerError",
    "ResponseTooLarge",
    "SnapshotFormatError",
]


class PlannerError(Exception):
    """Root of every error aiplanner raises on purpose."""


class ConfigError(PlannerError, ValueError):
    """A configuration or usage mistake (bad batch size, unknown role or action...)."""


class BridgeClosed(PlannerError, RuntimeError):
    """Work was handed to the async bridge after it was closed (or before it was started)."""


class SnapshotFormatError(PlannerError, ValueError):
    """A snapshot dict that is not what ``WorldSnapshot.to_dict`` writes (a missing key, a value
    of the wrong type). The message names what is wrong."""


class ParseError(PlannerError, ValueError):
    """Model output that could not be parsed. ``raw`` holds (a bounded prefix of) the text."""

    def __init__(self, message: str, raw: str = "") -> None:
        super().__init__(message)
        self.raw = raw[:2000]


class PlanRejected(PlannerError, ValueError):
    """A parsed plan failed validation against the registry or the snapshot."""

    def __init__(self, reason: str, detail: str, raw: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw[:2000]


class ModelNotFoundError(PlannerError, FileNotFoundError):
    """The model file is missing or is not a GGUF file. The message names the path."""


class BackendError(PlannerError):
    """A backend call failed. ``retryable`` says whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class BackendUnavailable(BackendError, ConnectionError):
    """The backend could not be reached (connection refused, reset, closed)."""

    retryable = True


class BackendHTTPError(BackendError):
    """The server answered with a non-2xx status. 429 and 5xx are retryable."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}", retryable=status == 429 or status >= 500)
        self.status = status
        self.retry_after = retry_after


class BackendTimeout(BackendError, TimeoutError):
    """The deadline or a read timeout passed before the answer was complete."""

    retryable = False


class BackendBusy(BackendTimeout):
    """The backend is working, but on others' requests: this one could not be answered before
    its deadline (an in-process engine's queue, or shed because the work ahead of it outlasts its
    deadline). Load, not a fault: the circuit breaker does not count it as a failure."""


class CircuitOpen(BackendError):
    """The circuit breaker of this backend is open: the call was not made."""

    retryable = False


class ResponseTooLarge(BackendError):
    """The answer exceeded the configured size bound."""

    retryable = False
