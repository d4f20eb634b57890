"""AV1 for WHEP viewers whose browser receives it: a hub frame's temporal unit as RTP payloads (the RTP
Payload Format for AV1, aomediacodec.github.io/av1-rtp-spec). Pure: bytes in, bytes out.

A payload is one aggregation header byte and OBU elements:

    Z Y W W N - - -    Z: the first element continues an OBU cut at the end of the previous packet
                       Y: the last element is cut and continues in the next packet
                       W: 0 here, so every element is preceded by its length (LEB128)
                       N: the packet starts a new coded video sequence (a keyframe with its sequence header)

OBUs go without their own size field (the element's length says it; obu_has_size_field cleared), and
temporal delimiters, tile lists and padding are not sent (the spec: a receiver makes the delimiter from
the RTP timestamp; tile lists SHOULD NOT be sent). Each keyframe carries the sequence header in band (a
viewer joins at any keyframe, and nothing out of band carries it in WebRTC): the publisher's latest in-band
one when its temporal unit lacks it, else the av1C's. In-band wins because encoders may write av1C before
their settings are final (SVT-AV1's differs from its in-band header, and frames decoded against it break). An OBU that does not fit the packet's room is cut across packets; all
packets but the last are full, so a temporal unit takes as few packets as it can.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MediaError
from ..media import av1
from ..media.frames import Frame
from .rtp_packets import PACKET_MAX

Z_CONTINUES = 0x80
Y_CONTINUED = 0x40
N_NEW_SEQUENCE = 0x08
NOT_SENT = frozenset({av1.OBU_TEMPORAL_DELIMITER, 8, av1.OBU_PADDING})  # 8: OBU_TILE_LIST


def leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _leb128_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def without_size_field(obu: memoryview, payload: memoryview) -> bytes:
    """An OBU (as iter_obus gives it: whole, and its payload) with obu_has_size_field cleared."""
    header_size = 2 if obu[0] & 0x04 else 1
    return bytes((obu[0] & ~0x02,)) + bytes(obu[1:header_size]) + bytes(payload)


class Av1Units:
    """Turns one stream's AV1 frames into the OBUs RTP carries; follows its sequence headers (av1C)."""

    def __init__(self) -> None:
        self.sequence_header = b""
        """The stream's sequence header OBU, without its size field (b"" until an av1C or a frame had one)."""
        self._in_band = False

    def configure(self, config: Frame) -> None:
        """A sequence start (av1C); a malformed one, or one without a sequence header, keeps the previous."""
        self._in_band = False
        try:
            parsed = av1.parse_av1_config(config.payload)
            for kind, obu, payload in av1.iter_obus(parsed.config_obus):
                if kind == av1.OBU_SEQUENCE_HEADER:
                    self.sequence_header = without_size_field(obu, payload)
                    return
        except MediaError:
            return

    def obus(self, frame: Frame) -> list[bytes]:
        """A temporal unit's OBUs to send, the sequence header first on a keyframe; [] when it holds nothing
        to send. Raises MediaError for OBUs that overrun the frame."""
        out: list[bytes] = []
        has_header = False
        for kind, obu, payload in av1.iter_obus(frame.payload):
            if kind in NOT_SENT:
                continue
            out.append(without_size_field(obu, payload))
            if kind == av1.OBU_SEQUENCE_HEADER:
                has_header = True
                if not self._in_band or out[-1] != self.sequence_header:
                    self.sequence_header, self._in_band = out[-1], True
        if not out:
            return []
        if frame.keyframe and not has_header and self.sequence_header:
            out.insert(0, self.sequence_header)
        return out


def av1_payloads(obus: Sequence[bytes], limit: int = PACKET_MAX, new_sequence: bool = False) -> tuple[bytes, ...]:
    """A temporal unit's OBUs (without size fields) as RTP payloads of at most `limit` bytes; N is set on
    the first when `new_sequence` (a keyframe whose unit starts with a sequence header)."""
    if limit < 4:
        raise ValueError(f"an AV1 RTP payload of {limit} bytes cannot hold an aggregation header and an element")
    out: list[bytes] = []
    parts: list[bytes] = []
    room = limit - 1
    continues = False  # the packet being filled starts with the rest of a cut OBU

    def flush(cut: bool) -> None:
        nonlocal room, continues
        header = ((Z_CONTINUES if continues else 0) | (Y_CONTINUED if cut else 0)
                  | (N_NEW_SEQUENCE if new_sequence and not out else 0))
        out.append(bytes((header,)) + b"".join(parts))
        parts.clear()
        room = limit - 1
        continues = cut

    for obu in obus:
        pos, size = 0, len(obu)
        if not size:
            continue
        while pos < size:
            rest = size - pos
            if _leb128_size(rest) + rest <= room:
                parts += (leb128(rest), obu[pos:] if pos else obu)
                room -= _leb128_size(rest) + rest
                break
            take = room - _leb128_size(room)
            while take > 0 and _leb128_size(take) + take > room:
                take -= 1
            if take < 1 or (parts and take < 64):  # too little room left for a useful piece: next packet
                flush(False)
                continue
            parts += (leb128(take), obu[pos:pos + take])
            pos += take
            flush(True)
    if parts:
        flush(False)
    return tuple(out)
