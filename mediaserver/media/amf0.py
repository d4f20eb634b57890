"""AMF0: the value encoding of RTMP commands and data messages (AMF0 File Format Specification).

Values map to Python as follows, in both directions:

    number 0x00        float (int and float encode as number; decoding always gives float)
    boolean 0x01       bool
    string 0x02        str (a str of 65536 UTF-8 bytes or more encodes as long string 0x0C)
    object 0x03        dict with str keys
    null 0x05          None
    undefined 0x06     UNDEFINED
    ECMA array 0x08    EcmaArray (a dict subclass, so it re-encodes as an ECMA array)
    strict array 0x0A  list (a tuple also encodes as one)
    date 0x0B          Amf0Date(milliseconds, timezone)
    long string 0x0C   str
    XML document 0x0F  XmlDocument (a str subclass)
    typed object 0x10  TypedObject(class_name, properties)

Rejected with `Amf0Error`: reference 0x07 (it points into an object table that RTMP peers do not use
in commands), movieclip 0x04, recordset 0x0E, unsupported 0x0D, the AMF3 switch 0x11 (AMF3 values
inside AMF0 are not supported) and an object-end marker 0x09 outside an object.

Decoding never trusts a length: every length is checked against the bytes that remain, nesting is
limited to `MAX_DEPTH` levels, a strict array may not declare more elements than there are bytes left,
and one call decodes at most `max_elements` object properties and array items in all (a 15 MB object of
1.8 million keys would otherwise hold the event loop for seconds). Strings are UTF-8; invalid sequences
decode with `surrogateescape`, so they survive a round trip byte for byte instead of failing a publish
over a badly encoded metadata title. One leniency, as librtmp has: an object or ECMA array whose end
marker is missing at the very end of the input ends there. The ECMA array's count is advisory (encoders
disagree on it); properties are read up to the end marker.

Encoding raises `UsageError` for values it cannot represent: that is the caller's bug.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from mediaserver.errors import PeerError, UsageError


class Amf0Error(PeerError):
    """An AMF0 value is malformed, truncated, too deep or of a type we do not accept."""


MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted when decoding."""

MAX_ELEMENTS = 8192
"""Default cap on object properties plus array items, counted over all values of one decode call.
Real metadata and commands hold tens; a 64 KiB keyframe index (two arrays of numbers) about 7,000."""

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS_OBJECT = 0x11

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")
_END = b"\x00\x00\x09"


