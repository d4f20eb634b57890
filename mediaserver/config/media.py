"""The media pipeline: [abr] and its [[abr.ladder]], [watermark], [thumbnails], [health]."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .base import ConfigError, TableRule


@dataclass(frozen=True, slots=True)
class RungConfig:
    """One rendition of the ABR ladder (`[[abr.ladder]]`)."""

    label: str
    """The rendition's name suffix: STREAM@LABEL (1-32 of a-z, 0-9, '_', '-')."""
    height: int
    video_kbps: int
    codec: str = "h264"
    """h264, hevc, av1 or vp9; each output lists only the renditions it can carry."""
    preset: str = ""
    """Encoder speed preset; empty is the codec's own default here (veryfast for h264/hevc, 10 for av1,
    realtime speed 8 for vp9)."""
    threads: int = 2
    """Encoder threads for this rung; 0 lets the encoder decide (all cores)."""
    width: int = 0
    """0 keeps the source's aspect ratio (rounded to even)."""


DEFAULT_LADDER = (
    RungConfig("1080p", 1080, 5000),
    RungConfig("720p", 720, 2800),
    RungConfig("480p", 480, 1200),
    RungConfig("360p", 360, 700),
    RungConfig("240p", 240, 400),
)


@dataclass(frozen=True, slots=True)
class AbrConfig:
    mode: str = "on_demand"
    """on_demand (the first request for a rendition or master.m3u8 starts the transcode), always (every live
    stream of `apps`), off."""
    apps: tuple[str, ...] = ("*",)
    """Apps whose streams get the ladder; "*" is every app."""
    ladder: tuple[RungConfig, ...] = DEFAULT_LADDER
    """Only rungs below the source's height are made; the source is the top rung, never re-encoded."""
    max_jobs: int = 0
    """Transcode jobs this node runs at once (one per source stream); 0 is one per two CPU cores (at least 1).
    Beyond it a request for a rendition gets 503 and master.m3u8 lists the source only."""
    idle_grace: float = 30.0
    """Seconds a job keeps running after the last viewer of every rendition left (on_demand)."""
    wait: float = 6.0
    """Seconds a first ABR request waits for a starting job's first rendition keyframe."""
    max_keyframe_interval: float = 10.0
    """A rung forces a keyframe at every source keyframe; beyond this many seconds without one it makes its own."""


@dataclass(frozen=True, slots=True)
class WatermarkConfig:
    file: str = ""
    """A PNG (with alpha) burnt into the transcoded renditions; empty is no watermark."""
    apps: tuple[str, ...] = ("*",)
    position: str = "top-right"
    """top-left, top-right, bottom-left, bottom-right or center."""
    margin: int = 16
    """Pixels between the picture's edge and the watermark, at the rendition's size."""
    opacity: float = 0.8
    scale: float = 0.15
    """The watermark's width as a share of the rendition's width (its aspect kept)."""
    source: bool = False
    """Also burn it into the top rung: the source is re-encoded at its own size instead of passed through."""


@dataclass(frozen=True, slots=True)
class ThumbnailConfig:
    enabled: bool = True
    max_width: int = 1920
    """The largest ?width= a request may ask for; wider answers are scaled to this."""
    quality: int = 80
    """JPEG quality, 1-100."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool = False
    apps: tuple[str, ...] = ("*",)
    interval: float = 2.0
    """Seconds between samples of a stream's newest keyframe and its audio."""
    black_after: float = 5.0
    """Seconds of black picture before the stream is flagged."""
    frozen_after: float = 10.0
    """Seconds of an unchanging picture before the stream is flagged."""
    silence_after: float = 10.0
    """Seconds of silence before the stream is flagged."""
    black_luma: int = 24
    """A picture whose mean luma (0-255) is at most this, with little variation, counts as black."""
    silence_dbfs: float = -60.0
    """Audio whose RMS level is below this counts as silence."""


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "abr.max_jobs": (0, 10_000),
    "abr.idle_grace": (0, 86_400),
    "abr.wait": (0.1, 120),
    "abr.max_keyframe_interval": (1, 600),
    "watermark.margin": (0, 10_000),
    "watermark.opacity": (0, 1),
    "watermark.scale": (0.01, 1),
    "thumbnails.max_width": (16, 7680),
    "thumbnails.quality": (1, 100),
    "health.interval": (0.2, 600),
    "health.black_after": (0.5, 86_400),
    "health.frozen_after": (0.5, 86_400),
    "health.silence_after": (0.5, 86_400),
    "health.black_luma": (0, 255),
    "health.silence_dbfs": (-150, 0),
    "ladder.height": (16, 4320),
    "ladder.width": (0, 7680),
    "ladder.video_kbps": (16, 200_000),
    "ladder.threads": (0, 64),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "abr.mode": ("on_demand", "always", "off"),
    "watermark.position": ("top-left", "top-right", "bottom-left", "bottom-right", "center"),
    "ladder.codec": ("h264", "hevc", "av1", "vp9"),
}
LABEL = re.compile(r"[a-z0-9_-]{1,32}")


def _check_rung(here: str, built: dict[str, Any]) -> None:
    if not LABEL.fullmatch(built["label"]):
        raise ConfigError(f"{here}.label = {built['label']!r} must be 1-32 of a-z, 0-9, '_' or '-' (it names STREAM@LABEL)")
    if built["label"] == "source":
        raise ConfigError(f"{here}.label = \"source\" is kept for the watermarked top rung; choose another label")


TABLES = {"abr.ladder": TableRule(RungConfig, 'label = "480p", height = 480, video_kbps = 1200', unique="label",
                                  check=_check_rung)}
