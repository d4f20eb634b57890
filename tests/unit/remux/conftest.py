"""Real media for remuxer tests: clips encoded by ffmpeg at test time, read back as Frames.

`make_flv_clip` runs the ffmpeg binary imageio-ffmpeg ships (libx264 + aac, B-frames on so
composition offsets are not zero) and writes FLV, the format RTMP frames come in. `read_flv_tags`
is a tiny test-side FLV file reader, and `flv_frames` turns its tags into the project's Frames
through flv_body, exactly as ingest does. The fixtures cache clips per test session.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import pytest

from mediaserver.media.flv_body import audio_frame, data_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True, slots=True)
class FlvTag:
    kind: int
    """8 audio, 9 video, 18 script data."""
    timestamp_ms: int
    body: bytes


def read_flv_tags(data: bytes) -> list[FlvTag]:
    """Every tag of a complete FLV file (FLV spec E.2, E.3), strictly checked."""
    if data[:3] != b"FLV" or len(data) < 13:
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    tags = []
    while pos < len(data):
        if pos + 11 > len(data):
            raise ValueError(f"FLV tag header truncated at byte {pos}")
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body_end = pos + 11 + size
        if body_end + 4 > len(data):
            raise ValueError(f"FLV tag at byte {pos} is truncated")
        if int.from_bytes(data[body_end : body_end + 4], "big") != size + 11:
            raise ValueError(f"FLV PreviousTagSize after the tag at byte {pos} is wrong")
        tags.append(FlvTag(kind, timestamp, data[pos + 11 : body_end]))
        pos = body_end + 4
    return tags


def flv_frames(data: bytes) -> list[Frame]:
    """The Frames of an FLV file, built by flv_body as ingest builds them."""
    frames = []
    for tag in read_flv_tags(data):
        if tag.kind == 9:
            frame = video_frame(tag.body, tag.timestamp_ms)
        elif tag.kind == 8:
            frame = audio_frame(tag.body, tag.timestamp_ms)
        elif tag.kind == 18:
            frame = data_frame(tag.body, tag.timestamp_ms)
        else:
            continue
        if frame is not None:
            frames.append(frame)
    return frames


def make_flv_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    seconds: float = 6.0,
    gop_frames: int = 25,
    bframes: int = 2,
    video: bool = True,
    audio: bool = True,
    sample_rate: int = 44100,
    channels: int = 2,
    video_args: tuple[str, ...] = (),
) -> bytes:
    """Encode a test pattern (and a tone) to FLV with ffmpeg; returns the file's bytes."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += [
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-g", str(gop_frames), "-keyint_min", str(gop_frames), "-sc_threshold", "0",
            "-bf", str(bframes), "-x264-params", "b-adapt=0", *video_args,
        ]
    else:
        cmd += ["-vn"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", str(channels), "-ar", str(sample_rate)]
    else:
        cmd += ["-an"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return path.read_bytes()


@pytest.fixture(scope="session")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """6 s of 320x240 25 fps H.264 (1 s GOP, 2 B-frames) and 44.1 kHz stereo AAC, as Frames."""
    path = tmp_path_factory.mktemp("clips") / "av.flv"
    return flv_frames(make_flv_clip(path))


@pytest.fixture(scope="session")
def audio_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """5 s of 48 kHz mono AAC, no video, as Frames."""
    path = tmp_path_factory.mktemp("clips") / "audio.flv"
    return flv_frames(make_flv_clip(path, video=False, seconds=5.0, sample_rate=48000, channels=1))


@pytest.fixture(scope="session")
def video_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """5 s of 640x360 30 fps H.264 with a 2 s GOP, no audio, as Frames."""
    path = tmp_path_factory.mktemp("clips") / "video.flv"
    return flv_frames(make_flv_clip(path, width=640, height=360, fps=30, gop_frames=60, seconds=5.0, audio=False))


# -- ABR renditions ---------------------------------------------------------------------------------


def media(frames: list[Frame], kind: FrameKind) -> list[Frame]:
    return [f for f in frames if f.kind == kind and not f.is_config and not f.is_end]


def config(frames: list[Frame], kind: FrameKind) -> Frame:
    return next(f for f in frames if f.kind == kind and f.is_config)


def stamped(frame: Frame, pts_ms: int, keyframe: bool | None = None) -> Frame:
    """A no-B-frame video frame rebuilt at dts = pts = `pts_ms` (its frame type changed if asked)."""
    body = bytes(frame.body)
    if keyframe is not None:
        body = bytes(((0x10 if keyframe else 0x20) | (body[0] & 0x0F),)) + body[1:]
    rebuilt = video_frame(body, pts_ms)
    assert rebuilt is not None and rebuilt.cts_ms == 0
    return rebuilt


def rendition_of(source: list[Frame], small: list[Frame]) -> list[Frame]:
    """`small`'s pictures at the source's presentation times, with the source's audio, in time order."""
    source_video = sorted(media(source, FrameKind.VIDEO), key=lambda f: f.pts_ms)
    small_video = media(small, FrameKind.VIDEO)
    assert len(small_video) == len(source_video)
    # The transcoder forces a keyframe at each source keyframe (and makes none elsewhere).
    video = [stamped(f, s.pts_ms, s.keyframe) for f, s in zip(small_video, source_video)]
    timed = sorted(video + media(source, FrameKind.AUDIO), key=lambda f: f.dts_ms)
    return [config(small, FrameKind.VIDEO), config(source, FrameKind.AUDIO), *timed]


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """The av_clip's picture at 160x120 without B-frames (same rate, same keyframe interval)."""
    path = tmp_path_factory.mktemp("clips") / "small.flv"
    return flv_frames(make_flv_clip(path, width=160, height=120, bframes=0))


@pytest.fixture(scope="session")
def rendition(av_clip: list[Frame], small_clip: list[Frame]) -> list[Frame]:
    own = [f.keyframe for f in media(small_clip, FrameKind.VIDEO)]
    assert own == [f.keyframe for f in sorted(media(av_clip, FrameKind.VIDEO), key=lambda f: f.pts_ms)]
    return rendition_of(av_clip, small_clip)
