"""Progress display for long benchmark work: tqdm bars when tqdm is installed, plain lines if not.

Suites only see the :class:`Progress` protocol, so the test suite can run them silently and a
future display (rich, a log) is one class more.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Protocol, TextIO, TypeVar

__all__ = ["Progress", "QuietProgress", "TextProgress", "make_progress"]

T = TypeVar("T")


class Progress(Protocol):
    """How a suite reports what it is doing."""

    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        """Yield ``items``, showing how many of ``total`` are done under ``label``."""
        ...

    def note(self, text: str) -> None:
        """One line of information (a figure, a reason to skip)."""
        ...


class QuietProgress:
    """Shows nothing (tests, ``--quiet``)."""

    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        yield from items

    def note(self, text: str) -> None:
        return None


class TextProgress:
    """One line per step on ``stream`` (stderr by default): fine for logs and CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr

    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        for i, item in enumerate(items, 1):
            print(f"  {label}: {i}/{total if total is not None else '?'}", file=self._stream)
            yield item

    def note(self, text: str) -> None:
        print(text, file=self._stream)


class _TqdmProgress:
    def track(self, items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
        from tqdm import tqdm

        yield from tqdm(items, desc=label, total=total, leave=False, file=sys.stderr)

    def note(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)


def make_progress(quiet: bool = False) -> Progress:
    """tqdm bars when tqdm is installed and stderr is a terminal; plain lines otherwise."""
    if quiet:
        return QuietProgress()
    if sys.stderr.isatty():
        try:
            import tqdm  # noqa: F401  (optional: the ``bench`` extra)
        except ImportError:
            pass
        else:
            return _TqdmProgress()
    return TextProgress()
