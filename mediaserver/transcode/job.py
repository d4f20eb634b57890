"""One source stream's transcode: its worker process, the feed from the hub, the renditions it publishes.

The feed is a hub Sink on the source stream: every frame's FLV tag is written to the worker's stdin as it
arrives (first the FLV header and the stream's kept history, so renditions have segments at once). The
worker's stdout is read as `wire` messages: each rung's tags are published into the hub as the relay
stream APP/STREAM@LABEL, with the source's own timestamps (the hub never rebases them: the rendition's
segments start at the source's instants), and the source's audio goes into every rendition.

A worker that exits unexpectedly, writes anything but messages, falls too far behind its stdin, or stays
slower than real time with one rung left is restarted after a capped backoff. The new worker is fed from
the source's newest keyframe that is newer than what the renditions already carry (never older: their
timestamps must not go back), and the renditions' sinks are told of the discontinuity. A worker's ERROR
(a source it cannot decode) stops the job; its reason is kept by the pool.

Stopping: stdin is closed (the worker flushes and exits), then SIGTERM after a deadline, SIGKILL after
another; the process is always waited for, so none is left a zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..errors import MediaError
from ..hub.registry import PublishRefused, StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..media import amf0
from ..media.frames import Frame, FrameKind
from ..remux.flv import flv_header
from . import wire
from .ladder import Rendition

log = logging.getLogger(__name__)

STDIN_BOUND_BYTES = 32 * 1024 * 1024
"""Bytes waiting for the worker's stdin beyond which it counts as stuck and is restarted: far more than
the kept history a fast start writes at once, ~1.5 min of a 3 Mb/s source."""
READ_SIZE = 256 * 1024
BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Waits before restarting a worker that failed 1, 2, 3... times in a row; the last one repeats."""
STABLE_RUN_S = 30.0
"""A worker that ran this long before failing starts the backoff from the beginning again."""
STOP_DEADLINE_S = 2.0
"""After closing stdin, how long a worker gets to exit before SIGTERM (and as long again before SIGKILL)."""
MAX_FAILURES = 8
"""Worker failures in a row (none running STABLE_RUN_S) after which the job gives up."""
SLOW_STATS = 5
"""STATS in a row with speed < 1 and one rung left before the worker is restarted."""
MAX_BACKLOG_MS = 3000
STATS_INTERVAL_S = 1.0
SKIP_LOG_INTERVAL_S = 30.0


class JobState(str, Enum):
    STARTING = "starting"  # the worker runs; no rendition has a keyframe yet
    RUNNING = "running"
    RESTARTING = "restarting"  # waiting out the backoff, or the new worker's first keyframe
    STOPPED = "stopped"


@dataclass(slots=True)
class RenditionOut:
    """One rung of the job and the stream it publishes."""

    rung: Rendition
    key: StreamKey
    stream: Stream | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    shed: bool = False
    ended: bool = False
    last_video_ms: int | None = None
    last_audio_ms: int | None = None
    resumed: bool = True
    """False after a restart until the new worker's first frame (then the sinks hear of the gap)."""
    frames_out: int = 0
    bytes_since_stats: int = 0
    kbps: float | None = None


class RenditionPublisher:
    """The hub's Publisher of one rendition stream: closed by a kick (the admin API, or the job itself)."""

    def __init__(self, job: TranscodeJob, out: RenditionOut) -> None:
        self.job = job
        self.out = out
        self.peer = f"transcoder:{job.source}"

    def close(self, reason: str) -> None:
        self.job.rendition_closed(self.out, reason)


class SourceFeed:
    """The hub Sink on the source stream: hands every frame to the job's current worker."""

    def __init__(self, job: TranscodeJob) -> None:
        self.job = job

    def on_frame(self, frame: Frame) -> None:
        self.job.feed(frame)

    def on_discontinuity(self) -> None:
        pass  # the hub's timeline stays continuous over a publisher's reconnect; new configs come inline

    def on_end(self) -> None:
        self.job.source_ended()


