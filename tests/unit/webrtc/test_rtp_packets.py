"""The pure RTP of WHEP viewers (mediaserver/webrtc/rtp_packets.py), fed bytes: payloads cut as aiortc cuts them,
headers and extensions that aiortc's own parser reads back, NACK answers from the history, sender report times."""

from __future__ import annotations

import struct

from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, pack_header_extensions, unwrap_rtx

from mediaserver.webrtc.rtp_packets import (HISTORY, PACKET_MAX, RtpFrame, RtpStream, abs_send_time,
                                            extension_block, h264_payloads, ntp_time)

SPS = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0xC0, 0x44, 0x00])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


def nal(kind: int, size: int, nri: int = 0x60) -> bytes:
    return bytes([nri | kind]) + bytes((i * 7) & 0xFF for i in range(size - 1))


def test_payloads_are_cut_as_aiortcs_h264_packetizer_cuts_them():
    units_sets = [
        [SPS, PPS, nal(5, 600)],                          # all in one STAP-A
        [SPS, PPS, nal(5, 20_000)],                       # a STAP-A, then FU-A fragments of equal size
        [nal(1, 1297)],                                   # the largest a single packet carries
        [nal(1, 1301)],                                   # one byte over: two fragments
        [nal(6, 10, 0)] * 12 + [nal(1, 700, 0x20)],      # a run longer than 9 units: two STAP-As
        [nal(1, 650), nal(1, 650), nal(1, 650)],          # the second does not fit beside the first
    ]
    for nals in units_sets:
        ours = h264_payloads(nals)
        theirs = H264Encoder._packetize(iter(nals))
        assert list(ours) == theirs, [len(p) for p in ours]
        assert all(len(p) <= PACKET_MAX for p in ours)


def test_fu_a_fragments_rebuild_the_unit_with_start_and_end_flags():
    unit = nal(5, 5000)
    frags = h264_payloads([unit])
    assert len(frags) == 4 and all(f[0] == 0x60 | 28 for f in frags)
    assert [f[1] & 0xC0 for f in frags] == [0x80, 0, 0, 0x40] and {f[1] & 0x1F for f in frags} == {5}
    assert bytes([unit[0]]) + b"".join(f[2:] for f in frags) == unit


def test_extension_blocks_match_aiortcs_in_both_forms():
    for elements in ([(1, b"0"), (3, b"\x01\x02\x03")], [(1, b"video")], [(15, b"0")], [(2, b"x" * 17)]):
        profile, value = pack_header_extensions(elements)
        assert extension_block(elements) == struct.pack("!HH", profile, len(value) // 4) + value
    assert extension_block([]) == b""


def test_headers_parse_back_with_aiortc_numbered_on_with_the_origin_and_a_marker_on_the_last():
    ids = HeaderExtensionsMap()
    ids.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]))
    stream = RtpStream(ssrc=0xDEADBEEF, payload_type=102, seq=0xFFFE, origin=0xFFFF_FF00, clock=90_000)
    frame = RtpFrame(h264_payloads([SPS, PPS, nal(5, 3000)]), time=3600, keyframe=True)
    ext = extension_block([(1, b"0"), (3, abs_send_time(1_700_000_000.5))])
    parsed = [RtpPacket.parse(p, ids) for p in stream.packets_of(frame, ext)]
    assert [p.sequence_number for p in parsed] == [0xFFFE, 0xFFFF, 0, 1], "numbers wrap at 16 bits"
    assert {p.timestamp for p in parsed} == {(0xFFFF_FF00 + 3600) & 0xFFFFFFFF}
    assert [p.marker for p in parsed] == [0, 0, 0, 1]
    assert {(p.ssrc, p.payload_type) for p in parsed} == {(0xDEADBEEF, 102)}
    assert [p.payload for p in parsed] == list(frame.payloads)
    assert {p.extensions.mid for p in parsed} == {"0"}
    assert parsed[0].extensions.abs_send_time == int((1_700_000_000.5 + 2_208_988_800) * 2**18) & 0xFFFFFF
    assert (stream.packets, stream.octets, stream.seq) == (4, frame.size, 2)
    plain = RtpStream(ssrc=1, payload_type=111, seq=5, origin=0, clock=48_000)
    (opus,) = plain.packets_of(RtpFrame((b"\xfc\x01",), 960))
    assert opus[:12] == struct.pack("!BBHII", 0x80, 0x80 | 111, 5, 960, 1) and opus[12:] == b"\xfc\x01"


