"""The rendition ladder of one source stream, planned from the config and the source's picture size.

Pure. The source is the ladder's top rung and is never re-encoded (unless the watermark must mark it);
only configured rungs strictly below the source's height are made, each keeping the source's aspect
ratio (width rounded to even, as 4:2:0 chroma needs). A rendition is played by the name STREAM@LABEL.

Which outputs carry which codec: HLS with MPEG-TS segments carries H.264 and HEVC; fMP4 (CMAF, LL-HLS,
DASH) carries all four; FLV carries H.264 and, as Enhanced FLV, HEVC, AV1 and VP9.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..auth.names import RENDITION_SEPARATOR
from ..config import RungConfig

CARRIED: dict[str, frozenset[str]] = {
    "ts": frozenset({"h264", "hevc"}),
    "cmaf": frozenset({"h264", "hevc", "av1", "vp9"}),
    "flv": frozenset({"h264", "hevc", "av1", "vp9"}),
}
"""Output family -> the video codecs it can carry."""

SOURCE_LABEL = "source"
"""The label of the top rung that replaces the source when the watermark must mark it too (watermark.source):
multivariant playlists then list STREAM@source instead of the unmarked source."""

DEFAULT_PRESETS = {"h264": "veryfast", "hevc": "veryfast", "av1": "10", "vp9": "8"}
"""The preset a rung with preset "" gets: libx264/libx265 preset names, SVT-AV1's preset number, libvpx's
cpu-used (realtime deadline)."""


@dataclass(frozen=True, slots=True)
class Rendition:
    """One rung as it will be made for one source."""

    label: str
    width: int
    height: int
    video_kbps: int
    codec: str
    preset: str
    threads: int

    def stream_name(self, source_name: str) -> str:
        return f"{source_name}{RENDITION_SEPARATOR}{self.label}"

    def to_job(self) -> dict[str, object]:
        """What the worker process is told about this rung (JSON)."""
        return {
            "label": self.label, "width": self.width, "height": self.height, "video_kbps": self.video_kbps,
            "codec": self.codec, "preset": self.preset, "threads": self.threads,
        }


def even(value: float) -> int:
    """The nearest even whole number, at least 2."""
    return max(2, int(round(value / 2.0)) * 2)


def plan_ladder(rungs: tuple[RungConfig, ...], source_width: int, source_height: int) -> list[Rendition]:
    """The renditions to make for a source of this size, highest first; empty when no rung is below it."""
    if source_width <= 0 or source_height <= 0:
        return []
    out = []
    for rung in rungs:
        if rung.height >= source_height:
            continue
        width = rung.width or even(source_width * rung.height / source_height)
        out.append(Rendition(
            label=rung.label, width=width, height=even(rung.height), video_kbps=rung.video_kbps, codec=rung.codec,
            preset=rung.preset or DEFAULT_PRESETS[rung.codec], threads=rung.threads,
        ))
    out.sort(key=lambda r: (-r.height, -r.video_kbps))
    return out


def applies(apps: tuple[str, ...], app: str) -> bool:
    """Whether a feature configured for `apps` ("*" is every app) applies to streams of `app`."""
    return "*" in apps or app in apps
