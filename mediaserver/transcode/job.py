"""One source stream's transcode: its worker process, the feed from the hub, the worker's messages.

The feed is a hub Sink on the source stream: every frame's FLV tag is written to the worker's stdin as it
arrives (first the FLV header and the stream's kept history, so renditions have segments at once). The
worker's stdout is read as `wire` messages: TAGs go to the job's `Renditions` (renditions.py), which
publishes them as the relay streams APP/STREAM@LABEL at the source's own timestamps; STATS give the CPU,
the speed and the rungs the worker shed; an ERROR stops the job.

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
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from ..media.frames import Frame, FrameKind
from ..remux.flv import flv_header
from . import wire
from .ladder import Rendition
from .renditions import RenditionOut, Renditions

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


class JobState(str, Enum):
    STARTING = "starting"  # the worker runs; no rendition has a keyframe yet
    RUNNING = "running"
    RESTARTING = "restarting"  # waiting out the backoff, or the new worker's first keyframe
    STOPPED = "stopped"


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
        self.renditions = Renditions(registry, source, rungs, on_all_ended=self.stop)
        self.state = JobState.STARTING
        self.started_at = time.time()
        self.last_used = clock()
        self.waiters = 0
        """Requests waiting for this job's renditions to be ready (they count as use)."""
        self.restarts = 0
        self.pid: int | None = None
        self.speed: float | None = None
        self.backlog_ms: float | None = None
        self.late_ms: float | None = None
        """How far the worker is behind the wall clock (it sheds a rung when it stays behind)."""
        self.cpu_percent: float | None = None
        self.cpu_seconds = 0.0
        self.error: tuple[str, str] | None = None
        """(reason, message) from the worker's ERROR, or of a worker that keeps failing."""
        self.stop_reason = ""
        self.cpu_counted: Callable[[float], None] = lambda s: None
        self.restart_counted: Callable[[], None] = lambda: None
        self._stdin: asyncio.StreamWriter | None = None
        self._resume_after: int | None = None
        self._life: _Life | None = None
        self._stop = asyncio.Event()
        self._feed = SourceFeed(self)
        self._fed = False
        self._task: asyncio.Task[None] | None = None
        self._stats_at: float | None = None
        self._slow = 0
        self.done = asyncio.Event()

    # ----- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"transcode {self.source}")

    @property
    def stopped(self) -> bool:
        return self.state is JobState.STOPPED or self._stop.is_set()

    @property
    def outs(self) -> list[RenditionOut]:
        return self.renditions.outs

    def live_outs(self) -> list[RenditionOut]:
        return self.renditions.live()

    def stop(self, reason: str) -> None:
        """Stop the job (not waiting): the worker is told to finish and the rendition streams end."""
        if self._stop.is_set():
            return
        self.stop_reason = reason
        self._stop.set()
        self._close_stdin()
        self.renditions.end_all(reason)

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
            self.renditions.end_all(self.stop_reason or "transcode_stopped")
            self.done.set()
            self.on_finished(self)

    async def _spawn(self) -> _Life | None:
        tracks = self.renditions.live()
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
        self.renditions.begin_worker(restart=not first)
        self._write(flv_header(self.source_stream.info.audio_config is not None, True))
        if first:
            self._fed = True
            history = self.source_stream.history()
            self._write(b"".join(f.tag for f in history))
            self.source_stream.add_sink(self._feed)  # no frame between the history and the feed
        else:
            self._resume(self.source_stream.history())
        event(log, "transcode_worker_started", stream=str(self.source), pid=proc.pid,
              rungs=",".join(o.rung.label for o in tracks), restart=not first)
        return life

    def _resume(self, history: list[Frame]) -> None:
        """A restarted worker starts at the newest kept keyframe newer than what the renditions carry, or
        waits for the next one the source sends."""
        newest = self.renditions.newest_video_ms()  # a rendition's timestamps are the source's pts
        start = None
        for i, frame in enumerate(history):
            if frame.kind == FrameKind.VIDEO and frame.keyframe and not frame.is_config and frame.pts_ms > newest:
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
                    and frame.pts_ms > self._resume_after):
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
                self.renditions.publish_tag(msg.track, msg.payload, now, touched)
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
        if touched and self.state in (JobState.STARTING, JobState.RESTARTING) and self.renditions.caught_up():
            self.state = JobState.RUNNING
        return touched

    def _stats(self, value: dict[str, Any], life: _Life, now: float) -> None:
        speed = _number(value.get("speed"))
        self.speed = speed
        self.backlog_ms = _number(value.get("backlog_ms"))
        self.late_ms = _number(value.get("late_ms"))
        cpu = _number(value.get("cpu_s"))
        if cpu is not None:
            delta = max(0.0, cpu - life.cpu_last)
            life.cpu_last = cpu
            self.cpu_seconds += delta
            self.cpu_counted(delta)
            if self._stats_at is not None and now > self._stats_at:
                self.cpu_percent = round(100.0 * delta / (now - self._stats_at), 1)
        self.renditions.measure(now - self._stats_at if self._stats_at is not None else None)
        self._stats_at = now
        shed = value.get("shed")
        if isinstance(shed, list):
            for out in self.renditions.tracks:
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
        event(log, "transcode_rung_shed", logging.WARNING, stream=str(self.source), rung=out.rung.label, speed=speed,
              left=",".join(o.rung.label for o in self.live_outs() if o is not out) or "none",
              hint="the node cannot encode the whole ladder in real time: lower abr.max_jobs or the ladder")
        self.renditions.shed(out, "rung_shed")
        if not self.live_outs():
            self.stop("all_rungs_shed")

    # ----- what is shown ---------------------------------------------------------------------------------

    def in_use(self, viewers: Callable[[StreamKey], int]) -> bool:
        return bool(self.waiters) or self.renditions.watched(viewers)

    def snapshot(self, viewers: Callable[[StreamKey], int]) -> dict[str, Any]:
        renditions = self.renditions.snapshot(viewers)
        return {
            "source": str(self.source), "pid": self.pid if not self.stopped else None, "state": self.state.value,
            "renditions": renditions, "cpu_percent": self.cpu_percent, "cpu_seconds": round(self.cpu_seconds, 3),
            "speed": self.speed, "backlog_ms": self.backlog_ms, "late_ms": self.late_ms,
            "restarts": self.restarts,
            "shed": [o.rung.label for o in self.outs if o.shed], "started_at": self.started_at,
            "skipped": self.renditions.skipped,
            "error": {"reason": self.error[0], "message": self.error[1]} if self.error else None,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def worker_command(log_level: str = "info", log_format: str = "text") -> list[str]:
    """How the pool starts a worker: this interpreter, the worker module, logging as the server does (to
    the server's stderr, which the worker inherits)."""
    return [sys.executable, "-m", "mediaserver.transcode.worker", "--log-level", log_level, "--log-format", log_format]


def cpu_count() -> int:
    return os.cpu_count() or 1
