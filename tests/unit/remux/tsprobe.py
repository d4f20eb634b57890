"""A small, strict, test-side MPEG-TS reader, written from ISO/IEC 13818-1 independently of remux/mpegts.py.

It checks what a real demuxer would trip over (sync bytes, adaptation field lengths, continuity
counters, section CRCs, PES start codes and marker bits) and hands back the pieces for assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PACKET = 188


@dataclass(slots=True)
class TsPacket:
    pid: int
    pusi: bool
    cc: int
    has_payload: bool
    payload: bytes
    adaptation: bytes | None
    """Adaptation field content after its length byte; None when there is no adaptation field."""
    pcr: int | None = None
    """PCR base in 90 kHz."""
    random_access: bool = False
    discontinuity: bool = False


def parse_packets(data: bytes) -> list[TsPacket]:
    assert len(data) % PACKET == 0, f"{len(data)} bytes is not a whole number of TS packets"
    packets = []
    for pos in range(0, len(data), PACKET):
        p = data[pos : pos + PACKET]
        assert p[0] == 0x47, f"no sync byte in packet at {pos}"
        assert not p[1] & 0x80, "transport_error_indicator set"
        pid = ((p[1] & 0x1F) << 8) | p[2]
        scrambling, afc, cc = p[3] >> 6, (p[3] >> 4) & 3, p[3] & 0x0F
        assert scrambling == 0 and afc != 0, f"bad byte 3 in packet at {pos}"
        body = 4
        adaptation = None
        pcr = None
        rai = disc = False
        if afc & 2:
            length = p[4]
            assert length <= 183, "adaptation_field_length beyond the packet"
            if not afc & 1:
                assert length == 183, "adaptation-only packet must fill the packet"
            adaptation = p[5 : 5 + length]
            body = 5 + length
            if length:
                flags = adaptation[0]
                disc, rai = bool(flags & 0x80), bool(flags & 0x40)
                offset = 1
                if flags & 0x10:
                    raw = int.from_bytes(adaptation[1:7], "big")
                    pcr = raw >> 15
                    assert (raw >> 9) & 0x3F == 0x3F, "PCR reserved bits must be 1"
                    offset = 7
                assert all(b == 0xFF for b in adaptation[offset:]), "stuffing bytes must be 0xff"
        packets.append(
            TsPacket(pid, bool(p[1] & 0x40), cc, bool(afc & 1), p[body:] if afc & 1 else b"", adaptation, pcr, rai, disc)
        )
    return packets


def check_continuity(packets: list[TsPacket], previous: dict[int, int] | None = None) -> dict[int, int]:
    """Assert every PID's counter goes up by one per packet with payload; returns the last counters."""
    last = dict(previous or {})
    for p in packets:
        if not p.has_payload:
            continue
        if p.pid in last:
            assert p.cc == (last[p.pid] + 1) % 16, f"PID {p.pid:#x}: continuity counter {p.cc} after {last[p.pid]}"
        last[p.pid] = p.cc
    return last


def crc32_mpeg2_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        for bit in range(7, -1, -1):
            top = ((crc >> 31) & 1) ^ ((byte >> bit) & 1)
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
    return crc


def read_section(packet: TsPacket) -> bytes:
    """The PSI section in a packet (one section per packet), CRC checked, CRC stripped."""
    assert packet.pusi, "a section packet must have payload_unit_start_indicator"
    pointer = packet.payload[0]
    section = packet.payload[1 + pointer :]
    length = ((section[1] & 0x0F) << 8) | section[2]
    full = section[: 3 + length]
    assert crc32_mpeg2_bitwise(full) == 0, "section CRC32 is wrong"
    assert all(b == 0xFF for b in section[3 + length :]), "bytes after a section must be 0xff"
    return full[:-4]


@dataclass(slots=True)
class Pmt:
    pcr_pid: int
    version: int
    streams: dict[int, int] = field(default_factory=dict)
    """pid -> stream_type"""


def parse_pat(section: bytes) -> dict[int, int]:
    assert section[0] == 0x00 and section[1] & 0x80, "not a PAT"
    programs = {}
    for pos in range(8, len(section), 4):
        programs[int.from_bytes(section[pos : pos + 2], "big")] = int.from_bytes(section[pos + 2 : pos + 4], "big") & 0x1FFF
    return programs


def parse_pmt(section: bytes) -> Pmt:
    assert section[0] == 0x02 and section[1] & 0x80, "not a PMT"
    pmt = Pmt(pcr_pid=int.from_bytes(section[8:10], "big") & 0x1FFF, version=(section[5] >> 1) & 0x1F)
    pos = 12 + (int.from_bytes(section[10:12], "big") & 0x0FFF)
    while pos < len(section):
        stream_type = section[pos]
        pid = int.from_bytes(section[pos + 1 : pos + 3], "big") & 0x1FFF
        pmt.streams[pid] = stream_type
        pos += 5 + (int.from_bytes(section[pos + 3 : pos + 5], "big") & 0x0FFF)
    return pmt


def read_timestamp(b: bytes, prefix: int) -> int:
    assert b[0] >> 4 == prefix, f"timestamp prefix {b[0] >> 4} != {prefix}"
    assert b[0] & 1 and b[2] & 1 and b[4] & 1, "timestamp marker bits must be 1"
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


@dataclass(slots=True)
class Pes:
    stream_id: int
    packet_length: int
    pts: int
    dts: int
    payload: bytes
    first_packet: TsPacket


def pes_units(packets: list[TsPacket], pid: int) -> list[Pes]:
    """Reassemble and parse every PES on `pid`."""
    units: list[tuple[TsPacket, bytearray]] = []
    for p in packets:
        if p.pid != pid or not p.has_payload:
            continue
        if p.pusi:
            units.append((p, bytearray(p.payload)))
        else:
            assert units, f"PID {pid:#x} continues a PES that never started"
            units[-1][1].extend(p.payload)
    return [parse_pes(bytes(data), first) for first, data in units]


def parse_pes(data: bytes, first: TsPacket) -> Pes:
    assert data[:3] == b"\x00\x00\x01", "PES start code missing"
    stream_id = data[3]
    length = int.from_bytes(data[4:6], "big")
    if length:
        assert length == len(data) - 6, f"PES_packet_length {length} but {len(data) - 6} bytes follow"
    assert data[6] >> 6 == 2, "PES header marker bits"
    flags = data[7] >> 6
    header_len = data[8]
    if flags == 3:
        pts, dts = read_timestamp(data[9:14], 3), read_timestamp(data[14:19], 1)
    elif flags == 2:
        pts = dts = read_timestamp(data[9:14], 2)
    else:
        raise AssertionError(f"PTS_DTS_flags {flags}")
    return Pes(stream_id, length, pts, dts, data[9 + header_len :], first)
