"""FLV tag bodies (the payloads RTMP audio, video and data messages carry) in, Frames out.

Parses the one or two header bytes that say what a body holds (codec, frame type, packet type,
composition time), legacy FLV and Enhanced RTMP (FourCC) alike, and builds the frame's complete FLV
tag once. It never looks inside the codec payload: that is h264.py's and aac.py's job.

References: Adobe FLV spec v10.1 annex E (VIDEODATA, AUDIODATA, AVCVIDEOPACKET, AACAUDIODATA);
Veovera Enhanced RTMP v1/v2 (ExVideoTagHeader, ExAudioTagHeader).
"""

from __future__ import annotations

import struct

from ..errors import MediaError
from .frames import Frame, FrameKind

# Legacy FLV video codec ids (VIDEODATA CodecID); 12 is the widely used, non-standard HEVC id.
_LEGACY_VIDEO = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 7: "h264", 12: "hevc"}
# Enhanced RTMP video FourCCs.
_FOURCC_VIDEO = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
# Legacy FLV SoundFormat values.
_LEGACY_AUDIO = {
    0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 4: "nellymoser16", 5: "nellymoser8",
    6: "nellymoser", 7: "g711a", 8: "g711u", 10: "aac", 11: "speex", 14: "mp3_8k",
}
# Enhanced RTMP audio FourCCs.
_FOURCC_AUDIO = {b"mp4a": "aac", b"Opus": "opus", b".mp3": "mp3", b"ac-3": "ac3", b"ec-3": "eac3", b"fLaC": "flac"}

# Enhanced RTMP VideoPacketType / AudioPacketType values.
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3
_EX_METADATA = 4
_EX_MULTICHANNEL_CONFIG = 4  # AudioPacketType

MAX_TIMESTAMP_MS = 0xFFFFFFFF


_TAG_HEADER = struct.Struct(">II3x")
_U32 = struct.Struct(">I")


def build_tag(kind: int, dts_ms: int, body: bytes | memoryview) -> bytes:
    """One complete FLV tag: header, body and PreviousTagSize (FLV spec E.4.1)."""
    size = len(body)
    if size > 0xFFFFFF:
        raise MediaError(f"FLV tag body of {size} bytes is too large; the format allows 16777215")
    ts = dts_ms & 0xFFFFFFFF
    # type and 24-bit size; 24-bit timestamp and its upper byte; stream id 0 (per frame: one C call)
    header = _TAG_HEADER.pack((kind << 24) | size, ((ts & 0xFFFFFF) << 8) | (ts >> 24))
    return b"".join((header, body, _U32.pack(size + 11)))


def _si24(b: bytes | memoryview, i: int) -> int:
    v = (b[i] << 16) | (b[i + 1] << 8) | b[i + 2]
    return v - 0x1000000 if v & 0x800000 else v


