"""The shared vocabulary: a Frame is one media access unit, parsed once at ingest.

A Frame owns its complete FLV tag (11-byte tag header, tag body, 4-byte PreviousTagSize), built once
when the frame enters the hub. HTTP-FLV and WebSocket-FLV viewers write `frame.tag` as it is, so every
viewer shares the same bytes object; the other remuxers read the codec payload through `frame.payload`,
a zero-copy memoryview into that tag.

Timestamps are unwrapped milliseconds on the stream's own continuous timeline (the hub rebases a
publisher that reconnects), so `dts_ms` only grows within a track.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class FrameKind(IntEnum):
    """FLV tag types, which RTMP message type ids share."""

    AUDIO = 8
    VIDEO = 9
    DATA = 18


# Codec names used across the project. Video: "h264", "hevc", "av1", "vp9"; audio: "aac", "mp3",
# "opus"; anything else keeps a descriptive name (for logs) and is carried by no remuxer.
VIDEO_CODECS = frozenset({"h264", "hevc", "av1", "vp9"})
AUDIO_CODECS = frozenset({"aac", "mp3", "opus"})


MAX_PICTURE_PIXELS = 35_651_584
"""The largest picture any level of H.264 (6.2: 139,264 macroblocks) or HEVC (6.2: MaxLumaPs) allows, about
8192x4352: what the server decodes (thumbnails, health, ABR) is refused above it, since one 16000x16000
picture alone takes 384 MB once decoded."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One access unit (or a sequence header, or a metadata object) of one stream."""

    kind: FrameKind
    dts_ms: int
    """Decode time in ms on the stream's continuous timeline."""
    cts_ms: int
    """Composition offset in ms: pts = dts + cts."""
    codec: str
    keyframe: bool
    """A random access point: an IDR picture for video; every audio frame and data frame is one."""
    is_config: bool
    """A sequence header (AVCDecoderConfigurationRecord, AudioSpecificConfig, ...), not media."""
    tag: bytes
    """The complete FLV tag, PreviousTagSize included: written as is to every FLV viewer."""
    payload_start: int
    """Offset in `tag` where the codec payload (NAL units, raw AAC, config record) starts."""
    is_end: bool = False
    """An end-of-sequence marker (AVC end of sequence, Enhanced RTMP SequenceEnd)."""

    @property
    def pts_ms(self) -> int:
        return self.dts_ms + self.cts_ms

    @property
    def payload(self) -> memoryview:
        """The codec payload, without FLV headers; zero-copy."""
        return memoryview(self.tag)[self.payload_start : len(self.tag) - 4]

    @property
    def body(self) -> memoryview:
        """The FLV tag body (what an RTMP message carries); zero-copy."""
        return memoryview(self.tag)[11 : len(self.tag) - 4]

    @property
    def size(self) -> int:
        return len(self.tag)


@dataclass(slots=True)
class StreamInfo:
    """What a stream is: its metadata and decoder configurations, kept apart from the GOP.

    Updated by the hub as metadata and sequence headers arrive; a new viewer is sent `metadata`,
    then `video_config`, then `audio_config` before any media.
    """

    metadata: Frame | None = None
    metadata_values: dict[str, Any] = field(default_factory=dict)
    video_config: Frame | None = None
    audio_config: Frame | None = None
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    config_generation: int = 0
    """Bumped whenever a sequence header or the metadata changes, so readers can tell."""

    def headers(self) -> list[Frame]:
        """Frames a new reader needs before any media, in the order players expect."""
        return [f for f in (self.metadata, self.video_config, self.audio_config) if f is not None]
