"""StreamRegistry: which streams exist, who publishes each, and when a stream ends.

One publisher per stream. A second publisher on a live key is refused, unless the current one has sent
nothing for `stale_publisher_timeout`: then the newcomer takes over (an encoder reconnecting after a
network drop is never locked out by its own half-dead session). When a publisher leaves, the stream waits
`reconnect_grace` seconds for it to come back (viewers stay connected); after that it ends and its memory
is released.

Synchronous; time comes from the injected `clock` and delayed work goes through the injected
`call_later`, so tests can drive both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..log import event
from .gop import GopLimits
from .stream import Publisher, Stream, StreamKey, StreamState
from .subscriber import SlowPolicy, Subscriber

HOLDER_WAIT_S = 0.05
"""How long a publish request for a name held by a paused publisher waits for that publisher to end."""
HOLDER_SETTLE_TURNS = 5
"""Loop turns (2 ms apart) a holder whose reads are not paused gets to end before a newcomer claims its name."""
HOLDER_WAIT_TURNS = 10
"""...and the loop turns it gives that publisher at least, whatever the clock says: a process the machine
left unscheduled for longer than HOLDER_WAIT_S would otherwise give up before the holder's socket is read."""

log = logging.getLogger(__name__)

StreamHook = Callable[[Stream], None]


class PublishRefused(Exception):
    """The key is taken by a live publisher (or otherwise refused)."""

    def __init__(self, message: str, code: str = "NetStream.Publish.BadName") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RegistryPolicy:
    stale_publisher_timeout: float = 5.0
    reconnect_grace: float = 10.0


class StreamRegistry:
    def __init__(
        self,
        limits: GopLimits | None = None,
        slow: SlowPolicy | None = None,
        policy: RegistryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self.limits = limits or GopLimits()
        self.slow = slow or SlowPolicy()
        self.policy = policy or RegistryPolicy()
        self.clock = clock
        self._call_later = call_later
        self._streams: dict[StreamKey, Stream] = {}
        self._expiry: dict[StreamKey, Any] = {}
        self.on_stream_started: list[StreamHook] = []  # a new stream's first publisher was accepted
        self.on_published: list[StreamHook] = []  # every accepted publisher session
        self.on_unpublished: list[StreamHook] = []  # a publisher session ended (grace begins)
        self.on_stream_ended: list[StreamHook] = []  # the stream is gone for good
        self.egress_bytes: Counter[str] = Counter()
        """Bytes sent to viewers by format ("flv", "rtmp", ...) since start; see `count_sent`."""
        self.internal_egress_bytes = 0
        """The part of those sent to other nodes' pulls (Subscriber.internal)."""

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, key: StreamKey) -> Stream | None:
        return self._streams.get(key)

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    async def hear_out_publisher(self, key: StreamKey, asker: object, wait_s: float = HOLDER_WAIT_S) -> None:
        """Before `asker` claims `key`: its current publisher, if its reads are paused (merged reads), may
        have left already, its unpublish or its connection's end still unread in its socket, so an encoder
        stopped and started again at once (OBS's stop, start; or over another protocol) would be refused for
        a stream that is over. Have it read now (`hear_out()`, True when it was paused), and give it a few
        loop turns to end: a holder still publishing costs the request at most `wait_s` (or HOLDER_WAIT_TURNS
        turns, if those take longer)."""
        stream = self._streams.get(key)
        holder = stream.publisher if stream is not None else None
        hear_out = getattr(holder, "hear_out", None)
        if holder is asker or hear_out is None:
            return
        if not hear_out():
            # Reading, but its unpublish may be in its socket already, read in this loop iteration's turn or the
            # next (the encoder stopped and started again at once): a few turns, then the claim decides.
            for _ in range(HOLDER_SETTLE_TURNS):
                if stream.publisher is not holder:  # type: ignore[union-attr]
                    return
                await asyncio.sleep(0.002)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        turns = 0
        while stream.publisher is holder and (turns < HOLDER_WAIT_TURNS or loop.time() < deadline):  # type: ignore[union-attr]
            turns += 1
            await asyncio.sleep(0.002)

    def claim_publisher(self, key: StreamKey, publisher: Publisher) -> Stream:
        """Give `publisher` the stream's slot, or raise PublishRefused."""
        now = self.clock()
        stream = self._streams.get(key)
        if stream is not None and stream.state is StreamState.LIVE and stream.publisher is not None:
            idle = now - stream.last_frame_at
            if idle < self.policy.stale_publisher_timeout:
                raise PublishRefused(
                    f"stream {key} is already being published by {stream.publisher.peer}; "
                    "stop that publisher or use another stream name"
                )
            old = stream.publisher
            event(log, "publisher_replaced", stream=str(key), old_peer=old.peer, new_peer=publisher.peer, idle_s=round(idle, 1))
            stream.end_session()
            old.close("replaced_by_new_publisher")
        fresh = stream is None
        if fresh:
            stream = Stream(key, self.limits, self.slow, now)
            self._streams[key] = stream
        expiry = self._expiry.pop(key, None)
        if expiry is not None:
            expiry.cancel()
        stream.begin_session(publisher, now)
        if fresh:
            for hook in self.on_stream_started:
                self._run_hook(hook, stream)
        for hook in self.on_published:
            self._run_hook(hook, stream)
        return stream

    def release_publisher(self, stream: Stream, publisher: Publisher) -> None:
        """The publisher left. Viewers wait for it for `reconnect_grace`, then the stream ends."""
        if stream.publisher is not publisher:
            return  # replaced already; the new session owns the stream
        stream.end_session()
        for hook in self.on_unpublished:
            self._run_hook(hook, stream)
        grace = self.policy.reconnect_grace
        if grace <= 0:
            self._end(stream)
            return
        call_later = self._call_later or asyncio.get_running_loop().call_later
        self._expiry[stream.key] = call_later(grace, lambda: self._expire(stream))

    def _expire(self, stream: Stream) -> None:
        self._expiry.pop(stream.key, None)
        if stream.state is StreamState.IDLE and self._streams.get(stream.key) is stream:
            self._end(stream)

    def _end(self, stream: Stream) -> None:
        self._streams.pop(stream.key, None)
        stream.end()
        event(log, "stream_ended", stream=str(stream.key), viewers=len(stream.subscribers), frames_in=stream.frames_in)
        for hook in self.on_stream_ended:
            self._run_hook(hook, stream)

    def kick(self, key: StreamKey, reason: str = "kicked") -> bool:
        """End a stream now: close its publisher and give viewers the end. False if unknown."""
        stream = self._streams.get(key)
        if stream is None:
            return False
        publisher = stream.publisher
        stream.end_session()
        if publisher is not None:
            publisher.close(reason)
        expiry = self._expiry.pop(key, None)
        if expiry is not None:
            expiry.cancel()
        self._end(stream)
        return True

    def count_sent(self, sub: Subscriber, sent: int) -> None:
        """A viewer's writer sent `sent` bytes (once per batch): counted for the viewer and for its format,
        so the totals hold what viewers that have since left were sent too (metrics read them at scrape)."""
        sub.bytes_sent += sent
        self.egress_bytes[sub.kind] += sent
        if sub.internal:
            self.internal_egress_bytes += sent

    def close_all(self, reason: str = "server_shutdown") -> None:
        for key in list(self._streams):
            self.kick(key, reason)

    def _run_hook(self, hook: StreamHook, stream: Stream) -> None:
        try:
            hook(stream)
        except Exception:
            log.exception("stream hook %r failed for %s", hook, stream.key)
