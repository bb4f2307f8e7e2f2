"""ServiceRate: busy seconds per answer, idle time excluded."""

from __future__ import annotations

import pytest

from aiplanner.errors import ConfigError
from aiplanner.throughput import ServiceRate


def test_nothing_measured_before_the_first_answer() -> None:
    rate = ServiceRate()
    assert rate.per_plan_s is None
    rate.busy(1.0)
    assert rate.per_plan_s is None


def test_answers_of_one_busy_stretch_share_its_time() -> None:
    rate = ServiceRate()
    rate.busy(10.0)
    rate.busy(10.5)  # another request while busy: the stretch started at 10.0
    rate.answered(13.0)
    rate.answered(13.0)  # a pass that answers two at once
    rate.answered(14.0)
    assert rate.per_plan_s == pytest.approx(4.0 / 3)


def test_idle_time_is_not_the_backends() -> None:
    rate = ServiceRate()
    rate.busy(0.0)
    rate.answered(1.0)
    rate.idle()
    rate.answered(50.0)  # after idle without a request going out: not timed
    rate.busy(100.0)
    rate.answered(103.0)
    assert rate.per_plan_s == pytest.approx(2.0)


def test_only_the_last_window_counts() -> None:
    rate = ServiceRate(window=2)
    rate.busy(0.0)
    for t in (10.0, 11.0, 12.0):
        rate.answered(t)
    assert rate.per_plan_s == pytest.approx(1.0)


def test_a_window_must_hold_an_answer() -> None:
    with pytest.raises(ConfigError):
        ServiceRate(window=0)
