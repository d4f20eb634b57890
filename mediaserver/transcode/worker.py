"""The transcoder worker process: one source stream in (FLV on stdin), its rendition ladder out (wire messages).

    python -m mediaserver.transcode.worker --job JSON

The source video is decoded once; each decoded picture is scaled to every live rung, watermarked and
encoded (encoder.RungEncoder; the rungs in parallel threads, as the codec libraries release the GIL) at
the source's own timestamps, with a keyframe exactly at each source
keyframe, so segment N of every rendition starts at the same instant. Source audio is passed through as
it came, released between the rungs' video so that each rendition's tags stay in time order.

stdin is read by a thread into a queue, so the main thread can tell how far it is behind the newest source
frame (its backlog). Backlog alone is not falling behind: the history the server feeds first, and a file
fed as fast as the worker takes it, queue up far ahead of the encoders while they run faster than real
time. So the worker also measures how late it is against the wall clock (RealTimeClock: source time done
vs wall time passed, since it was most ahead or last had nothing waiting), and one that stays more than `max_backlog_ms`
behind on both for SHED_AFTER_S sheds its lowest rung, down to one.

stdout carries only wire.py messages; logs go to stderr (fd 1 is pointed at stderr for everything else, so
a library that prints cannot corrupt the wire). STATS carry frames_in, frames_out per rung, skipped,
media_ms, speed, backlog_ms, late_ms, cpu_s and shed. `speed` is source time done per second of the
interval the worker was busy (not waiting for input): below 1 it cannot keep up with real time; a live
source it keeps up with shows its headroom (e.g. 1.6), a source that sent nothing shows null. Exit codes: 0 at the end of the source (after
flushing every encoder), 2 for a bad job (nothing on stdout), 3 after an ERROR message, whose reason is
- "codec": the source's video codec has no decoder here (a 415 for its ABR URLs);
- "undecodable": no picture from the source's first frames, or a configuration the decoder refuses;
- "input": stdin is not an FLV stream;
- "watermark": the watermark file cannot be read (the message names it);
- "encoder": a rung's encoder refused its settings or failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO

import av
from av.video.reformatter import VideoReformatter

from ..errors import MediaError
from ..log import LogGate, event
from ..log import setup as setup_logging
from ..media.flv_body import audio_frame, video_frame
from ..media.frames import MAX_PICTURE_PIXELS, FrameKind
from ..remux.flv import FlvReader, FlvTag
from . import wire
from .encoder import ENCODERS, SCALE_INTERPOLATION, EncoderError, RungEncoder
from .interleave import Interleaver
from .ladder import Rendition
from .watermark import Watermark, WatermarkError, WatermarkSpec

log = logging.getLogger("mediaserver.transcode.worker")

DECODERS = {"h264": "h264", "hevc": "hevc", "av1": "libdav1d", "vp9": "vp9"}
MAX_FRAMES_WITHOUT_PICTURE = 90
"""Source video frames fed without a single decoded picture before the source is declared undecodable."""
FPS_PROBE_FRAMES = 8
"""Decoded pictures held before the encoders open, to estimate the frame rate from their timestamps."""
SHED_AFTER_S = 3.0
QUEUE_TAGS = 8192
"""Source tags the reader may hold ahead of the encoders (about 100 s of 30 fps video + audio); the pipe
pushes back beyond that."""
EXIT_OK, EXIT_USAGE, EXIT_ERROR = 0, 2, 3
_MS = Fraction(1, 1000)
_COMMON_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
                 Fraction(50), Fraction(60000, 1001), Fraction(60))


class SourceError(Exception):
    """The worker cannot go on: reported as an ERROR message, then exit 3."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Job:
    stream: str
    rungs: tuple[Rendition, ...]
    watermark: WatermarkSpec | None = None
    max_keyframe_interval_ms: int = 10000
    stats_interval_s: float = 1.0
    max_backlog_ms: int = 3000

    @classmethod
    def from_json(cls, text: str) -> Job:
        """Parse the job the server passes on the command line. Raises ValueError saying what is wrong."""
        try:
            value = json.loads(text)
            rungs = tuple(
                Rendition(
                    label=str(r["label"]), width=int(r["width"]), height=int(r["height"]),
                    video_kbps=int(r["video_kbps"]), codec=str(r["codec"]), preset=str(r["preset"]),
                    threads=int(r["threads"]),
                )
                for r in value["rungs"]
            )
            watermark = value.get("watermark")
            job = cls(
                stream=str(value.get("stream", "")), rungs=rungs,
                watermark=WatermarkSpec.from_job(watermark) if watermark else None,
                max_keyframe_interval_ms=int(value.get("max_keyframe_interval_ms", 10000)),
                stats_interval_s=float(value.get("stats_interval_s", 1.0)),
                max_backlog_ms=int(value.get("max_backlog_ms", 3000)),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the job is not valid JSON of the worker's form: {exc!r}") from exc
        if not job.rungs or len(job.rungs) >= wire.AUDIO_TRACK:
            raise ValueError(f"a job needs 1..{wire.AUDIO_TRACK - 1} rungs, not {len(job.rungs)}")
        for rung in job.rungs:
            if rung.codec not in ENCODERS:
                raise ValueError(f"rung {rung.label}: codec {rung.codec!r} is not one of {', '.join(ENCODERS)}")
            if rung.width < 2 or rung.height < 2 or rung.width % 2 or rung.height % 2 or rung.video_kbps <= 0:
                raise ValueError(f"rung {rung.label}: size {rung.width}x{rung.height} must be even and rate positive")
        if job.max_keyframe_interval_ms < 100 or job.stats_interval_s <= 0 or job.max_backlog_ms <= 0:
            raise ValueError("max_keyframe_interval_ms (>= 100), stats_interval_s and max_backlog_ms must be positive")
        return job


# -- stdin ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _End:
    error: str | None = None
    """A MediaError from the FLV reader (garbage input); None at a clean (or truncated) end."""


class SourceReader(threading.Thread):
    """Reads the FLV source from stdin into a queue of tags; notes the newest timestamp queued."""

    def __init__(self, stream: BinaryIO, tags: queue.Queue[FlvTag | _End]) -> None:
        super().__init__(name="source-reader", daemon=True)
        self._stream = stream
        self._tags = tags
        self.newest_ms: int | None = None

    def run(self) -> None:
        reader = FlvReader()
        read = getattr(self._stream, "read1", self._stream.read)
        try:
            while True:
                data = read(1 << 16)
                if not data:
                    break
                for tag in reader.feed(data):
                    if tag.kind != FrameKind.DATA:
                        self.newest_ms = tag.timestamp_ms
                    self._tags.put(tag)
        except MediaError as exc:
            self._tags.put(_End(error=str(exc)))
            return
        except OSError as exc:
            event(log, "worker_stdin_error", logging.WARNING, error=str(exc))
        try:
            reader.feed_eof()
        except MediaError as exc:
            event(log, "worker_source_truncated", logging.WARNING, error=str(exc))
        self._tags.put(_End())


# -- the transcode -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Rung:
    index: int
    rendition: Rendition
    reformatter: Any
    encoder: RungEncoder | None = None
    shed: bool = False


@dataclass(slots=True)
class _Counters:
    frames_in: int = 0
    skipped: int = 0
    first_ms: int | None = None
    done_ms: int | None = None
    cpu_start: float = 0.0
    stats_wall: float = 0.0
    stats_media: int = 0
    idle_s: float = 0.0
    """Time spent waiting for source tags since the last STATS."""
    shed: list[str] = field(default_factory=list)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def estimate_fps(pts_ms: list[int]) -> Fraction:
    """The frame rate from a few pictures' timestamps (ms), snapped to a common rate within 2 %."""
    if len(pts_ms) < 2 or pts_ms[-1] <= pts_ms[0]:
        return Fraction(30)
    fps = Fraction(1000 * (len(pts_ms) - 1), pts_ms[-1] - pts_ms[0])
    nearest = min(_COMMON_RATES, key=lambda rate: abs(fps - rate))
    if abs(fps - nearest) <= nearest * Fraction(2, 100):
        return nearest
    return fps.limit_denominator(1001) if fps <= 240 else Fraction(240)


class Transcoder:
    """Source frames in, wire messages out (collected in `out` for the caller to write)."""

    def __init__(self, job: Job, watermark: Watermark | None) -> None:
        self.job = job
        self.out: list[bytes] = []
        self._watermark = watermark
        self._rungs = [_Rung(i, r, VideoReformatter()) for i, r in enumerate(job.rungs)]
        self._decoder: Any = None
        self._decoder_config: bytes | None = None
        self._decoder_codec = ""
        self._reconfigured = LogGate(10.0)
        """A source that changes its configuration at every keyframe logs it once per 10 s, with a count."""
        self._fed_without_picture = 0
        self._decoded_any = False
        self._source_keyframes: set[int] = set()
        self._probe: list[tuple[Any, bool]] = []
        self._fps: Fraction | None = None
        self._last_pts: int | None = None
        self._interleaver = Interleaver(len(self._rungs))
        self._pool = ThreadPoolExecutor(max_workers=len(self._rungs), thread_name_prefix="rung")
        self.counters = _Counters(cpu_start=_cpu_seconds(), stats_wall=time.monotonic())

    # -- input

    def feed(self, tag: FlvTag) -> None:
        if tag.kind == FrameKind.AUDIO:
            self._interleaver.source_time(tag.timestamp_ms, video=False)
            self._feed_audio(tag)
        elif tag.kind == FrameKind.VIDEO:
            self._interleaver.source_time(tag.timestamp_ms, video=True)
            self._feed_video(tag)
        self.out.extend(self._interleaver.release())

    def _feed_audio(self, tag: FlvTag) -> None:
        try:
            frame = audio_frame(tag.body, tag.timestamp_ms)
        except MediaError:
            self.counters.skipped += 1
            return
        if frame is not None:
            self._interleaver.audio(tag.timestamp_ms, wire.encode(wire.TAG, wire.AUDIO_TRACK, frame.tag))

    def _feed_video(self, tag: FlvTag) -> None:
        c = self.counters
        try:
            frame = video_frame(tag.body, tag.timestamp_ms)
        except MediaError:
            c.skipped += 1
            return
        if frame is None or frame.is_end:
            return
        if frame.is_config:
            self._configure(frame.codec, bytes(frame.payload))
            return
        c.frames_in += 1
        if self._decoder is None:
            if frame.codec not in DECODERS:
                raise SourceError("codec", f"the source's video codec {frame.codec} cannot be decoded; "
                                           f"publish {', '.join(DECODERS)} for ABR renditions")
            if frame.codec == "vp9":  # VP9 needs no configuration record to decode
                self._configure("vp9", b"")
            else:
                c.skipped += 1
                self._fed_without_picture += 1
                if self._fed_without_picture > MAX_FRAMES_WITHOUT_PICTURE:
                    raise SourceError("undecodable", f"{frame.codec} video came without a sequence header; "
                                                     "the publisher must send one before its frames")
                return
        pts = frame.pts_ms
        if c.first_ms is None:
            c.first_ms = pts
        if frame.keyframe:
            self._source_keyframes.add(pts)
        # A packet in FFmpeg's own memory, not one over the Python bytes: with frame threads, a decoder thread
        # drops its packet reference after decoding, and dropping a Python-backed one needs the GIL, which the
        # main thread holds while it frees the decoder (a deadlock at the end of a failed source).
        packet = av.Packet(len(frame.payload))
        memoryview(packet)[:] = frame.payload
        packet.pts = pts
        packet.dts = frame.dts_ms
        packet.time_base = _MS
        c.done_ms = frame.dts_ms
        self._decode(packet)

    def _configure(self, codec: str, config: bytes) -> None:
        if self._decoder is not None and config == self._decoder_config and codec == self._decoder_codec:
            return  # the same configuration again (a reconnecting publisher): keep decoding
        name = DECODERS.get(codec)
        if name is None:
            raise SourceError("codec", f"the source's video codec {codec} cannot be decoded; "
                                       f"publish {', '.join(DECODERS)} for ABR renditions")
        if self._decoder is not None:
            self._decode(None)  # what the old configuration still holds
            count = self._reconfigured.should_log("source", time.monotonic())
            if count:
                event(log, "worker_source_reconfigured", stream=self.job.stream, codec=codec, times=count)
        ctx = av.CodecContext.create(name, "r")
        if config and codec != "vp9":
            ctx.extradata = config
        ctx.thread_type = "AUTO"
        try:
            ctx.open()
        except av.FFmpegError as exc:
            raise SourceError("undecodable", f"the source's {codec} configuration is refused by the decoder: {exc}") from exc
        self._decoder = ctx
        self._decoder_config = config
        self._decoder_codec = codec
        self._fed_without_picture = 0

    def _decode(self, packet: Any) -> None:
        try:
            pictures = self._decoder.decode(packet)
        except (av.FFmpegError, ValueError):
            self.counters.skipped += 1
            pictures = []
        if packet is not None:
            if pictures:
                self._decoded_any = True
                self._fed_without_picture = 0
            elif not self._decoded_any:
                self._fed_without_picture += 1
                if self._fed_without_picture > MAX_FRAMES_WITHOUT_PICTURE:
                    raise SourceError("undecodable", f"no picture decoded from the first {MAX_FRAMES_WITHOUT_PICTURE} "
                                                     f"{self._decoder_codec} frames of the source")
        for picture in pictures:
            if picture.width * picture.height > MAX_PICTURE_PIXELS:  # frames that size, queued, exhaust memory
                raise SourceError("undecodable", f"the source's pictures are {picture.width}x{picture.height}, "
                                                 f"larger than any codec level allows ({MAX_PICTURE_PIXELS} pixels)")
            pts = picture.pts
            if pts is None or (self._last_pts is not None and pts <= self._last_pts):
                self.counters.skipped += 1  # out of order after a glitch: an encoder needs rising times
                continue
            self._last_pts = pts
            keyframe = pts in self._source_keyframes
            if keyframe:
                self._source_keyframes = {k for k in self._source_keyframes if k > pts}
            self._picture(picture, keyframe)

    # -- output

    def _picture(self, picture: Any, keyframe: bool) -> None:
        if self._fps is None:
            self._probe.append((picture, keyframe))
            if len(self._probe) < FPS_PROBE_FRAMES:
                return
            self._open_encoders()
            return
        self._encode(picture, keyframe)

    def _open_encoders(self) -> None:
        held, self._probe = self._probe, []
        self._fps = estimate_fps([p.pts for p, _ in held])
        for rung in self._rungs:
            try:
                rung.encoder = RungEncoder(rung.rendition, self._fps, self.job.max_keyframe_interval_ms)
            except (EncoderError, MediaError) as exc:
                raise SourceError("encoder", str(exc)) from exc
        event(log, "worker_encoders_open", stream=self.job.stream, fps=float(self._fps), rungs=len(self._rungs))
        for picture, keyframe in held:
            self._encode(picture, keyframe)

    def _encode(self, picture: Any, keyframe: bool) -> None:
        live = [r for r in self._rungs if not r.shed and r.encoder is not None]
        if len(live) > 1:
            # The codec libraries release the GIL: the rungs scale and encode in parallel, and each
            # picture is finished by all of them before the next (so the rungs stay in step).
            futures = [self._pool.submit(self._encode_rung, rung, picture, keyframe) for rung in live]
            results = [f.result() for f in futures]
        else:
            results = [self._encode_rung(rung, picture, keyframe) for rung in live]
        interleaver = self._interleaver
        for rung, tags in zip(live, results):
            for ms, tag in tags:
                interleaver.video(rung.index, ms, wire.encode(wire.TAG, rung.index, tag))

    def _encode_rung(self, rung: _Rung, picture: Any, keyframe: bool) -> list[tuple[int, bytes]]:
        r = rung.rendition
        scaled = rung.reformatter.reformat(
            picture, r.width, r.height, "yuv420p", interpolation=SCALE_INTERPOLATION, threads=1
        )
        if self._watermark is not None:
            if scaled is picture:  # a source already at the rung's size: mark a copy, not the shared picture
                scaled = av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv420p")
            self._watermark.mark(scaled)
        scaled.pts = picture.pts
        try:
            return rung.encoder.encode(scaled, keyframe)  # type: ignore[union-attr]
        except (av.FFmpegError, MediaError) as exc:
            raise SourceError("encoder", f"rung {r.label}: the {r.codec} encoder failed: {exc}") from exc

    def finish(self) -> None:
        """The source ended: decode and encode what remains, then release all audio."""
        if self._decoder is not None:
            self._decode(None)
        if self._fps is None and self._probe:
            self._open_encoders()
        for rung in self._rungs:
            if rung.encoder is not None and not rung.shed:
                for ms, tag in rung.encoder.encode(None):
                    self._interleaver.video(rung.index, ms, wire.encode(wire.TAG, rung.index, tag))
        self.out.extend(self._interleaver.release(final=True))

    # -- load

    def shed_lowest(self) -> str | None:
        """Stop encoding the lowest live rung (keeping at least one); its label, or None."""
        live = [r for r in self._rungs if not r.shed]
        if len(live) <= 1:
            return None
        lowest = min(live, key=lambda r: (r.rendition.height, r.rendition.video_kbps))
        lowest.shed = True
        self._interleaver.drop(lowest.index)
        self.counters.shed.append(lowest.rendition.label)
        return lowest.rendition.label

    def stats(self, backlog_ms: int) -> dict[str, Any]:
        c = self.counters
        now = time.monotonic()
        media = (c.done_ms - c.first_ms) if c.done_ms is not None and c.first_ms is not None else 0
        wall = now - c.stats_wall
        busy = wall - c.idle_s
        done_s = (media - c.stats_media) / 1000.0
        # Media time done per second of work: what the worker could sustain. Waiting for a live source is
        # not slowness, and a source that sent nothing leaves nothing to judge (None).
        speed = None if done_s <= 0 and busy < 0.5 * wall else round(done_s / max(busy, 1e-3), 3)
        c.stats_wall, c.stats_media, c.idle_s = now, media, 0.0
        return {
            "frames_in": c.frames_in,
            "frames_out": {r.rendition.label: (r.encoder.frames_out if r.encoder else 0) for r in self._rungs},
            "skipped": c.skipped,
            "media_ms": media,
            "speed": speed,
            "backlog_ms": backlog_ms,
            "cpu_s": round(_cpu_seconds() - c.cpu_start, 3),
            "shed": list(c.shed),
        }


# -- process main --------------------------------------------------------------------------------------


class RealTimeClock:
    """How far processing is behind real time: wall time passed minus source time done, counted from the
    point where processing was furthest ahead (a burst of history moves that point, so it never counts)."""

    def __init__(self) -> None:
        self._lead: float | None = None  # min over the past of (wall ms - source ms)

    def late_ms(self, source_ms: int, now: float) -> int:
        offset = now * 1000.0 - source_ms
        if self._lead is None or offset < self._lead:
            self._lead = offset
        return int(offset - self._lead)

    def caught_up(self, source_ms: int, now: float) -> None:
        """Nothing is waiting: processing is on time, whatever gaps the source had (a stall, a reconnect)."""
        self._lead = now * 1000.0 - source_ms


class Worker:
    """The main loop: queue in, transcoder, messages out; stats and shedding on the side."""

    def __init__(self, job: Job, source: BinaryIO, sink: BinaryIO) -> None:
        self.job = job
        self._sink = sink
        self._tags: queue.Queue[FlvTag | _End] = queue.Queue(maxsize=QUEUE_TAGS)
        self._reader = SourceReader(source, self._tags)
        self._clock = RealTimeClock()
        self._late_ms = 0
        self._behind_since: float | None = None

    def run(self) -> int:
        job = self.job
        try:
            watermark = Watermark.load(job.watermark) if job.watermark else None
            transcoder = Transcoder(job, watermark)
        except WatermarkError as exc:
            return self._fail(SourceError("watermark", str(exc)))
        self._reader.start()
        next_stats = time.monotonic() + job.stats_interval_s
        current_ms: int | None = None
        try:
            while True:
                try:
                    item = self._tags.get_nowait()
                except queue.Empty:
                    waited = time.monotonic()
                    try:
                        item = self._tags.get(timeout=max(0.0, next_stats - waited))
                    except queue.Empty:
                        item = None
                    transcoder.counters.idle_s += time.monotonic() - waited
                if isinstance(item, _End):
                    if item.error is not None:
                        raise SourceError("input", f"the source is not a valid FLV stream: {item.error}")
                    transcoder.finish()
                    self._write(transcoder.out)
                    self._write([wire.encode_json(wire.STATS, transcoder.stats(0))])
                    return EXIT_OK
                if item is not None:
                    if item.kind != FrameKind.DATA:
                        current_ms = item.timestamp_ms
                        self._late_ms = self._clock.late_ms(current_ms, time.monotonic())
                    transcoder.feed(item)
                    if current_ms is not None and self._tags.empty():
                        self._clock.caught_up(current_ms, time.monotonic())
                        self._late_ms = 0
                if transcoder.out and (len(transcoder.out) >= 64 or self._tags.empty()):
                    self._write(transcoder.out)
                now = time.monotonic()
                if now >= next_stats:
                    backlog = self._backlog(current_ms)
                    self._judge(transcoder, backlog, now)
                    self._write([wire.encode_json(wire.STATS, {**transcoder.stats(backlog), "late_ms": self._late_ms})])
                    next_stats = now + job.stats_interval_s
        except SourceError as exc:
            self._write(transcoder.out)
            return self._fail(exc)

    def _backlog(self, current_ms: int | None) -> int:
        newest = self._reader.newest_ms
        if newest is None or current_ms is None:
            return 0
        return max(0, newest - current_ms)

    def _judge(self, transcoder: Transcoder, backlog: int, now: float) -> None:
        """Shed the lowest rung after SHED_AFTER_S over the backlog limit and as late against real time."""
        if min(backlog, self._late_ms) <= self.job.max_backlog_ms:
            self._behind_since = None
            return
        if self._behind_since is None:
            self._behind_since = now
        elif now - self._behind_since >= SHED_AFTER_S:
            label = transcoder.shed_lowest()
            if label is not None:
                event(log, "worker_rung_shed", logging.WARNING, stream=self.job.stream, rung=label, backlog_ms=backlog)
            self._behind_since = now

    def _write(self, chunks: list[bytes]) -> None:
        if not chunks:
            return
        self._sink.write(b"".join(chunks))
        self._sink.flush()
        chunks.clear()

    def _fail(self, exc: SourceError) -> int:
        event(log, "worker_error", logging.ERROR, stream=self.job.stream, reason=exc.reason, error=str(exc))
        self._write([wire.encode_json(wire.ERROR, {"reason": exc.reason, "message": str(exc)})])
        return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mediaserver.transcode.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, help="the job as JSON (stream, rungs, watermark, limits)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"), help="as the server's [log] format")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        job = Job.from_json(args.job)
    except (ValueError, MediaError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # The wire gets its own descriptor; fd 1 then points at stderr, so nothing else can write into the wire.
    sink = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
    try:
        return Worker(job, sys.stdin.buffer, sink).run()
    except BrokenPipeError:
        return EXIT_OK  # the server stopped listening: nothing left to do
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the stdin reader thread may still be blocked in a read