def test_a_nack_is_answered_from_the_history_as_rtx_or_as_the_packet_again():
    frames = [RtpFrame((bytes([0x41, i & 0xFF]) * 300, bytes([0x41, (i + 100) & 0xFF]) * 10), 3000 * i)
              for i in range(HISTORY)]
    rtx = RtpStream(ssrc=7, payload_type=102, seq=100, origin=10, clock=90_000, rtx_payload_type=103,
                    rtx_ssrc=8, rtx_seq=500)
    sent = [p for f in frames[:3] for p in rtx.packets_of(f)]
    again = RtpPacket.parse(rtx.resend(101))
    assert (again.payload_type, again.ssrc, again.sequence_number, again.marker) == (103, 8, 500, 1)
    original = unwrap_rtx(again, payload_type=102, ssrc=7)
    assert original.serialize() == sent[1], "RTX carries the original sequence number and the shared payload"
    assert RtpPacket.parse(rtx.resend(102)).sequence_number == 501
    assert rtx.resend(99) is None and rtx.resend(106) is None, "never sent"
    plain = RtpStream(ssrc=7, payload_type=102, seq=0, origin=0, clock=90_000)
    first = plain.packets_of(frames[0])
    assert plain.resend(0) == first[0]
    for f in frames[1:]:
        plain.packets_of(f)
    assert plain.resend(0) is None, "pushed out of the history"
    assert plain.resend(2 * HISTORY - 1) is not None


def test_sender_report_times_carry_the_last_frames_timestamp_on_at_the_codec_clock():
    stream = RtpStream(ssrc=1, payload_type=102, seq=0, origin=0xFFFF_FFF0, clock=90_000)
    assert stream.report_timestamp(0.5) == (0xFFFF_FFF0 + 45_000) & 0xFFFFFFFF, "before any frame: the origin"
    stream.packets_of(RtpFrame((b"\x41",), 9000))
    assert stream.report_timestamp(0.25) == (0xFFFF_FFF0 + 9000 + 22_500) & 0xFFFFFFFF
    assert stream.report_timestamp(-1.0) == (0xFFFF_FFF0 + 9000) & 0xFFFFFFFF
    assert ntp_time(0.5) == (2_208_988_800 << 32) | (1 << 31)


def test_gso_runs_group_equal_sizes_and_close_on_a_shorter_one():
    from mediaserver.webrtc.rtp_packets import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, gso_runs

    assert gso_runs([]) == []
    assert gso_runs([300, 1200, 1200, 1199, 1199, 1199, 40]) == [(0, 1), (1, 4), (4, 7)]
    assert gso_runs([100, 200]) == [(0, 1), (1, 2)], "a longer one starts a run"
    assert gso_runs([500] * (GSO_MAX_SEGMENTS + 1)) == [(0, GSO_MAX_SEGMENTS), (GSO_MAX_SEGMENTS, GSO_MAX_SEGMENTS + 1)]
    big = gso_runs([1310] * 100)
    assert big[0] == (0, GSO_MAX_BYTES // 1310) and big[-1][1] == 100, "a run stays under 64 KB"
    sizes = [len(p) for p in h264_payloads([SPS, PPS, nal(5, 20_000)])]
    runs = gso_runs(sizes)
    assert len(runs) <= 3 and runs[0] == (0, 1) and runs[-1][1] == len(sizes)
    for start, end in runs:
        assert all(s == sizes[start] for s in sizes[start:end - 1]) and sizes[end - 1] <= sizes[start]
