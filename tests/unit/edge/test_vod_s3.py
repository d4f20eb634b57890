"""The Range header of /vod/ID.mp4 for a recording in object storage: what is asked, what is refused (416)."""

from __future__ import annotations

import pytest

from mediaserver.edge.vod_s3 import byte_range


@pytest.mark.parametrize("header, size, wanted", [
    (None, 1000, None),
    ("bytes=0-99", 1000, (0, 99)),
    ("bytes=0-0", 1000, (0, 0)),
    ("bytes=900-", 1000, (900, 999)),
    ("bytes=900-5000", 1000, (900, 999)),  # the last byte is clipped to the object
    ("bytes=-100", 1000, (900, 999)),  # a suffix
    ("bytes=-5000", 1000, (0, 999)),  # a suffix longer than the object: all of it
    (" bytes=1-2 ", 1000, (1, 2)),
])
def test_ranges_that_select_bytes(header, size, wanted):
    assert byte_range(header, size) == wanted


@pytest.mark.parametrize("header, size", [
    ("bytes=1000-", 1000),  # beyond the end
    ("bytes=5000-6000", 1000),
    ("bytes=10-5", 1000),  # backwards
    ("bytes=-0", 1000),
    ("bytes=-", 1000),
    ("bytes=0-1,5-6", 1000),  # several ranges
    ("items=0-1", 1000),
    ("bytes=a-b", 1000),
    ("bytes=0-", 0),  # nothing to select in an empty object
    ("bytes=-1", 0),
    ("bytes=" + "9" * 5000 + "-", 1000),
])
def test_ranges_that_cannot_be_served_are_refused(header, size):
    with pytest.raises(ValueError):
        byte_range(header, size)
