"""What the WebRTC viewers of one stream share: the Annex B conversion of its H.264 pictures and the av.Packet
of each (made once, handed to every viewer's track), the Opus packets of an Opus source, and the AAC ->
Opus transcoder (`OpusFeed`) when its audio is AAC. A StreamFeed lives while the stream has WebRTC
viewers; the transcoder stops with the last of them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import av

from ..errors import MediaError
from ..hub.stream import Stream
from ..log import LogGate, event
from ..media.frames import Frame, FrameKind
from .opus_feed import OpusFeed
from .tracks import AUDIO_TIME_BASE, VIDEO_TIME_BASE, packet
from .units import H264Units, audio_time, video_time

log = logging.getLogger(__name__)

CACHE_FRAMES = 256
"""Packets kept for viewers that read a little behind the first (a few seconds of video and audio)."""


class StreamFeed:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.viewers = 0
        self.h264 = H264Units()
        if stream.info.video_config is not None and stream.info.video_codec == "h264":
            self.h264.configure(stream.info.video_config)
        self.opus: OpusFeed | None = None
        self._cache: collections.OrderedDict[int, tuple[Frame, av.Packet | None]] = collections.OrderedDict()
        self._bad_log = LogGate(10.0)

    def configure(self, frame: Frame) -> None:
        """A sequence header passed by (idempotent: each viewer's pump passes the same one)."""
        if frame.kind == FrameKind.VIDEO and frame.codec == "h264":
            self.h264.configure(frame)

    def annexb(self, frame: Frame) -> bytes:
        """A picture's Annex B bytes ("" when it has nothing to send or is malformed: skipped, logged)."""
        try:
            return self.h264.access_unit(frame)
        except MediaError as err:
            if self._bad_log.should_log("bad", asyncio.get_running_loop().time()):
                event(log, "webrtc_frame_skipped", logging.WARNING, stream=str(self.stream.key), error=str(err))
            return b""

    def packet_of(self, frame: Frame) -> av.Packet | None:
        """The av.Packet of a live frame (video H.264 or Opus), made once for every viewer."""
        key = id(frame)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is frame:
            return hit[1]
        made: av.Packet | None = None
        if frame.kind == FrameKind.VIDEO:
            data = self.annexb(frame)
            if data:
                made = packet(data, video_time(frame), VIDEO_TIME_BASE)
        elif frame.codec == "opus":
            made = packet(bytes(frame.payload), audio_time(frame), AUDIO_TIME_BASE)
        self._cache[key] = (frame, made)
        if len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return made

    def listen_opus(self, listener: Callable[[av.Packet], None]) -> None:
        """Add a viewer's audio track to the AAC -> Opus transcoder, started on the first."""
        if self.opus is None:
            self.opus = OpusFeed(str(self.stream.key))
            if self.stream.info.audio_config is not None:
                self.opus.on_frame(self.stream.info.audio_config)
            self.stream.add_sink(self.opus)
            self.opus.begin()
            event(log, "opus_transcode_start", stream=str(self.stream.key))
        self.opus.listeners.add(listener)

    def unlisten_opus(self, listener: Callable[[av.Packet], None]) -> None:
        if self.opus is not None:
            self.opus.listeners.discard(listener)
            if not self.opus.listeners:
                self._stop_opus()

    def close(self) -> None:
        self._stop_opus()
        self._cache.clear()

    def _stop_opus(self) -> None:
        opus, self.opus = self.opus, None
        if opus is None:
            return
        self.stream.remove_sink(opus)
        opus.stop()  # the worker ends, and its end is logged (opus_transcode_stop)
