"""FrameCollector: automatic collection off while started, each generation collected on its turn
between frames, everything restored afterwards."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from aiplanner import ConfigError, FrameCollector


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def _cycle() -> weakref.ref[_Node]:
    """A garbage cycle only the cycle collector can free; a weak reference to watch it go."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def generations() -> Iterator[list[int]]:
    """The generation of every collection that starts while the test runs."""
    started: list[int] = []

    def log(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(log)
    try:
        yield started
    finally:
        gc.callbacks.remove(log)


def test_collections_happen_between_frames_and_only_there(generations: list[int]) -> None:
    was_enabled = gc.isenabled()
    pacer = FrameCollector(middle_every=3, full_every=6)
    with pacer:
        assert pacer.started and not gc.isenabled() and gc.get_freeze_count() > 0
        generations.clear()  # start's own full pass
        garbage = _cycle()
        junk = [[i] for i in range(5000)]  # far past the young threshold: no pass starts
        del junk
        assert generations == [] and garbage() is not None
        done = [pacer.between_frames() for _ in range(6)]
        assert garbage() is None  # the first young pass freed the cycle
    assert done == [0, 0, 1, 0, 0, 2] and generations == done
    assert gc.isenabled() is was_enabled and gc.get_freeze_count() == 0
    assert not pacer.started and pacer.between_frames() == -1  # stopped: does nothing


def test_start_twice_and_stop_twice_are_harmless(generations: list[int]) -> None:
    was_enabled = gc.isenabled()
    pacer = FrameCollector(full_every=0)
    pacer.start()
    try:
        pacer.start()
        assert not gc.isenabled()
        generations.clear()
        assert [pacer.between_frames() for _ in range(20)] == [0] * 9 + [1] + [0] * 9 + [1]
        pacer.full()
        assert generations[-1] == 2
    finally:
        pacer.stop()
        pacer.stop()
    assert gc.isenabled() is was_enabled


@pytest.mark.parametrize(
    "kwargs", [{"middle_every": 0}, {"middle_every": -1}, {"full_every": -5}, {"full_every": 1.5}]
)
def test_bad_periods_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        FrameCollector(**kwargs)  # type: ignore[arg-type]
