"""Multivariant HLS playlists over a rendition ladder: the HLS-TS master and the CMAF one.

A Variant is one EXT-X-STREAM-INF: a media playlist's URI and what a player chooses by (BANDWIDTH,
AVERAGE-BANDWIDTH, CODECS, RESOLUTION, FRAME-RATE; RFC 8216bis 4.4.6.2). `render_multivariant` writes
the variants in the order given (the first is where players start) and, when an AudioGroup is given,
one EXT-X-MEDIA audio rendition that every variant refers to (the CMAF output: the source's audio
track serves every video rendition, which carry the same audio, unchanged, cut at the same instants).

`codecs_of` gives the RFC 6381 codecs parameters of a stream's configs (avc1.PPCCLL, hvc1..., av01...,
mp4a.40.N, opus), parsed from the sequence headers the hub keeps. Pure: no clock, no IO; URIs are
relative (the edge writes "index.m3u8" for the source, "../STREAM@LABEL/index.m3u8" for a rendition)
and `query` (e.g. the viewer's "token=...") is appended to each.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MediaError, UsageError
from ..media.aac import parse_audio_specific_config
from ..media.av1 import parse_av1_config
from ..media.frames import Frame
from ..media.h264 import parse_avc_config
from ..media.hevc import parse_hevc_config
from ..media.opus import parse_opus_head


@dataclass(frozen=True, slots=True)
class Variant:
    """One variant stream of a multivariant playlist."""

    uri: str
    bandwidth: int
    """Peak bits per second of the variant's segments, every track it plays counted."""
    codecs: tuple[str, ...] = ()
    """RFC 6381 codecs parameters of every track played with it (empty: left out)."""
    width: int = 0
    height: int = 0
    frame_rate: float | None = None
    average_bandwidth: int | None = None


@dataclass(frozen=True, slots=True)
class AudioGroup:
    """The audio rendition every variant plays with (EXT-X-MEDIA TYPE=AUDIO)."""

    uri: str
    group_id: str = "audio"
    name: str = "audio"
    channels: int = 0


def render_multivariant(
    variants: list[Variant], *, audio: AudioGroup | None = None, query: str = "", version: int = 3
) -> str:
    """The multivariant playlist listing `variants` in order (the first is the default one)."""
    suffix = f"?{_check(query)}" if query else ""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{version}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None:
        channels = f',CHANNELS="{audio.channels}"' if audio.channels else ""
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{_check(audio.group_id)}",NAME="{_check(audio.name)}",'
            f'DEFAULT=YES,AUTOSELECT=YES{channels},URI="{_check(audio.uri)}{suffix}"'
        )
    for variant in variants:
        info = [f"BANDWIDTH={max(1, variant.bandwidth)}"]
        if variant.average_bandwidth is not None:
            info.append(f"AVERAGE-BANDWIDTH={max(1, variant.average_bandwidth)}")
        if variant.codecs:
            info.append(f'CODECS="{_check(",".join(variant.codecs))}"')
        if variant.width and variant.height:
            info.append(f"RESOLUTION={variant.width}x{variant.height}")
        if variant.frame_rate:
            info.append(f"FRAME-RATE={variant.frame_rate:.3f}")
        if audio is not None:
            info.append(f'AUDIO="{audio.group_id}"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(info))
        lines.append(_check(variant.uri) + suffix)
    lines.append("")
    return "\n".join(lines)


def codecs_of(*configs: Frame | None) -> tuple[str, ...]:
    """The RFC 6381 codecs parameter of each sequence header given (None, or one that does not parse,
    or a codec without one, is left out: CODECS is then incomplete and the caller should omit it)."""
    out = []
    for frame in configs:
        text = codec_string(frame) if frame is not None else None
        if text is not None:
            out.append(text)
    return tuple(out)


def codec_string(config: Frame) -> str | None:
    """The RFC 6381 codecs parameter of one sequence header, or None if it cannot be told."""
    raw = bytes(config.payload)
    try:
        if config.codec == "h264":
            return parse_avc_config(raw).codec_string
        if config.codec == "hevc":
            return parse_hevc_config(raw).codec_string
        if config.codec == "av1":
            return parse_av1_config(raw).codec_string
        if config.codec == "aac":
            return parse_audio_specific_config(raw).codec_string
        if config.codec == "opus":
            return parse_opus_head(raw).codec_string
    except MediaError:
        return None
    return None


def _check(text: str) -> str:
    # A line break, quote or '#' would let a URI or a name smuggle tags or attributes into the playlist.
    if any(ord(c) < 0x20 or c in '\x7f"#' for c in text):
        raise UsageError(f"multivariant playlist part {text!r} holds a control character, a quote or '#'")
    return text
