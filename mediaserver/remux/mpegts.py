"""An MPEG-2 transport stream writer for HLS: PAT, PMT and PES in 188-byte packets.

Layout (ISO/IEC 13818-1): one program (number 1) whose PMT is on PID 0x1000, video on PID 0x100
(H.264, stream_type 0x1B, or HEVC, 0x24), audio on PID 0x101 (AAC in ADTS,
stream_type 0x0F). The PCR rides on the video PID, or on the audio PID when there is no video.

Each access unit becomes one PES packet (several AAC frames may share one, to save headers), with
PTS and, when it differs, DTS. The caller gives elementary stream data ready to go (Annex B with
AUD and parameter sets, ADTS frames) and times in 90 kHz. The first TS packet of a PES carries the
PCR when that PID is the PCR PID, and random_access_indicator on keyframes; the last packet is
filled up with adaptation-field stuffing (2.4.3.5), since a PES must end on a packet boundary.

Timestamps: `ts_time_90k` maps stream ms to 90 kHz with a constant offset (TIMESTAMP_OFFSET_90K,
1.4 s as ffmpeg starts) so that PTS = DTS + CTS never goes below zero with B-frames, and the PCR
runs PCR_LEAD_90K behind the DTS so a decoder has the data before it must decode it. Both wrap at
33 bits as the format does; players handle that wrap.

Continuity counters live in the muxer, per PID, and carry on from one segment to the next, so a
player reading segments back to back sees one continuous stream. The muxer never looks at the
clock and never touches files; `take()` hands back the bytes written so far.

Speed: each PES is built once (one join), then cut into packets by slicing a memoryview; packet
headers come from a per-PID table indexed by continuity counter; the packets of a whole segment are
joined once, in `take()`. There is no per-byte Python loop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain

from ..errors import MediaError, UsageError

TS_PACKET_SIZE = 188
TS_PAYLOAD_SIZE = 184
SYNC_BYTE = 0x47

PID_PAT = 0x0000
PID_PMT = 0x1000
PID_VIDEO = 0x0100
PID_AUDIO = 0x0101
PROGRAM_NUMBER = 1
TRANSPORT_STREAM_ID = 1

STREAM_TYPE_AAC_ADTS = 0x0F
STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_HEVC = 0x24

STREAM_ID_AUDIO = 0xC0
STREAM_ID_VIDEO = 0xE0

PTS_MASK = (1 << 33) - 1
TIMESTAMP_OFFSET_90K = 126_000  # 1.4 s: room for B-frame reordering and the PCR lead
PCR_LEAD_90K = 63_000  # 0.7 s, ffmpeg's default max_delay
MAX_BOUNDED_PES = 0xFFFF  # PES_packet_length is 16 bits; only video may leave it 0 (unbounded)

# Adaptation field flags (2.4.3.4).
_AF_DISCONTINUITY = 0x80
_AF_RANDOM_ACCESS = 0x40
_AF_PCR = 0x10


def to_90k(ms: int) -> int:
    """Milliseconds to 90 kHz clock ticks."""
    return ms * 90


def ts_time_90k(ms: int) -> int:
    """A stream time in ms as a 33-bit PTS/DTS, with the constant offset that keeps PTS >= 0."""
    return (ms * 90 + TIMESTAMP_OFFSET_90K) & PTS_MASK


# -- CRC-32/MPEG-2 for PSI sections (annex A: polynomial 0x04C11DB7, no reflection, no final xor) --

def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32_mpeg2(data: bytes | bytearray | memoryview) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc


# -- Field encoders --------------------------------------------------------------------------------

def encode_timestamp(prefix: int, ts_90k: int) -> bytes:
    """A 5-byte PTS or DTS field (2.4.3.7): 4-bit prefix, 33 bits with marker bits."""
    ts = ts_90k & PTS_MASK
    return bytes(
        (
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        )
    )


def encode_pcr(pcr_90k: int) -> bytes:
    """A 6-byte program_clock_reference (2.4.3.5): 33-bit base in 90 kHz, 6 reserved bits, extension 0."""
    base = pcr_90k & PTS_MASK
    return bytes(
        (
            (base >> 25) & 0xFF,
            (base >> 17) & 0xFF,
            (base >> 9) & 0xFF,
            (base >> 1) & 0xFF,
            ((base & 1) << 7) | 0x7E,
            0,
        )
    )


def pes_header(stream_id: int, payload_len: int, pts_90k: int, dts_90k: int | None = None) -> bytes:
    """A PES packet header (2.4.3.6) with PTS, and DTS when it differs from PTS.

    PES_packet_length is written when it fits 16 bits; an oversized video PES gets 0 ("unbounded",
    allowed for video in a transport stream), an oversized audio PES is an error.
    """
    pts_90k &= PTS_MASK
    if dts_90k is not None and (dts_90k & PTS_MASK) != pts_90k:
        times = encode_timestamp(0x3, pts_90k) + encode_timestamp(0x1, dts_90k)
    else:
        times = encode_timestamp(0x2, pts_90k)
    with_dts = len(times) == 10
    header_data_len = len(times)
    pes_len = 3 + header_data_len + payload_len
    if pes_len > MAX_BOUNDED_PES:
        if stream_id & 0xF0 != STREAM_ID_VIDEO:
            raise MediaError(f"audio PES of {payload_len} bytes is too large; the limit is {MAX_BOUNDED_PES - 8}")
        pes_len = 0
    # '10' marker, data_alignment_indicator (each PES starts an access unit); PTS_DTS_flags.
    return bytes(
        (0, 0, 1, stream_id, pes_len >> 8, pes_len & 0xFF, 0x84, 0xC0 if with_dts else 0x80, header_data_len)
    ) + times


def _psi_packet(pid: int, cc: int, section: bytes) -> bytes:
    # One section per packet: PUSI set, pointer_field 0, section and CRC, 0xFF padding (2.4.4.2).
    body = b"\x00" + section + crc32_mpeg2(section).to_bytes(4, "big")
    if len(body) > TS_PAYLOAD_SIZE:
        raise UsageError(f"PSI section of {len(body)} bytes does not fit one TS packet")
    header = bytes((SYNC_BYTE, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | cc))
    return header + body + b"\xff" * (TS_PAYLOAD_SIZE - len(body))


def pat_section(pmt_pid: int = PID_PMT, version: int = 0) -> bytes:
    """The program association section (2.4.4.3) without its CRC: one program -> `pmt_pid`."""
    section_length = 5 + 4 + 4
    return bytes(
        (
            0x00, 0xB0 | (section_length >> 8), section_length & 0xFF,
            TRANSPORT_STREAM_ID >> 8, TRANSPORT_STREAM_ID & 0xFF,
            0xC1 | ((version & 0x1F) << 1), 0x00, 0x00,
            PROGRAM_NUMBER >> 8, PROGRAM_NUMBER & 0xFF, 0xE0 | (pmt_pid >> 8), pmt_pid & 0xFF,
        )
    )


def pmt_section(streams: Sequence[tuple[int, int]], pcr_pid: int, version: int = 0) -> bytes:
    """The program map section (2.4.4.8) without its CRC; `streams` is (stream_type, pid) pairs."""
    section_length = 9 + 5 * len(streams) + 4
    out = bytearray(
        (
            0x02, 0xB0 | (section_length >> 8), section_length & 0xFF,
            PROGRAM_NUMBER >> 8, PROGRAM_NUMBER & 0xFF,
            0xC1 | ((version & 0x1F) << 1), 0x00, 0x00,
            0xE0 | (pcr_pid >> 8), pcr_pid & 0xFF,
            0xF0, 0x00,  # program_info_length 0
        )
    )
    for stream_type, pid in streams:
        out += bytes((stream_type, 0xE0 | (pid >> 8), pid & 0xFF, 0xF0, 0x00))
    return bytes(out)


def _payload_headers(pid: int) -> tuple[bytes, ...]:
    # Headers of packets that continue a PES: no PUSI, payload only, one per continuity counter.
    return tuple(bytes((SYNC_BYTE, pid >> 8, pid & 0xFF, 0x10 | cc)) for cc in range(16))


class TsMuxer:
    """Writes one program's PSI and PES packets into a growing list of TS packets.

    Call `write_tables()` at the start of every segment, then `write_video`/`write_audio` per
    access unit in decode order, then `take()` for the segment's bytes. Continuity counters carry
    over between `take()` calls.
    """

    __slots__ = (
        "_out", "_cc", "_headers", "_video_type", "_audio_type", "_pmt_version", "_pmt_streams",
        "_pcr_pid", "_bytes",
    )

    def __init__(
        self,
        video_stream_type: int | None = STREAM_TYPE_H264,
        audio_stream_type: int | None = STREAM_TYPE_AAC_ADTS,
    ) -> None:
        self._out: list[bytes | memoryview] = []
        self._bytes = 0
        self._cc = {PID_PAT: 0, PID_PMT: 0, PID_VIDEO: 0, PID_AUDIO: 0}
        self._headers = {pid: _payload_headers(pid) for pid in (PID_VIDEO, PID_AUDIO)}
        self._pmt_version = -1
        self._video_type: int | None = None
        self._audio_type: int | None = None
        self._pmt_streams: tuple[tuple[int, int], ...] = ()
        self._pcr_pid = PID_VIDEO
        self.set_streams(video_stream_type, audio_stream_type)

    # -- program ---------------------------------------------------------------------------------

    def set_streams(self, video_stream_type: int | None, audio_stream_type: int | None) -> None:
        """Declare which elementary streams the PMT lists (None leaves one out).

        A change takes effect at the next `write_tables()`, with a new PMT version.
        """
        if video_stream_type is None and audio_stream_type is None:
            raise UsageError("a transport stream needs at least one of video and audio")
        if (video_stream_type, audio_stream_type) == (self._video_type, self._audio_type):
            return
        self._video_type, self._audio_type = video_stream_type, audio_stream_type
        streams = []
        if video_stream_type is not None:
            streams.append((video_stream_type, PID_VIDEO))
        if audio_stream_type is not None:
            streams.append((audio_stream_type, PID_AUDIO))
        self._pmt_streams = tuple(streams)
        self._pcr_pid = PID_VIDEO if video_stream_type is not None else PID_AUDIO
        self._pmt_version = (self._pmt_version + 1) & 0x1F

    @property
    def has_video(self) -> bool:
        return self._video_type is not None

    @property
    def has_audio(self) -> bool:
        return self._audio_type is not None

    @property
    def pcr_pid(self) -> int:
        return self._pcr_pid

    @property
    def continuity_counters(self) -> dict[int, int]:
        """The next continuity counter of each PID (for tests and diagnostics)."""
        return dict(self._cc)

    @property
    def pending_bytes(self) -> int:
        """Bytes written since the last take()."""
        return self._bytes

    def write_tables(self) -> None:
        """Write a PAT and a PMT (each in one packet), as every HLS segment must start (RFC 8216 3.2)."""
        cc = self._cc
        self._emit(_psi_packet(PID_PAT, cc[PID_PAT], pat_section(PID_PMT)))
        cc[PID_PAT] = (cc[PID_PAT] + 1) & 0x0F
        section = pmt_section(self._pmt_streams, self._pcr_pid, self._pmt_version)
        self._emit(_psi_packet(PID_PMT, cc[PID_PMT], section))
        cc[PID_PMT] = (cc[PID_PMT] + 1) & 0x0F

    # -- elementary streams ----------------------------------------------------------------------

    def write_video(
        self, pieces: Sequence[bytes | memoryview], pts_90k: int, dts_90k: int, keyframe: bool
    ) -> None:
        """One video access unit (its Annex B bytes, in pieces) as one PES."""
        if self._video_type is None:
            raise UsageError("write_video on a muxer whose PMT has no video stream")
        payload_len = sum(len(p) for p in pieces)
        pes = b"".join((pes_header(STREAM_ID_VIDEO, payload_len, pts_90k, dts_90k), *pieces))
        flags = _AF_RANDOM_ACCESS if keyframe else 0
        pcr = None
        if self._pcr_pid == PID_VIDEO:
            flags |= _AF_PCR
            pcr = dts_90k - PCR_LEAD_90K
        self._write_pes(PID_VIDEO, pes, flags, pcr)

    def write_audio(self, pieces: Sequence[bytes | memoryview], pts_90k: int) -> None:
        """One or more audio frames (ADTS, back to back) as one PES with the first frame's PTS."""
        if self._audio_type is None:
            raise UsageError("write_audio on a muxer whose PMT has no audio stream")
        payload_len = sum(len(p) for p in pieces)
        pes = b"".join((pes_header(STREAM_ID_AUDIO, payload_len, pts_90k), *pieces))
        flags = 0
        pcr = None
        if self._pcr_pid == PID_AUDIO:
            # Audio only: the PCR rides here, and every audio frame is a random access point.
            flags = _AF_PCR | _AF_RANDOM_ACCESS
            pcr = pts_90k - PCR_LEAD_90K
        self._write_pes(PID_AUDIO, pes, flags, pcr)

    def take(self) -> bytes:
        """All packets written since the last take(), as one bytes object."""
        data = b"".join(self._out)
        self._out = []
        self._bytes = 0
        return data

    # -- packetizing -----------------------------------------------------------------------------

    def _emit(self, packet: bytes) -> None:
        self._out.append(packet)
        self._bytes += TS_PACKET_SIZE

    def _write_pes(self, pid: int, pes: bytes, af_flags: int, pcr_90k: int | None) -> None:
        """Packetize one PES into 188-byte packets, joined at once into one bytes object: a segment in
        progress then holds a few dozen plain bytes objects, not thousands of slices (which the cycle
        collector would have to walk)."""
        total = len(pes)
        cc = self._cc[pid]

        # First packet: PUSI, and the adaptation field with PCR / random access flags if any.
        af = b""
        if af_flags:
            af = bytes((af_flags,)) + (encode_pcr(pcr_90k) if pcr_90k is not None else b"")
        room = TS_PAYLOAD_SIZE - (1 + len(af) if af else 0)
        take = min(room, total)
        pieces = [_packet_head(pid, True, cc, af, take), pes[:take]]
        pos = take
        cc = (cc + 1) & 0x0F
        packets = 1

        # Middle packets: full 184-byte payloads behind prebuilt headers, interleaved in C.
        full = (total - pos) // TS_PAYLOAD_SIZE
        if full:
            headers = self._headers[pid]
            rotated = (headers[cc:] + headers[:cc]) * (full // 16 + 1)
            end = pos + full * TS_PAYLOAD_SIZE
            pieces.extend(chain.from_iterable(zip(rotated, _PAYLOADS.findall(pes, pos, end))))
            pos = end
            cc = (cc + full) & 0x0F
            packets += full

        # Last packet: what is left, behind adaptation-field stuffing.
        if pos < total:
            pieces.append(_packet_head(pid, False, cc, b"", total - pos))
            pieces.append(pes[pos:])
            cc = (cc + 1) & 0x0F
            packets += 1

        self._cc[pid] = cc
        self._out.append(b"".join(pieces))
        self._bytes += packets * TS_PACKET_SIZE


_PAYLOADS = re.compile(b".{%d}" % TS_PAYLOAD_SIZE, re.DOTALL)
"""Cuts a PES into full packet payloads in one C call (faster than a comprehension of slices)."""


def _packet_head(pid: int, pusi: bool, cc: int, af: bytes, payload_len: int) -> bytes:
    """A TS header plus adaptation field for a packet carrying `payload_len` payload bytes.

    `af` is the adaptation field content after its length byte (flags, PCR); whatever room the
    payload leaves is filled with stuffing bytes (0xFF) inside the adaptation field.
    """
    b1 = (0x40 if pusi else 0) | (pid >> 8)
    af_total = TS_PAYLOAD_SIZE - payload_len  # bytes the adaptation field must fill, length byte included
    if af_total == 0:
        return bytes((SYNC_BYTE, b1, pid & 0xFF, 0x10 | cc))
    if af_total == 1:
        return bytes((SYNC_BYTE, b1, pid & 0xFF, 0x30 | cc, 0))  # adaptation_field_length 0
    content = af or b"\x00"  # a flags byte with no flags set
    stuffing = af_total - 1 - len(content)
    return bytes((SYNC_BYTE, b1, pid & 0xFF, 0x30 | cc, af_total - 1)) + content + b"\xff" * stuffing
