"""HEVC RTP payloads (webrtc/h265_rtp.py): cut as RFC 7798 says, and put back together by a receiver written from
the RFC here, they give the access unit's NAL units again; a real encoder's clip decodes after the round trip
with no parameter sets but those put in band."""

from __future__ import annotations

import dataclasses

import av
import pytest

from mediaserver.errors import MediaError
from mediaserver.media import hevc
from mediaserver.media.frames import FrameKind
from mediaserver.media.h264 import START_CODE, iter_nal_units
from mediaserver.webrtc.h265_rtp import NAL_AP, NAL_FU, H265Units, h265_payloads
from support.codec_clips import codec_clip, config_frame, media_frames


def depacketize(payloads) -> list[bytes]:
    """A receiver (RFC 7798 4.4, no DONL): payloads of one access unit back into its NAL units."""
    nals: list[bytes] = []
    pending: bytearray | None = None
    for i, payload in enumerate(payloads):
        assert len(payload) >= 2, f"packet {i} is shorter than a NAL unit header"
        kind = payload[0] >> 1 & 0x3F
        assert kind not in (NAL_AP, NAL_FU) or len(payload) >= 3, f"packet {i}: an AP or FU without a body"
        if kind == NAL_AP:
            assert pending is None, "an AP may not interrupt a fragmented unit"
            units = []
            pos = 2
            while pos < len(payload):
                size = int.from_bytes(payload[pos:pos + 2], "big")
                units.append(payload[pos + 2:pos + 2 + size])
                assert size >= 2 and len(units[-1]) == size, f"packet {i}: aggregation unit overruns the packet"
                pos += 2 + size
            assert len(units) >= 2, "an AP carries at least two aggregation units"
            f = max(u[0] >> 7 for u in units)
            layer = min((u[0] & 1) << 5 | u[1] >> 3 for u in units)
            tid = min(u[1] & 7 for u in units)
            assert (payload[0] >> 7, (payload[0] & 1) << 5 | payload[1] >> 3, payload[1] & 7) == (f, layer, tid), \
                "the AP's F is the OR of its units', LayerId and TID the lowest"
            nals += units
        elif kind == NAL_FU:
            fu = payload[2]
            start, end, fu_type = fu & 0x80, fu & 0x40, fu & 0x3F
            assert not (start and end), "S and E are never both set"
            assert bool(start) == (pending is None), f"packet {i}: S says whether a unit starts here"
            if start:
                # The unit's header: the PayloadHdr's F, LayerId and TID with the FU header's type.
                pending = bytearray(((payload[0] & 0x81) | fu_type << 1, payload[1]))
            pending += payload[3:]
            if end:
                nals.append(bytes(pending))
                pending = None
        else:
            assert kind < 48, f"packet {i}: type {kind} (PACI or unspecified) is not sent"
            assert pending is None, "a single NAL unit packet may not interrupt a fragmented unit"
            nals.append(bytes(payload))
    assert pending is None, "the last packet must not leave a unit cut"
    return nals


def nal(kind: int, size: int, layer: int = 0, tid: int = 1, forbidden: int = 0) -> bytes:
    head = bytes((forbidden << 7 | kind << 1 | layer >> 5, (layer & 0x1F) << 3 | tid))
    return head + bytes(n % 251 for n in range(size - 2))


def with_payload(frame, payload: bytes):
    """The frame with another codec payload (its FLV tag rebuilt around it)."""
    return dataclasses.replace(frame, tag=bytes(frame.tag[:frame.payload_start]) + payload + b"\0" * 4)


