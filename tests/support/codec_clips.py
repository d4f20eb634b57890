"""Clips in every codec the remuxers carry, encoded by ffmpeg at test time and read back as Frames.

ffmpeg's FLV muxer writes Enhanced FLV for HEVC, AV1 and Opus (FourCC headers, sequence start with
hvcC / av1C / OpusHead), which is what an Enhanced RTMP publisher sends. `codec_clip` encodes a test
pattern and a tone with the chosen encoders and returns the clip's Frames, built by flv_body as
ingest builds them. Clips are cached per process (encoding one takes a fraction of a second).

Two kinds of tag are left out, since flv_body refuses them today and they carry nothing a remuxer
needs: Enhanced RTMP audio MultichannelConfig packets (type 4, which ffmpeg writes after an Opus
sequence start) and empty video sequence starts (libaom writes one before the real av1C).
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

from mediaserver.media.flv_body import audio_frame, data_frame, video_frame
from mediaserver.media.frames import Frame, FrameKind

from .media import ffmpeg_exe

_VIDEO_ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-x264-params", "b-adapt=0", "-sc_threshold", "0"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=2:scenecut=0"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-svtav1-params", "lp=2"],
    "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-lag-in-frames", "0"],
}
_AUDIO_ENCODERS = {
    "aac": ["-c:a", "aac", "-b:a", "96k"],
    "opus": ["-c:a", "libopus", "-b:a", "64k"],
}
_cache: dict[tuple, list[Frame]] = {}
_dir: Path | None = None


def _workdir() -> Path:
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="codec-clips-"))
        atexit.register(shutil.rmtree, _dir, True)
    return _dir


def read_flv_frames(data: bytes) -> list[Frame]:
    """The Frames of a complete FLV file (FLV spec E.2, E.3), strictly framed."""
    if data[:3] != b"FLV" or len(data) < 13:
        raise ValueError("not an FLV file")
    pos = int.from_bytes(data[5:9], "big") + 4
    frames: list[Frame] = []
    while pos < len(data):
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body = data[pos + 11 : pos + 11 + size]
        if len(body) != size or int.from_bytes(data[pos + 11 + size : pos + 15 + size], "big") != size + 11:
            raise ValueError(f"FLV tag at byte {pos} is truncated or its PreviousTagSize is wrong")
        pos += 15 + size
        frame: Frame | None = None
        if kind == 9:
            if body[0] & 0x80 and body[0] & 0x0F == 0 and size == 5:
                continue  # an empty sequence start
            frame = video_frame(body, timestamp)
        elif kind == 8:
            if body[0] >> 4 == 9 and body[0] & 0x0F == 4:
                continue  # MultichannelConfig
            frame = audio_frame(body, timestamp)
        elif kind == 18:
            frame = data_frame(body, timestamp)
        if frame is not None:
            frames.append(frame)
    return frames


def codec_clip(
    video: str | None = "h264",
    audio: str | None = "aac",
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    seconds: float = 5.0,
    gop_frames: int = 25,
    sample_rate: int = 48000,
    channels: int = 2,
) -> list[Frame]:
    """Encode a clip (test pattern and/or tone) with the given codecs; returns its Frames.

    `video` is "h264", "hevc", "av1", "vp9" or None; `audio` is "aac", "opus" or None. Keyframes come every
    `gop_frames` exactly.
    """
    key = (video, audio, width, height, fps, seconds, gop_frames, sample_rate, channels)
    if key in _cache:
        return _cache[key]
    path = _workdir() / f"clip-{len(_cache)}.flv"
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += [*_VIDEO_ENCODERS[video], "-pix_fmt", "yuv420p", "-g", str(gop_frames), "-keyint_min", str(gop_frames)]
        if video == "hevc":
            cmd[cmd.index("log-level=error:bframes=2:scenecut=0")] += f":keyint={gop_frames}:min-keyint={gop_frames}"
    else:
        cmd += ["-vn"]
    if audio:
        cmd += [*_AUDIO_ENCODERS[audio], "-ac", str(channels), "-ar", str(sample_rate)]
    else:
        cmd += ["-an"]
    cmd += ["-f", "flv", str(path)]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    frames = read_flv_frames(path.read_bytes())
    _cache[key] = frames
    return frames


def media_frames(frames: list[Frame], kind: FrameKind) -> list[Frame]:
    """The frames of one kind that carry media (no configs, no end markers)."""
    return [f for f in frames if f.kind == kind and not f.is_config and not f.is_end]


def config_frame(frames: list[Frame], kind: FrameKind) -> Frame:
    """The first sequence header of one kind."""
    return next(f for f in frames if f.kind == kind and f.is_config)
