"""RTP time to the stream's timeline: 32-bit wrap, clock rates, arrival anchoring, sender-report A/V sync."""

from __future__ import annotations

from mediaserver.webrtc.ingest_clock import SessionClock, ntp_seconds


def ntp(seconds: float) -> int:
    return (int(seconds) << 32) | int((seconds % 1) * (1 << 32))


def test_a_video_clock_of_90_khz_gives_ms_from_the_first_frame():
    clock = SessionClock()
    clock.add_track("video", 90_000)
    assert clock.to_ms("video", clock.position("video", 1_000_000, 50.0)) == 0
    assert clock.to_ms("video", clock.position("video", 1_003_000, 50.033)) == 33
    assert clock.to_ms("video", clock.position("video", 1_090_000, 51.0)) == 1000


def test_rtp_time_unwraps_across_2_to_the_32():
    clock = SessionClock()
    clock.add_track("video", 90_000)
    first = clock.position("video", 0xFFFF_FFFF - 2999, 0.0)
    after = clock.position("video", 3000, 0.07)  # 6000 ticks later, across the wrap
    assert after - first == 6000 and clock.to_ms("video", after) == 67


def test_a_frame_slightly_behind_is_placed_behind_not_a_wrap_ahead():
    clock = SessionClock()
    clock.add_track("audio", 48_000)
    clock.position("audio", 10_000, 0.0)
    assert clock.to_ms("audio", clock.position("audio", 9_040, 0.0)) == 0  # never below 0
    assert clock.position("audio", 10_960, 0.02) == 10_960


def test_a_later_track_starts_where_it_arrived_until_sender_reports_place_it():
    clock = SessionClock()
    clock.add_track("video", 90_000)
    clock.add_track("audio", 48_000)
    clock.position("video", 500_000, 10.0)
    audio = clock.position("audio", 7_000, 10.25)  # arrived 250 ms after the first video frame
    assert clock.to_ms("audio", audio) == 250
    # The sender captured the first audio sample 100 ms after the first picture (same NTP clock).
    clock.sender_report("video", 500_000 + 90_000, ntp(1000.0 + 1.0))
    assert not clock.synced
    clock.sender_report("audio", 7_000 + 48_000, ntp(1000.1 + 1.0))
    assert clock.synced and clock.sync_step_ms["audio"] == -150
    assert clock.to_ms("audio", audio) == 100
    assert clock.to_ms("audio", audio + 48_000) == 1100


def test_a_report_that_would_move_a_track_further_than_arrival_allows_is_not_used():
    clock = SessionClock()
    clock.add_track("video", 90_000)
    clock.add_track("audio", 48_000)
    clock.position("video", 0, 0.0)
    audio = clock.position("audio", 0, 0.0)
    clock.sender_report("video", 0, ntp(100.0))
    clock.sender_report("audio", 0, ntp(100.563))  # a sender stamping reports at send time, 563 ms behind
    assert clock.to_ms("audio", audio) == 0 and "audio" not in clock.sync_step_ms
    assert clock.sync_ignored_ms == {"audio": 563}


def test_video_is_the_reference_even_when_audio_arrives_first():
    clock = SessionClock()
    clock.add_track("video", 90_000)
    clock.add_track("audio", 48_000)
    audio = clock.position("audio", 1_000, 5.0)
    video = clock.position("video", 2_000, 5.1)
    clock.sender_report("audio", 1_000, ntp(200.0))
    clock.sender_report("video", 2_000, ntp(200.02))  # captured 20 ms after the first audio sample
    assert clock.to_ms("video", video) == 100 and clock.to_ms("audio", audio) == 80
    assert clock.sync_step_ms == {"audio": 80}


def test_ntp_timestamps_are_32_32_fixed_point():
    assert ntp_seconds((5 << 32) | (1 << 31)) == 5.5
