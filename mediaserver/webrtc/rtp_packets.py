"""RTP for WHEP viewers without aiortc's per-packet objects: pure (bytes in, bytes out; no clock, no IO).

The work is split by who shares it:

- per stream and frame (`RtpFrame`, made once by feeds.py for every viewer): the RTP payloads of an H.264
  access unit (RFC 6184: small NAL units aggregated in STAP-A packets, large ones cut in FU-A fragments,
  cut as aiortc's codecs/h264.py cuts them: at most `PACKET_MAX` bytes, fragments of equal size) or of an
  Opus packet (the packet itself), and the frame's RTP time (90 or 48 kHz) before any viewer's origin;
- per viewer and track (`RtpStream`): the 12-byte header of each packet (its SSRC, payload type, sequence
  number, timestamp = the viewer's random origin + the frame's time, the marker bit on a frame's last
  packet), the header extensions (`extension_block`: mid and abs-send-time, the ones aiortc 1.16 puts
  in), the packet and octet counts of its sender reports, and a short history of what was sent for NACKs:
  sequence number -> (timestamp, marker, the SHARED payload), resent as it was or wrapped in RTX (RFC 4588).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

PACKET_MAX = 1300
"""The largest RTP payload, as aiortc's: room for SRTP, the headers and a TURN relay within a 1500-byte MTU."""
HISTORY = 512
"""Packets a viewer can ask again (NACK): about 1.5 s of a 2.5 Mbit/s stream."""

NAL_STAP_A = 24
NAL_FU_A = 28
STAP_A_MAX_UNITS = 9  # as aiortc

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from 1900 (NTP) to 1970 (Unix)."""

_HEADER = struct.Struct("!BBHII")
_SEQ = struct.Struct("!H")
_EXT_HEAD = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class RtpFrame:
    """A frame's RTP payloads (shared by every viewer) and its RTP time (codec clock, no origin)."""

    payloads: tuple[bytes, ...]
    time: int
    keyframe: bool = False

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.payloads)

    def at(self, time: int) -> RtpFrame:
        """The same payloads at another time (a viewer's catch-up start)."""
        return RtpFrame(self.payloads, time, self.keyframe)


def h264_payloads(nals: Sequence[bytes | memoryview], limit: int = PACKET_MAX) -> tuple[bytes, ...]:
    """An access unit's NAL units (no start codes) as RTP payloads: runs of small ones in STAP-A packets (a
    unit alone goes as it is), one larger than `limit` in FU-A fragments."""
    out: list[bytes] = []
    run: list[bytes] = []
    room = 0

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            header = NAL_STAP_A | max(n[0] & 0x60 for n in run) | (0x80 if any(n[0] & 0x80 for n in run) else 0)
            out.append(bytes([header]) + b"".join(_SEQ.pack(len(n)) + n for n in run))
        run.clear()

    for nal in nals:
        nal = bytes(nal)
        if not nal:
            continue
        if len(nal) > limit:
            flush()
            out += fu_a(nal, limit)
            continue
        need = 2 + len(nal)
        if run and (need > room or len(run) >= STAP_A_MAX_UNITS):
            flush()
        if not run:
            room = limit - 1  # the STAP-A NAL header
        run.append(nal)
        room -= need
    flush()
    return tuple(out)


