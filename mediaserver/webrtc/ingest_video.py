"""H.264 from a WebRTC publisher to FLV video bodies: Annex B access units in, sequence headers and
AVCC frames out. Pure: no aiortc, no clock.

WebRTC sends H.264 the RTP way (RFC 6184): NAL units behind start codes once depacketized, with the
SPS and PPS in band before each IDR picture, and no sequence header. The hub wants what RTMP gives
it: an AVCDecoderConfigurationRecord as a sequence header whenever the parameter sets change, then
access units of length-prefixed NAL units, keyframes marked.

Nothing is published before the first IDR picture with its SPS and PPS (a decoder could not start);
`needs_keyframe` says so, and the bridge asks the publisher for one (PLI). A WebRTC encoder codes no
B-frames (RTP timestamps are presentation times and browsers never reorder), so the composition
offset is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MediaError
from ..media import h264

AVC_CODEC_ID = 7
_KEY_FRAME = 1
_INTER_FRAME = 2
_AVC_SEQUENCE_HEADER = 0
_AVC_NALU = 1


def avc_video_body(avcc: bytes, keyframe: bool) -> bytes:
    """An FLV AVCVIDEOPACKET holding one access unit (composition time 0)."""
    return bytes((((_KEY_FRAME if keyframe else _INTER_FRAME) << 4) | AVC_CODEC_ID, _AVC_NALU, 0, 0, 0)) + avcc


def avc_sequence_header_body(record: bytes) -> bytes:
    """An FLV AVCVIDEOPACKET holding an AVCDecoderConfigurationRecord."""
    return bytes(((_KEY_FRAME << 4) | AVC_CODEC_ID, _AVC_SEQUENCE_HEADER, 0, 0, 0)) + record


@dataclass(frozen=True, slots=True)
class VideoOut:
    """What one access unit becomes: a sequence header first when the parameter sets changed."""

    config: bytes | None
    """FLV body of a new sequence header, or None."""
    frame: bytes | None
    """FLV body of the access unit, or None when there is nothing to publish yet."""
    keyframe: bool = False


class AvcFromAnnexB:
    """The H.264 track of one WHIP session."""

    def __init__(self) -> None:
        self._sps: tuple[bytes, ...] = ()
        self._pps: tuple[bytes, ...] = ()
        self.record: bytes | None = None
        """The current AVCDecoderConfigurationRecord."""
        self.needs_keyframe = True
        """True until an IDR picture with its parameter sets arrived (again after a malformed frame)."""
        self.frames_dropped = 0
        """Access units left out while waiting for a keyframe."""

    def push(self, annexb: bytes | memoryview) -> VideoOut:
        """One depacketized access unit. Raises MediaError for a parameter set the record cannot hold."""
        unit = h264.split_annexb_access_unit(annexb)
        config = None
        sps = unit.sps or self._sps
        pps = unit.pps or self._pps
        if sps and pps and (sps != self._sps or pps != self._pps):
            try:
                record = h264.build_avc_config(sps, pps)
            except MediaError:
                self.needs_keyframe = True
                raise
            self._sps, self._pps = sps, pps
            if record != self.record:
                self.record = config = record
        if self.needs_keyframe:
            if not (unit.idr and self.record is not None):
                self.frames_dropped += 1
                return VideoOut(avc_sequence_header_body(config) if config else None, None)
            self.needs_keyframe = False
        if not unit.avcc:  # parameter sets alone (some encoders send them in a packet of their own)
            return VideoOut(avc_sequence_header_body(config) if config else None, None)
        return VideoOut(
            avc_sequence_header_body(config) if config else None, avc_video_body(unit.avcc, unit.idr), unit.idr
        )
