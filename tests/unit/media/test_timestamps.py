"""RTMP time: wrap-aware comparison and unwrapping of 32-bit millisecond timestamps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaserver.media.timestamps import WRAP, RtmpTime, TimestampUnwrapper, wrapping_delta

UNWRAP_TABLE = [
    ("plain growth", [0, 40, 80, 1000], [0, 40, 80, 1000]),
    ("starts anywhere", [123456, 123496], [123456, 123496]),
    ("wraps forward", [0xFFFFFF00, 0xFFFFFFF0, 0x00000010], [0xFFFFFF00, 0xFFFFFFF0, WRAP + 0x10]),
    ("slightly behind is behind", [5000, 4990, 5010], [5000, 4990, 5010]),
    ("behind across the wrap", [0x10, 0xFFFFFFF0], [0x10, -0x10]),
    (
        "back across the wrap after wrapping",
        [0xFFFFFFF0, 0x10, 0xFFFFFFF8, 0x20],
        [0xFFFFFFF0, WRAP + 0x10, 0xFFFFFFF8, WRAP + 0x20],
    ),
    ("half the range ahead is read as behind", [0, 0x80000000], [0, -0x80000000]),
    ("just under half the range is ahead", [0, 0x7FFFFFFF], [0, 0x7FFFFFFF]),
    (
        "wraps twice",
        [0, 0x7FFFFFFF, 0xFFFFFFFE, 0x7FFFFFFC, 0xFFFFFFFA, 3],
        [0, 0x7FFFFFFF, 0xFFFFFFFE, WRAP + 0x7FFFFFFC, WRAP + 0xFFFFFFFA, 2 * WRAP + 3],
    ),
]


@pytest.mark.parametrize("raw, unwrapped", [c[1:] for c in UNWRAP_TABLE], ids=[c[0] for c in UNWRAP_TABLE])
def test_unwrapper_table(raw: list[int], unwrapped: list[int]) -> None:
    unwrapper = TimestampUnwrapper()
    assert [unwrapper.unwrap(t) for t in raw] == unwrapped


def test_unwrapper_reset_starts_a_new_timeline() -> None:
    unwrapper = TimestampUnwrapper()
    assert unwrapper.last is None
    unwrapper.unwrap(0xFFFFFFF0)
    unwrapper.unwrap(0x10)
    assert unwrapper.last == WRAP + 0x10
    unwrapper.reset()
    assert unwrapper.last is None
    assert unwrapper.unwrap(0x10) == 0x10


def test_unwrapper_masks_values_wider_than_32_bits() -> None:
    unwrapper = TimestampUnwrapper()
    assert unwrapper.unwrap(WRAP + 5) == 5


@given(
    st.integers(0, WRAP - 1),
    st.lists(st.integers(-(2**31) + 1, 2**31 - 1), max_size=50),
)
def test_unwrapped_steps_equal_the_steps_taken_whatever_the_wraps(start: int, steps: list[int]) -> None:
    unwrapper = TimestampUnwrapper()
    value = unwrapper.unwrap(start)
    expected = start
    raw = start
    for step in steps:
        raw = (raw + step) % WRAP
        expected += step
        value = unwrapper.unwrap(raw)
    assert value == expected


def test_rtmp_time_orders_values_across_the_wrap() -> None:
    before_wrap = RtmpTime(0xFFFFFFF0)
    after_wrap = RtmpTime(0x10)
    assert before_wrap < after_wrap and after_wrap > before_wrap
    assert before_wrap <= after_wrap and after_wrap >= before_wrap
    assert not after_wrap < before_wrap
    assert RtmpTime(10) < RtmpTime(20)


def test_rtmp_time_arithmetic_wraps() -> None:
    assert RtmpTime(0xFFFFFFF0) + 0x20 == RtmpTime(0x10)
    assert RtmpTime(0x10) - 0x20 == RtmpTime(0xFFFFFFF0)
    assert RtmpTime(0x10) - RtmpTime(0xFFFFFFF0) == 0x20
    assert RtmpTime(0xFFFFFFF0) - RtmpTime(0x10) == -0x20
    assert RtmpTime(-1) == RtmpTime(0xFFFFFFFF)


@pytest.mark.parametrize(
    "new, old, delta",
    [(10, 0, 10), (0, 10, -10), (0, 0xFFFFFFFF, 1), (0xFFFFFFFF, 0, -1), (0x80000000, 0, -(2**31)), (0x7FFFFFFF, 0, 2**31 - 1)],
)
def test_wrapping_delta_takes_the_short_way_round(new: int, old: int, delta: int) -> None:
    assert wrapping_delta(new, old) == delta
