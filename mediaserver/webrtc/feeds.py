"""What the WebRTC viewers of one stream share: the RTP payloads of each H.264, AV1 or HEVC picture and Opus
packet (rtp_packets.RtpFrame: packetized once, the same bytes sent to every viewer), and, when its audio is
AAC, where their Opus comes from:
- a WHIP publisher's own Opus packets (opus_source.py), passed through: its hub audio is AAC made from
  them at ingest, and transcoding that back would be a second lossy conversion for nothing;
- else the AAC -> Opus transcoder (`OpusFeed`), whose packets are packetized once too.
The choice follows the stream's publisher (`follow_audio`: on a viewer's arrival and on each AAC frame
the viewers pass, a pointer comparison when nothing changed): a WHIP publisher replaced by an RTMP one
(or the reverse) moves the viewers' audio to the transcoder (or off it). A StreamFeed lives while the
stream has WebRTC viewers; the transcoder stops with the last of them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from ..errors import MediaError
from ..hub.stream import Stream
from ..log import LogGate, event
from ..media.frames import Frame, FrameKind
from .opus_feed import OpusFeed
from .opus_source import OpusSource, opus_source_of
from .av1_rtp import Av1Units, av1_payloads
from .h265_rtp import H265Units, h265_payloads
from .rtp_packets import RtpFrame, h264_payloads
from .units import H264Units, audio_time, video_time

OpusListener = Callable[[RtpFrame], None]

log = logging.getLogger(__name__)

CACHE_FRAMES = 256
"""Frames kept for viewers that read a little behind the first (a few seconds of video and audio)."""


class StreamFeed:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.viewers = 0
        self.h264 = H264Units()
        self.av1 = Av1Units()
        self.hevc = H265Units()
        if stream.info.video_config is not None:
            self.configure(stream.info.video_config)
        self.opus: OpusFeed | None = None
        self.source: OpusSource | None = None
        """The WHIP publisher's Opus the viewers get, when they get it passed through."""
        self._opus_listeners: set[OpusListener] = set()
        self._followed: object = None
        """The stream's publisher when the audio's origin was last chosen."""
        self._cache: collections.OrderedDict[int, tuple[Frame, RtpFrame | None]] = collections.OrderedDict()
        self._bad_log = LogGate(10.0)

    def configure(self, frame: Frame) -> None:
        """A sequence header passed by (idempotent: each viewer's pump passes the same one)."""
        if frame.kind == FrameKind.VIDEO and frame.codec == "h264":
            self.h264.configure(frame)
        elif frame.kind == FrameKind.VIDEO and frame.codec == "av1":
            self.av1.configure(frame)
        elif frame.kind == FrameKind.VIDEO and frame.codec == "hevc":
            self.hevc.configure(frame)

    def video_payloads(self, frame: Frame) -> tuple[bytes, ...]:
        """A picture's RTP payloads (() when it has nothing to send or is malformed: skipped, logged)."""
        try:
            if frame.codec == "av1":
                obus = self.av1.obus(frame)
                new_sequence = frame.keyframe and bool(obus) and obus[0] == self.av1.sequence_header
                return av1_payloads(obus, new_sequence=new_sequence) if obus else ()
            if frame.codec == "hevc":
                nals = self.hevc.nal_units(frame)
                return h265_payloads(nals) if nals else ()
            nals = self.h264.nal_units(frame)
            return h264_payloads(nals) if nals else ()
        except MediaError as err:
            if self._bad_log.should_log("bad", asyncio.get_running_loop().time()):
                event(log, "webrtc_frame_skipped", logging.WARNING, stream=str(self.stream.key), error=str(err))
            return ()

    def rtp_of(self, frame: Frame) -> RtpFrame | None:
        """The RTP payloads of a live frame (video H.264, AV1 or HEVC, or Opus), made once for every viewer."""
        key = id(frame)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is frame:
            return hit[1]
        made: RtpFrame | None = None
        if frame.kind == FrameKind.VIDEO:
            payloads = self.video_payloads(frame)
            if payloads:
                made = RtpFrame(payloads, video_time(frame), frame.keyframe)
        elif frame.codec == "opus" and len(frame.payload):
            made = RtpFrame((bytes(frame.payload),), audio_time(frame))
        self._cache[key] = (frame, made)
        if len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return made

    def listen_opus(self, listener: OpusListener) -> None:
        """Add a viewer's Opus (of an AAC stream): the publisher's own when it is a WHIP session, else the
        AAC -> Opus transcoder's, started on the first viewer."""
        self._opus_listeners.add(listener)
        self._followed = None  # choose now
        self.follow_audio()

    def unlisten_opus(self, listener: OpusListener) -> None:
        self._opus_listeners.discard(listener)
        if not self._opus_listeners:
            self._leave_source()
            self._stop_opus()
            self._followed = None

    def follow_audio(self) -> None:
        """Choose again where the viewers' Opus comes from if the stream's publisher changed or its source
        ended. Called for every AAC frame the viewers pass: cheap when nothing changed."""
        publisher = self.stream.publisher
        source = self.source
        if publisher is self._followed and (source is None or not source.closed) or not self._opus_listeners:
            return
        self._followed = publisher
        found = opus_source_of(self.stream)
        if found is not None:
            if found is not source:
                self._leave_source()
                self._stop_opus()
                self.source = found
                found.listeners.add(self._deliver)
                event(log, "opus_passthrough", stream=str(self.stream.key), origin="whip")
            return
        self._leave_source()
        if self.opus is None and publisher is not None:
            self._start_opus()

    def _start_opus(self) -> None:
        self.opus = OpusFeed(str(self.stream.key))
        if self.stream.info.audio_config is not None:
            self.opus.on_frame(self.stream.info.audio_config)
        self.opus.listeners.add(self._opus_packet)
        self.stream.add_sink(self.opus)
        self.opus.begin()
        event(log, "opus_transcode_start", stream=str(self.stream.key))

    def _leave_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            source.listeners.discard(self._deliver)

    def _opus_packet(self, made) -> None:
        """A transcoded packet (av.Packet, 48 kHz pts): packetized once, handed to every viewer."""
        self._deliver(RtpFrame((bytes(made),), int(made.pts)))

    def _deliver(self, frame: RtpFrame) -> None:
        for listener in list(self._opus_listeners):
            listener(frame)

    def close(self) -> None:
        self._leave_source()
        self._stop_opus()
        self._cache.clear()

    def _stop_opus(self) -> None:
        opus, self.opus = self.opus, None
        if opus is None:
            return
        self.stream.remove_sink(opus)
        opus.stop()  # the worker ends, and its end is logged (opus_transcode_stop)
