"""HEVC (H.265) for WHEP viewers whose browser receives it: a hub frame's access unit as RTP payloads (RFC 7798,
RTP Payload Format for HEVC). Pure: bytes in, bytes out.

Sent as a single stream with no decoding order numbers (tx-mode SRST, sprop-max-don-diff 0: no DONL field):

- a NAL unit that fits the payload limit alone goes as a single NAL unit packet (the NAL unit itself);
- runs of small NAL units go in Aggregation Packets (type 48) when two or more fit: a 2-byte PayloadHdr
  (F the OR of the units' F bits, LayerId and TID the lowest of theirs, RFC 7798 4.4.2), then each unit's
  16-bit size and the unit;
- a larger one is cut in Fragmentation Units (type 49): the PayloadHdr (the unit's own F, LayerId, TID),
  an FU header (S on the first, E on the last, the unit's type), then a piece of the unit after its 2-byte
  header. Every fragment but the last is full, so a unit takes as few packets as it can.

HEVC over RTP carries no out-of-band parameter sets in the answer (the offer's own H265 entry is answered as
it is), so every IRAP picture gets the stream's VPS, SPS and PPS in band (as MPEG-TS does) unless it carries
its own; access unit delimiters are dropped (RTP needs none).

Which browsers receive it: Safari (17+), and Chrome only where it has hardware HEVC decoding. None of the
browsers the tests drive here (headless Chromium) lists H265 among its receive codecs, so the picture is
checked by decoding the depacketized access units with PyAV (tests/unit/webrtc/test_h265_rtp.py), not in a
browser.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MediaError
from ..media import hevc
from ..media.frames import Frame
from ..media.h264 import iter_nal_units
from .rtp_packets import PACKET_MAX

NAL_AP = 48
NAL_FU = 49
FU_START = 0x80
FU_END = 0x40
PARAMETER_SETS = frozenset({hevc.NAL_VPS, hevc.NAL_SPS, hevc.NAL_PPS})
_SIZE = 2  # an aggregation unit's size field


def _header(nal_type: int, forbidden: int, layer_id: int, tid: int) -> bytes:
    """A 2-byte NAL unit header / PayloadHdr: F(1) Type(6) LayerId(6) TID(3)."""
    return bytes(((forbidden << 7) | (nal_type << 1) | (layer_id >> 5), ((layer_id & 0x1F) << 3) | tid))


def _layer_id(nal: bytes | memoryview) -> int:
    return ((nal[0] & 0x01) << 5) | (nal[1] >> 3)


class H265Units:
    """Turns one stream's HEVC frames into the NAL units RTP carries; follows its sequence headers (hvcC)."""

    def __init__(self) -> None:
        self.nal_length_size = 4
        self.parameter_nals: list[bytes] = []
        """VPS, SPS and PPS from the hvcC, in that order ([] until one was read)."""

    def configure(self, config: Frame) -> None:
        """A sequence header (HEVCDecoderConfigurationRecord); a malformed one keeps the previous settings."""
        try:
            parsed = hevc.parse_hevc_config(config.payload)
        except MediaError:
            return
        self.nal_length_size = parsed.nal_length_size
        self.parameter_nals = [bytes(n) for n in (*parsed.vps, *parsed.sps, *parsed.pps)]

    def nal_units(self, frame: Frame) -> list[bytes | memoryview]:
        """One picture's NAL units to send, without length prefixes (VPS, SPS and PPS in front of an IRAP
        picture that lacks them, access unit delimiters left out); [] when it holds nothing to send. Raises
        MediaError for NAL unit lengths that overrun the frame, and for units too short for their header."""
        nals = list(iter_nal_units(frame.payload, self.nal_length_size))
        for nal in nals:
            if len(nal) == 1:
                raise MediaError("HEVC NAL unit of 1 byte is truncated; its header alone is 2 bytes")
        nals = [n for n in nals if len(n) and hevc.nal_type(n) != hevc.NAL_AUD]
        if not nals:
            return []
        types = {hevc.nal_type(n) for n in nals}
        irap = frame.keyframe or any(hevc.NAL_IRAP_FIRST <= t <= hevc.NAL_IRAP_LAST for t in types)
        if irap and self.parameter_nals and not PARAMETER_SETS <= types:
            # A viewer may join at any IRAP picture, and nothing out of band gives it the parameter sets; any
            # the picture has of its own come after these, so they are the ones in force.
            return [*self.parameter_nals, *nals]
        return nals


def h265_payloads(nals: Sequence[bytes | memoryview], limit: int = PACKET_MAX) -> tuple[bytes, ...]:
    """An access unit's NAL units (no start codes or length prefixes) as RTP payloads of at most `limit`
    bytes: runs of small ones in Aggregation Packets (a unit alone goes as it is), a larger one in
    Fragmentation Units. Raises ValueError for a NAL unit shorter than its 2-byte header."""
    if limit < 4:
        raise ValueError(f"an HEVC RTP payload of {limit} bytes cannot hold a fragmentation unit's headers and data")
    out: list[bytes] = []
    run: list[bytes] = []
    room = 0

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            forbidden = max(n[0] >> 7 for n in run)
            header = _header(NAL_AP, forbidden, min(_layer_id(n) for n in run), min(n[1] & 0x07 for n in run))
            out.append(header + b"".join(len(n).to_bytes(_SIZE, "big") + n for n in run))
        run.clear()

    for nal in nals:
        nal = bytes(nal)
        if len(nal) < 2:
            raise ValueError(f"an HEVC NAL unit of {len(nal)} bytes has no 2-byte header")
        if len(nal) > limit:
            flush()
            out += fragmentation_units(nal, limit)
            continue
        need = _SIZE + len(nal)
        if run and need > room:
            flush()
        if not run:
            room = limit - 2  # the AP's PayloadHdr
        run.append(nal)
        room -= need
    flush()
    return tuple(out)


def fragmentation_units(nal: bytes, limit: int = PACKET_MAX) -> list[bytes]:
    """One NAL unit in Fragmentation Units of at most `limit` bytes, every one but the last full."""
    header = _header(NAL_FU, nal[0] >> 7, _layer_id(nal), nal[1] & 0x07)
    kind = hevc.nal_type(nal)
    body = memoryview(nal)[2:]
    room = limit - 3  # PayloadHdr and FU header
    out = []
    for offset in range(0, len(body), room):
        flags = (FU_START if offset == 0 else 0) | (FU_END if offset + room >= len(body) else 0)
        out.append(header + bytes((flags | kind,)) + body[offset:offset + room])
    return out
