"""Enhanced RTMP v2 multitrack messages, split into ordinary single-track bodies.

An encoder that makes its own ladder (OBS's multitrack video output) sends every rendition of a picture
in one video message: `VideoPacketType.Multitrack` (6; audio: `AudioPacketType.Multitrack`, 5), then
`AvMultitrackType` (OneTrack 0, ManyTracks 1, ManyTracksManyCodecs 2) with the packet type shared by the
tracks, the FourCC (once, or per track for ManyTracksManyCodecs), and per track its id and (except for
OneTrack) a 24-bit size. A ModEx prefix (packet type 7 for video, 6 for audio: e.g. a nanosecond
timestamp offset) may come first; it is dropped, as millisecond timestamps are what every output uses.

Each track comes out as the single-track Enhanced RTMP body it would have been on its own (its header
byte, FourCC, then the track's data, which for coded H.264/HEVC frames starts with the composition time),
so `flv_body.video_frame`/`audio_frame` parse it like any other message.

Reference: Veovera Enhanced RTMP v2, "Enhancing Video" and "Enhancing Audio" (ExVideoTagHeader,
ExAudioTagHeader, AvMultitrackType).
"""

from __future__ import annotations

from ..errors import MediaError

VIDEO_MULTITRACK = 6
VIDEO_MODEX = 7
AUDIO_MULTITRACK = 5
AUDIO_MODEX = 7
ONE_TRACK = 0
MANY_TRACKS = 1
MANY_TRACKS_MANY_CODECS = 2
MAX_TRACKS = 16
"""More tracks in one message than any encoder's ladder: refused rather than fanned out."""


def is_video_multitrack(body: bytes | memoryview) -> bool:
    """Whether a video body is an Enhanced RTMP multitrack (or ModEx-prefixed) message."""
    return len(body) > 0 and body[0] & 0x80 != 0 and (body[0] & 0x0F) in (VIDEO_MULTITRACK, VIDEO_MODEX)


def is_audio_multitrack(body: bytes | memoryview) -> bool:
    return len(body) > 0 and body[0] >> 4 == 9 and (body[0] & 0x0F) in (AUDIO_MULTITRACK, AUDIO_MODEX)


def split_video(body: bytes | memoryview) -> list[tuple[int, bytes]]:
    """A video body -> [(track id, single-track body)]. A ModEx-prefixed single-track body comes back as
    track 0 without its prefix. Raises MediaError for a malformed message."""
    frame_type = (body[0] >> 4) & 0x07 if body else 0  # an empty body: _split says so
    return _split(body, "video", lambda packet_type: bytes((0x80 | frame_type << 4 | packet_type,)),
                  VIDEO_MULTITRACK, VIDEO_MODEX)


def split_audio(body: bytes | memoryview) -> list[tuple[int, bytes]]:
    """An audio body -> [(track id, single-track body)]; as split_video."""
    return _split(body, "audio", lambda packet_type: bytes((0x90 | packet_type,)), AUDIO_MULTITRACK, AUDIO_MODEX)


def _split(body: bytes | memoryview, what: str, header, multitrack: int, modex: int) -> list[tuple[int, bytes]]:
    data = bytes(body)
    n = len(data)
    if not n:
        raise MediaError(f"{what} message is empty")
    packet_type = data[0] & 0x0F
    pos = 1
    while packet_type == modex:  # ModEx: a size, its data, then the real packet type
        if pos >= n:
            raise MediaError(f"{what} ModEx prefix is truncated")
        size = data[pos] + 1
        pos += 1
        if size == 256:
            if pos + 2 > n:
                raise MediaError(f"{what} ModEx prefix is truncated")
            size = int.from_bytes(data[pos:pos + 2], "big") + 1
            pos += 2
        pos += size
        if pos >= n:
            raise MediaError(f"{what} ModEx prefix of {size} bytes runs past the message")
        packet_type = data[pos] & 0x0F
        pos += 1
    if packet_type != multitrack:
        if pos + 4 > n:
            raise MediaError(f"enhanced {what} message is shorter than its FourCC")
        return [(0, header(packet_type) + data[pos:])]
    if pos >= n:
        raise MediaError(f"multitrack {what} message lacks its track type")
    track_type, packet_type = data[pos] >> 4, data[pos] & 0x0F
    pos += 1
    if track_type > MANY_TRACKS_MANY_CODECS:
        raise MediaError(f"multitrack {what} type {track_type} is unknown; must be 0, 1 or 2")
    if packet_type in (multitrack, modex):
        raise MediaError(f"multitrack {what} message nests packet type {packet_type}")
    fourcc = b""
    if track_type != MANY_TRACKS_MANY_CODECS:
        if pos + 4 > n:
            raise MediaError(f"multitrack {what} message is shorter than its FourCC")
        fourcc = data[pos:pos + 4]
        pos += 4
    out: list[tuple[int, bytes]] = []
    while pos < n:
        if len(out) >= MAX_TRACKS:
            raise MediaError(f"multitrack {what} message has more than {MAX_TRACKS} tracks")
        if track_type == MANY_TRACKS_MANY_CODECS:
            if pos + 4 > n:
                raise MediaError(f"multitrack {what} track is shorter than its FourCC")
            fourcc = data[pos:pos + 4]
            pos += 4
        if pos >= n:
            raise MediaError(f"multitrack {what} track lacks its id")
        track_id = data[pos]
        pos += 1
        if track_type == ONE_TRACK:
            size = n - pos
        else:
            if pos + 3 > n:
                raise MediaError(f"multitrack {what} track {track_id} lacks its size")
            size = int.from_bytes(data[pos:pos + 3], "big")
            pos += 3
            if pos + size > n:
                raise MediaError(f"multitrack {what} track {track_id} of {size} bytes runs past the message")
        out.append((track_id, header(packet_type) + fourcc + data[pos:pos + size]))
        pos += size
        if track_type == ONE_TRACK:
            break
    if not out:
        raise MediaError(f"multitrack {what} message carries no track")
    return out


def join_video(frame_type: int, packet_type: int, fourcc: bytes, tracks: list[tuple[int, bytes]]) -> bytes:
    """Build a ManyTracks video message (one codec) from per-track data (what follows the FourCC in a
    single-track body): what an encoder with its own ladder sends. Used by tests and tools."""
    parts = [bytes((0x80 | frame_type << 4 | VIDEO_MULTITRACK, MANY_TRACKS << 4 | packet_type)), fourcc]
    for track_id, data in tracks:
        parts.append(bytes((track_id,)) + len(data).to_bytes(3, "big") + data)
    return b"".join(parts)


def one_track_video(frame_type: int, packet_type: int, fourcc: bytes, track_id: int, data: bytes) -> bytes:
    """A OneTrack video message: one track of a multitrack publisher, with its own frame type (how OBS's
    multitrack output sends each rendition)."""
    return bytes((0x80 | frame_type << 4 | VIDEO_MULTITRACK, ONE_TRACK << 4 | packet_type)) + fourcc + bytes((track_id,)) + data
