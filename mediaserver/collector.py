"""The cycle collector, tuned for a media server: rare young collections, and a full one after things end.

Media objects are freed by reference counting; the cycle collector only finds the rare cycle. Freezing what
start-up built and collecting the young generation less often cut its share of a busy ingest node's CPU
(bench/load.py publish). But an ended stream or a stopped packager leaves reference cycles (a stream and its
sinks, a packager and its window) that hold its frames and segments, megabytes each, and with these
thresholds the oldest generation is collected only after millions of allocations: a soak
(bench/soak.py) with publishers and packagers coming and going grew 0.6 MiB a minute that way, for as long
as it ran. So `CycleSweeper` runs one full collection shortly after a stream ended or a packager stopped,
at most once per interval: the cost (milliseconds) is paid when something ends, not per frame.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


class CycleSweeper:
    """Collects every generation once after `ended()` was called, waiting `delay_s` so that what ends
    together (a stream, its packagers, its viewers) is collected together."""

    def __init__(self, delay_s: float = 5.0, collect: Callable[[], int] = gc.collect) -> None:
        self.delay_s = delay_s
        self.sweeps = 0
        self._collect = collect
        self._pending: asyncio.TimerHandle | None = None

    def ended(self, *_: object) -> None:
        """Something that held media ended; a callback for the registry and the packager pool."""
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.delay_s, self._sweep)

    def _sweep(self) -> None:
        self._pending = None
        self.sweeps += 1
        self._collect()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