def fu_a(nal: bytes, limit: int = PACKET_MAX) -> list[bytes]:
    """One NAL unit in FU-A fragments of (nearly) equal size, each at most `limit` bytes."""
    body = memoryview(nal)[1:]
    room = limit - 2
    count = -(-len(body) // room)
    size, larger = divmod(len(body), count)
    indicator = (nal[0] & 0xE0) | NAL_FU_A
    kind = nal[0] & 0x1F
    out = []
    offset = 0
    for i in range(count):
        n = size + (1 if i < larger else 0)
        flags = (0x80 if i == 0 else 0) | (0x40 if i == count - 1 else 0)
        out.append(bytes((indicator, flags | kind)) + body[offset:offset + n])
        offset += n
    return out


def extension_block(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """RFC 8285 header extensions after the fixed header: the one-byte form when every id is 1-14 and every
    value 1-16 bytes, else the two-byte form; padded to 32-bit words. b"" for none."""
    if not elements:
        return b""
    one_byte = all(0 < i <= 14 and 0 < len(v) <= 16 for i, v in elements)
    if one_byte:
        profile = 0xBEDE
        body = b"".join(bytes(((i << 4) | (len(v) - 1),)) + v for i, v in elements)
    else:
        profile = 0x1000
        body = b"".join(bytes((i, len(v))) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return _EXT_HEAD.pack(profile, len(body) // 4) + body


def abs_send_time(unix_time: float) -> bytes:
    """The abs-send-time extension's value: NTP seconds in 6.18 fixed point, 24 bits (wraps every 64 s)."""
    return (int((unix_time + NTP_EPOCH_OFFSET) * 262_144) & 0xFFFFFF).to_bytes(3, "big")


def ntp_time(unix_time: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point) of a Unix time."""
    return int((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF


class RtpStream:
    """One viewer's RTP packets of one track: headers, counts, and the history NACKs are answered from."""

    __slots__ = ("ssrc", "payload_type", "seq", "origin", "clock", "packets", "octets", "last_timestamp",
                 "_history", "rtx_payload_type", "rtx_ssrc", "rtx_seq")

    def __init__(self, ssrc: int, payload_type: int, seq: int, origin: int, clock: int,
                 rtx_payload_type: int | None = None, rtx_ssrc: int = 0, rtx_seq: int = 0) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.seq = seq & 0xFFFF
        self.origin = origin & 0xFFFFFFFF
        self.clock = clock
        self.packets = 0
        self.octets = 0
        self.last_timestamp: int | None = None
        """The RTP timestamp of the last frame sent (with the origin): the sender reports' anchor."""
        self._history: list[tuple[int, int, int, bytes] | None] = [None] * HISTORY
        self.rtx_payload_type = rtx_payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_seq = rtx_seq & 0xFFFF

    def packets_of(self, frame: RtpFrame, extensions: bytes = b"") -> list[bytes]:
        """The frame's RTP packets (before SRTP), numbered on from the last; noted in the history."""
        first = 0x90 if extensions else 0x80
        timestamp = (self.origin + frame.time) & 0xFFFFFFFF
        pt = self.payload_type
        ssrc = self.ssrc
        seq = self.seq
        history = self._history
        pack = _HEADER.pack
        payloads = frame.payloads
        last = len(payloads) - 1
        out = []
        for i, payload in enumerate(payloads):
            marker = 0x80 if i == last else 0
            out.append(pack(first, marker | pt, seq, timestamp, ssrc) + extensions + payload)
            history[seq % HISTORY] = (seq, timestamp, marker, payload)
            seq = (seq + 1) & 0xFFFF
        self.seq = seq
        self.packets += len(payloads)
        self.octets += frame.size
        self.last_timestamp = timestamp
        return out

    def resend(self, seq: int, extensions: bytes = b"") -> bytes | None:
        """The packet `seq` again (in RTX when negotiated), or None when it is no longer in the history."""
        entry = self._history[seq % HISTORY]
        if entry is None or entry[0] != seq:
            return None
        _, timestamp, marker, payload = entry
        first = 0x90 if extensions else 0x80
        if self.rtx_payload_type is None:
            return _HEADER.pack(first, marker | self.payload_type, seq, timestamp, self.ssrc) + extensions + payload
        rtx_seq = self.rtx_seq
        self.rtx_seq = (rtx_seq + 1) & 0xFFFF
        return (_HEADER.pack(first, marker | self.rtx_payload_type, rtx_seq, timestamp, self.rtx_ssrc) + extensions
                + _SEQ.pack(seq) + payload)

    def report_timestamp(self, since_last_s: float) -> int:
        """The RTP timestamp for a sender report made `since_last_s` after the last frame was sent: the last
        frame's timestamp carried on at the codec clock, so that (NTP now, this) maps RTP to wall time."""
        last = self.last_timestamp if self.last_timestamp is not None else self.origin
        return (last + int(max(0.0, since_last_s) * self.clock)) & 0xFFFFFFFF


GSO_MAX_SEGMENTS = 64
"""The kernel's limit on datagrams in one UDP_SEGMENT send (UDP_MAX_SEGMENTS)."""
GSO_MAX_BYTES = 65_000
"""A GSO send is one UDP datagram to the kernel: its payload stays under 65,507 bytes."""


def gso_runs(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) runs of datagrams that can go in one UDP GSO send: all of one size, the last of a run may be
    shorter (the kernel cuts the buffer at that size), at most GSO_MAX_SEGMENTS and GSO_MAX_BYTES in all. A
    frame's FU-A fragments (equal but for one byte) make one or two runs per 64 KB."""
    runs = []
    start = 0
    n = len(sizes)
    while start < n:
        size = sizes[start]
        most = max(1, min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // max(1, size)))
        end = start + 1
        while end < n and end - start < most and sizes[end] <= size:
            end += 1
            if sizes[end - 1] < size:
                break
        runs.append((start, end))
        start = end
    return runs
