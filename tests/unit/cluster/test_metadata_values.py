"""onMetaData values read back from a pulled FLV's script tag (the edge's copy of StreamInfo)."""

from __future__ import annotations

import struct

import pytest

from mediaserver.edge.origin_pull import metadata_values


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">H", len(raw)) + raw


def _body(values: dict, set_data_frame: bool = False) -> bytes:
    out = b""
    if set_data_frame:
        out += b"\x02" + _string("@setDataFrame")
    out += b"\x02" + _string("onMetaData") + b"\x08" + struct.pack(">I", len(values))
    for name, value in values.items():
        out += _string(name)
        if isinstance(value, bool):
            out += b"\x01" + bytes([value])
        elif isinstance(value, (int, float)):
            out += b"\x00" + struct.pack(">d", value)
        else:
            out += b"\x02" + _string(value)
    return out + b"\x00\x00\x09"


@pytest.mark.parametrize("set_data_frame", [False, True])
def test_numbers_booleans_and_strings_are_read(set_data_frame):
    values = {"width": 1280.0, "videocodecid": 7.0, "stereo": True, "encoder": "Lavf"}
    assert metadata_values(_body(values, set_data_frame)) == values


@pytest.mark.parametrize("body", [b"", b"\x02", b"\x02\x00\x0aonMeta", b"\x05", _body({"width": 1.0})[:-9],
                                  b"\x02" + _string("onMetaData") + b"\x0a\x00\x00\x00\x01", b"\xff" * 64])
def test_truncated_or_strange_bodies_give_what_was_read_and_never_raise(body):
    assert isinstance(metadata_values(body), dict)
