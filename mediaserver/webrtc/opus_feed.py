"""AAC -> Opus, once per stream for all its WebRTC viewers (WebRTC audio is Opus; RTMP publishers send AAC).

`OpusFeed` is a hub sink of the stream (`Stream.add_sink`): `on_frame` only writes the AAC frames to a worker
process (`python -m mediaserver.webrtc.opus_feed`; the publisher's flush never waits), which decodes them
(PyAV), resamples to 48 kHz stereo in 20 ms frames and encodes with libopus; the packets come back on its
stdout and are handed to every listener (a viewer's audio track). A process, not a thread: a thread would
share the server's GIL, and on a busy machine a thread preempted while holding it stalls the event loop
(bench/webrtc.py measured the send delay at 10 viewers: p50 0.9-3 s with a thread, 60 ms without).

Timestamps: each Opus packet's time (48 kHz) follows the stream's AAC times: the first frame (and any
frame more than `RESYNC_MS` away from where the encoded samples had reached, e.g. after a publisher's
reconnect) sets the base, then samples are counted. So audio stays on the video's timeline for lip sync.

Bounded: when more than `MAX_PENDING_BYTES` wait for the worker (it fell behind or hangs), frames are
dropped and counted (a machine too loaded to transcode gets silence, not memory growth). The worker is
stopped when the feed's last listener leaves or the stream ends; it ends itself when its stdin closes.

Wire (both directions): a 13-byte header (kind: 1 byte, time: signed 8 bytes, length: 4 bytes, big-endian),
then the payload. To the worker: kind 0 = AudioSpecificConfig, 1 = an AAC frame (time = dts in ms). From
it: kind 2 = an Opus packet (time = pts in 1/48000 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
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
MAX_PENDING_BYTES = 256 * 1024
"""About 15 s of 128 kbit/s AAC waiting for the worker."""
HEADER = struct.Struct(">BqI")
CONFIG, AAC_FRAME, OPUS_PACKET = 0, 1, 2
MAX_MESSAGE = 1 << 20
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
    """One stream's AAC -> Opus transcoder (a worker process), shared by its WebRTC viewers. Attach with
    `Stream.add_sink`; `start()` spawns the worker."""

    def __init__(self, stream_name: str, command: list[str] | None = None) -> None:
        self.stream_name = stream_name
        self.command = command or [sys.executable, "-m", "mediaserver.webrtc.opus_feed"]
        self.listeners: set[Listener] = set()
        self.dropped = 0
        self.packets_out = 0
        self.cpu_s = 0.0
        """The worker's CPU time, as it reported at its end."""
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: list[bytes] = []  # written before the worker was up
        self._task: asyncio.Task | None = None
        """The worker's life: spawn, read its packets, wait for its end."""
        self._stopped = False

    def begin(self) -> None:
        """Spawn the worker (frames written meanwhile wait for it)."""
        self._task = asyncio.create_task(self.start())

    async def start(self) -> None:
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as err:
            event(log, "opus_worker_spawn_failed", logging.ERROR, stream=self.stream_name, error=str(err))
            return
        if self._stopped:
            self._close_worker()
            return
        for message in self._pending:
            self._proc.stdin.write(message)
        self._pending.clear()
        await self._read()

    # ----- the hub's side (event loop) -------------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        if frame.kind != FrameKind.AUDIO or frame.codec != "aac" or self._stopped:
            return
        payload = bytes(frame.payload)
        message = HEADER.pack(CONFIG if frame.is_config else AAC_FRAME, frame.dts_ms, len(payload)) + payload
        proc = self._proc
        if proc is None:
            if sum(map(len, self._pending)) < MAX_PENDING_BYTES:
                self._pending.append(message)
            else:
                self.dropped += 1
            return
        stdin = proc.stdin
        if stdin is None or stdin.is_closing():
            return
        if stdin.transport.get_write_buffer_size() > MAX_PENDING_BYTES and not frame.is_config:
            self.dropped += 1
            return
        stdin.write(message)

    def on_discontinuity(self) -> None:
        pass  # the worker checks the next frame's time against the samples it counted (RESYNC_MS)

    def on_end(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.listeners.clear()
        self._close_worker()

    def _close_worker(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # the worker ends at the end of its input

    async def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(HEADER.size)
                kind, pts, size = HEADER.unpack(head)
                if size > MAX_MESSAGE:
                    raise ValueError(f"opus worker sent a {size}-byte message")
                data = await proc.stdout.readexactly(size)
                if kind == OPUS_PACKET:
                    self._deliver(data, pts)
                else:
                    self.cpu_s = pts / 1e6
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._close_worker()
            try:
                await asyncio.wait_for(proc.wait(), 2.0)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            event(log, "opus_transcode_stop", stream=self.stream_name, packets=self.packets_out,
                  cpu_s=round(self.cpu_s, 3), dropped=self.dropped, exit=proc.returncode)

    def _deliver(self, data: bytes, pts: int) -> None:
        self.packets_out += 1
        made = av.Packet(data)
        made.pts = made.dts = pts
        made.time_base = TIME_BASE
        for listener in list(self.listeners):
            listener(made)


# ----- the worker process ----------------------------------------------------------------------------

CPU_REPORT = 3
"""The worker's last message: its CPU time in microseconds in the time field."""


def worker_main() -> int:
    """Read AAC messages on stdin until it closes, write Opus packets on stdout."""
    encoder = OpusEncoder()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(HEADER.size)
        if len(head) < HEADER.size:
            break
        kind, dts_ms, size = HEADER.unpack(head)
        if size > MAX_MESSAGE:
            return 2
        payload = stdin.read(size)
        if len(payload) < size:
            break
        if kind == CONFIG:
            try:
                encoder.configure(payload)
            except av.FFmpegError:
                continue
        elif kind == AAC_FRAME:
            out = b"".join(HEADER.pack(OPUS_PACKET, p.pts, p.size) + bytes(p) for p in encoder.encode(payload, dts_ms))
            if out:
                stdout.write(out)
                stdout.flush()
    stdout.write(HEADER.pack(CPU_REPORT, int(time.process_time() * 1e6), 0))
    stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