@dataclass(slots=True)
class _Life:
    """One worker process and what became of it."""

    proc: asyncio.subprocess.Process
    started: float
    outcome: str = "exited"
    """exited, error, garbage, far_behind, too_slow, killed (by a test or an operator), stopped."""
    cpu_last: float = 0.0


class TranscodeJob:
    def __init__(
        self,
        source: Stream,
        rungs: Sequence[Rendition],
        registry: StreamRegistry,
        command: Sequence[str],
        job_options: dict[str, Any],
        *,
        on_finished: Callable[[TranscodeJob], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source.key
        self.source_stream = source
        self.registry = registry
        self.command = list(command)
        self.options = job_options
        self.on_finished = on_finished
        self.clock = clock
        self.outs = [RenditionOut(r, StreamKey(source.key.app, r.stream_name(source.key.name))) for r in rungs]
        self.state = JobState.STARTING
        self.started_at = time.time()
        self.last_used = clock()
        self.waiters = 0
        """Requests waiting for this job's renditions to be ready (they count as use)."""
        self.restarts = 0
        self.pid: int | None = None
        self.speed: float | None = None
        self.backlog_ms: float | None = None
        self.cpu_percent: float | None = None
        self.cpu_seconds = 0.0
        self.error: tuple[str, str] | None = None
        """(reason, message) from the worker's ERROR, or of a worker that keeps failing."""
        self.error_status = 415
        self.stop_reason = ""
        self.skipped = 0
        self.cpu_counted: Callable[[float], None] = lambda s: None
        self.restart_counted: Callable[[], None] = lambda: None
        self._tracks: list[RenditionOut] = []
        self._stdin: asyncio.StreamWriter | None = None
        self._resume_after: int | None = None
        self._life: _Life | None = None
        self._stop = asyncio.Event()
        self._feed = SourceFeed(self)
        self._fed = False
        self._task: asyncio.Task[None] | None = None
        self._audio_config: bytes | None = None
        self._stats_at: float | None = None
        self._slow = 0
        self._skip_log = LogGate(SKIP_LOG_INTERVAL_S)
        self.done = asyncio.Event()

    # ----- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"transcode {self.source}")

    @property
    def stopped(self) -> bool:
        return self.state is JobState.STOPPED or self._stop.is_set()

    def live_outs(self) -> list[RenditionOut]:
        return [o for o in self.outs if not o.shed and not o.ended]

    def stop(self, reason: str) -> None:
        """Stop the job (not waiting): the worker is told to finish and the rendition streams end."""
        if self._stop.is_set():
            return
        self.stop_reason = reason
        self._stop.set()
        self._close_stdin()
        self._end_renditions(reason)

    async def wait_stopped(self) -> None:
        await self.done.wait()

    async def _supervise(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                life = await self._spawn()
                if life is None:
                    outcome, ran = "spawn_failed", 0.0
                else:
                    await self._run(life)
                    outcome, ran = life.outcome, self.clock() - life.started
                if self._stop.is_set() or outcome == "error":
                    break
                if not self.live_outs():
                    self.stop("all_rungs_shed")
                    break
                failures = 1 if ran >= STABLE_RUN_S else failures + 1
                if failures > MAX_FAILURES:
                    self.error = ("worker_failing", f"the transcoder worker failed {MAX_FAILURES} times in a row "
                                  f"(last: {outcome}); see the server's log")
                    self.error_status = 503
                    event(log, "transcode_worker_failing", logging.ERROR, stream=str(self.source), outcome=outcome,
                          failures=MAX_FAILURES, action="transcode stopped",
                          hint="the worker's traceback is in this log")
                    self.stop("worker_failing")
                    break
                delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                self.restarts += 1
                self.restart_counted()
                self.state = JobState.RESTARTING
                event(log, "transcode_worker_restart", logging.WARNING, stream=str(self.source), outcome=outcome,
                      ran_s=round(ran, 1), restarts=self.restarts, in_s=delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
        except Exception:  # a bug here must not leave a worker running or a job half stopped
            log.exception("transcode job of %s failed", self.source)
            self.stop("transcode_failed")
        finally:
            life = self._life
            if life is not None and life.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    life.proc.kill()
                await asyncio.shield(life.proc.wait())
            self.state = JobState.STOPPED
            self.source_stream.remove_sink(self._feed)
            self._end_renditions(self.stop_reason or "transcode_stopped")
            self.done.set()
            self.on_finished(self)

    async def _spawn(self) -> _Life | None:
        tracks = self.live_outs()
        job = {**self.options, "stream": str(self.source), "rungs": [o.rung.to_job() for o in tracks]}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, "--job", json.dumps(job, separators=(",", ":")),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as err:
            event(log, "transcode_worker_spawn_failed", logging.ERROR, stream=str(self.source), error=str(err),
                  hint="check that the server's Python can run `python -m mediaserver.transcode.worker`")
            return None
        life = _Life(proc, self.clock())
        self._life = life
        self.pid = proc.pid
        self._tracks = tracks
        self._stats_at = None
        self._slow = 0
        if self._stop.is_set():  # stopped while it was starting
            proc.stdin.close()
            return life
        if self.source_stream.ended:
            self.stop("source_ended")
            proc.stdin.close()
            return life
        self._stdin = proc.stdin
        first = not self._fed
        self._write(flv_header(self.source_stream.info.audio_config is not None, True))
        if first:
            self._fed = True
            history = self.source_stream.history()
            self._write(b"".join(f.tag for f in history))
            self.source_stream.add_sink(self._feed)  # no frame between the history and the feed
        else:
            for out in tracks:
                out.resumed = False
            self._resume(self.source_stream.history())
        event(log, "transcode_worker_started", stream=str(self.source), pid=proc.pid,
              rungs=",".join(o.rung.label for o in tracks), restart=not first)
        return life

    def _resume(self, history: list[Frame]) -> None:
        """A restarted worker starts at the newest kept keyframe newer than what the renditions carry, or
        waits for the next one the source sends."""
        newest = max((o.last_video_ms for o in self._tracks if o.last_video_ms is not None), default=-1)
        start = None
        for i, frame in enumerate(history):
            if frame.kind == FrameKind.VIDEO and frame.keyframe and not frame.is_config and frame.dts_ms > newest:
                start = i
        self._resume_after = newest
        if start is not None:
            self._resume_after = None
            self._write(self._configs() + b"".join(f.tag for f in history[start:] if f.kind != FrameKind.DATA))

    def _configs(self) -> bytes:
        info = self.source_stream.info
        return b"".join(f.tag for f in (info.video_config, info.audio_config) if f is not None)

    async def _run(self, life: _Life) -> None:
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(life))
        stop = loop.create_task(self._stop.wait())
        try:
            await asyncio.wait((reader, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not reader.done() and life.outcome == "exited":
            life.outcome = "stopped"
        self._close_stdin()
        code = await self._end_process(life, reader)
        if life.outcome == "exited" and not self._stop.is_set():
            event(log, "transcode_worker_exited", logging.WARNING, stream=str(self.source), pid=life.proc.pid,
                  code=code, hint="a crash: see the worker's traceback in this log")

    async def _end_process(self, life: _Life, reader: asyncio.Task[None]) -> int | None:
        """Wait for the worker to exit and its stdout to be drained; SIGTERM, then SIGKILL, when it takes
        longer than the deadline. Never leaves a zombie."""
        proc = life.proc

        async def finished() -> int:
            await reader
            return await proc.wait()

        done = asyncio.get_running_loop().create_task(finished())
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                async with asyncio.timeout(STOP_DEADLINE_S):
                    return await asyncio.shield(done)
            except TimeoutError:
                continue
        done.cancel()
        reader.cancel()  # a descendant holds its stdout open; the worker itself is dead
        event(log, "transcode_worker_unresponsive", logging.ERROR, stream=str(self.source), pid=proc.pid)
        return proc.returncode

    def _kill(self, life: _Life, outcome: str) -> None:
        if life.outcome == "exited":
            life.outcome = outcome
        with contextlib.suppress(ProcessLookupError):
            life.proc.kill()

    # ----- feeding the worker ------------------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        if self._stdin is None or frame.kind == FrameKind.DATA:
            return
        if self._resume_after is not None:
            if not (frame.kind == FrameKind.VIDEO and frame.keyframe and not frame.is_config
                    and frame.dts_ms > self._resume_after):
                return
            self._resume_after = None
            self._write(self._configs())
        self._write(frame.tag)

    def _write(self, data: bytes) -> None:
        stdin = self._stdin
        if stdin is None or not data:
            return
        transport = stdin.transport
        if transport.is_closing():
            return
        stdin.write(data)
        life = self._life
        if transport.get_write_buffer_size() > STDIN_BOUND_BYTES and life is not None:
            event(log, "transcode_worker_behind", logging.WARNING, stream=str(self.source), pid=life.proc.pid,
                  buffered=transport.get_write_buffer_size(), action="restarted")
            self._stdin = None
            transport.abort()
            self._kill(life, "far_behind")

    def _close_stdin(self) -> None:
        stdin, self._stdin = self._stdin, None
        if stdin is not None and not stdin.transport.is_closing():
            stdin.close()

    def source_ended(self) -> None:
        self.stop("source_ended")

    # ----- reading the worker ------------------------------------------------------------------------

    async def _read(self, life: _Life) -> None:
        """Every message until EOF (always drained: a pipe left unread would keep the process waiting)."""
        stdout = life.proc.stdout
        assert stdout is not None
        reader = wire.MessageReader()
        broken = False
        while data := await stdout.read(READ_SIZE):
            if broken or self._stop.is_set() or life.outcome != "exited":
                continue
            try:
                touched = self._handle(reader.feed(data), life)
            except (wire.WireError, ValueError) as err:
                broken = True
                event(log, "transcode_worker_garbage", logging.WARNING, stream=str(self.source), pid=life.proc.pid,
                      error=str(err)[:200], action="restarted")
                self._kill(life, "garbage")
                continue
            for stream in touched:
                stream.flush_sinks()

    def _handle(self, messages: list[wire.Message], life: _Life) -> set[Stream]:
        touched: set[Stream] = set()
        now = self.clock()
        for msg in messages:
            if msg.kind == wire.TAG:
                self._publish_tag(msg.track, msg.payload, now, touched)
            elif msg.kind == wire.STATS:
                self._stats(msg.json(), life, now)
            elif msg.kind == wire.ERROR:
                value = msg.json()
                reason = str(value.get("reason") or "worker_error")[:64]
                message = str(value.get("message") or "the transcoder worker gave up")[:300]
                self.error = (reason, message)
                life.outcome = "error"
                event(log, "transcode_worker_error", logging.WARNING, stream=str(self.source), reason=reason,
                      message=message, action="transcode stopped; the source keeps playing")
                self.stop(f"worker_error_{reason}")
                break
            if life.outcome != "exited":
                break
        return touched

    def _publish_tag(self, track: int, tag: bytes, now: float, touched: set[Stream]) -> None:
        if len(tag) < 15:
            raise wire.WireError(f"a TAG message of {len(tag)} bytes is not an FLV tag")
        kind = tag[0]
        size = int.from_bytes(tag[1:4], "big")
        if 11 + size + 4 != len(tag):
            raise wire.WireError(f"a TAG message of {len(tag)} bytes holds an FLV tag of {size} body bytes")
        ts = (tag[7] << 24) | (tag[4] << 16) | (tag[5] << 8) | tag[6]
        body = tag[11 : 11 + size]
        if kind == FrameKind.AUDIO and track == wire.AUDIO_TRACK:
            if len(body) >= 2 and _is_config(kind, body):
                self._audio_config = body  # given to each rendition as its stream is taken
            for out in self._tracks:
                if out.stream is not None:
                    self._publish(out, kind, ts, body, now, touched)
            return
        if kind != FrameKind.VIDEO or track >= len(self._tracks):
            raise wire.WireError(f"a TAG message for track {track} (type {kind}) that this job does not have")
        out = self._tracks[track]
        if out.shed or out.ended:
            return
        if out.stream is None and not self._claim(out, now):
            return
        self._publish(out, kind, ts, body, now, touched)

    def _publish(self, out: RenditionOut, kind: int, ts: int, body: bytes, now: float, touched: set[Stream]) -> None:
        stream = out.stream
        if stream is None:
            return
        if len(body) >= 2 and not _is_config(kind, body):
            last = out.last_video_ms if kind == FrameKind.VIDEO else out.last_audio_ms
            if last is not None and ts <= last:
                return  # a restarted worker's frame the rendition already has
        if not out.resumed:
            out.resumed = True
            stream.discontinuity()
        try:
            if kind == FrameKind.VIDEO:
                frame = stream.publish_video(ts, body, now)
            else:
                frame = stream.publish_audio(ts, body, now)
        except MediaError as err:
            self.skipped += 1
            count = self._skip_log.should_log(out.key, now)
            if count:
                event(log, "transcode_frame_skipped", logging.WARNING, stream=str(out.key), error=str(err)[:200],
                      skipped=count)
            return
        touched.add(stream)
        if frame is None or frame.is_config:
            return
        out.frames_out += 1
        out.bytes_since_stats += len(body)
        if kind == FrameKind.VIDEO:
            out.last_video_ms = ts
            if frame.keyframe and not out.ready.is_set():
                out.ready.set()
                if self.state is not JobState.STOPPED and all(o.ready.is_set() for o in self.live_outs()):
                    self.state = JobState.RUNNING
            elif frame.keyframe and self.state is JobState.RESTARTING:
                self.state = JobState.RUNNING
        else:
            out.last_audio_ms = ts

    def _claim(self, out: RenditionOut, now: float) -> bool:
        """The rendition's stream, taken at its first video tag; its metadata and the source's audio
        config go first."""
        try:
            stream = self.registry.claim_publisher(out.key, RenditionPublisher(self, out))
        except PublishRefused as err:
            event(log, "rendition_refused_locally", logging.WARNING, stream=str(out.key), reason=str(err))
            out.ended = True
            return False
        out.stream = stream
        stream.publish_metadata(*self._metadata(out), now)
        if self._audio_config is not None:
            stream.publish_audio(0, self._audio_config, now)
        return True

    def _metadata(self, out: RenditionOut) -> tuple[bytes, dict[str, Any]]:
        rung = out.rung
        source = self.source_stream.info.metadata_values
        values: dict[str, Any] = {
            "width": float(rung.width), "height": float(rung.height), "videodatarate": float(rung.video_kbps),
            "encoder": f"mediaserver transcoder ({rung.codec} {rung.preset})",
        }
        for key in ("framerate", "audiodatarate", "audiosamplerate", "audiosamplesize", "stereo", "audiocodecid"):
            value = source.get(key)
            if isinstance(value, (int, float, bool)):
                values[key] = value
        return amf0.encode("onMetaData", amf0.EcmaArray(values)), values

    def _stats(self, value: dict[str, Any], life: _Life, now: float) -> None:
        speed = _number(value.get("speed"))
        self.speed = speed
        self.backlog_ms = _number(value.get("backlog_ms"))
        cpu = _number(value.get("cpu_s"))
        if cpu is not None:
            delta = max(0.0, cpu - life.cpu_last)
            life.cpu_last = cpu
            self.cpu_seconds += delta
            self.cpu_counted(delta)
            if self._stats_at is not None and now > self._stats_at:
                span = now - self._stats_at
                self.cpu_percent = round(100.0 * delta / span, 1)
                for out in self._tracks:
                    out.kbps = round(out.bytes_since_stats * 8 / 1000 / span, 1)
        for out in self._tracks:
            out.bytes_since_stats = 0
        self._stats_at = now
        shed = value.get("shed")
        if isinstance(shed, list):
            for out in self._tracks:
                if out.rung.label in shed and not out.shed:
                    self._shed(out, speed)
        if speed is not None and speed < 1.0 and len(self.live_outs()) == 1:
            self._slow += 1
            if self._slow >= SLOW_STATS:
                event(log, "transcode_worker_slow", logging.WARNING, stream=str(self.source), speed=speed,
                      rungs=self.live_outs()[0].rung.label, action="restarted")
                self._kill(life, "too_slow")
        else:
            self._slow = 0

    def _shed(self, out: RenditionOut, speed: float | None) -> None:
        out.shed = True
        event(log, "transcode_rung_shed", logging.WARNING, stream=str(self.source), rung=out.rung.label, speed=speed,
              left=",".join(o.rung.label for o in self.live_outs()) or "none",
              hint="the node cannot encode the whole ladder in real time: lower abr.max_jobs or the ladder")
        self._end_rendition(out, "rung_shed")
        if not self.live_outs():
            self.stop("all_rungs_shed")

    # ----- the rendition streams -----------------------------------------------------------------------

    def rendition_closed(self, out: RenditionOut, reason: str) -> None:
        """The hub closed a rendition's publisher (an operator's kick, or our own end of it)."""
        if out.ended:
            return
        out.ended = True
        out.stream = None
        event(log, "rendition_ended", stream=str(out.key), reason=reason)
        if not self.live_outs():
            self.stop(reason)

    def _end_rendition(self, out: RenditionOut, reason: str) -> None:
        if out.ended:
            return
        out.ended = True
        if out.stream is not None:
            out.stream = None
            self.registry.kick(out.key, reason)

    def _end_renditions(self, reason: str) -> None:
        for out in self.outs:
            self._end_rendition(out, reason)

    # ----- what is shown ---------------------------------------------------------------------------------

    def in_use(self, viewers: Callable[[StreamKey], int]) -> bool:
        if self.waiters:
            return True
        for out in self.outs:
            stream = out.stream
            if stream is not None and (stream.subscribers or stream.sinks):
                return True
            if viewers(out.key):
                return True
        return False

    def snapshot(self, viewers: Callable[[StreamKey], int]) -> dict[str, Any]:
        renditions = []
        for out in self.outs:
            stream = out.stream
            rung = out.rung
            renditions.append({
                "label": rung.label, "stream": str(out.key), "width": rung.width, "height": rung.height,
                "codec": rung.codec, "video_kbps": rung.video_kbps, "kbps": out.kbps,
                "ready": out.ready.is_set() and stream is not None, "shed": out.shed,
                "viewers": (len(stream.subscribers) if stream is not None else 0) + viewers(out.key),
                "packagers": len(stream.sinks) if stream is not None else 0,
            })
        return {
            "source": str(self.source), "pid": self.pid if not self.stopped else None, "state": self.state.value,
            "renditions": renditions, "cpu_percent": self.cpu_percent, "cpu_seconds": round(self.cpu_seconds, 3),
            "speed": self.speed, "backlog_ms": self.backlog_ms, "restarts": self.restarts,
            "shed": [o.rung.label for o in self.outs if o.shed], "started_at": self.started_at,
            "skipped": self.skipped, "error": ({"reason": self.error[0], "message": self.error[1]} if self.error else None),
        }


def _is_config(kind: int, body: bytes) -> bool:
    """A sequence header (legacy or Enhanced FLV); `body` has at least 2 bytes."""
    if kind == FrameKind.VIDEO:
        if body[0] & 0x80:
            return body[0] & 0x0F == 0
        return body[0] & 0x0F in (7, 12) and body[1] == 0
    if body[0] >> 4 == 9:
        return body[0] & 0x0F == 0
    return body[0] >> 4 == 10 and body[1] == 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def worker_command() -> list[str]:
    """How the pool starts a worker: this interpreter, the worker module."""
    return [sys.executable, "-m", "mediaserver.transcode.worker"]


def cpu_count() -> int:
    return os.cpu_count() or 1
