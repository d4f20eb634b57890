"""Subscriber: one viewer's cursor into its stream's GopCache, with the slow-consumer policy.

A subscriber owns no queue of its own: what it has not read yet is the stretch of the shared log between
its cursor and the end, bounded by the log's window (media time and bytes). Reading takes everything
queued at once (the caller writes it in one call). When the backlog passes the window, the subscriber
overflows: its backlog is dropped, sequence headers are re-sent if they changed meanwhile, and media is
skipped until the next video keyframe (audio too, so players restart cleanly). Drops are counted; after
`max_overflows` overflows within `overflow_window` seconds the subscriber is ended as a slow consumer.

`next_batch()` is the hub's only await: it waits for the stream to change when nothing is queued.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..media.frames import Frame, FrameKind

if TYPE_CHECKING:
    from .stream import Stream

_ids = itertools.count(1)


class SlowConsumer(Exception):
    """The viewer overflowed its queue too often; its connection should close."""


@dataclass(frozen=True, slots=True)
class SlowPolicy:
    max_overflows: int = 3
    overflow_window: float = 60.0


class Subscriber:
    def __init__(self, stream: Stream, kind: str, peer: str, now: float, policy: SlowPolicy) -> None:
        self.id = next(_ids)
        self.stream = stream
        self.kind = kind
        self.peer = peer
        self.joined_at = now
        self.policy = policy
        self.cursor = stream.gop.end
        self.config_generation = -1
        self.waiting_keyframe = False
        self.frames_dropped = 0
        self.overflows = 0
        self.bytes_sent = 0
        self._overflow_times: deque[float] = deque()
        self.closed = False
        self.close_reason: str | None = None
        self.internal = False
        """Another node's pull of this stream (a cluster edge's, a sibling worker's), not a person watching:
        metrics count it apart (mediaserver_internal_viewers)."""

    def start(self) -> list[Frame]:
        """The clean start of a new viewer: metadata, sequence headers, then the cached GOP from its
        keyframe. Called in the same synchronous step as subscribing, so no frame is missed or doubled."""
        stream = self.stream
        self.config_generation = stream.info.config_generation
        start = stream.gop.late_joiner_start()
        self.cursor = stream.gop.end
        self.waiting_keyframe = start == stream.gop.end and stream.gop.has_video
        out = stream.info.headers()
        out.extend(f for f in stream.gop.frames_from(start) if not f.is_config and f.kind != FrameKind.DATA)
        return out

    def take(self, now: float) -> list[Frame]:
        """Everything queued for this subscriber, after applying the slow-consumer policy.
        Raises SlowConsumer when the subscriber should be disconnected."""
        stream = self.stream
        gop = stream.gop
        if self.cursor >= gop.end:
            return []
        limits = gop.limits
        overflow = self.cursor < gop.base
        if not overflow:
            # Lag is media time between media frames: metadata or a sequence header the viewer has
            # not read yet is never "behind" (ARCHITECTURE.md section 4).
            unread_dts = gop.media_dts_from(self.cursor)
            overflow = (
                (unread_dts is not None and gop.newest_dts - unread_dts > limits.window_ms)
                or gop.bytes_appended - gop.bytes_before(self.cursor) > limits.window_bytes
            )
        if overflow:
            return self._overflow(now)
        frames = gop.frames_from(self.cursor)
        self.cursor = gop.end
        if self.waiting_keyframe:
            frames = self._skip_to_keyframe(frames)
        return frames

    def _overflow(self, now: float) -> list[Frame]:
        stream = self.stream
        skipped = stream.gop.end - self.cursor
        self.frames_dropped += skipped
        stream.count_drop(skipped, now)
        self.overflows += 1
        times = self._overflow_times
        times.append(now)
        while times and times[0] < now - self.policy.overflow_window:
            times.popleft()
        if len(times) >= self.policy.max_overflows:
            self.close("slow_consumer")
            raise SlowConsumer(f"viewer {self.peer} fell behind {len(times)} times within {self.policy.overflow_window:g} s")
        self.cursor = stream.gop.end
        self.waiting_keyframe = stream.gop.has_video
        if self.config_generation != stream.info.config_generation:
            self.config_generation = stream.info.config_generation
            return stream.info.headers()
        return []

    def _skip_to_keyframe(self, frames: list[Frame]) -> list[Frame]:
        out: list[Frame] = []
        for i, f in enumerate(frames):
            if f.kind == FrameKind.VIDEO and f.keyframe:
                self.waiting_keyframe = False
                out.extend(frames[i:])
                return out
            if f.is_config:
                out.append(f)
            else:
                self.frames_dropped += 1
        return out

    async def next_batch(self, now_fn=None) -> list[Frame] | None:
        """Wait until something is queued and take it all. Returns None once the stream has ended
        (after what was queued has been taken) or this subscriber was closed."""
        loop_time = now_fn or asyncio.get_running_loop().time
        while True:
            if self.closed:
                return None
            frames = self.take(loop_time())
            if frames:
                return frames
            if self.stream.ended:
                return None
            await self.stream.changed()

    def close(self, reason: str = "viewer_left") -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self.stream.unsubscribe(self)
