"""RTMP time: 32-bit millisecond timestamps that wrap, and their unwrapping into a growing int.

RTMP timestamps are unsigned 32-bit milliseconds from an arbitrary epoch, so they wrap every
49.7 days, and a stream may start anywhere, even just before the wrap. The RTMP spec (5.3.1.1 of
Adobe's RTMP specification 1.0) says two timestamps are adjacent when they are within 2^31 - 1 ms
of each other; so does serial number arithmetic (RFC 1982), and so does rml_rtmp's `time.rs`.
That one rule decides both questions here:

- `RtmpTime` is a 32-bit value with wrapping arithmetic and a wrap-aware order: 0x00000010 comes
  *after* 0xFFFFFFF0, because going forward from the latter is the short way round.
- `TimestampUnwrapper` turns the sequence of values one message stream sends into ms on a growing
  int timeline: a value ahead of the last one by less than 2^31 (even across the wrap) moves
  forward; a value slightly behind the last one (B-frames in audio/video interleave, a sloppy
  encoder) is placed behind it, not 49 days ahead.

Ingest unwraps once, per message stream and track; everything downstream sees plain ints.
The unwrapped value can fall below the first one when a stream steps backwards at its start (for
instance 5 then 0xFFFFFFF0 gives 5 then -11); callers that need non-negative times rebase.
"""

from __future__ import annotations

from dataclasses import dataclass

WRAP = 1 << 32
HALF_RANGE = 1 << 31
_MASK = WRAP - 1


def wrapping_delta(new: int, old: int) -> int:
    """Signed ms from `old` to `new` (both 32-bit), the short way round, in [-2^31, 2^31 - 1].

    Values exactly 2^31 apart are not adjacent by the spec's rule; they are read as "behind".
    """
    delta = (new - old) & _MASK
    return delta - WRAP if delta >= HALF_RANGE else delta


@dataclass(frozen=True, slots=True)
class RtmpTime:
    """An RTMP timestamp: 32-bit milliseconds with wrapping arithmetic and wrap-aware ordering."""

    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= _MASK:
            object.__setattr__(self, "value", self.value & _MASK)

    def __add__(self, ms: int) -> RtmpTime:
        return RtmpTime((self.value + ms) & _MASK)

    def __sub__(self, other: RtmpTime | int) -> RtmpTime | int:
        """`time - time` is the signed distance in ms; `time - ms` is an earlier time."""
        if isinstance(other, RtmpTime):
            return wrapping_delta(self.value, other.value)
        return RtmpTime((self.value - other) & _MASK)

    def __lt__(self, other: RtmpTime) -> bool:
        return wrapping_delta(self.value, other.value) < 0

    def __le__(self, other: RtmpTime) -> bool:
        return wrapping_delta(self.value, other.value) <= 0

    def __gt__(self, other: RtmpTime) -> bool:
        return wrapping_delta(self.value, other.value) > 0

    def __ge__(self, other: RtmpTime) -> bool:
        return wrapping_delta(self.value, other.value) >= 0


class TimestampUnwrapper:
    """Unwraps one timeline of 32-bit RTMP timestamps into ms on a growing int timeline.

    Feed every timestamp of the timeline in arrival order. The first value is taken as is; each
    later one is placed at the shortest wrapping distance from the previous one.
    """

    __slots__ = ("_last_raw", "_last")

    def __init__(self) -> None:
        self._last_raw: int | None = None
        self._last = 0

    @property
    def last(self) -> int | None:
        """The last unwrapped value, or None before the first."""
        return None if self._last_raw is None else self._last

    def unwrap(self, raw_ms: int) -> int:
        raw_ms &= _MASK
        if self._last_raw is None:
            self._last = raw_ms
        else:
            self._last += wrapping_delta(raw_ms, self._last_raw)
        self._last_raw = raw_ms
        return self._last

    def reset(self) -> None:
        """Forget the timeline (a new publisher, a new message stream)."""
        self._last_raw = None
        self._last = 0
