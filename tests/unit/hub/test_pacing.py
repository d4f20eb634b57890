"""The merge window policy and the loop load gauge, fed numbers."""

from __future__ import annotations

import math

import pytest

from mediaserver.hub.pacing import LoadGauge, MergePolicy, SharedBatch, next_tick, until_tick


def test_fixed_mode_always_merges_the_full_window() -> None:
    policy = MergePolicy(100, "fixed")
    assert [policy.window_s(n, busy) for n, busy in ((1, 0.0), (1000, 0.0), (1, 1.0))] == [0.1, 0.1, 0.1]
    assert MergePolicy(0, "fixed").window_s(1000, 1.0) == 0.0


def test_adaptive_writes_at_once_for_few_viewers_on_an_idle_loop() -> None:
    policy = MergePolicy(100)
    for viewers in (1, 10, 50):
        assert policy.window_s(viewers, 0.1) == 0.0


def test_adaptive_widens_with_viewers_up_to_the_ceiling() -> None:
    policy = MergePolicy(100, audience_low=100, audience_high=500)
    windows = [policy.window_s(n, 0.0) for n in (100, 200, 300, 500, 5000)]
    assert windows == pytest.approx([0.0, 0.025, 0.05, 0.1, 0.1])


def test_adaptive_widens_with_a_busy_loop_even_for_one_viewer() -> None:
    policy = MergePolicy(50, busy_low=0.4, busy_high=0.8)
    assert policy.window_s(1, 0.4) == 0.0
    assert policy.window_s(1, 0.6) == pytest.approx(0.025)
    assert policy.window_s(1, 0.95) == pytest.approx(0.05)


def test_the_larger_pressure_wins_and_tiny_windows_are_none() -> None:
    policy = MergePolicy(100, audience_low=0, audience_high=1000, busy_low=0.0, busy_high=1.0)
    assert policy.window_s(300, 0.5) == pytest.approx(0.05)
    assert policy.window_s(700, 0.2) == pytest.approx(0.07)
    assert policy.window_s(5, 0.005) == 0.0  # 0.5 ms: not worth a timer


def test_reads_merge_fully_while_nobody_consumes_the_stream() -> None:
    policy = MergePolicy(50, merge_when_unwatched=True)
    assert policy.window_s(0, 0.0) == 0.05
    assert policy.window_s(1, 0.0) == 0.0
    assert MergePolicy(50).window_s(0, 0.0) == 0.0


def test_load_gauge_is_cpu_over_wall_time_smoothed_and_sampled_per_period() -> None:
    clock = {"wall": 0.0, "cpu": 0.0}
    gauge = LoadGauge(period_s=0.25, weight=0.5, wall=lambda: clock["wall"], cpu=lambda: clock["cpu"])
    assert gauge.busy() == 0.0
    clock.update(wall=0.1, cpu=0.1)
    assert gauge.busy() == 0.0  # within the period: no new sample
    clock.update(wall=0.5, cpu=0.5)  # fully busy for 0.5 s
    assert gauge.busy() == pytest.approx(0.5)
    clock.update(wall=1.0, cpu=1.0)
    assert gauge.busy() == pytest.approx(0.75)
    clock.update(wall=2.0, cpu=1.0)  # idle for a second
    assert gauge.busy() == pytest.approx(0.375)


def test_windows_are_whole_steps_so_viewers_share_ticks() -> None:
    policy = MergePolicy(100, audience_low=0, audience_high=1000)
    assert policy.window_s(333, 0.0) == pytest.approx(0.035)
    assert policy.window_s(334, 0.0) == pytest.approx(0.035)
    assert until_tick(10.012, 0.05) == pytest.approx(0.038)
    assert until_tick(10.06, 0.05) == pytest.approx(0.04)


def test_shared_batch_is_made_once_for_the_same_stretch_of_frames() -> None:
    frames = [object() for _ in range(5)]
    shared: SharedBatch[int] = SharedBatch()
    calls = []

    def make(batch) -> int:
        calls.append(len(batch))
        return len(calls)

    assert shared.get(frames[1:4], make) == 1
    assert shared.get(frames[1:4], make) == 1  # another viewer on the same tick
    assert shared.get(frames[1:5], make) == 2  # a longer stretch
    assert shared.get(frames[2:5], make) == 3  # a viewer that was ahead
    assert (shared.made, shared.hits) == (3, 1)


def test_unwatched_reads_merge_to_their_own_wider_window_never_below_the_ceiling() -> None:
    assert MergePolicy(50, merge_when_unwatched=True, unwatched_ms=250).unwatched_s() == 0.25
    assert MergePolicy(300, merge_when_unwatched=True, unwatched_ms=250).unwatched_s() == 0.3
    assert MergePolicy(50, merge_when_unwatched=True).unwatched_s() == 0.05
    assert MergePolicy(0, merge_when_unwatched=True, unwatched_ms=250).unwatched_s() == 0.0  # merging off
    assert MergePolicy(50, "fixed", merge_when_unwatched=True, unwatched_ms=250).unwatched_s() == 0.05


def test_next_tick_is_the_same_float_within_a_window() -> None:
    assert next_tick(1.001, 0.25) == next_tick(1.2, 0.25) == 1.25
    assert until_tick(1.2, 0.25) == pytest.approx(0.05)


def test_reads_wait_for_a_packagers_due_output_then_resume_just_before_it() -> None:
    policy = MergePolicy(50, merge_when_unwatched=True, unwatched_ms=250)
    assert policy.read_pause(1, 0, math.inf, 0.0) == (0.0, 0.0)  # a viewer on an idle loop: at once
    assert policy.read_pause(0, 0, math.inf, 0.0) == (0.0, 0.25)  # nothing consumes: the unwatched window
    assert policy.read_pause(0, 1, 1.5, 0.0) == (0.0, 0.25)  # a segment cut 1.5 s of media away
    offset, grid = policy.read_pause(0, 1, 0.2, 0.0)  # due within the window: read again just before it
    assert offset == pytest.approx(0.15) and grid == 0.005
    assert policy.read_pause(0, 1, 0.05, 0.0) == (0.0, 0.0)  # due now: as a waiting sink, at once when idle
    assert policy.read_pause(0, 1, -math.inf, 0.95) == (0.0, 0.05)  # ... and merged when busy


def test_next_tick_after_an_offset_is_within_one_step() -> None:
    assert 1.19 <= next_tick(1.0 + 0.19, 0.005) <= 1.195 + 1e-9
