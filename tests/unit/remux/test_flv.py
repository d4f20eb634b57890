"""FLV header, tag batches, FlvReader and FlvScanner: round trips, arbitrary splits, hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import MediaError, UsageError
from mediaserver.media.flv_body import audio_frame, build_tag, data_frame, video_frame
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import (
    DEFAULT_MAX_TAG_SIZE,
    FlvHeader,
    FlvReader,
    FlvScanner,
    FlvTag,
    encode_tags,
    flv_header,
)

# --- a small stream built from real frame bodies ------------------------------------------------------

# onMetaData: AMF0 string "onMetaData", then an ECMA array with one entry (width = 640.0).
METADATA_BODY = (
    b"\x02\x00\x0aonMetaData"
    b"\x08\x00\x00\x00\x01" b"\x00\x05width" b"\x00\x40\x84\x00\x00\x00\x00\x00\x00" b"\x00\x00\x09"
)
AVC_SEQUENCE_HEADER = b"\x17\x00\x00\x00\x00" + b"\x01\x64\x00\x1f\xff\xe1\x00\x04\x67\x64\x00\x1f\x01\x00\x04\x68\xee\x3c\x80"
AAC_SEQUENCE_HEADER = b"\xaf\x00\x12\x10"
AVC_KEYFRAME = b"\x17\x01\x00\x00\x50" + b"\x00\x00\x00\x05\x65\x88\x84\x00\x10"  # cts 80 ms, one IDR NAL unit
AVC_INTER = b"\x27\x01\x00\x00\x00" + b"\x00\x00\x00\x03\x41\x9a\x02"
AAC_RAW = b"\xaf\x01" + b"\x21\x10\x04\x60\x8c\x1c"

FRAMES = [
    data_frame(METADATA_BODY, 0),
    video_frame(AVC_SEQUENCE_HEADER, 0),
    audio_frame(AAC_SEQUENCE_HEADER, 0),
    video_frame(AVC_KEYFRAME, 0),
    audio_frame(AAC_RAW, 23),
    video_frame(AVC_INTER, 40),
    audio_frame(AAC_RAW, 46),
    # Past 2^24 ms (4.6 hours): the timestamp needs TimestampExtended.
    video_frame(AVC_INTER, 0x01_23_45_67),
    audio_frame(AAC_RAW, 0xFE_00_00_01),
]
STREAM = flv_header(has_audio=True, has_video=True) + encode_tags(FRAMES)
EXPECTED = [(f.kind, f.dts_ms, bytes(f.body)) for f in FRAMES]


def triples(tags: list[FlvTag]) -> list[tuple[int, int, bytes]]:
    return [(t.kind, t.timestamp_ms, t.body) for t in tags]


def read_all(data: bytes, pieces: list[int] | None = None, **kw: int) -> tuple[FlvReader, list[FlvTag]]:
    """Feed `data` split at the given sizes (the rest in one piece)."""
    reader = FlvReader(**kw)
    tags: list[FlvTag] = []
    pos = 0
    for n in pieces or []:
        tags += reader.feed(data[pos : pos + n])
        pos += n
    tags += reader.feed(data[pos:])
    return reader, tags


def tag_bytes(kind: int, timestamp: int, body: bytes) -> bytes:
    return build_tag(kind, timestamp, body)


# --- writing ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("has_audio", "has_video", "flags"),
    [(True, True, 0x05), (False, True, 0x01), (True, False, 0x04), (False, False, 0x00)],
)
def test_flv_header_is_nine_bytes_with_flags_then_a_zero_previous_tag_size(has_audio, has_video, flags):
    assert flv_header(has_audio, has_video) == b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def test_encode_tags_joins_the_frames_tags_in_order():
    assert encode_tags(FRAMES) == b"".join(f.tag for f in FRAMES)
    assert encode_tags([]) == b""
    assert encode_tags(iter(FRAMES[:2])) == FRAMES[0].tag + FRAMES[1].tag


def test_a_read_tag_encodes_back_to_the_frames_tag():
    _, tags = read_all(STREAM)
    assert [t.encode() for t in tags] == [f.tag for f in FRAMES]


# --- reading: round trips and splits ------------------------------------------------------------------

def test_reader_returns_every_tag_with_kind_timestamp_and_body():
    reader, tags = read_all(STREAM)
    assert triples(tags) == EXPECTED
    assert reader.header == FlvHeader(version=1, has_audio=True, has_video=True, data_offset=9)
    assert reader.tags_read == len(FRAMES)
    reader.feed_eof()


def test_extended_timestamp_byte_is_the_high_byte_of_the_timestamp():
    _, tags = read_all(STREAM)
    assert tags[-2].timestamp_ms == 0x01_23_45_67
    assert tags[-1].timestamp_ms == 0xFE_00_00_01


def test_byte_by_byte_feeding_gives_the_same_tags():
    reader = FlvReader()
    tags: list[FlvTag] = []
    for i in range(len(STREAM)):
        tags += reader.feed(STREAM[i : i + 1])
    assert triples(tags) == EXPECTED
    reader.feed_eof()


def test_each_tag_is_returned_by_the_feed_that_completes_it():
    reader = FlvReader()
    assert reader.feed(STREAM[:13]) == []  # header and PreviousTagSize0
    assert reader.header is not None
    first = FRAMES[0].tag
    assert reader.feed(first[:-4]) != []  # the body is complete: the tag is out before its PreviousTagSize
    assert triples(reader.feed(first[-4:] + FRAMES[1].tag)) == EXPECTED[1:2]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_stream_gives_the_same_tags(cuts):
    cuts = sorted(cuts)
    pieces = [b - a for a, b in zip([0, *cuts], cuts)]
    reader, tags = read_all(STREAM, pieces)
    assert triples(tags) == EXPECTED
    reader.feed_eof()


def test_reader_accepts_memoryview_and_bytearray_input():
    reader = FlvReader()
    tags = reader.feed(memoryview(STREAM)[:100]) + reader.feed(bytearray(STREAM[100:]))
    assert triples(tags) == EXPECTED


def test_header_padding_announced_by_data_offset_is_skipped():
    padded = b"FLV\x01\x05\x00\x00\x00\x0d" + b"\xaa\xbb\xcc\xdd" + b"\x00\x00\x00\x00" + encode_tags(FRAMES)
    reader, tags = read_all(padded, [10, 1, 1])
    assert triples(tags) == EXPECTED
    assert reader.header is not None and reader.header.data_offset == 13
    reader.feed_eof()


def test_header_flags_are_reported_as_written():
    reader, tags = read_all(flv_header(has_audio=False, has_video=True) + FRAMES[1].tag)
    assert reader.header == FlvHeader(version=1, has_audio=False, has_video=True, data_offset=9)
    assert len(tags) == 1


def test_a_stream_with_a_header_and_no_tags_is_complete():
    reader, tags = read_all(flv_header(True, True))
    assert tags == []
    reader.feed_eof()


def test_unknown_tag_types_are_skipped_and_counted():
    unknown = tag_bytes(15, 5, b"\x01\x02\x03")
    stream = flv_header(True, True) + FRAMES[1].tag + unknown + FRAMES[3].tag
    reader, tags = read_all(stream, [20, 7, 3])
    assert triples(tags) == [EXPECTED[1], EXPECTED[3]]
    assert reader.skipped_tags == 1 and reader.tags_read == 2
    reader.feed_eof()


def test_an_empty_tag_body_is_allowed():
    reader, tags = read_all(flv_header(True, False) + tag_bytes(FrameKind.AUDIO, 7, b""))
    assert triples(tags) == [(FrameKind.AUDIO, 7, b"")]
    reader.feed_eof()


def test_tags_convert_to_frames_that_carry_the_same_tag():
    _, tags = read_all(STREAM)
    frames = [t.to_frame() for t in tags]
    assert [f.tag for f in frames] == [f.tag for f in FRAMES]
    assert [f.keyframe for f in frames] == [f.keyframe for f in FRAMES]
    assert [f.is_config for f in frames] == [f.is_config for f in FRAMES]


def test_tags_know_keyframes_and_sequence_headers():
    _, tags = read_all(STREAM)
    assert [t.is_sequence_header for t in tags] == [False, True, True, False, False, False, False, False, False]
    assert [t.is_video_keyframe for t in tags] == [False, False, False, True, False, False, False, False, False]


# --- reading: truncated, oversized, malformed ---------------------------------------------------------

@pytest.mark.parametrize("cut", [0, 1, 5, 9, 12])
def test_a_stream_cut_inside_the_header_is_an_error_at_eof(cut):
    reader = FlvReader()
    assert reader.feed(STREAM[:cut]) == []
    with pytest.raises(MediaError, match="ended"):
        reader.feed_eof()


@pytest.mark.parametrize("cut", [14, 13 + 11, len(STREAM) - 1, len(STREAM) - 4, len(STREAM) - 5])
def test_a_stream_cut_inside_a_tag_is_an_error_at_eof(cut):
    reader = FlvReader()
    reader.feed(STREAM[:cut])
    with pytest.raises(MediaError, match="cut short"):
        reader.feed_eof()


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (b"FLX", "signature"),
        (b"GET / HTTP/1.1\r\n", "signature"),
        (b"FLV\x02\x05\x00\x00\x00\x09", "version 2"),
        (b"FLV\x01\x05\x00\x00\x00\x08", "DataOffset 8"),
        (b"FLV\x01\x05\xff\xff\xff\xff", "DataOffset 4294967295"),
    ],
)
def test_a_bad_header_is_rejected(prefix, message):
    with pytest.raises(MediaError, match=message):
        FlvReader().feed(prefix + b"\x00" * 20)


def test_a_wrong_signature_is_rejected_before_nine_bytes_arrive():
    reader = FlvReader()
    reader.feed(b"F")
    with pytest.raises(MediaError, match="signature"):
        reader.feed(b"X")


def test_a_nonzero_first_previous_tag_size_is_rejected():
    with pytest.raises(MediaError, match="PreviousTagSize .* is 7, expected 0"):
        FlvReader().feed(b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x07" + FRAMES[0].tag[:-4])


def test_a_previous_tag_size_that_does_not_match_the_tag_is_rejected():
    bad = bytearray(STREAM)
    end_of_first = 13 + len(FRAMES[0].tag)
    bad[end_of_first - 1] ^= 0x01
    reader = FlvReader()
    with pytest.raises(MediaError, match="PreviousTagSize"):
        for i in range(len(bad)):
            reader.feed(bad[i : i + 1])
    assert reader.tags_read == 1


def test_a_declared_size_above_the_limit_is_rejected_from_the_tag_header_alone():
    reader = FlvReader(max_tag_size=1000)
    header = bytes((FrameKind.VIDEO, 0x00, 0x03, 0xE9, 0, 0, 0, 0, 0, 0, 0))  # 1001-byte body
    with pytest.raises(MediaError, match="1001-byte body; the limit is 1000"):
        reader.feed(flv_header(True, True) + header)


def test_a_body_exactly_at_the_limit_is_accepted():
    reader, tags = read_all(flv_header(True, True) + tag_bytes(FrameKind.VIDEO, 0, b"\x27" * 1000), max_tag_size=1000)
    assert len(tags) == 1 and len(tags[0].body) == 1000


def test_the_default_limit_is_16_mib():
    reader = FlvReader()
    big = tag_bytes(FrameKind.VIDEO, 0, b"\x27" * (DEFAULT_MAX_TAG_SIZE - 1))
    assert len(reader.feed(flv_header(True, True) + big)) == 1


def test_an_encrypted_tag_is_rejected():
    filtered = bytearray(FRAMES[1].tag)
    filtered[0] |= 0x20
    with pytest.raises(MediaError, match="Filter bit"):
        FlvReader().feed(flv_header(True, True) + bytes(filtered))


def test_a_broken_reader_keeps_raising_the_same_error():
    reader = FlvReader()
    with pytest.raises(MediaError) as first:
        reader.feed(b"NOTFLV")
    with pytest.raises(MediaError) as again:
        reader.feed(STREAM)
    assert again.value is first.value
    with pytest.raises(MediaError):
        reader.feed_eof()


@pytest.mark.parametrize("size", [0, -1, DEFAULT_MAX_TAG_SIZE + 1])
def test_an_impossible_limit_is_a_usage_error(size):
    with pytest.raises(UsageError, match="max_tag_size"):
        FlvReader(max_tag_size=size)
    with pytest.raises(UsageError, match="max_tag_size"):
        FlvScanner(max_tag_size=size)


def test_to_frame_refuses_a_tag_type_the_hub_does_not_carry():
    with pytest.raises(MediaError, match="tag type 15"):
        FlvTag(15, 0, b"\x00").to_frame()


def test_to_frame_reports_a_malformed_body():
    with pytest.raises(MediaError):
        FlvTag(FrameKind.VIDEO, 0, b"\x17\x00").to_frame()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_garbage_after_a_valid_header_gives_tags_or_a_media_error_never_anything_else(garbage, step):
    reader = FlvReader(max_tag_size=256)
    data = flv_header(True, True) + garbage
    try:
        for i in range(0, len(data), step):
            for tag in reader.feed(data[i : i + step]):
                assert len(tag.body) <= 256
        reader.feed_eof()
    except MediaError:
        pass
    # Never more buffered than one tag (header + max body + trailer) plus one feed.
    assert reader.buffered_bytes <= 4 + 11 + 256 + step


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_mutated_streams_never_escape_as_other_exceptions(noise):
    data = bytearray(STREAM)
    for i, b in enumerate(noise[: len(noise) // 2 * 2 : 2]):
        data[(noise[2 * i + 1] * 7 + i * 31) % len(data)] ^= b
    reader = FlvReader()
    try:
        reader.feed(bytes(data))
        reader.feed_eof()
    except MediaError:
        pass


# --- the header-only scanner ---------------------------------------------------------------------------

def test_scanner_counts_what_the_reader_reads():
    scanner = FlvScanner()
    assert scanner.feed(STREAM) == len(FRAMES)
    assert (scanner.tags, scanner.video_tags, scanner.audio_tags, scanner.data_tags) == (9, 4, 4, 1)
    assert scanner.keyframes == 1
    assert scanner.last_timestamp_ms == 0xFE_00_00_01
    assert scanner.bytes_fed == len(STREAM)


def test_scanner_gives_the_same_counts_byte_by_byte():
    scanner = FlvScanner()
    total = sum(scanner.feed(STREAM[i : i + 1]) for i in range(len(STREAM)))
    assert total == len(FRAMES)
    assert (scanner.video_tags, scanner.audio_tags, scanner.keyframes) == (4, 4, 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=10))
def test_scanner_counts_keyframes_across_any_split(cuts):
    cuts = sorted(cuts)
    scanner = FlvScanner()
    for a, b in zip([0, *cuts], [*cuts, len(STREAM)]):
        scanner.feed(STREAM[a:b])
    assert (scanner.tags, scanner.keyframes) == (9, 1)


def test_scanner_skips_header_padding():
    padded = b"FLV\x01\x05\x00\x00\x00\x0b" + b"\xaa\xbb" + b"\x00\x00\x00\x00" + encode_tags(FRAMES)
    scanner = FlvScanner()
    for i in range(len(padded)):
        scanner.feed(padded[i : i + 1])
    assert scanner.tags == len(FRAMES)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"XLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00", "signature"),
        (flv_header(True, True)[:-1] + b"\x01" + FRAMES[0].tag, "PreviousTagSize"),
        (flv_header(True, True) + bytes((9, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0)), "limit"),
    ],
)
def test_scanner_rejects_what_the_reader_rejects(data, message):
    scanner = FlvScanner(max_tag_size=4096)
    with pytest.raises(MediaError, match=message):
        scanner.feed(data)


# --- a real writer -----------------------------------------------------------------------------------------

def test_reader_parses_a_file_written_by_ffmpeg_as_pyav_demuxes_it(media):
    clip = media.av
    data = clip.path.read_bytes()
    reader, tags = read_all(data, [1000, 3, 70000])
    reader.feed_eof()
    frames = [f for f in (t.to_frame() for t in tags) if f is not None and not f.is_config and not f.is_end]
    video = [f for f in frames if f.kind == FrameKind.VIDEO]
    audio = [f for f in frames if f.kind == FrameKind.AUDIO]
    assert len(video) == len(clip.video_packets)
    assert len(audio) == len(clip.audio_packets)
    assert [(f.dts_ms, f.pts_ms) for f in video] == [(p.dts_ms, p.pts_ms) for p in clip.video_packets]
    assert [f.keyframe for f in video] == [p.keyframe for p in clip.video_packets]
    assert sum(t.is_video_keyframe for t in tags) == sum(p.keyframe for p in clip.video_packets)
    assert tags[0].kind == FrameKind.DATA and b"onMetaData" in tags[0].body
    assert b"".join(t.encode() for t in tags) == data[13:]
    scanner = FlvScanner()
    scanner.feed(data)
    assert scanner.keyframes == sum(p.keyframe for p in clip.video_packets)
