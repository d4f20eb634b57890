"""AV1 RTP payloads (webrtc/av1_rtp.py): cut as the AV1 RTP payload format says, and put back together by a
receiver written from the spec here, they give the temporal unit's OBUs again; a real encoder's clip
decodes after the round trip."""

from __future__ import annotations

import dataclasses

import av
import pytest

from mediaserver.errors import MediaError
from mediaserver.media import av1
from mediaserver.media.frames import FrameKind
from mediaserver.webrtc.av1_rtp import (
    N_NEW_SEQUENCE, Y_CONTINUED, Z_CONTINUES, Av1Units, av1_payloads, leb128,
)
from support.codec_clips import codec_clip, config_frame, media_frames


def depacketize(payloads) -> list[bytes]:
    """A receiver: payloads of one temporal unit back into its OBUs (each still without its size field)."""
    obus: list[bytes] = []
    pending = b""
    for i, payload in enumerate(payloads):
        header = payload[0]
        assert header & 0x30 == 0, "W = 0: every element has its length"
        elements = []
        pos = 1
        while pos < len(payload):
            size, pos = av1.read_leb128(payload, pos)
            elements.append(payload[pos:pos + size])
            pos += size
        assert pos == len(payload)
        assert bool(header & Z_CONTINUES) == bool(pending), f"packet {i}: Z says whether an OBU was cut before"
        for j, element in enumerate(elements):
            if j == 0 and pending:
                element, pending = pending + element, b""
            if j == len(elements) - 1 and header & Y_CONTINUED:
                pending = element
            else:
                obus.append(element)
    assert not pending, "the last packet must not leave an OBU cut"
    return obus


def with_payload(frame, payload: bytes):
    """The frame with another codec payload (its FLV tag rebuilt around it)."""
    return dataclasses.replace(frame, tag=bytes(frame.tag[:frame.payload_start]) + payload + b"\0" * 4)


def with_size_fields(obus: list[bytes]) -> bytes:
    """OBUs without size fields as a low-overhead temporal unit (what a decoder reads)."""
    out = b""
    for obu in obus:
        header_size = 2 if obu[0] & 0x04 else 1
        out += bytes((obu[0] | 0x02,)) + obu[1:header_size] + leb128(len(obu) - header_size) + obu[header_size:]
    return out


def test_small_obus_share_one_packet_and_a_large_one_is_cut_across_full_packets():
    small = [bytes((0x30,)) + b"\x01" * 10, bytes((0x18,)) + b"\x02" * 20]  # frame header, tile group
    big = bytes((0x30,)) + bytes(range(256)) * 12  # 3,073 bytes
    payloads = av1_payloads([*small, big], limit=1200)
    assert all(len(p) <= 1200 for p in payloads)
    assert all(len(p) == 1200 for p in payloads[:-1]), "every packet but the last is full"
    assert len(payloads) == 3
    assert payloads[0][0] & Y_CONTINUED and not payloads[0][0] & Z_CONTINUES
    assert payloads[1][0] & (Y_CONTINUED | Z_CONTINUES) == Y_CONTINUED | Z_CONTINUES
    assert payloads[2][0] & (Y_CONTINUED | Z_CONTINUES) == Z_CONTINUES
    assert not any(p[0] & N_NEW_SEQUENCE for p in payloads)
    assert depacketize(payloads) == [*small, big]


@pytest.mark.parametrize("limit", [4, 5, 64, 127, 128, 129, 1300])
def test_every_size_round_trips_at_any_limit(limit):
    obus = [bytes((0x30,)) + bytes(n % 256 for n in range(size)) for size in (0, 1, 2, 126, 127, 128, 300, 5000)]
    payloads = av1_payloads(obus, limit=limit, new_sequence=True)
    assert all(len(p) <= limit for p in payloads)
    assert payloads[0][0] & N_NEW_SEQUENCE and not any(p[0] & N_NEW_SEQUENCE for p in payloads[1:])
    assert depacketize(payloads) == [o for o in obus if o]


def test_a_limit_too_small_for_any_element_is_refused():
    with pytest.raises(ValueError):
        av1_payloads([b"\x30\x00"], limit=3)


def test_a_real_clip_sends_no_size_fields_nor_delimiters_and_decodes_after_the_round_trip():
    frames = codec_clip("av1", None, seconds=1.0, gop_frames=10)
    units = Av1Units()
    units.configure(config_frame(frames, FrameKind.VIDEO))
    assert units.sequence_header and units.sequence_header[0] >> 3 & 0x0F == av1.OBU_SEQUENCE_HEADER
    av1_config_header = units.sequence_header
    decoder = av.CodecContext.create("libdav1d", "r")
    decoded = 0
    pictures = media_frames(frames, FrameKind.VIDEO)
    for frame in pictures:
        if frame.keyframe and frame is not pictures[0]:
            # Later keyframes without a sequence header: the one the first keyframe carried goes in band (the
            # av1C's would not do: SVT-AV1 writes it before its settings are final, and it differs).
            stripped = b"".join(bytes(obu) for kind, obu, _ in av1.iter_obus(frame.payload)
                                if kind != av1.OBU_SEQUENCE_HEADER)
            frame = with_payload(frame, stripped)
        obus = units.obus(frame)
        kinds = [o[0] >> 3 & 0x0F for o in obus]
        assert av1.OBU_TEMPORAL_DELIMITER not in kinds and all(not o[0] & 0x02 for o in obus)
        assert (kinds[0] == av1.OBU_SEQUENCE_HEADER) == frame.keyframe
        payloads = av1_payloads(obus, new_sequence=frame.keyframe)
        assert all(len(p) <= 1300 for p in payloads)
        assert depacketize(payloads) == obus
        decoded += len(decoder.decode(av.Packet(with_size_fields(obus))))
    decoded += len(decoder.decode(None))
    assert decoded == len(pictures) >= 25
    assert units.sequence_header == units.obus(pictures[0])[0] != av1_config_header


def test_the_av1c_sequence_header_serves_until_a_frame_brings_one():
    frames = codec_clip("av1", None, seconds=1.0, gop_frames=10)
    config = config_frame(frames, FrameKind.VIDEO)
    units = Av1Units()
    units.configure(config)
    first, *_ = media_frames(frames, FrameKind.VIDEO)
    stripped = with_payload(first, b"".join(bytes(obu) for kind, obu, _ in av1.iter_obus(first.payload)
                                            if kind != av1.OBU_SEQUENCE_HEADER))
    from_config = units.sequence_header
    assert units.obus(stripped)[0] == from_config
    in_band = units.obus(first)[0]
    assert units.sequence_header == in_band and units.obus(stripped)[0] == in_band
    units.configure(config)  # a new sequence start: its header again until a frame brings one
    assert units.obus(stripped)[0] == from_config


def test_hostile_temporal_units_are_a_media_error_and_an_empty_one_sends_nothing():
    units = Av1Units()
    frame = media_frames(codec_clip("av1", None, seconds=1.0, gop_frames=10), FrameKind.VIDEO)[1]
    for payload in (b"\x32\x7f", b"\x80\x00", b"\x32" + b"\xff" * 9, b"\x36"):
        with pytest.raises(MediaError):
            units.obus(with_payload(frame, payload))
    assert units.obus(with_payload(frame, b"\x12\x00")) == []  # a temporal delimiter alone
    assert units.obus(with_payload(frame, b"")) == []
    units.configure(with_payload(frame, b"\x81\x00"))  # a malformed av1C keeps what was there
    assert units.sequence_header == b""
