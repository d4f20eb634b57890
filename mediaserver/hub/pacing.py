"""Pacing: how long to merge a viewer's writes (or a publisher's reads) before the next one.

Merging trades delay for CPU: each wakeup, socket call and timer costs the same whether it carries one
frame or ten, so at 1,000 viewers writing every frame at once would spend the event loop on overhead,
while at one viewer merging only adds delay. `MergePolicy` (pure) picks the window from two numbers:

- the *audience*: for writes, the viewers of the stream (the cost of a wakeup is paid once per viewer);
  for reads, whoever waits for the stream's frames (viewers and packagers that serve frames as they come):
  with nobody waiting, reads merge to the ceiling, and with nobody consuming at all (no viewer, no
  packager) to the wider `unwatched_ms` (a first viewer or packager resumes reading at once);
- the *busy* share of the event loop (`LoadGauge`: this process's CPU time over wall time, smoothed).

In mode "adaptive" the window is the ceiling times the larger of the two pressures, each a linear ramp
between a low mark (no merging) and a high mark (the ceiling); windows under a millisecond are 0 (write at
once). In mode "fixed" it is always the ceiling: the old behaviour, kept so the trade-off stays measurable.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

ADAPTIVE = "adaptive"
FIXED = "fixed"
MODES = (ADAPTIVE, FIXED)

_MIN_WINDOW_S = 0.001
_STEP_S = 0.005
"""Windows are whole steps, so viewers of a stream under the same load share tick times (`until_tick`)."""
_DUE_LEAD_S = 0.050
"""A read paused until a due frame resumes this much before the frame should arrive: the newest frame read
may be a frame interval (33 ms at 30 fps) older than the publisher's clock, which runs in real time."""


def _ramp(value: float, low: float, high: float) -> float:
    """0 at or below `low`, 1 at or above `high`, linear between."""
    if value <= low:
        return 0.0
    if value >= high:
        return 1.0
    return (value - low) / (high - low)


@dataclass(frozen=True, slots=True)
class MergePolicy:
    ceiling_ms: float
    """The widest window: what mode "fixed" always uses."""
    mode: str = ADAPTIVE
    audience_low: int = 50
    """At or below this many viewers, the audience asks for no merging."""
    audience_high: int = 250
    """At or above this many viewers, the audience asks for the ceiling (each write wakes a viewer's task
    and makes a syscall: at 200 RTMP viewers, 15 ms windows cost 2.4 times the CPU of 50 ms ones)."""
    busy_low: float = 0.35
    """At or below this share of the loop busy, the load asks for no merging."""
    busy_high: float = 0.75
    """At or above this share, the load asks for the ceiling."""
    merge_when_unwatched: bool = False
    """Reads: with an audience of 0 nobody waits for the bytes, so merge to the ceiling."""
    unwatched_ms: float | None = None
    """Reads: the window while nothing at all consumes the stream (`unwatched_s`); None: the ceiling."""

    def window_s(self, audience: int, busy: float) -> float:
        """Seconds to wait before taking the next batch (0: at once)."""
        ceiling = self.ceiling_ms / 1000
        if self.mode == FIXED or ceiling <= 0:
            return ceiling if ceiling > 0 else 0.0
        if audience <= 0 and self.merge_when_unwatched:
            return ceiling
        pressure = max(_ramp(audience, self.audience_low, self.audience_high),
                       _ramp(busy, self.busy_low, self.busy_high))
        window = ceiling * pressure
        if window < _MIN_WINDOW_S:
            return 0.0
        return min(ceiling, math.ceil(window / _STEP_S) * _STEP_S)


    def read_pause(self, waiting: int, patient: int, output_due_s: float, busy: float) -> tuple[float, float]:
        """When a publisher's socket is read next: at the first multiple of `grid` after now + `offset`,
        returned as (offset, grid); grid 0: at once. `waiting`: viewers and sinks that want frames as they
        come; `patient`: sinks whose output changes only at a frame `output_due_s` seconds of media past the
        newest one (a TS segment's cut, a CMAF part's end). Reads stop for the unwatched window while nothing
        is due within it, then resume just before the due frame (so it waits no more than before), and while
        it is due `patient` counts as an audience (as a waiting sink would)."""
        if waiting:
            return 0.0, self.window_s(waiting, busy)
        wide = self.unwatched_s()
        if not patient or output_due_s >= wide + _DUE_LEAD_S:
            return 0.0, wide
        if output_due_s > 2 * _DUE_LEAD_S:
            return output_due_s - _DUE_LEAD_S, _STEP_S
        return 0.0, self.window_s(patient, busy)

    def unwatched_s(self) -> float:
        """Seconds to wait before the next read of a stream that nothing consumes: each wakeup costs a
        read, two epoll_ctl calls and a timer whatever it carries, and nobody sees the delay."""
        if self.mode == FIXED or not self.merge_when_unwatched or self.unwatched_ms is None:
            return self.window_s(0, 0.0)
        return max(self.unwatched_ms, self.ceiling_ms) / 1000 if self.ceiling_ms > 0 else 0.0


