"""The last minutes of every live stream, for the console's sparklines: ingest bit rate and viewers.

A sampler task reads the hub every `interval_s` (the counters the hub keeps anyway: `Stream.bytes_in`,
the stream's viewers) and appends one `Sample` to a ring of `samples` entries per stream, so memory is
bounded by streams x samples and nothing is done per frame. The bit rate of a sample is the bytes
received since the previous sample over the time between them. Viewers are the connected ones (HTTP-FLV,
WebSocket-FLV, RTMP) plus the HLS/DASH clients the metrics saw fetching from the stream lately (those
have no connection to count). A stream's ring is dropped when the stream ends; a new stream under the
same name starts a new ring.

The sampler only reads; time comes from the injected clocks, so tests drive `sample()` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..hub.rate import RateMeter
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from .origin_pull import OriginPull

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 2.0
SAMPLES = 180
"""Six minutes at the default interval."""


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """Wall clock, Unix seconds."""
    kbps: float
    """Ingest bit rate since the previous sample, kbit/s."""
    viewers: int


@dataclass(slots=True)
class _Ring:
    stream: Stream
    samples: deque[Sample]
    rate: RateMeter
    """Ingest between the previous reading and this one."""
    segment_viewers: int = 0
    """HLS/DASH clients at the last reading."""


class StreamHistory:
    """Per-stream rings of samples; `sample()` takes one reading of every stream."""

    def __init__(
        self,
        registry: StreamRegistry,
        segment_viewers: Callable[[], Counter[str]] | None = None,
        *,
        samples: int = SAMPLES,
        interval_s: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """`segment_viewers()` gives HLS/DASH clients by stream ("app/name"), None when not counted."""
        if samples < 2 or interval_s <= 0:
            raise ValueError(f"history needs samples >= 2 and interval_s > 0, got {samples} and {interval_s}")
        self.registry = registry
        self.segment_viewers = segment_viewers
        self.samples = samples
        self.interval_s = interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self._rings: dict[StreamKey, _Ring] = {}

    def sample(self) -> None:
        now = self.clock()
        wall = self.wall_clock()
        segment = self.segment_viewers() if self.segment_viewers is not None else Counter()
        live: set[StreamKey] = set()
        for stream in self.registry.streams():
            if stream.ended:
                continue
            key = stream.key
            live.add(key)
            ring = self._rings.get(key)
            if ring is None or ring.stream is not stream:
                # First sight (or a new stream under an old name): the next reading gives the first rate.
                ring = self._rings[key] = _Ring(stream, deque(maxlen=self.samples), RateMeter(window_s=0))
                ring.rate.add(now, stream.bytes_in)
                continue
            ring.rate.add(now, stream.bytes_in)
            kbps = ring.rate.kbps()
            if kbps is None:
                continue
            ring.segment_viewers = segment.get(str(key), 0)
            viewers = len(stream.subscribers) + ring.segment_viewers
            ring.samples.append(Sample(round(wall, 3), round(kbps, 1), viewers))
        for key in [k for k in self._rings if k not in live]:
            del self._rings[key]

    def series(self, key: StreamKey) -> list[Sample]:
        ring = self._rings.get(key)
        return list(ring.samples) if ring is not None else []

    def describe(self) -> dict[str, Any]:
        """Everything, as JSON for the console: parallel arrays per stream, oldest first."""
        streams = []
        for key in sorted(self._rings, key=lambda k: (k.app, k.name)):
            ring = self._rings[key]
            samples = ring.samples
            streams.append({
                "app": key.app,
                "name": key.name,
                "pulled": isinstance(ring.stream.publisher, OriginPull),  # a copy of another node's stream
                "segment_viewers": ring.segment_viewers,
                "at": [s.at for s in samples],
                "kbps": [s.kbps for s in samples],
                "viewers": [s.viewers for s in samples],
            })
        return {"interval_s": self.interval_s, "window_s": self.interval_s * self.samples, "streams": streams}

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        async def run() -> None:
            while True:
                try:
                    self.sample()
                except Exception:  # a bug here must not end the sampling for good
                    log.exception("stream history sample failed")
                await asyncio.sleep(self.interval_s)

        task = asyncio.get_running_loop().create_task(run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
