"""The benchmark's media: one generated FLV file, and a reader for its tags.

The file is made once with ffmpeg and cached under bench/.cache/ (its name carries the encoding
parameters, so a change of parameters makes a new file). Every server compared on a machine must be
fed the same file, so the recipe is fixed here rather than left to options:

- video: 1280x720, 30 fps, H.264 High (libx264 veryfast), 2.5 Mbit/s CBR (nal-hrd=cbr pads with filler,
  as broadcast encoders in CBR mode do), a keyframe every 60 frames (2 s) and none on scene cuts,
  B-frames as the preset has them; the picture is testsrc2 with temporal noise, so frame sizes behave
  like camera video (large IDR, smaller P and B) rather than like a static pattern;
- audio: AAC-LC 128 kbit/s, 48 kHz stereo (tones plus a little noise, so the encoder spends its bits);
- 60 s long, starting at timestamp 0 with a keyframe, so `ffmpeg -re -stream_loop -1` can loop it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"

WIDTH, HEIGHT, FPS = 1280, 720, 30
VIDEO_KBPS = 2500
AUDIO_KBPS = 128
AUDIO_RATE = 48000
GOP_FRAMES = 60
DURATION_S = int(os.environ.get("BENCH_MEDIA_SECONDS") or 60)
"""60 s; the tests of the tools ask for a 10 s file (BENCH_MEDIA_SECONDS=10), made in a sixth of the time."""


@dataclass(frozen=True, slots=True)
class Recipe:
    """What the generated file holds; the defaults are the benchmark's file, which every server compared
    must get. A smaller recipe (the soak's 320x240) is for runs where the media's size does not matter."""

    width: int = WIDTH
    height: int = HEIGHT
    fps: int = FPS
    video_kbps: int = VIDEO_KBPS
    gop_frames: int = GOP_FRAMES
    audio_kbps: int = AUDIO_KBPS
    duration_s: int = DURATION_S

    @property
    def file_name(self) -> str:
        return (f"bench-{self.height}p{self.fps}-h264-{self.video_kbps}k-gop{self.gop_frames}-aac{self.audio_kbps}k-"
                f"{self.duration_s}s.flv")


BENCH_RECIPE = Recipe()
MEDIA_NAME = BENCH_RECIPE.file_name

TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT = 8, 9, 18


def ffmpeg_exe() -> str:
    """The ffmpeg binary: $FFMPEG, else the one imageio-ffmpeg ships, else `ffmpeg` on PATH."""
    exe = os.environ.get("FFMPEG")
    if exe:
        return exe
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or it has no binary for this platform
        return "ffmpeg"


def ffmpeg_encode_args(out: Path, duration_s: int | None = None, recipe: Recipe = BENCH_RECIPE) -> list[str]:
    """The ffmpeg command line that makes the benchmark file (or the file of another recipe)."""
    r = recipe
    gop = str(r.gop_frames)
    kbps = f"{r.video_kbps}k"
    audio = (
        "aevalsrc='0.2*sin(2*PI*440*t)+0.03*(random(0)-0.5)|0.2*sin(2*PI*660*t)+0.03*(random(1)-0.5)'"
        f":s={AUDIO_RATE}:c=stereo"
    )
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={r.width}x{r.height}:rate={r.fps},noise=alls=6:allf=t",
        "-f", "lavfi", "-i", audio,
        "-t", str(r.duration_s if duration_s is None else duration_s),
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p",
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0",
        "-b:v", kbps, "-minrate", kbps, "-maxrate", kbps, "-bufsize", kbps,
        "-x264-params", "nal-hrd=cbr:force-cfr=1:scenecut=0",
        "-c:a", "aac", "-b:a", f"{r.audio_kbps}k", "-ar", str(AUDIO_RATE), "-ac", "2",
        "-f", "flv", str(out),
    ]


def ensure_media(cache_dir: Path = CACHE_DIR, *, log=print, recipe: Recipe = BENCH_RECIPE) -> Path:
    """Return the cached benchmark file, encoding it first if it is missing (about 30 s of CPU)."""
    path = cache_dir / recipe.file_name
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Runs at the same time (parallel tests) make it once: the first under the lock, the others wait for it.
    with open(cache_dir / f".{recipe.file_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists() and path.stat().st_size > 0:
            return path
        tmp = path.with_suffix(f".{os.getpid()}.tmp.flv")
        log(f"generating benchmark media {path} (once; about half a minute)")
        cmd = ffmpeg_encode_args(tmp, recipe=recipe)
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(
                f"ffmpeg could not make the benchmark media (exit {proc.returncode}): "
                f"{proc.stderr.decode(errors='replace')[-2000:]}\ncommand: {' '.join(cmd)}"
            )
        os.replace(tmp, path)
    return path


@dataclass(frozen=True, slots=True)
class FlvTag:
    """One tag of an FLV file."""

    kind: int
    """8 audio, 9 video, 18 script data."""
    ts_ms: int
    body: bytes

    @property
    def is_video_keyframe(self) -> bool:
        """An IDR picture (not a sequence header)."""
        return self.kind == TAG_VIDEO and is_keyframe_body(self.body)

    @property
    def is_config(self) -> bool:
        """A sequence header (AVC decoder config or AudioSpecificConfig) or the metadata."""
        b = self.body
        if self.kind == TAG_SCRIPT:
            return True
        if self.kind == TAG_VIDEO:
            if b[0] & 0x80:
                return (b[0] & 0x0F) == 0
            return len(b) > 1 and (b[0] & 0x0F) in (7, 12) and b[1] == 0
        if self.kind == TAG_AUDIO:
            return (b[0] >> 4) == 10 and len(b) > 1 and b[1] == 0
        return False


def is_keyframe_body(b: bytes | memoryview) -> bool:
    """Whether a video tag body is a keyframe picture (legacy FLV or Enhanced RTMP), not a config."""
    if not b:
        return False
    b0 = b[0]
    if b0 & 0x80:  # Enhanced RTMP: frame type in bits 4-6, packet type in bits 0-3 (0 = sequence start)
        return ((b0 >> 4) & 0x07) == 1 and (b0 & 0x0F) not in (0, 2, 4)
    if (b0 >> 4) != 1:
        return False
    if (b0 & 0x0F) in (7, 12):  # AVC / HEVC: packet type 1 is a coded picture
        return len(b) > 1 and b[1] == 1
    return True


class FlvFormatError(ValueError):
    """The file is not a well-formed FLV file."""


def parse_flv(data: bytes) -> list[FlvTag]:
    """Every tag of an FLV file held in memory. Raises FlvFormatError on a bad or truncated file."""
    if len(data) < 13 or data[:3] != b"FLV":
        raise FlvFormatError("not an FLV file: it must start with 'FLV' and a 9-byte header")
    header_size = int.from_bytes(data[5:9], "big")
    if header_size < 9 or header_size > len(data):
        raise FlvFormatError(f"FLV header size {header_size} is invalid")
    pos = header_size + 4  # PreviousTagSize0
    tags = []
    n = len(data)
    while pos < n:
        if pos + 11 > n:
            raise FlvFormatError(f"FLV file truncated in a tag header at byte {pos}")
        kind = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + 11 + size
        if end + 4 > n:
            raise FlvFormatError(f"FLV file truncated in a {size}-byte tag at byte {pos}")
        tags.append(FlvTag(kind, ts, data[pos + 11 : end]))
        pos = end + 4
    return tags


def read_flv(path: Path) -> list[FlvTag]:
    return parse_flv(Path(path).read_bytes())


def loop_duration_ms(tags: list[FlvTag]) -> int:
    """How far timestamps advance per loop: the last video timestamp plus one frame duration."""
    video = [t.ts_ms for t in tags if t.kind == TAG_VIDEO and not t.is_config]
    if len(video) < 2:
        return max((t.ts_ms for t in tags), default=0) + 1
    frame = max(1, round((video[-1] - video[0]) / (len(video) - 1)))
    return max(t.ts_ms for t in tags) + frame


if __name__ == "__main__":
    p = ensure_media()
    tags = read_flv(p)
    kinds = {k: sum(1 for t in tags if t.kind == k) for k in (TAG_AUDIO, TAG_VIDEO, TAG_SCRIPT)}
    size = p.stat().st_size
    dur = loop_duration_ms(tags) / 1000
    print(f"{p}: {size} bytes, {dur:.2f} s, {size * 8 / dur / 1000:.0f} kbit/s, tags {kinds}", file=sys.stderr)
