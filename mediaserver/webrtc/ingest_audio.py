"""Opus from a WebRTC publisher to AAC, once per stream, in a worker thread (PyAV: decode, resample, encode).

Why AAC at ingest, for every output: a hub stream carries one audio track, and Opus is not carried by
HLS-TS (index.m3u8, the HLS most players and the ABR ladder use), RTMP play to classic players or
HTTP-FLV in players older than Enhanced RTMP; AAC is carried by every output. Keeping Opus would
need a second, AAC copy of the stream for those outputs and a second track in every packager;
converting once here costs about one Opus decode and one AAC encode per publisher (see bench/whip.py)
and gives a WHIP stream every output an RTMP publish has.

Timing: each packet comes with its unwrapped RTP time (48 kHz, the Opus clock). The samples go to the
encoder on that clock: a gap (DTX, loss) is filled with silence up to `MAX_GAP_S` so audio keeps its
place against video; a longer gap, or a step back, starts the sample count again at the new packet.
Each AAC frame comes back with its RTP-clock time, which the caller maps to the stream's timeline.

Threading: `push` (event loop) only queues; the worker does every codec call (PyAV releases the GIL in
them) and hands results back with `loop.call_soon_threadsafe`. The queue is bounded (`MAX_QUEUED`
packets, 2 s of 20 ms packets): when the worker falls that far behind, packets are dropped and counted
rather than memory growing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..media.aac import parse_audio_specific_config

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
AAC_FRAME = 1024
BIT_RATE = 128_000
MAX_GAP_S = 10.0
MAX_QUEUED = 100
_TIME_BASE = Fraction(1, SAMPLE_RATE)
_AAC_SOUND_FORMAT = 0xAF  # AAC, "44 kHz" (always, for AAC), 16-bit, stereo (FLV spec E.4.2.1)


def aac_sequence_header_body(asc: bytes) -> bytes:
    return bytes((_AAC_SOUND_FORMAT, 0)) + asc


def aac_audio_body(raw: bytes) -> bytes:
    return bytes((_AAC_SOUND_FORMAT, 1)) + raw


@dataclass(frozen=True, slots=True)
class AacOut:
    position: int
    """RTP-clock time (48 kHz, unwrapped) of the frame's first sample."""
    raw: bytes
    """One raw AAC access unit."""


class AacEncoderChain:
    """Opus packets -> AAC access units, synchronous (the worker thread runs it; bench/whip.py too)."""

    def __init__(self, bit_rate: int = BIT_RATE) -> None:
        self.decoder = av.CodecContext.create("opus", "r")
        self.decoder.sample_rate = SAMPLE_RATE
        self.decoder.layout = "stereo"
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE, frame_size=AAC_FRAME)
        self.encoder = av.CodecContext.create("aac", "w")
        self.encoder.sample_rate = SAMPLE_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "fltp"
        self.encoder.bit_rate = bit_rate
        self.encoder.time_base = _TIME_BASE
        self.encoder.open()
        self.asc = bytes(self.encoder.extradata or b"")
        """The AudioSpecificConfig, the AAC sequence header's payload."""
        parse_audio_specific_config(self.asc)  # the encoder's own: a failure here is a bug, said at once
        self._base: int | None = None
        """RTP time of sample 0 of the current count."""
        self._next: int = 0
        """Samples given to the resampler in the current count: where the next packet should start."""
        self._encoded = 0
        """Samples given to the encoder since it opened."""
        self._rtp_minus_encoded: int | None = None
        self.silence_samples = 0
        self.restarts = 0
        self.bad_packets = 0

    def push(self, position: int, packet: bytes) -> list[AacOut]:
        """One Opus packet at RTP time `position`; returns the AAC frames that became ready."""
        frames: list[av.AudioFrame] = []
        if self._base is None:
            self._base = position
            self._rtp_minus_encoded = position
        gap = position - (self._base + self._next)
        if gap < -AAC_FRAME or gap > MAX_GAP_S * SAMPLE_RATE:
            # A step back or a long silence: count again from this packet (the stream's clock carries on).
            self._restart(position)
            gap = 0
        if gap > 0:
            frames.append(self._silence(gap))
        try:
            decoded = self.decoder.decode(av.Packet(packet))
        except av.FFmpegError:
            self.bad_packets += 1
            decoded = []
        frames.extend(decoded)
        out: list[AacOut] = []
        for frame in frames:
            self._next += frame.samples
            frame.pts = None  # the resampler only regroups samples; the times are ours
            for chunk in self.resampler.resample(frame):
                out.extend(self._encode(chunk))
        return out

    def _silence(self, samples: int) -> av.AudioFrame:
        self.silence_samples += samples
        frame = av.AudioFrame.from_ndarray(np.zeros((2, samples), dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        return frame

    def _restart(self, position: int) -> None:
        """Count again from `position`, with a fresh resampler (the encoder goes on: its output keeps
        its place, mapped to RTP time through `_rtp_minus_encoded`)."""
        self.restarts += 1
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE, frame_size=AAC_FRAME)
        self._base = position
        self._next = 0
        self._rtp_minus_encoded = position - self._encoded

    def _encode(self, frame: av.AudioFrame) -> list[AacOut]:
        frame.pts = self._encoded
        frame.time_base = _TIME_BASE
        self._encoded += frame.samples
        out = []
        for packet in self.encoder.encode(frame):
            # The encoder stamps its output with the time of the input it holds; its first packet, the
            # priming frame (negative time), carries no input and is left out.
            if packet.pts is not None and packet.pts >= 0:
                out.append(AacOut(self._rtp_minus_encoded + packet.pts, bytes(packet)))
        return out


class OpusToAac:
    """One stream's Opus -> AAC worker thread. `on_output(frames)` runs on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_output: Callable[[list[AacOut]], None],
                 name: str = "whip-audio") -> None:
        self.chain: AacEncoderChain | None = None
        """Made by the worker (opening the codecs takes milliseconds: not on the event loop)."""
        self.loop = loop
        self.on_output = on_output
        self.dropped = 0
        """Opus packets dropped because the worker fell MAX_QUEUED behind."""
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(MAX_QUEUED)
        self._closed = False
        self._thread: threading.Thread | None = None
        """Started by the first packet: a session that never connects costs no thread."""
        self._name = name

    @property
    def asc(self) -> bytes:
        """The AudioSpecificConfig; known once the worker delivered its first frames."""
        assert self.chain is not None
        return self.chain.asc

    def push(self, position: int, packet: bytes) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait((position, packet))
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Stop the worker (it finishes the packet in hand; nothing more is delivered)."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def _run(self) -> None:
        try:
            chain = self.chain = AacEncoderChain()
        except Exception:
            log.exception("the Opus to AAC converter cannot start; this WHIP stream has no audio")
            return
        while True:
            item = self._queue.get()
            if item is None or self._closed:
                return
            try:
                out = chain.push(*item)
            except Exception:
                log.exception("Opus to AAC conversion failed; the audio of this WHIP stream stops")
                return
            if out:
                try:
                    self.loop.call_soon_threadsafe(self._deliver, out)
                except RuntimeError:  # the loop closed
                    return

    def _deliver(self, out: list[AacOut]) -> None:
        if not self._closed:
            self.on_output(out)
