"""RateMeter: the one rate measurement (admin API bit rates, console history, cluster heartbeat)."""

from __future__ import annotations

import pytest

from mediaserver.hub.rate import RateMeter


def test_the_rate_spans_the_window_and_needs_two_readings():
    meter = RateMeter(window_s=10.0)
    assert meter.per_second() is None
    meter.add(0.0, 0)
    assert meter.per_second() is None
    for t in range(1, 21):
        meter.add(float(t), t * 1000 if t <= 10 else 10_000 + (t - 10) * 3000)
    # The last 10 s grew at 3000/s; the readings before the window are gone.
    assert meter.per_second() == pytest.approx(3000.0)
    assert meter.kbps() == pytest.approx(24.0)


def test_a_zero_window_measures_between_the_last_two_readings_and_a_reset_starts_over():
    meter = RateMeter(window_s=0)
    meter.add(0.0, 0)
    meter.add(2.0, 500)
    meter.add(4.0, 4500)
    assert meter.per_second() == pytest.approx(2000.0)
    meter.add(6.0, 10)  # the counter went backwards: a new stream under the same name
    assert meter.per_second() is None
    meter.add(8.0, 210)
    assert meter.per_second() == pytest.approx(100.0)


def test_readings_too_close_together_give_no_rate():
    meter = RateMeter(window_s=5.0, min_span_s=0.5)
    meter.add(0.0, 0)
    meter.add(0.1, 10_000)
    assert meter.per_second() is None
    meter.add(1.0, 20_000)
    assert meter.per_second() == pytest.approx(20_000.0)
