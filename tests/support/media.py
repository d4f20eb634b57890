"""Test media: find ffmpeg, generate clips at test time, and describe what they hold.

Clips are made by ffmpeg from lavfi sources (no files in the repository): `testsrc` draws a frame counter
into every picture, `sine` gives a tone. Each clip is then read back with PyAV, so tests can compare what
a viewer received with what was sent (packet counts, timestamps, keyframes) instead of guessing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import av
import pytest

INSTALL_HINT = (
    "ffmpeg is needed to generate test media and to publish RTMP. Install one of: "
    "`pip install imageio-ffmpeg` (bundles a static ffmpeg), your system's ffmpeg package "
    "(apt install ffmpeg / brew install ffmpeg), or point $FFMPEG at a binary"
)


def ffmpeg_exe() -> str:
    """The ffmpeg binary: $FFMPEG, then imageio-ffmpeg's, then `ffmpeg` on PATH.

    Missing ffmpeg fails the test run on CI (CI=true), where it must be installed, and skips elsewhere.
    """
    candidates: list[str] = []
    env = os.environ.get("FFMPEG")
    if env:
        candidates.append(env)
    try:
        import imageio_ffmpeg

        candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # not installed, or it has no binary for this platform
        pass
    on_path = shutil.which("ffmpeg")
    if on_path:
        candidates.append(on_path)
    for exe in candidates:
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return exe
    message = f"no usable ffmpeg (tried {candidates or 'nothing'}). {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True, slots=True)
class PacketInfo:
    dts_ms: int
    pts_ms: int
    keyframe: bool
    size: int


@dataclass(frozen=True, slots=True)
class Clip:
    """A generated FLV file and what PyAV sees in it."""

    path: Path
    duration_s: float
    fps: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    video_packets: tuple[PacketInfo, ...]
    audio_packets: tuple[PacketInfo, ...]

    @property
    def has_video(self) -> bool:
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def frame_interval_ms(self) -> float:
        assert self.fps, "audio-only clip has no frame interval"
        return 1000.0 / self.fps

    @property
    def bitrate_bps(self) -> float:
        return self.path.stat().st_size * 8 / self.duration_s


# The standard clip: 640x360 at 25 fps, H.264 High with B-frames and a 1 s GOP, AAC-LC 44.1 kHz stereo.
_VIDEO_ARGS = [
    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "high",
    "-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2",
]
_AUDIO_ARGS = ["-c:a", "aac", "-b:a", "96k", "-ac", "2", "-ar", "44100"]


def _lavfi_video(duration_s: float, size: str = "640x360", rate: int = 25) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={duration_s}"]


def _lavfi_audio(duration_s: float) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={duration_s}"]


def generate_clip(path: Path, *, video: bool = True, audio: bool = True, duration_s: float = 10.0,
                  heavy: bool = False, timeout_s: float = 120.0, size: str = "640x360") -> Clip:
    """Encode a clip into `path` (FLV) with ffmpeg and describe it.

    heavy=True makes a ~6 Mbit/s video-only clip of noise: enough bytes per second to fill kernel
    socket buffers quickly, for tests about viewers that stop reading.
    """
    encode_clip(path, video=video, audio=audio, duration_s=duration_s, heavy=heavy, timeout_s=timeout_s, size=size)
    return describe_clip(path, duration_s)


def encode_clip(path: Path, *, video: bool = True, audio: bool = True, duration_s: float = 10.0,
                heavy: bool = False, timeout_s: float = 120.0, size: str = "640x360") -> None:
    """Encode a clip into `path` (FLV) with ffmpeg (see generate_clip)."""
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    if heavy:
        args += [
            "-f", "lavfi", "-i", f"color=c=gray:s=640x360:r=25:d={duration_s},noise=alls=60:allf=t",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25", "-bf", "2",
            "-b:v", "6M", "-maxrate", "6M", "-bufsize", "3M",
        ]
    else:
        inputs: list[str] = []
        maps: list[str] = []
        if video:
            maps += ["-map", f"{len(inputs) // 4}:v"]
            inputs += _lavfi_video(duration_s, size)
        if audio:
            maps += ["-map", f"{len(inputs) // 4}:a"]
            inputs += _lavfi_audio(duration_s)
        args += inputs + maps + (_VIDEO_ARGS if video else []) + (_AUDIO_ARGS if audio else [])
    args += ["-f", "flv", str(path)]
    proc = subprocess.run(args, capture_output=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not make {path.name}: {proc.stderr.decode(errors='replace')[-2000:]}")


def describe_clip(path: Path, duration_s: float) -> Clip:
    video: list[PacketInfo] = []
    audio: list[PacketInfo] = []
    info: dict[str, object] = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            cc = stream.codec_context
            if stream.type == "video":
                info.update(video_codec=cc.name, width=cc.width, height=cc.height,
                            fps=float(stream.average_rate) if stream.average_rate else 25.0)
            elif stream.type == "audio":
                info.update(audio_codec=cc.name, sample_rate=cc.sample_rate, channels=cc.channels)
        for packet in container.demux():
            if not packet.size:
                continue
            tb = packet.time_base
            p = PacketInfo(
                dts_ms=round(packet.dts * tb * 1000), pts_ms=round(packet.pts * tb * 1000),
                keyframe=packet.is_keyframe, size=packet.size,
            )
            (video if packet.stream.type == "video" else audio).append(p)
    return Clip(
        path=path, duration_s=duration_s,
        fps=info.get("fps"), width=info.get("width"), height=info.get("height"),  # type: ignore[arg-type]
        video_codec=info.get("video_codec"), audio_codec=info.get("audio_codec"),  # type: ignore[arg-type]
        sample_rate=info.get("sample_rate"), channels=info.get("channels"),  # type: ignore[arg-type]
        video_packets=tuple(video), audio_packets=tuple(audio),
    )


class MediaLibrary:
    """The session's clips, each generated on first use and then reused.

    Processes that share the directory (pytest-xdist workers) share the clips too: the first to need one
    encodes it under a lock into a temporary name and renames it when complete; the others wait on the
    lock and read the finished file.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _clip(self, name: str, *, duration_s: float = 10.0, **encoding: object) -> Clip:
        path = self.directory / name
        with open(self.directory / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                partial = self.directory / f"{name}.{os.getpid()}.partial"
                encode_clip(partial, duration_s=duration_s, **encoding)  # type: ignore[arg-type]
                os.replace(partial, path)
        return describe_clip(path, duration_s)

    @cached_property
    def av(self) -> Clip:
        """640x360 25 fps H.264 (High, B-frames, GOP 1 s) + AAC-LC 44.1 kHz stereo, 10 s."""
        return self._clip("av.flv")

    @cached_property
    def video_only(self) -> Clip:
        return self._clip("video_only.flv", audio=False)

    @cached_property
    def audio_only(self) -> Clip:
        return self._clip("audio_only.flv", video=False)

    @cached_property
    def hd(self) -> Clip:
        """1280x720 25 fps H.264 + AAC, 4 s (a source for the ABR ladder)."""
        return self._clip("hd.flv", duration_s=4.0, size="1280x720")

    @cached_property
    def low(self) -> Clip:
        """320x240 25 fps H.264 + AAC, 3 s (below every rung of the default ladder but 240p)."""
        return self._clip("low.flv", duration_s=3.0, size="320x240")

    @cached_property
    def heavy(self) -> Clip:
        """~6 Mbit/s video-only noise, 10 s."""
        return self._clip("heavy.flv", heavy=True)
