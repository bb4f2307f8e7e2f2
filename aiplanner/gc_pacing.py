"""FrameCollector: Python's cycle collector run between frames, never in the middle of one.

CPython's collector starts whenever enough container objects (tuples, lists, component
instances...) have been made since the last pass, wherever that happens to be: in the middle of
a tick, or in the bridge thread while the game thread waits for the lock. A pass over the
oldest generation walks every container object alive (measured in ``benchmarks/whole_tick.py``
at 1000 agents: 20-57 ms, finding nothing to free), and even a young pass can take a few
milliseconds. A game loop has idle time at the end of each frame (it sleeps until the next):
that is where the collector belongs.

:meth:`FrameCollector.start`, once the world is built: one full pass, ``gc.freeze()`` (what was
made while loading is never walked again), then automatic collection off.
:meth:`FrameCollector.between_frames`, once per frame after its work (before sleeping): the
youngest generation every call, the middle one every ``middle_every`` calls, the full pass every
``full_every`` calls (0: never; call :meth:`full` at a loading screen). :meth:`stop` (or leaving
the ``with`` block) switches automatic collection back on and unfreezes.

Automatic collection is process-wide: while started, garbage cycles made by any thread wait for
the next :meth:`between_frames`. Objects freed by reference counting (nearly all) are freed at
once as usual. Raises :class:`ConfigError` for a negative or non-int period.
"""

from __future__ import annotations

import gc
from types import TracebackType

from aiplanner.errors import ConfigError

__all__ = ["FrameCollector"]


class FrameCollector:
    """Collects garbage between frames (see the module docstring)."""

    def __init__(self, *, middle_every: int = 10, full_every: int = 3600) -> None:
        for name, value in (("middle_every", middle_every), ("full_every", full_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        if middle_every == 0:
            raise ConfigError("middle_every must be at least 1")
        self.middle_every = middle_every
        self.full_every = full_every
        self._calls = 0
        self._was_enabled: bool | None = None  # None: not started

    @property
    def started(self) -> bool:
        return self._was_enabled is not None

    def start(self) -> FrameCollector:
        """Full pass, freeze what exists, automatic collection off. Starting twice is a no-op."""
        if self._was_enabled is None:
            self._was_enabled = gc.isenabled()
            gc.collect()
            gc.freeze()
            gc.disable()
            self._calls = 0
        return self

    def between_frames(self) -> int:
        """Collect the generation due at this call (see the module docstring); returns it
        (0 young, 1 middle, 2 full). Does nothing and returns -1 when not started."""
        if self._was_enabled is None:
            return -1
        self._calls += 1
        if self.full_every and self._calls % self.full_every == 0:
            generation = 2
        elif self._calls % self.middle_every == 0:
            generation = 1
        else:
            generation = 0
        gc.collect(generation)
        return generation

    def full(self) -> None:
        """A full pass now (a loading screen, a pause menu)."""
        gc.collect()

    def stop(self) -> None:
        """Automatic collection back as it was before :meth:`start`; unfreeze."""
        if self._was_enabled is None:
            return
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
        self._was_enabled = None

    def __enter__(self) -> FrameCollector:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