class _Undefined:
    """The AMF0 `undefined` value; a singleton distinct from None (which is `null`)."""

    __slots__ = ()
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class EcmaArray(dict):
    """An AMF0 ECMA array (associative array): a dict that re-encodes with marker 0x08.

    onMetaData is usually sent as one.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"EcmaArray({dict.__repr__(self)})"


class XmlDocument(str):
    """An AMF0 XML document: text that re-encodes with marker 0x0F."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Amf0Date:
    """An AMF0 date."""

    milliseconds: float
    """Milliseconds since the Unix epoch, UTC."""
    timezone: int = 0
    """Reserved by the spec; should be 0. Kept so values round-trip."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Amf0Date):
            return NotImplemented
        return _same_number(self.milliseconds, other.milliseconds) and self.timezone == other.timezone

    def __hash__(self) -> int:
        return hash((self.milliseconds, self.timezone))


@dataclass(frozen=True, slots=True)
class TypedObject:
    """An AMF0 typed object: an object with an ActionScript class name."""

    class_name: str
    properties: dict[str, Any] = field(default_factory=dict)


def _same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------------------------- decode


def decode(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_elements: int = MAX_ELEMENTS
) -> tuple[Any, int]:
    """Decode one value at `offset`; return it and the offset just past it."""
    return _decode(data, offset, len(data), 0, [max_elements])


def decode_all(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_elements: int = MAX_ELEMENTS
) -> list[Any]:
    """Decode every value from `offset` to the end of `data` (at most `max_elements` in all)."""
    values = []
    end = len(data)
    budget = [max_elements]
    while offset < end:
        value, offset = _decode(data, offset, end, 0, budget)
        values.append(value)
    return values


def _too_many(pos: int, budget: list[int], wanted: int) -> Amf0Error:
    return Amf0Error(
        f"AMF0 value at offset {pos} would exceed the element limit ({wanted} more properties or items, "
        f"{max(budget[0], 0)} left); commands and metadata hold far fewer"
    )


def _truncated(what: str, offset: int, need: int, end: int) -> Amf0Error:
    return Amf0Error(
        f"AMF0 {what} at offset {offset} needs {need} bytes but only {max(end - offset, 0)} remain; "
        "the value is truncated"
    )


def _read_utf8(data: Any, offset: int, length: int, end: int, what: str) -> str:
    if offset + length > end:
        raise _truncated(what, offset, length, end)
    return bytes(data[offset : offset + length]).decode("utf-8", "surrogateescape")


def _decode(data: Any, pos: int, end: int, depth: int, budget: list[int]) -> tuple[Any, int]:
    """`budget` holds how many more properties and array items this call may decode."""
    if pos >= end:
        raise _truncated("value marker", pos, 1, end)
    marker = data[pos]
    pos += 1
    if marker == NUMBER:
        if pos + 8 > end:
            raise _truncated("number", pos, 8, end)
        return _DOUBLE.unpack_from(data, pos)[0], pos + 8
    if marker == STRING:
        if pos + 2 > end:
            raise _truncated("string length", pos, 2, end)
        length = _U16.unpack_from(data, pos)[0]
        pos += 2
        return _read_utf8(data, pos, length, end, "string"), pos + length
    if marker == BOOLEAN:
        if pos + 1 > end:
            raise _truncated("boolean", pos, 1, end)
        return data[pos] != 0, pos + 1
    if marker == NULL:
        return None, pos
    if marker == UNDEFINED_MARKER:
        return UNDEFINED, pos
    if marker == OBJECT:
        _check_depth(depth, pos)
        obj: dict[str, Any] = {}
        pos = _decode_properties(data, pos, end, depth, obj, budget)
        return obj, pos
    if marker == ECMA_ARRAY:
        _check_depth(depth, pos)
        if pos + 4 > end:
            raise _truncated("ECMA array count", pos, 4, end)
        arr = EcmaArray()
        pos = _decode_properties(data, pos + 4, end, depth, arr, budget)
        return arr, pos
    if marker == STRICT_ARRAY:
        _check_depth(depth, pos)
        if pos + 4 > end:
            raise _truncated("strict array count", pos, 4, end)
        count = _U32.unpack_from(data, pos)[0]
        pos += 4
        if count > end - pos:
            raise Amf0Error(
                f"AMF0 strict array at offset {pos - 4} declares {count} elements but only "
                f"{end - pos} bytes remain; every element takes at least one byte"
            )
        if count > budget[0]:
            raise _too_many(pos - 4, budget, count)
        budget[0] -= count
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos, end, depth + 1, budget)
            items.append(item)
        return items, pos
    if marker == LONG_STRING or marker == XML_DOCUMENT:
        if pos + 4 > end:
            raise _truncated("long string length", pos, 4, end)
        length = _U32.unpack_from(data, pos)[0]
        pos += 4
        text = _read_utf8(data, pos, length, end, "long string")
        return (XmlDocument(text) if marker == XML_DOCUMENT else text), pos + length
    if marker == DATE:
        if pos + 10 > end:
            raise _truncated("date", pos, 10, end)
        ms, tz = _DATE.unpack_from(data, pos)
        return Amf0Date(ms, tz), pos + 10
    if marker == TYPED_OBJECT:
        _check_depth(depth, pos)
        if pos + 2 > end:
            raise _truncated("typed object class name", pos, 2, end)
        length = _U16.unpack_from(data, pos)[0]
        pos += 2
        class_name = _read_utf8(data, pos, length, end, "typed object class name")
        props: dict[str, Any] = {}
        pos = _decode_properties(data, pos + length, end, depth, props, budget)
        return TypedObject(class_name, props), pos
    if marker == OBJECT_END:
        raise Amf0Error(f"AMF0 object-end marker at offset {pos - 1} outside an object")
    if marker == REFERENCE:
        raise Amf0Error(
            f"AMF0 reference (marker 0x07) at offset {pos - 1} is not supported; "
            "send the value itself instead of a reference"
        )
    if marker == AVMPLUS_OBJECT:
        raise Amf0Error(
            f"AMF3 value (switch marker 0x11) at offset {pos - 1} is not supported; use AMF0 "
            "(objectEncoding 0)"
        )
    if marker in (MOVIECLIP, RECORDSET, UNSUPPORTED):
        raise Amf0Error(f"AMF0 marker 0x{marker:02x} at offset {pos - 1} is reserved and not supported")
    raise Amf0Error(f"unknown AMF0 marker 0x{marker:02x} at offset {pos - 1}")


def _check_depth(depth: int, pos: int) -> None:
    if depth >= MAX_DEPTH:
        raise Amf0Error(f"AMF0 nesting deeper than {MAX_DEPTH} levels at offset {pos - 1}")


def _decode_properties(data: Any, pos: int, end: int, depth: int, into: dict[str, Any], budget: list[int]) -> int:
    """Read name/value pairs up to the object-end marker; return the offset after it."""
    while True:
        if pos == end:
            return pos  # missing end marker at the very end of the input: tolerated (see docstring)
        if pos + 2 > end:
            raise _truncated("property name length", pos, 2, end)
        length = _U16.unpack_from(data, pos)[0]
        pos += 2
        if length == 0:
            if pos < end and data[pos] == OBJECT_END:
                return pos + 1
            if pos >= end:
                raise _truncated("object-end marker", pos, 1, end)
            name = ""
        else:
            name = _read_utf8(data, pos, length, end, "property name")
            pos += length
        budget[0] -= 1
        if budget[0] < 0:
            raise _too_many(pos, budget, 1)
        value, pos = _decode(data, pos, end, depth + 1, budget)
        into[name] = value


# --------------------------------------------------------------------------------------------- encode


def encode(*values: Any) -> bytes:
    """Encode values one after another, as a command or data message body holds them."""
    out = bytearray()
    for value in values:
        _encode(value, out, 0)
    return bytes(out)


def encode_into(out: bytearray, value: Any) -> None:
    """Append one encoded value to `out`."""
    _encode(value, out, 0)


def _encode_utf8_key(name: str, out: bytearray) -> None:
    if not isinstance(name, str):
        raise UsageError(f"AMF0 property names must be str, not {type(name).__name__} ({name!r})")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 0xFFFF:
        raise UsageError(f"AMF0 property name of {len(raw)} bytes is longer than 65535")
    out += _U16.pack(len(raw))
    out += raw


def _encode_properties(props: dict[str, Any], out: bytearray, depth: int) -> None:
    for name, value in props.items():
        _encode_utf8_key(name, out)
        _encode(value, out, depth + 1)
    out += _END


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UsageError(f"AMF0 value nested deeper than {MAX_DEPTH} levels (a cycle?)")
    # bool before int: bool is an int subclass.
    if value is True or value is False:
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, (int, float)):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        if isinstance(value, XmlDocument):
            out.append(XML_DOCUMENT)
            out += _U32.pack(len(raw))
        elif len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(value, out, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(value, out, depth)
    elif isinstance(value, (list, tuple)):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, Amf0Date):
        out.append(DATE)
        out += _DATE.pack(value.milliseconds, value.timezone)
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _encode_utf8_key(value.class_name, out)
        _encode_properties(value.properties, out, depth)
    else:
        raise UsageError(f"cannot encode {type(value).__name__} ({value!r}) as AMF0")