def video_frame(body: bytes | memoryview, dts_ms: int) -> Frame | None:
    """Parse one video tag body. Returns None for bodies that carry no picture or config
    (video info/command frames, Enhanced RTMP metadata), which readers never need.

    Raises MediaError when the body is too short for what its header announces.
    """
    n = len(body)
    if n < 1:
        raise MediaError("empty video message")
    b0 = body[0]
    if b0 & 0x80:  # Enhanced RTMP: IsExHeader
        frame_type = (b0 >> 4) & 0x07
        packet_type = b0 & 0x0F
        if n < 5:
            raise MediaError(f"enhanced video message of {n} bytes is shorter than its 5-byte header")
        fourcc = bytes(body[1:5])
        codec = _FOURCC_VIDEO.get(fourcc, "fourcc:" + fourcc.decode("latin-1"))
        if frame_type == 5 or packet_type == _EX_METADATA:
            return None
        cts = 0
        start = 5
        is_config = packet_type == _EX_SEQUENCE_START
        is_end = packet_type == _EX_SEQUENCE_END
        if packet_type == _EX_CODED_FRAMES and codec in ("h264", "hevc"):
            if n < 8:
                raise MediaError(f"enhanced coded frame of {n} bytes lacks its composition time")
            cts = _si24(body, 5)
            start = 8
        elif packet_type not in (_EX_SEQUENCE_START, _EX_CODED_FRAMES, _EX_SEQUENCE_END, _EX_CODED_FRAMES_X):
            # Multitrack, ModEx and MPEG-2 TS sequence start are not carried yet.
            raise MediaError(f"enhanced video packet type {packet_type} ({codec}) is not supported")
        keyframe = frame_type == 1 and not is_config
    else:
        frame_type = b0 >> 4
        codec = _LEGACY_VIDEO.get(b0 & 0x0F, f"video-codec-{b0 & 0x0F}")
        if frame_type == 5:
            return None
        cts = 0
        start = 1
        is_config = is_end = False
        if codec in ("h264", "hevc"):
            if n < 5:
                raise MediaError(f"{codec} video message of {n} bytes is shorter than its 5-byte header")
            packet_type = body[1]
            if packet_type > 2:
                raise MediaError(f"AVC packet type {packet_type} is invalid; must be 0, 1 or 2")
            is_config = packet_type == 0
            is_end = packet_type == 2
            cts = _si24(body, 2)
            start = 5
        keyframe = frame_type == 1 and not is_config
    if is_config and start == n:
        if codec == "av1":
            return None  # some AV1 encoders send an empty sequence start before the real av1C
        raise MediaError(f"{codec} sequence header is empty")
    return Frame(
        kind=FrameKind.VIDEO,
        dts_ms=dts_ms,
        cts_ms=cts,
        codec=codec,
        keyframe=keyframe,
        is_config=is_config,
        tag=build_tag(FrameKind.VIDEO, dts_ms, body),
        payload_start=11 + start,
        is_end=is_end,
    )


def audio_frame(body: bytes | memoryview, dts_ms: int) -> Frame | None:
    """Parse one audio tag body. Returns None for bodies that carry nothing to play.

    Raises MediaError when the body is too short for what its header announces.
    """
    n = len(body)
    if n < 1:
        raise MediaError("empty audio message")
    b0 = body[0]
    sound_format = b0 >> 4
    is_config = is_end = False
    if sound_format == 9:  # Enhanced RTMP: ExAudioTagHeader
        packet_type = b0 & 0x0F
        if n < 5:
            raise MediaError(f"enhanced audio message of {n} bytes is shorter than its 5-byte header")
        fourcc = bytes(body[1:5])
        codec = _FOURCC_AUDIO.get(fourcc, "fourcc:" + fourcc.decode("latin-1"))
        if packet_type == _EX_SEQUENCE_START:
            is_config = True
        elif packet_type == _EX_SEQUENCE_END:
            is_end = True
        elif packet_type == _EX_MULTICHANNEL_CONFIG:
            return None  # channel layout signalling (ffmpeg sends it after each Opus sequence start); not media
        elif packet_type != _EX_CODED_FRAMES:
            raise MediaError(f"enhanced audio packet type {packet_type} ({codec}) is not supported")
        start = 5
    else:
        codec = _LEGACY_AUDIO.get(sound_format, f"audio-codec-{sound_format}")
        start = 1
        if codec == "aac":
            if n < 2:
                raise MediaError("AAC audio message lacks its packet type byte")
            if body[1] > 1:
                raise MediaError(f"AAC packet type {body[1]} is invalid; must be 0 or 1")
            is_config = body[1] == 0
            start = 2
    if start == n and not is_end:
        if is_config:
            raise MediaError(f"{codec} sequence header is empty")
        return None  # an empty audio frame plays nothing
    return Frame(
        kind=FrameKind.AUDIO,
        dts_ms=dts_ms,
        cts_ms=0,
        codec=codec,
        keyframe=not is_config,
        is_config=is_config,
        tag=build_tag(FrameKind.AUDIO, dts_ms, body),
        payload_start=11 + start,
        is_end=is_end,
    )


def data_frame(body: bytes | memoryview, dts_ms: int = 0) -> Frame:
    """A script data tag (onMetaData); its AMF0 body is kept as sent."""
    return Frame(
        kind=FrameKind.DATA,
        dts_ms=dts_ms,
        cts_ms=0,
        codec="amf0",
        keyframe=True,
        is_config=True,
        tag=build_tag(FrameKind.DATA, dts_ms, body),
        payload_start=11,
    )