def next_tick(now: float, window_s: float) -> float:
    """The next multiple of `window_s` on the loop clock after `now` (the same float for every caller in
    the same window, so it can key a group of waiters)."""
    return (math.floor(now / window_s) + 1) * window_s


def until_tick(now: float, window_s: float) -> float:
    """Seconds from `now` to the next multiple of `window_s` on the loop clock. Viewers that sleep until
    shared ticks wake in the same loop iteration and take the same frames, so their batch bytes are made
    once (`SharedBatch`); the delay a frame waits is the same as with a window from each viewer's last
    write (up to one window)."""
    return next_tick(now, window_s) - now


class SharedBatch(Generic[T]):
    """The bytes of the last batch of frames made, reused while viewers ask for the same batch: frames sit
    once in the stream's log, so the same first and last frame and the same count are the same stretch."""

    __slots__ = ("_first", "_last", "_count", "_value", "made", "hits")

    def __init__(self) -> None:
        self._first: object = None
        self._last: object = None
        self._count = 0
        self._value: T | None = None
        self.made = 0
        self.hits = 0

    def get(self, batch: Sequence[object], make: Callable[[Sequence[object]], T]) -> T:
        value = self._value
        if value is not None and len(batch) == self._count and batch[0] is self._first and batch[-1] is self._last:
            self.hits += 1
            return value
        value = make(batch)
        self._first, self._last, self._count, self._value = batch[0], batch[-1], len(batch), value
        self.made += 1
        return value


class LoadGauge:
    """How busy this process's event loop is: CPU time over wall time, sampled at most every `period_s`
    and smoothed (a new sample weighs `weight`). Pure but for its default clocks; reading it is cheap
    (one clock read between samples), so every viewer may ask before every batch."""

    __slots__ = ("period_s", "weight", "_wall", "_cpu", "_last_wall", "_last_cpu", "busy_share")

    def __init__(self, period_s: float = 0.25, weight: float = 0.5,
                 wall: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time) -> None:
        self.period_s = period_s
        self.weight = weight
        self._wall = wall
        self._cpu = cpu
        self._last_wall = wall()
        self._last_cpu = cpu()
        self.busy_share = 0.0
        """The smoothed share of one core this process used lately (0..1; threads may push it over 1)."""

    def busy(self) -> float:
        now = self._wall()
        elapsed = now - self._last_wall
        if elapsed >= self.period_s:
            cpu = self._cpu()
            sample = (cpu - self._last_cpu) / elapsed
            self._last_wall, self._last_cpu = now, cpu
            self.busy_share += self.weight * (sample - self.busy_share)
        return self.busy_share


GAUGE = LoadGauge()
"""The process's gauge, shared by every viewer and publisher (one event loop per process)."""
