"""AAC -> Opus, once per stream for all its WebRTC viewers (WebRTC audio is Opus; RTMP publishers send AAC).

`OpusFeed` is a hub sink of the stream (`Stream.add_sink`): `on_frame` only queues the AAC frames (the
publisher's flush never waits), a worker thread decodes them (PyAV), resamples to 48 kHz stereo in
20 ms frames and encodes with libopus, and the packets come back to the event loop
(`call_soon_threadsafe`) to every listener (a viewer's audio track). The thread holds the GIL only
between FFmpeg calls; the event loop never decodes or encodes.

Timestamps: each Opus packet's time (48 kHz) follows the stream's AAC times: the first frame (and any
frame more than `RESYNC_MS` away from where the encoded samples had reached, e.g. after a publisher's
reconnect) sets the base, then samples are counted. So audio stays on the video's timeline for lip sync.

Bounded: at most `MAX_QUEUED` AAC frames wait for the thread (about 10 s); beyond that the oldest are
dropped and counted (a machine too loaded to transcode gets silence, not memory growth). The feed
stops (thread ended) when its last listener leaves or the stream ends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from fractions import Fraction

import av

from ..log import event
from ..media.frames import Frame, FrameKind

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms
OPUS_BITRATE = 96_000
MAX_QUEUED = 500
RESYNC_MS = 200
TIME_BASE = Fraction(1, OPUS_RATE)

Listener = Callable[[av.Packet], None]


class OpusEncoder:
    """The thread's side: AAC access units in, Opus packets (pts in 1/48000 s) out. Not thread-safe: one
    thread calls it. Pure PyAV, testable on its own."""

    def __init__(self) -> None:
        self._decoder: av.AudioCodecContext | None = None
        self._config = b""
        self._resampler: av.AudioResampler | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._next_pts: int | None = None
        self.cpu_s = 0.0
        """Thread CPU time spent decoding and encoding."""
        self.errors = 0

    def configure(self, audio_specific_config: bytes) -> None:
        if audio_specific_config == self._config and self._decoder is not None:
            return
        self._config = audio_specific_config
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = audio_specific_config
        decoder.open()
        self._decoder = decoder
        self._next_pts = None

    def encode(self, payload: bytes, dts_ms: int) -> list[av.Packet]:
        started = time.thread_time()
        try:
            return self._encode(payload, dts_ms)
        except av.FFmpegError:
            self.errors += 1  # a corrupt AAC frame: skipped, the next one decodes
            return []
        finally:
            self.cpu_s += time.thread_time() - started

    def _encode(self, payload: bytes, dts_ms: int) -> list[av.Packet]:
        if self._decoder is None:
            return []
        frames = self._decoder.decode(av.Packet(payload))
        if not frames:
            return []
        expected = dts_ms * (OPUS_RATE // 1000)
        if self._next_pts is None or abs(expected - self._next_pts) > RESYNC_MS * (OPUS_RATE // 1000):
            self._start_encoder(expected)
        assert self._resampler is not None and self._encoder is not None
        out: list[av.Packet] = []
        for frame in frames:
            for chunk in self._resampler.resample(frame):
                chunk.pts = self._next_pts
                chunk.time_base = TIME_BASE
                self._next_pts += chunk.samples
                out.extend(self._encoder.encode(chunk))
        for packet in out:
            packet.time_base = TIME_BASE
        return out

    def _start_encoder(self, pts: int) -> None:
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = OPUS_RATE
        encoder.layout = "stereo"
        encoder.format = "s16"
        encoder.bit_rate = OPUS_BITRATE
        encoder.time_base = TIME_BASE
        encoder.options = {"application": "audio", "frame_duration": "20"}
        encoder.open()
        self._encoder = encoder
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME)
        self._next_pts = pts


class OpusFeed:
    """One stream's AAC -> Opus transcoder, shared by its WebRTC viewers. Attach with `Stream.add_sink`."""

    def __init__(self, stream_name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.stream_name = stream_name
        self.loop = loop
        self.listeners: set[Listener] = set()
        self.encoder = OpusEncoder()
        self.dropped = 0
        self.packets_out = 0
        self._queue: collections.deque[tuple[str, bytes, int]] = collections.deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"opus {stream_name}", daemon=True)
        self._thread.start()

    # ----- the hub's side (event loop) -------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if frame.kind != FrameKind.AUDIO or frame.codec != "aac":
            return
        item = ("config" if frame.is_config else "frame", bytes(frame.payload), frame.dts_ms)
        with self._wake:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            self._wake.notify()

    def on_discontinuity(self) -> None:
        pass  # the next frame's time is checked against the samples counted (RESYNC_MS)

    def on_end(self) -> None:
        self.stop()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._queue.clear()
            self._wake.notify()

    # ----- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    break
                what, payload, dts_ms = self._queue.popleft()
            if what == "config":
                try:
                    self.encoder.configure(payload)
                except av.FFmpegError as err:
                    event(log, "opus_feed_bad_config", logging.WARNING, stream=self.stream_name, error=str(err))
                continue
            packets = self.encoder.encode(payload, dts_ms)
            if packets:
                try:
                    self.loop.call_soon_threadsafe(self._deliver, packets)
                except RuntimeError:  # the loop closed under us (shutdown)
                    break

    def _deliver(self, packets: list[av.Packet]) -> None:
        self.packets_out += len(packets)
        for listener in list(self.listeners):
            for packet in packets:
                listener(packet)
