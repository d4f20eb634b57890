"""aiortc tracks whose `recv()` returns already-encoded `av.Packet`s, so the RTP sender only packetizes.

aiortc's RTCRtpSender reads its track and, for anything that is not a decoded `av.Frame`, calls its
codec's `pack(packet)` (rtcrtpsender.py `_next_encoded_frame`): H.264 splits the Annex B bitstream into
NAL units and packs them as STAP-A / FU-A (codecs/h264.py), Opus sends the packet as it is; the RTP
timestamp is the packet's pts converted from its time_base to the codec clock (90 kHz, 48 kHz), plus the
sender's random origin. Nothing is decoded or encoded for a viewer.

Each track holds a short bounded queue that a session's pump fills: when the sender falls behind (the
event loop is overloaded), a video queue beyond `MAX_VIDEO` pictures is emptied and refilled from the
next keyframe (a picture that refers to a dropped one cannot be decoded); an audio queue drops its
oldest packets. Drops are counted for the viewer.
"""

from __future__ import annotations

import asyncio
import collections
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .units import AUDIO_CLOCK, VIDEO_CLOCK

VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = Fraction(1, AUDIO_CLOCK)
MAX_VIDEO = 240
"""Pictures queued for the sender: a 2 s GOP at 60 fps, twice (the first GOP arrives at once)."""
MAX_AUDIO = 150
"""Opus packets queued: 3 s."""


def packet(data: bytes, pts: int, time_base: Fraction) -> av.Packet:
    """One encoded unit as aiortc's encoders' `pack()` takes it."""
    out = av.Packet(data)
    out.pts = pts
    out.dts = pts
    out.time_base = time_base
    return out


class PacketTrack(MediaStreamTrack):
    """A track fed with encoded packets by its owner (`push`), read by aiortc's sender (`recv`)."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__()
        self.kind = kind
        self.limit = limit
        self.dropped = 0
        self.bytes_out = 0
        self._queue: collections.deque[av.Packet] = collections.deque()
        self._ready = asyncio.Event()
        self._waiting_keyframe = kind == "video"  # a viewer's first picture must be one it can decode

    def push(self, item: av.Packet, keyframe: bool = False) -> None:
        queue = self._queue
        if self.kind == "video":
            if self._waiting_keyframe:
                if not keyframe:
                    self.dropped += 1
                    return
                self._waiting_keyframe = False
            if len(queue) >= self.limit:
                self.dropped += len(queue)
                queue.clear()
                if not keyframe:
                    self._waiting_keyframe = True
                    self.dropped += 1
                    return
        elif len(queue) >= self.limit:
            queue.popleft()
            self.dropped += 1
        queue.append(item)
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        self.bytes_out += item.size
        return item

    def stop(self) -> None:
        super().stop()
        self._ready.set()  # a recv() waiting sees the end
