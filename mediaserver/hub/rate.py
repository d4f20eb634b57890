"""RateMeter: how fast a growing counter grows (a stream's bytes in, the bytes sent to viewers), measured
from readings taken now and then, over a sliding window. The one rate measurement the admin API, the
console's history and the cluster heartbeat share.

Nothing is done per frame: the counters exist anyway, and a reader adds a reading when it samples. Time
comes in as `now` (seconds, monotonic). A counter that goes backwards (a new stream under the same name,
a viewer that left a summed counter) starts the measurement over.
"""

from __future__ import annotations

from collections import deque


class RateMeter:
    """The counter's growth per second between the oldest reading within the window and the newest."""

    def __init__(self, window_s: float = 10.0, min_span_s: float = 0.0) -> None:
        """`window_s` 0 measures between the last two readings; `min_span_s`: readings closer together than
        this give no rate (too noisy)."""
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._readings: deque[tuple[float, int]] = deque()

    def add(self, now: float, total: int) -> None:
        readings = self._readings
        if readings and total < readings[-1][1]:
            readings.clear()
        readings.append((now, total))
        # Keep one reading at or before the window's start, so the rate spans the whole window.
        while len(readings) > 2 and readings[1][0] <= now - self.window_s:
            readings.popleft()

    def per_second(self) -> float | None:
        """None until two readings at least `min_span_s` (and more than 0 s) apart."""
        if len(self._readings) < 2:
            return None
        (t0, n0), (t1, n1) = self._readings[0], self._readings[-1]
        span = t1 - t0
        if span <= 0 or span < self.min_span_s:
            return None
        return (n1 - n0) / span

    def kbps(self) -> float | None:
        """The rate of a byte counter in kbit/s."""
        rate = self.per_second()
        return rate * 8 / 1000 if rate is not None else None
