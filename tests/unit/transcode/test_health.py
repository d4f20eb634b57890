"""Stream health: the measures on synthetic pictures and samples, the detectors' time logic with a fake
clock, and a monitor sampling real ffmpeg-made media (black + silence, then a test pattern + a tone) from
a hub, decoded with PyAV."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from mediaserver.config import HealthConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.health import (
    FROZEN_MAD, SILENCE_FLOOR_DBFS, ConditionTimer, HealthDetector, is_black, picture_change, rms_dbfs,
)
from mediaserver.transcode.health_monitor import HealthEvent, HealthWatch, MediaSampler
from mediaserver.transcode.thumbnail import Keyframe
from support.codec_clips import read_flv_frames
from support.media import ffmpeg_exe

RNG = np.random.default_rng(7)


def flat(value: int, shape=(90, 160)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


# ----- the measures ----------------------------------------------------------------------------------


def test_black_is_dark_everywhere_not_just_on_average():
    assert is_black(flat(16), 24)
    assert is_black(np.clip(flat(16) + RNG.integers(0, 6, (90, 160)), 0, 255).astype(np.uint8), 24)
    titled = flat(16)
    titled[40:44, 20:100] = 235  # a bright title on black: the mean stays low, the picture is not black
    assert titled.mean() <= 24 and not is_black(titled, 24)
    assert not is_black(flat(60), 24)
    assert not is_black(np.zeros((0, 0), np.uint8), 24)


def test_picture_change_sees_motion_and_ignores_encoder_noise():
    base = RNG.integers(0, 256, (90, 160), dtype=np.uint8)
    noisy = np.clip(base.astype(np.int16) + RNG.choice(np.array([-1, 0, 0, 0, 0, 1]), base.shape), 0, 255).astype(np.uint8)
    moved = np.roll(base, 3, axis=1)
    assert picture_change(base, None) is None
    assert picture_change(base, base[:, :80]) is None  # a new picture size: nothing to compare
    assert picture_change(base, base) == 0.0
    assert picture_change(noisy, base) < FROZEN_MAD
    assert picture_change(moved, base) > 10 * FROZEN_MAD


def test_rms_level_in_dbfs():
    t = np.arange(48000) / 48000
    sine = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    assert rms_dbfs(sine) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(sine * 0.001) == pytest.approx(-63.01, abs=0.05)
    assert rms_dbfs(np.zeros(1024, np.float32)) == SILENCE_FLOOR_DBFS
    assert rms_dbfs(np.zeros(0, np.float32)) == SILENCE_FLOOR_DBFS


# ----- the time logic --------------------------------------------------------------------------------


def test_a_condition_is_flagged_after_lasting_its_time_and_cleared_at_once():
    timer = ConditionTimer("black", after_s=5.0)
    assert [timer.observe(True, t) for t in (10.0, 12.0, 14.0)] == [None, None, None]
    start = timer.observe(True, 15.0)
    assert start is not None and (start.state, start.since, start.duration_s) == ("start", 10.0, 5.0)
    assert timer.observe(True, 17.0) is None  # flagged once
    end = timer.observe(False, 18.0)
    assert end is not None and (end.state, end.since, end.duration_s) == ("end", 10.0, 8.0)
    assert timer.observe(False, 19.0) is None


def test_a_break_restarts_the_count():
    timer = ConditionTimer("silent", after_s=4.0)
    timer.observe(True, 0.0)
    timer.observe(True, 3.0)
    assert timer.observe(False, 3.5) is None  # never flagged: no end event either
    assert timer.observe(True, 4.0) is None and timer.observe(True, 7.0) is None
    assert timer.observe(True, 8.0).state == "start"


def test_the_detector_flags_black_frozen_and_silent_and_reports_since():
    d = HealthDetector(HealthConfig(black_after=2.0, frozen_after=3.0, silence_after=2.0, silence_dbfs=-60.0))
    changes = []
    for t in range(5):
        changes += d.observe_picture(flat(16), float(t))
        changes += d.observe_sound(-90.0, float(t))
    assert [(c.condition, c.state, c.at) for c in changes] == [
        ("black", "start", 2.0), ("silent", "start", 2.0), ("frozen", "start", 4.0)]
    assert d.flags() == {"black": 0.0, "frozen": 1.0, "silent": 0.0}  # frozen: first compared at t=1
    moving = RNG.integers(0, 256, (90, 160), dtype=np.uint8)
    ends = d.observe_picture(moving, 5.0) + d.observe_sound(-20.0, 5.0)
    assert sorted((c.condition, c.state, c.duration_s) for c in ends) == [
        ("black", "end", 5.0), ("frozen", "end", 4.0), ("silent", "end", 5.0)]
    assert d.flags() == {"black": None, "frozen": None, "silent": None}


def test_no_observation_keeps_a_flag_and_the_end_of_the_stream_clears_it():
    d = HealthDetector(HealthConfig(silence_after=1.0))
    d.observe_sound(-100.0, 0.0)
    assert d.observe_sound(-100.0, 1.0)[0].state == "start"
    assert d.flags()["silent"] == 0.0  # nothing observed for a while: still flagged
    (end,) = d.end(30.0)
    assert (end.condition, end.state, end.duration_s) == ("silent", "end", 30.0)


# ----- real media through the sampler and a monitor ----------------------------------------------------


def make_frames(tmp: Path, name: str, video: str, audio: str, seconds: float = 4.0) -> list[Frame]:
    path = tmp / f"{name}.flv"
    subprocess.run([
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"{video}{':' if '=' in video else '='}size=320x240:rate=25", "-f", "lavfi", "-i", f"{audio}",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
        "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", "-f", "flv", str(path),
    ], check=True, timeout=60, capture_output=True)
    return read_flv_frames(path.read_bytes())


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, list[Frame]]:
    tmp = tmp_path_factory.mktemp("health")
    return {
        "dark": make_frames(tmp, "dark", "color=c=black", "anullsrc=r=48000:cl=stereo"),
        "lively": make_frames(tmp, "lively", "testsrc", "sine=frequency=440:sample_rate=48000"),
    }


def test_the_sampler_measures_real_pictures_and_sound(clips):
    for name, black, loud in (("dark", True, False), ("lively", False, True)):
        frames = clips[name]
        config = next(f for f in frames if f.kind == FrameKind.VIDEO and f.is_config)
        aconfig = next(f for f in frames if f.kind == FrameKind.AUDIO and f.is_config)
        key = [f for f in frames if f.kind == FrameKind.VIDEO and f.keyframe and not f.is_config and not f.is_end][-1]
        audio = [bytes(f.payload) for f in frames if f.kind == FrameKind.AUDIO and not f.is_config]
        sample = MediaSampler().sample(Keyframe.of(key, config), "aac", bytes(aconfig.payload), audio)
        assert sample.luma is not None and sample.luma.shape == (120, 160)
        assert is_black(sample.luma, 24) is black, (name, sample.luma.mean())
        assert (sample.level_dbfs > -30) is loud and (sample.level_dbfs < -60) is not loud, sample.level_dbfs
        assert 0 < sample.cpu_s < 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePublisher:
    peer = "127.0.0.1:5000"

    def close(self, reason: str) -> None:
        pass


def publish_second(stream: Stream, frames: list[Frame], second: int) -> None:
    """Publish the frames of media second `second` (configs with the first)."""
    for f in frames:
        if (f.is_config and second == 0) or (not f.is_config and second * 1000 <= f.dts_ms < (second + 1) * 1000):
            publish = stream.publish_video if f.kind == FrameKind.VIDEO else stream.publish_audio
            if f.kind != FrameKind.DATA:
                publish(f.dts_ms, bytes(f.body), 0.0)


async def test_a_monitor_flags_black_and_silence_then_clears_them_when_the_stream_comes_alive(clips):
    clock = FakeClock()
    registry = StreamRegistry(clock=clock, call_later=lambda delay, fn: None)
    cfg = HealthConfig(enabled=True, apps=("live",), interval=1.0, black_after=2.0, frozen_after=2.0,
                       silence_after=2.0)
    watch = HealthWatch(registry, cfg, clock=clock, wall_clock=lambda: 1_000_000.0 + clock.now)
    events: list[HealthEvent] = []
    watch.listeners.append(events.append)
    watch.attach()
    stream = registry.claim_publisher(StreamKey("live", "cam"), FakePublisher())
    registry.claim_publisher(StreamKey("other", "cam"), FakePublisher())  # not a watched app
    registry.claim_publisher(StreamKey("live", "cam@360p"), FakePublisher())  # a rendition: not watched
    assert list(watch.monitors) == [StreamKey("live", "cam")]
    monitor = watch.monitors[stream.key]

    for second in range(4):
        publish_second(stream, clips["dark"], second)
        await monitor.sample_once()
        clock.now += 1.0
    started = {(e.condition, e.state) for e in events}
    assert started == {("black", "start"), ("silent", "start"), ("frozen", "start")}
    flags = watch.flags(stream.key)
    assert flags["black"]["since"] == 1_000_100.0 and flags["black"]["duration_s"] == 4.0
    assert watch.flagged().count((stream.key, "black", True)) == 1

    stream.end_session()
    stream.begin_session(FakePublisher(), 0.0)  # the publisher switches to a live picture and a tone
    for second in range(2):
        publish_second(stream, clips["lively"], second)
        await monitor.sample_once()
        clock.now += 1.0
    ended = [e for e in events if e.state == "end"]
    assert {e.condition for e in ended} == {"black", "silent", "frozen"}
    assert all(e.reason is None and e.duration_s > 0 for e in ended)
    assert watch.flags(stream.key) == {"black": None, "frozen": None, "silent": None}
    assert monitor.samples == 6 and watch.cpu_s > 0
    registry.kick(stream.key)
    assert watch.flags(stream.key) is None
    await watch.close()


async def test_flags_still_up_when_a_stream_ends_are_ended_with_it(clips):
    clock = FakeClock()
    registry = StreamRegistry(clock=clock, call_later=lambda delay, fn: None)
    watch = HealthWatch(registry, HealthConfig(enabled=True, interval=1.0, black_after=1.0), clock=clock)
    events: list[HealthEvent] = []
    watch.listeners.append(events.append)
    watch.attach()
    stream = registry.claim_publisher(StreamKey("live", "cam"), FakePublisher())
    for second in range(3):
        publish_second(stream, clips["dark"], second)
        await watch.monitors[stream.key].sample_once()
        clock.now += 1.0
    assert ("black", "start") in {(e.condition, e.state) for e in events}
    registry.kick(stream.key)
    last = events[-1]
    assert (last.condition, last.state, last.reason) == ("black", "end", "stream_ended")
    await watch.close()
