"""What the HTTP and RTMP sides ask of ABR, whoever runs the transcodes (this node's TranscodePool).

The edge codes against `AbrService` only: it never sees worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..hub.stream import StreamKey


@dataclass(frozen=True, slots=True)
class RenditionView:
    """A rendition ready to play: its stream has a keyframe."""

    label: str
    key: StreamKey
    """The rendition's own stream: APP/STREAM@LABEL."""
    width: int
    height: int
    bandwidth: int
    """Bits per second, video and audio, as a multivariant playlist's BANDWIDTH."""
    codec: str
    """Video codec name (h264, hevc, av1, vp9)."""


@dataclass(frozen=True, slots=True)
class AbrRefusal:
    """Why a stream has no renditions now, as an HTTP answer: 404 (ABR off for it, or no source), 409 (the
    ladder has no rung below the source), 415 (a source the workers cannot decode), 503 (this node's
    transcode budget is spent: the source alone is served)."""

    status: int
    reason: str
    error: str
    hint: str


class AbrService(Protocol):
    def enabled_for(self, source: StreamKey) -> bool:
        """Whether ABR applies to this stream's app (mode not off)."""
        ...

    async def renditions(self, source: StreamKey, *, start: bool = True) -> list[RenditionView] | AbrRefusal:
        """The renditions of `source` ready to play, highest first. With `start`, a job that is not running
        is started and the call waits (at most abr.wait) for its renditions' first keyframes; the request
        counts as use of the job (its idle timer starts again)."""
        ...
