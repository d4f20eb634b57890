"""Which output formats carry which codecs, and the 415 a viewer gets when a stream's codec cannot go
into the format it asked for (the other formats, and other streams, carry on)."""

from __future__ import annotations

from aiohttp import web

from ..hub.stream import Stream
from .common import cors_headers, json_error

CARRIED: dict[str, frozenset[str]] = {
    "HTTP-FLV (.flv)": frozenset({"h264", "hevc", "av1", "vp9", "aac", "mp3", "opus"}),
    "HLS MPEG-TS (index.m3u8)": frozenset({"h264", "hevc", "aac"}),
    "LL-HLS fMP4 (cmaf.m3u8)": frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus"}),
    "DASH (manifest.mpd)": frozenset({"h264", "hevc", "av1", "vp9", "aac", "opus"}),
}
TS_HLS = "HLS MPEG-TS (index.m3u8)"
LLHLS = "LL-HLS fMP4 (cmaf.m3u8)"
DASH = "DASH (manifest.mpd)"


def refuse_uncarried(request: web.Request, stream: Stream | None, fmt: str) -> None:
    """Raise 415 when a track of `stream` uses a codec `fmt` cannot carry, naming the codec and the
    formats that can."""
    if stream is None:
        return
    info = stream.info
    for codec in (info.video_codec, info.audio_codec):
        if codec is not None and codec not in CARRIED[fmt]:
            able = [name for name, codecs in CARRIED.items() if codec in codecs]
            raise json_error(
                415, f"stream {stream.key} carries {codec}, which {fmt} cannot carry",
                f"watch it as {' or '.join(able)}" if able else "no output format carries this codec",
                cors_headers(request),
            )
