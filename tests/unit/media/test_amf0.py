"""AMF0: one round-trip table drives decoding and encoding; bad input gets a clear Amf0Error."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import UsageError
from mediaserver.media import amf0
from mediaserver.media.amf0 import UNDEFINED, Amf0Date, EcmaArray, TypedObject, XmlDocument
from mediaserver.media.amf0 import Amf0Error
from mediaserver.errors import PeerError


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


# (name, wire bytes, value). Bytes are annotated: marker | payload.
ROUND_TRIP = [
    ("number zero", h("00 | 0000000000000000"), 0.0),
    ("number 1.5", h("00 | 3ff8000000000000"), 1.5),
    ("number negative", h("00 | c08f400000000000"), -1000.0),
    ("boolean true", h("01 | 01"), True),
    ("boolean false", h("01 | 00"), False),
    ("empty string", h("02 | 0000"), ""),
    ("string", h("02 | 0007 | 636f6e6e656374"), "connect"),
    ("utf-8 string", h("02 | 0002 | c3a9"), "é"),
    ("null", h("05"), None),
    ("undefined", h("06"), UNDEFINED),
    ("empty object", h("03 | 000009"), {}),
    (
        "object",
        h("03 | 0003 617070 | 02 0004 6c697665 | 0004 6675 6c6c | 05 | 000009"),
        {"app": "live", "full": None},
    ),
    ("nested object", h("03 | 0001 61 | 03 0001 62 01 01 000009 | 000009"), {"a": {"b": True}}),
    ("empty ECMA array", h("08 | 00000000 | 000009"), EcmaArray()),
    (
        "ECMA array",
        h("08 | 00000001 | 0005 7769647468 | 00 4094000000000000 | 000009"),
        EcmaArray(width=1280.0),
    ),
    ("empty strict array", h("0a | 00000000"), []),
    (
        "strict array of fourCCs",
        h("0a | 00000002 | 02 0004 61763031 | 02 0004 68766331"),
        ["av01", "hvc1"],
    ),
    ("date", h("0b | 4271f71fb0450000 | 0000"), Amf0Date(1234567890000.0, 0)),
    ("long string", h("0c | 00010000") + b"x" * 65536, "x" * 65536),
    ("xml document", h("0f | 00000004 | 3c612f3e"), XmlDocument("<a/>")),
    (
        "typed object",
        h("10 | 0003 466f6f | 0001 78 | 00 3ff0000000000000 | 000009"),
        TypedObject("Foo", {"x": 1.0}),
    ),
]


@pytest.mark.parametrize("name, wire, value", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_value_decodes_from_its_wire_bytes(name: str, wire: bytes, value: object) -> None:
    decoded, end = amf0.decode(wire)
    assert end == len(wire)
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, float)


@pytest.mark.parametrize("name, wire, value", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_value_encodes_to_its_wire_bytes(name: str, wire: bytes, value: object) -> None:
    assert amf0.encode(value) == wire


def test_ints_encode_as_numbers_and_tuples_as_strict_arrays() -> None:
    assert amf0.encode(3) == h("00 4008000000000000")
    assert amf0.encode((1, "a")) == amf0.encode([1.0, "a"])


def test_decode_all_reads_a_command_body() -> None:
    body = amf0.encode("createStream", 4.0, None)
    assert amf0.decode_all(body) == ["createStream", 4.0, None]


def test_invalid_utf8_survives_a_round_trip_byte_for_byte() -> None:
    wire = h("02 0003 66ff6f")
    value, _ = amf0.decode(wire)
    assert amf0.encode(value) == wire


def test_ecma_array_count_is_advisory() -> None:
    # Count says 5, one property follows: the end marker decides (encoders disagree on the count).
    wire = h("08 00000005 0001 61 05 000009")
    assert amf0.decode(wire) == (EcmaArray(a=None), len(wire))


def test_missing_end_marker_at_the_end_of_the_input_is_tolerated() -> None:
    wire = h("08 00000001 0001 61 01 01")
    assert amf0.decode(wire) == (EcmaArray(a=True), len(wire))


def test_empty_key_followed_by_a_value_is_a_property() -> None:
    value, _ = amf0.decode(h("03 0000 01 01 000009"))
    assert value == {"": True}


NAN = h("00 7ff8000000000000")


def test_nan_round_trips() -> None:
    value, _ = amf0.decode(NAN)
    assert math.isnan(value)
    assert amf0.encode(value) == NAN
    assert Amf0Date(math.nan) == Amf0Date(math.nan)


# ------------------------------------------------------------------------------------ bad input

BAD = [
    ("empty input", b"", "value marker"),
    ("unknown marker", h("42"), "unknown AMF0 marker 0x42"),
    ("reference", h("07 0001"), "reference"),
    ("AMF3 switch", h("11 0a"), "AMF3"),
    ("movieclip", h("04"), "reserved"),
    ("object end outside object", h("09"), "object-end"),
    ("truncated number", h("00 3ff0"), "truncated"),
    ("truncated string", h("02 0005 6162"), "truncated"),
    ("truncated string length", h("02 00"), "truncated"),
    ("truncated long string", h("0c 00100000 61"), "truncated"),
    ("truncated boolean", h("01"), "truncated"),
    ("truncated date", h("0b 0000"), "truncated"),
    ("truncated property name", h("03 0005 6162"), "truncated"),
    ("property without value", h("03 0001 61"), "truncated"),
    ("truncated ECMA count", h("08 0000"), "truncated"),
    ("strict array longer than input", h("0a 7fffffff 05"), "declares 2147483647 elements"),
    ("bad marker inside object", h("03 0001 61 ff 000009"), "unknown AMF0 marker 0xff"),
]


@pytest.mark.parametrize("name, wire, message", BAD, ids=[b[0] for b in BAD])
def test_malformed_value_is_rejected_clearly(name: str, wire: bytes, message: str) -> None:
    with pytest.raises(Amf0Error, match=message):
        amf0.decode(wire)


def test_amf0_errors_are_peer_errors() -> None:
    assert issubclass(Amf0Error, PeerError)  # the caller closes that one connection


def test_endless_nesting_is_rejected() -> None:
    deep = h("03 0001 61") * 1000 + h("05")
    with pytest.raises(Amf0Error, match="nesting deeper than 32"):
        amf0.decode(deep)
    arrays = h("0a 00000001") * 1000 + h("05")
    with pytest.raises(Amf0Error, match="nesting deeper than 32"):
        amf0.decode(arrays)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    value: object = None
    for _ in range(amf0.MAX_DEPTH):
        value = {"a": value}
    assert amf0.decode(amf0.encode(value))[0] == value


def test_unencodable_value_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot encode"):
        amf0.encode(object())
    with pytest.raises(UsageError, match="property names must be str"):
        amf0.encode({1: "x"})


# ------------------------------------------------------------------------------------ properties

keys = st.text(max_size=8)
scalars = st.one_of(
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=20),
    st.none(),
    st.just(UNDEFINED),
    st.builds(Amf0Date, st.floats(allow_nan=False), st.integers(-32768, 32767)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(keys, children, max_size=4).map(EcmaArray),
        st.builds(TypedObject, st.text(max_size=5), st.dictionaries(keys, children, max_size=3)),
    ),
    max_leaves=12,
)


@given(values)
@settings(max_examples=300)
def test_encoded_values_decode_to_themselves(value: object) -> None:
    wire = amf0.encode(value)
    decoded, end = amf0.decode(wire)
    assert end == len(wire)
    assert decoded == value


@given(st.binary(max_size=200))
@settings(max_examples=1000)
def test_random_bytes_decode_or_fail_with_amf0_error_and_what_decodes_re_encodes(data: bytes) -> None:
    try:
        decoded = amf0.decode_all(data)
    except Amf0Error:
        return
    wire = amf0.encode(*decoded)
    again = amf0.decode_all(wire)
    # Compare canonical encodings: NaN is never equal to itself.
    assert amf0.encode(*again) == wire


@given(st.binary(min_size=1, max_size=60))
@settings(max_examples=300)
def test_random_bytes_inside_an_object_never_escape_as_other_errors(tail: bytes) -> None:
    for prefix in (h("03 0001 61"), h("08 00000001 0001 61"), h("0a 00000003")):
        try:
            amf0.decode(prefix + tail)
        except Amf0Error:
            pass


def test_struct_based_numbers_match_ieee_doubles() -> None:
    assert amf0.encode(0.1) == b"\x00" + struct.pack(">d", 0.1)


def test_an_object_with_more_keys_than_the_element_limit_is_rejected_quickly() -> None:
    # 1.8 million keys froze the server for 2.6 s; the cap stops decoding at the limit.
    many = b"\x03" + b"\x00\x01k\x05" * 1_800_000 + b"\x00\x00\x09"
    with pytest.raises(Amf0Error, match="element limit"):
        amf0.decode(many)
    with pytest.raises(Amf0Error, match="element limit"):
        amf0.decode_all(b"\x02\x00\x09FCPublish" + many)


def test_the_element_limit_counts_properties_and_items_over_all_values() -> None:
    obj = {f"k{i}": float(i) for i in range(60)}
    wire = amf0.encode(obj, [1.0] * 40)
    assert amf0.decode_all(wire, max_elements=100) == [obj, [1.0] * 40]
    with pytest.raises(Amf0Error, match="element limit"):
        amf0.decode_all(wire, max_elements=99)
    with pytest.raises(Amf0Error, match="element limit"):
        amf0.decode(amf0.encode([[1.0] * 10] * 10), max_elements=100)  # 10 + 100 items


def test_a_large_legal_keyframe_index_fits_the_default_limit() -> None:
    # flvmeta-style onMetaData: two arrays of numbers, about 64 KiB.
    times = [float(i) for i in range(3500)]
    meta = EcmaArray(duration=3500.0, keyframes={"times": times, "filepositions": times})
    wire = amf0.encode("onMetaData", meta)
    assert len(wire) < 64 * 1024
    assert amf0.decode_all(wire)[1] == meta