def length_prefixed(nals, size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


def test_small_units_share_an_aggregation_packet_and_a_large_one_is_cut_in_full_fragments():
    small = [nal(hevc.NAL_VPS, 24), nal(hevc.NAL_SPS, 40, tid=2), nal(hevc.NAL_PPS, 8, forbidden=1)]
    big = nal(19, 3000)
    payloads = h265_payloads([*small, big], limit=1200)
    assert [p[0] >> 1 & 0x3F for p in payloads] == [NAL_AP, NAL_FU, NAL_FU, NAL_FU]
    assert payloads[0][0] >> 7 == 1 and payloads[0][1] & 7 == 1, "F ORed, TID the lowest"
    assert all(len(p) == 1200 for p in payloads[1:-1]) and len(payloads[-1]) <= 1200
    assert [p[2] & 0xC0 for p in payloads[1:]] == [0x80, 0, 0x40]
    assert all(p[2] & 0x3F == 19 for p in payloads[1:])
    assert depacketize(payloads) == [*small, big]
    assert h265_payloads([small[0]]) == (small[0],), "a unit alone goes as a single NAL unit packet"


@pytest.mark.parametrize("limit", [4, 5, 7, 16, 100, 1299, 1300])
def test_every_size_round_trips_at_any_limit(limit):
    units = [nal(kind, size, layer=layer, tid=tid) for kind, size, layer, tid in
             ((36, 2, 0, 1), (33, 3, 1, 2),  # 36: end of sequence, a header alone
              (34, 5, 0, 1), (39, 60, 0, 1), (19, 1300, 0, 1), (1, 1301, 0, 3),
              (1, 9000, 2, 1), (0, 2, 0, 1), (0, 3, 0, 1))]
    payloads = h265_payloads(units, limit=limit)
    assert all(len(p) <= limit for p in payloads)
    fragments = [p for p in payloads if p[0] >> 1 & 0x3F == NAL_FU]
    for p, following in zip(fragments, fragments[1:]):
        if not p[2] & 0x40:  # all but a unit's last fragment are full
            assert len(p) == limit and following[2] & 0x3F == p[2] & 0x3F
    assert depacketize(payloads) == units


def test_aggregation_stops_where_the_packet_is_full_and_never_holds_one_unit():
    units = [nal(1, 100) for _ in range(5)]
    payloads = h265_payloads(units, limit=2 + 2 * 102)  # room for exactly two
    assert [p[0] >> 1 & 0x3F for p in payloads] == [NAL_AP, NAL_AP, 1]
    assert len(payloads[0]) == 206
    assert depacketize(payloads) == units


def test_a_limit_too_small_and_a_unit_without_its_header_are_refused():
    with pytest.raises(ValueError):
        h265_payloads([nal(1, 10)], limit=3)
    with pytest.raises(ValueError):
        h265_payloads([b"\x02"])


def test_a_real_clip_decodes_after_the_round_trip_with_parameter_sets_only_in_band():
    frames = codec_clip("hevc", None, seconds=1.0, gop_frames=10)
    config = config_frame(frames, FrameKind.VIDEO)
    parsed = hevc.parse_hevc_config(config.payload)
    units = H265Units()
    units.configure(config)
    assert units.nal_length_size == parsed.nal_length_size
    decoder = av.CodecContext.create("hevc", "r")  # no extradata: only what RTP brings
    pictures = media_frames(frames, FrameKind.VIDEO)
    decoded = keyframes = 0
    for frame in pictures:
        nals = [bytes(n) for n in iter_nal_units(frame.payload, parsed.nal_length_size)]
        # An access unit delimiter in front (dropped), and no parameter sets of its own (put back from the hvcC).
        stripped = [hevc.AUD_NAL] + [n for n in nals if hevc.nal_type(n) not in (32, 33, 34)]
        frame = with_payload(frame, length_prefixed(stripped, parsed.nal_length_size))
        sent = [bytes(n) for n in units.nal_units(frame)]
        types = [hevc.nal_type(n) for n in sent]
        assert hevc.NAL_AUD not in types
        if frame.keyframe:
            keyframes += 1
            assert types[:3] == [32, 33, 34] and sent[:3] == [*parsed.vps, *parsed.sps, *parsed.pps]
        else:
            assert not {32, 33, 34} & set(types)
        for limit in (1300, 200):
            payloads = h265_payloads(sent, limit=limit)
            assert all(len(p) <= limit for p in payloads)
            assert depacketize(payloads) == sent
        decoded += len(decoder.decode(av.Packet(b"".join(START_CODE + n for n in depacketize(
            h265_payloads(sent))))))
    decoded += len(decoder.decode(None))
    assert keyframes == 3 and decoded == len(pictures) >= 25


def test_an_irap_picture_with_its_own_parameter_sets_gets_none_added():
    frames = codec_clip("hevc", None, seconds=1.0, gop_frames=10)
    parsed = hevc.parse_hevc_config(config_frame(frames, FrameKind.VIDEO).payload)
    units = H265Units()
    units.configure(config_frame(frames, FrameKind.VIDEO))
    first = media_frames(frames, FrameKind.VIDEO)[0]
    own = [*parsed.vps, *parsed.sps, *parsed.pps, *iter_nal_units(first.payload, 4)]
    sent = units.nal_units(with_payload(first, length_prefixed(own)))
    assert [bytes(n) for n in sent] == [bytes(n) for n in own]


def test_hostile_access_units_are_a_media_error_and_an_empty_one_sends_nothing():
    frames = codec_clip("hevc", None, seconds=1.0, gop_frames=10)
    frame = media_frames(frames, FrameKind.VIDEO)[1]
    units = H265Units()
    units.configure(config_frame(frames, FrameKind.VIDEO))
    for payload in (b"\x00\x00\x00\x09\x02\x01", b"\xff\xff\xff\xff" + b"\x02\x01" * 8, b"\x00\x00",
                    b"\x00\x00\x00\x01\x02"):
        with pytest.raises(MediaError):
            units.nal_units(with_payload(frame, payload))
    assert units.nal_units(with_payload(frame, length_prefixed([hevc.AUD_NAL]))) == []
    assert units.nal_units(with_payload(frame, b"")) == []
    before = list(units.parameter_nals)
    units.configure(with_payload(config_frame(frames, FrameKind.VIDEO), b"\x01\x02"))  # malformed: kept
    assert units.parameter_nals == before and len(before) == 3
