"""Hub frames as the units WebRTC senders packetize: H.264 access units (their NAL units, or Annex B) with
their RTP time (90 kHz), Opus packets with theirs (48 kHz). Pure: no aiortc, no PyAV (rtp_packets.py cuts
the NAL units in RTP payloads).

H.264 over RTP (RFC 6184) carries no out-of-band parameter sets in aiortc's answer, so every IDR picture
gets the stream's SPS and PPS in band (as MPEG-TS does), unless it carries its own. The access unit
delimiters a publisher may send are dropped: RTP needs none.

WebRTC cannot carry B-frames: its packets' timestamps are presentation times and receivers decode in
arrival order, so a stream whose pictures are reordered (a frame shown before one decoded earlier) must
be served from a rendition encoded without them. `reorders` tells from a run of frames.

A new viewer's first pictures: the cached GOP from its keyframe lets the picture start at once, but its
frames are up to a GOP old; sent with their own times they would make the receiver's jitter buffer
play them at their pace, a whole GOP behind the publisher for good. `catch_up_times` restamps them
1 ms apart ending at the newest one's time, so the receiver decodes them at once and shows the newest:
the session starts at the live edge. Cached audio is not sent (it would only be late).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MediaError
from ..media import av1, h264, hevc
from ..media.frames import Frame, FrameKind

VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
PLAYABLE_AUDIO = frozenset({"aac", "opus"})
PASSED_THROUGH = frozenset({"h264", "av1", "hevc"})
"""Video codecs sent as they come: H.264 to every browser, AV1 and HEVC to those whose offer receives them."""
VIDEO_NAMES = {"h264": "H.264", "av1": "AV1", "hevc": "HEVC", "vp9": "VP9"}
CATCH_UP_STEP = VIDEO_CLOCK // 1000
"""One millisecond between the restamped frames of a viewer's first GOP."""


def video_time(frame: Frame) -> int:
    """The RTP time (90 kHz) of a video frame: its presentation time."""
    return frame.pts_ms * (VIDEO_CLOCK // 1000)


def audio_time(frame: Frame) -> int:
    """The RTP time (48 kHz) of an Opus frame passed through."""
    return frame.dts_ms * (AUDIO_CLOCK // 1000)


class H264Units:
    """Turns one stream's H.264 frames into Annex B access units; follows its sequence headers."""

    def __init__(self) -> None:
        self.nal_length_size = 4
        self.parameter_sets = b""
        self.parameter_nals: list[bytes] = []

    def configure(self, config: Frame) -> None:
        """A sequence header (AVCDecoderConfigurationRecord); a malformed one keeps the previous settings."""
        try:
            parsed = h264.parse_avc_config(bytes(config.payload))
        except MediaError:
            return
        self.nal_length_size = parsed.nal_length_size
        self.parameter_sets = parsed.annexb_parameter_sets()
        self.parameter_nals = [bytes(n) for n in (*parsed.sps, *parsed.pps)]

    def nal_units(self, frame: Frame) -> list[bytes | memoryview]:
        """One picture's NAL units to send, without start codes (SPS and PPS in front of an IDR, access unit
        delimiters left out); [] when it holds nothing to send. Raises MediaError for NAL unit lengths that
        overrun the frame."""
        nals = list(h264.iter_nal_units(frame.payload, self.nal_length_size))
        out: list[bytes | memoryview] = []
        if frame.keyframe and self.parameter_sets:
            types = {nal[0] & 0x1F for nal in nals if len(nal)}
            if h264.NAL_SPS not in types or h264.NAL_PPS not in types:
                out += self.parameter_nals
        sent = 0
        for nal in nals:
            if not len(nal) or nal[0] & 0x1F == h264.NAL_AUD:
                continue
            out.append(nal)
            sent += 1
        return out if sent else []

    def access_unit(self, frame: Frame) -> bytes:
        """One picture in Annex B (`nal_units` with start codes); b"" when it holds nothing to send."""
        nals = self.nal_units(frame)
        return b"".join(h264.START_CODE + bytes(n) for n in nals) if nals else b""


def av1_profile(config: Frame | None) -> int:
    """The seq_profile of a stream's av1C (0, the Main profile, when it has none or it is malformed)."""
    if config is None:
        return 0
    try:
        return av1.parse_av1_config(config.payload).seq_profile
    except MediaError:
        return 0


def hevc_profile(config: Frame | None) -> int:
    """The general_profile_idc of a stream's hvcC (1 Main, 2 Main 10; 1, RFC 7798's default profile-id, when
    it has none, it is not HEVC's or it is malformed)."""
    if config is None or config.codec != "hevc":
        return 1
    try:
        return hevc.parse_hevc_config(config.payload).profile_idc
    except MediaError:
        return 1


def reorders(frames: Sequence[Frame]) -> bool:
    """Whether these frames (in decode order) show pictures out of order: B-frames."""
    newest = None
    for f in frames:
        if f.kind != FrameKind.VIDEO or f.is_config:
            continue
        pts = f.pts_ms
        if newest is not None and pts < newest:
            return True
        if newest is None or pts > newest:
            newest = pts
    return False


def carried_problem(video_codec: str | None, audio_codec: str | None, frames: Sequence[Frame],
                    receivable: frozenset[str] = PASSED_THROUGH) -> str | None:
    """Why WebRTC cannot carry a stream with these codecs and recent frames as it is, or None. Video passes
    through, without B-frames, when its codec is one the viewer receives (`receivable`: what its offer can
    take, or every codec passed through when the viewer is not known yet); audio is sent as Opus (AAC
    transcoded, Opus passed through)."""
    if video_codec is not None and video_codec not in receivable:
        name = VIDEO_NAMES.get(video_codec, video_codec)
        if video_codec in PASSED_THROUGH:
            return f"its video is {name}, which the offer does not receive"
        return (f"its video is {name}; WebRTC playback here carries H.264, and AV1 or HEVC to browsers that "
                "receive them")
    if video_codec is not None and reorders(frames):
        return "its video has B-frames, which WebRTC cannot carry"
    if video_codec is None and audio_codec not in PLAYABLE_AUDIO:
        return "it has no track WebRTC can carry yet (H.264, AV1 or HEVC video, AAC or Opus audio)"
    return None


def catch_up_times(times: Sequence[int]) -> list[int]:
    """RTP times for a viewer's first pictures (the cached GOP), newest last: 1 ms apart, ending at the
    newest picture's own time, so the live pictures that follow keep theirs."""
    if not times:
        return []
    last = times[-1]
    n = len(times)
    return [last - (n - 1 - i) * CATCH_UP_STEP for i in range(n)]
