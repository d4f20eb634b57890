"""TranscodePool: this node's transcode jobs, one per source stream, within the node's budget.

It is the edge's `AbrService` (service.py): `renditions(source)` starts a job on the first ABR request and
waits (abr.wait) for its renditions' first keyframes; `locate(key)` does the same for a viewer who names
one rendition (`demo@360p`). Refusals name why, as an HTTP status: 404 (ABR off for the app, no source),
409 (no rung below the source), 415 (a source the workers cannot decode, remembered for a while after a
worker said so), 503 (the node's budget, abr.max_jobs, is spent: the source alone is served; counted and
logged once per interval).

on_demand: a job whose renditions have no viewer, no packager and no gate-counted viewer, and whose
`renditions()` was not asked, for abr.idle_grace, is stopped. always: a job starts when a stream of
abr.apps has its video configuration, and runs while the stream does. In both modes a job ends with its
source stream (a publisher reconnecting within the hub's grace keeps the stream, and so the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..auth.names import RENDITION_SEPARATOR, split_rendition
from ..config import AbrConfig, WatermarkConfig
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..hub.tracks import TrackPublisher
from ..log import LogGate, event
from .job import MAX_BACKLOG_MS, STATS_INTERVAL_S, JobState, TranscodeJob, cpu_count, worker_command
from .ladder import DEFAULT_PRESETS, SOURCE_LABEL, Rendition, applies, plan_ladder
from .service import AbrRefusal, RenditionView

log = logging.getLogger(__name__)

DECODABLE = frozenset({"h264", "hevc", "av1", "vp9"})
"""Source video codecs the workers decode (PyAV)."""
SOURCE_ERRORS = frozenset({"codec", "undecodable", "input"})
"""A worker's ERROR reasons that are the source's fault (415); others (watermark, encoder, a worker that
keeps failing) are the node's (503)."""
ERROR_KEPT_S = 60.0
"""How long a worker's ERROR (a source it cannot decode) is answered without starting another worker."""
REFUSAL_LOG_INTERVAL_S = 30.0
ALWAYS_RETRY_S = 5.0
"""always mode: how often a stream refused for the budget asks again."""
SOURCE_RUNG_KBPS = 2500
"""A watermarked top rung's bit rate when the source declares none and too little is kept to measure it."""
DEFAULT_AUDIO_BPS = 128_000
"""A rendition's audio in BANDWIDTH when the source does not declare its audiodatarate."""

Viewers = Callable[[StreamKey], int]


class TranscodePool:
    def __init__(
        self,
        registry: StreamRegistry,
        abr: AbrConfig,
        watermark: WatermarkConfig | None = None,
        *,
        viewers: Viewers | None = None,
        command: Sequence[str] | None = None,
        node: str = "local",
        clock: Callable[[], float] = time.monotonic,
        cpus: int | None = None,
    ) -> None:
        self.registry = registry
        self.abr = abr
        self.watermark = watermark or WatermarkConfig()
        self.viewers: Viewers = viewers or (lambda key: 0)
        """Gate-counted viewers of a stream (HTTP-FLV, WS-FLV, RTMP), set by the composition root."""
        self.command = list(command) if command is not None else worker_command()
        self.node = node
        self.clock = clock
        self.max_jobs = abr.max_jobs or max(1, (cpus or cpu_count()) // 2)
        self.jobs: dict[StreamKey, TranscodeJob] = {}
        self.refused: Counter[str] = Counter()
        """ABR requests answered without renditions, by reason (metrics)."""
        self.refused_by_source: Counter[tuple[StreamKey, str]] = Counter()
        self.restarts_total = 0
        self.cpu_seconds_total = 0.0
        self.failed: dict[StreamKey, tuple[AbrRefusal, float]] = {}
        self._log_gate = LogGate(REFUSAL_LOG_INTERVAL_S)
        self._idle_task: asyncio.Task[None] | None = None
        self._waiting: dict[StreamKey, asyncio.Task[None]] = {}
        self._closed = False
        self.on_job_ended: list[Callable[[StreamKey], None]] = []
        """Told when a job of this node ends, whatever ended it (the cluster gives up its claim)."""
        registry.on_published.append(self._published)
        registry.on_stream_ended.append(self._stream_ended)

    # ----- AbrService -------------------------------------------------------------------------------------

    def enabled_for(self, source: StreamKey) -> bool:
        if split_rendition(source.name)[1] is not None:
            return False
        return (self.abr.mode != "off" and applies(self.abr.apps, source.app)) or bool(self._encoder_ladder(source))

    async def renditions(self, source: StreamKey, *, start: bool = True) -> list[RenditionView] | AbrRefusal:
        encoded = self._encoder_ladder(source)
        if encoded:
            return encoded  # the encoder sends its own ladder (multitrack): nothing to transcode
        job = await self._job(source, start)
        if job is None:
            return []
        if isinstance(job, AbrRefusal):
            return job
        if start:  # a request for the renditions: the job is in use
            job.last_used = self.clock()
            pending = [o.ready.wait() for o in job.live_outs() if not o.ready.is_set()]
            if pending:
                await self._wait(job, asyncio.gather(*pending))
        if job.done.is_set():
            return self._failed(source) or []
        return self._views(job)

    async def _wait(self, job: TranscodeJob, ready: Awaitable[Any]) -> None:
        """Wait (at most abr.wait) for renditions to be ready, or the job to end; a waiting request keeps
        the job in use."""
        job.waiters += 1
        waits = [asyncio.ensure_future(ready), asyncio.ensure_future(job.done.wait())]
        try:
            await asyncio.wait(waits, timeout=self.abr.wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
                # A cancelled gather() keeps a CancelledError as its exception: read it, or asyncio logs it.
                waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            job.waiters -= 1
            job.last_used = self.clock()

    # ----- for the gate: a viewer names a rendition ------------------------------------------------------

    async def locate(self, key: StreamKey) -> Stream | AbrRefusal:
        """The stream of rendition `key` (APP/STREAM@LABEL), its job started first when needed."""
        base, label = split_rendition(key.name)
        if label is None:
            raise ValueError(f"{key} is not a rendition name")
        source = StreamKey(key.app, base)
        unknown = self.unknown_rendition(key)
        if unknown is not None:
            return unknown
        job = await self._job(source, True)
        if isinstance(job, AbrRefusal):
            return job
        assert job is not None
        job.last_used = self.clock()
        out = next((o for o in job.outs if o.rung.label == label), None)
        if out is None:
            labels = ", ".join(f"{base}@{o.rung.label}" for o in job.live_outs()) or "none"
            return self._refuse(source, AbrRefusal(404, "no_rung", f"stream {source} has no rendition {label!r}",
                                                   f"its renditions are: {labels}"), log_it=False)
        if out.shed or out.ended:
            return self._refuse(source, AbrRefusal(503, "shed", f"rendition {key} was dropped: this node cannot "
                                                   "encode the whole ladder in real time", "play a lower rendition, "
                                                   "or the source"))
        if not out.ready.is_set():
            await self._wait(job, out.ready.wait())
        if job.done.is_set() and (failed := self._failed(source)) is not None:
            return failed
        if out.stream is None or not out.ready.is_set():
            return AbrRefusal(503, "starting", f"rendition {key} is still starting",
                              f"try again in a few seconds; it waited {self.abr.wait:g} s (abr.wait)")
        return out.stream

    def unknown_rendition(self, key: StreamKey) -> AbrRefusal | None:
        """A 404 for rendition `key` when no job could make it (its label is on no rung of the ladder, or on
        none below the source's size), so a mistyped or made-up name never starts a transcode nor holds a
        place of abr.max_jobs."""
        base, label = split_rendition(key.name)
        source = StreamKey(key.app, base)
        if label is None or not self.enabled_for(source):
            return None  # not a rendition, or ABR is off here: the caller's refusal says why
        encoded = self._encoder_ladder(source)
        if encoded:
            labels = [view.label for view in encoded]
        else:  # the rungs below the source's size once it is known
            stream = self.registry.get(source)
            size = _size(stream) if stream is not None else None
            rungs = plan_ladder(self.abr.ladder, *size) if size else self.abr.ladder
            if not rungs and self.abr.ladder:
                return None  # no rung below the source: the job's own 409 says so, and starts nothing
            labels = [rung.label for rung in rungs]
            if self._marks_source(source):
                labels.insert(0, SOURCE_LABEL)
        if label in labels:
            return None
        names = ", ".join(f"{base}@{known}" for known in labels) or "none"
        return self._refuse(source, AbrRefusal(404, "no_rung", f"stream {source} has no rendition {label!r}",
                                               f"its renditions can be: {names}"), log_it=False)

    # ----- for the admin API -------------------------------------------------------------------------------

    async def start(self, source: StreamKey) -> TranscodeJob | AbrRefusal:
        """Start the job of `source` (or keep a running one in use) and wait (abr.wait) for its renditions.
        An operator's start tries again at once after a worker's error."""
        self.failed.pop(source, None)
        found = await self.renditions(source, start=True)
        if isinstance(found, AbrRefusal):
            return found
        job = self.jobs.get(source)
        if job is not None and job.stopped:
            await job.wait_stopped()  # then its error, if any, is known
        if job is None or job.stopped:
            return self._failed(source) or AbrRefusal(503, "stopped", f"the transcode of {source} stopped as it "
                                                      "started", "see the server's log; try again")
        return job

    async def stop(self, source: StreamKey, reason: str = "stopped_by_operator") -> bool:
        job = self.jobs.get(source)
        if job is None:
            return False
        job.stop(reason)
        await job.wait_stopped()
        return True

    def job(self, source: StreamKey) -> TranscodeJob | None:
        return self.jobs.get(source)

    def status(self, source: StreamKey) -> dict[str, Any]:
        """One source's ABR state for the API and the stream snapshot."""
        job = self.jobs.get(source)
        if job is not None:
            return {"running": True, "enabled": True, **self._describe(job)}
        body: dict[str, Any] = {"running": False, "enabled": self.enabled_for(source), "source": str(source)}
        failed = self._failed(source)
        if failed is not None:
            body["refusal"] = {"status": failed.status, "reason": failed.reason, "error": failed.error}
        return body

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.abr.mode, "node": self.node, "max_jobs": self.max_jobs, "jobs_running": len(self.jobs),
            "jobs": [self._describe(j) for j in sorted(self.jobs.values(), key=lambda j: str(j.source))],
            "refused": dict(self.refused), "restarts_total": self.restarts_total,
            "cpu_seconds_total": round(self.cpu_seconds_total, 3),
        }

    def _describe(self, job: TranscodeJob) -> dict[str, Any]:
        refused = {reason: n for (key, reason), n in self.refused_by_source.items() if key == job.source}
        return {**job.snapshot(self.viewers), "node": self.node, "refused": refused}

    # ----- jobs --------------------------------------------------------------------------------------------

    async def _job(self, source: StreamKey, start: bool) -> TranscodeJob | AbrRefusal | None:
        if not self.enabled_for(source):
            why = ("ABR is off on this node (abr.mode = \"off\")" if self.abr.mode == "off"
                   else f"ABR does not apply to app {source.app!r}")
            return self._refuse(source, AbrRefusal(404, "off", f"stream {source} has no renditions: {why}",
                                                   "set abr.mode = \"on_demand\" and add the app to abr.apps, or "
                                                   "play the stream itself"), log_it=False)
        job = self.jobs.get(source)
        if job is not None and not job.stopped:
            return job
        failed = self._failed(source)
        if failed is not None:
            return self._refuse(source, failed, log_it=False)
        stream = self.registry.get(source)
        if stream is None or stream.ended or (stream.publisher is None and not stream.info.video_config):
            return self._refuse(source, AbrRefusal(404, "no_source", f"stream {source} is not being published",
                                                   "publish it first; its renditions start on their first request"),
                                log_it=False)
        size = await self._source_size(stream) if start else _size(stream)
        job = self.jobs.get(source)  # another request may have started it meanwhile
        if job is not None and not job.stopped:
            return job
        codec = stream.info.video_codec
        if codec is None:
            return self._refuse(source, AbrRefusal(409, "no_video", f"stream {source} has no video to transcode",
                                                   "publish video, or play the stream itself"), log_it=False)
        if codec not in DECODABLE:
            return self._refuse(source, AbrRefusal(415, "codec", f"the transcoders cannot decode {codec} video "
                                                   f"(stream {source})", "publish H.264, HEVC, AV1 or VP9, or play "
                                                   "the stream itself"))
        if size is None:
            if not start:
                return None
            return self._refuse(source, AbrRefusal(409, "no_size", f"the picture size of stream {source} is unknown",
                                                   "publish with onMetaData width and height, or play the stream "
                                                   "itself"))
        rungs = plan_ladder(self.abr.ladder, *size)
        if not rungs:
            lowest = min((r.height for r in self.abr.ladder), default=0)
            return self._refuse(source, AbrRefusal(409, "ladder", f"the source is {size[1]}p: no rung of the ladder "
                                                   "is below it", f"the lowest rung is {lowest}p; add a lower "
                                                   "[[abr.ladder]] rung, or play the stream itself"), log_it=False)
        if self._marks_source(source):
            rungs.insert(0, source_rung(stream, size, codec))
        if not start:
            return None
        running = sum(1 for j in self.jobs.values() if not j.stopped)
        if running >= self.max_jobs:
            return self._refuse(source, AbrRefusal(503, "budget", f"this node's transcode budget is spent "
                                                   f"({running} of abr.max_jobs = {self.max_jobs} running)",
                                                   "the source plays meanwhile; try again later or raise "
                                                   "abr.max_jobs"))
        job = TranscodeJob(stream, rungs, self.registry, self.command, self._options(source),
                           on_finished=self._finished, clock=self.clock)
        job.cpu_counted = self._count_cpu
        job.restart_counted = self._count_restart
        self.jobs[source] = job
        job.start()
        self._watch_idle()
        event(log, "transcode_started", stream=str(source), size=f"{size[0]}x{size[1]}",
              rungs=",".join(r.label for r in rungs), jobs=len(self.jobs), max_jobs=self.max_jobs)
        return job

    async def _source_size(self, stream: Stream) -> tuple[int, int] | None:
        """The source's picture size, waiting (abr.wait) for its video configuration when it has none yet."""
        size = _size(stream)
        if size is not None or stream.ended:
            return size
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.abr.wait):
                while size is None and not stream.ended:
                    await stream.changed()
                    size = _size(stream)
        return size

    def _marks_source(self, source: StreamKey) -> bool:
        wm = self.watermark
        return bool(wm.file and wm.source and applies(wm.apps, source.app))

    def _options(self, source: StreamKey) -> dict[str, Any]:
        wm = self.watermark
        watermark = None
        if wm.file and applies(wm.apps, source.app):
            watermark = {"file": wm.file, "position": wm.position, "margin": wm.margin, "opacity": wm.opacity,
                         "scale": wm.scale}
        return {
            "watermark": watermark, "max_keyframe_interval_ms": int(self.abr.max_keyframe_interval * 1000),
            "stats_interval_s": STATS_INTERVAL_S, "max_backlog_ms": MAX_BACKLOG_MS,
        }

    def _finished(self, job: TranscodeJob) -> None:
        if self.jobs.get(job.source) is job:
            del self.jobs[job.source]
        if job.error is not None:
            reason, message = job.error
            status = 415 if reason in SOURCE_ERRORS else 503
            hint = ("the source plays as it is; publish H.264, HEVC, AV1 or VP9 video the workers can decode"
                    if status == 415 else "the source plays as it is; an operator should fix what the server's "
                    "log names ([watermark], [[abr.ladder]]) and start it again")
            now = self.clock()
            self.failed = {k: v for k, v in self.failed.items() if v[1] > now}
            self.failed[job.source] = (AbrRefusal(
                status, reason, f"the transcoder cannot make renditions of stream {job.source}: {message}", hint),
                now + ERROR_KEPT_S)
        event(log, "transcode_stopped", stream=str(job.source), reason=job.stop_reason or "worker_gone",
              restarts=job.restarts, cpu_s=round(job.cpu_seconds, 2), jobs=len(self.jobs))
        for hook in list(self.on_job_ended):
            try:
                hook(job.source)
            except Exception:
                log.exception("job-ended hook failed for %s", job.source)

    def _failed(self, source: StreamKey) -> AbrRefusal | None:
        kept = self.failed.get(source)
        if kept is None:
            return None
        if self.clock() >= kept[1]:
            del self.failed[source]
            return None
        return kept[0]

    def _refuse(self, source: StreamKey, refusal: AbrRefusal, log_it: bool = True) -> AbrRefusal:
        self.refused[refusal.reason] += 1
        self.refused_by_source[(source, refusal.reason)] += 1
        if len(self.refused_by_source) > 10_000:
            live = set(self.jobs)
            self.refused_by_source = Counter({k: v for k, v in self.refused_by_source.items() if k[0] in live})
        if log_it:
            count = self._log_gate.should_log((refusal.reason, source), self.clock())
            if count:
                event(log, "abr_refused", logging.WARNING, stream=str(source), status=refusal.status,
                      reason=refusal.reason, error=refusal.error, refused=count)
        return refusal

    def _count_cpu(self, seconds: float) -> None:
        self.cpu_seconds_total += seconds

    def _count_restart(self) -> None:
        self.restarts_total += 1

    def _views(self, job: TranscodeJob) -> list[RenditionView]:
        audio = job.source_stream.info.metadata_values.get("audiodatarate")
        audio_bps = int(audio * 1000) if isinstance(audio, (int, float)) and not isinstance(audio, bool) and audio > 0 \
            else DEFAULT_AUDIO_BPS
        if job.source_stream.info.audio_config is None:
            audio_bps = 0
        return [RenditionView(o.rung.label, o.key, o.rung.width, o.rung.height, o.rung.video_kbps * 1000 + audio_bps,
                              o.rung.codec)
                for o in job.live_outs() if o.ready.is_set() and o.stream is not None]

    def _encoder_ladder(self, source: StreamKey) -> list[RenditionView]:
        """The renditions an Enhanced RTMP multitrack publisher of `source` sends itself, highest first."""
        prefix = source.name + RENDITION_SEPARATOR
        views = []
        for stream in self.registry.streams():
            key = stream.key
            if (key.app != source.app or not key.name.startswith(prefix) or stream.ended
                    or not isinstance(stream.publisher, TrackPublisher) or stream.gop.gop_start is None):
                continue
            info = stream.info
            views.append(RenditionView(split_rendition(key.name)[1] or "", key, info.width or 0, info.height or 0,
                                       _measured_bps(stream), info.video_codec or ""))
        views.sort(key=lambda v: (-v.height, -v.bandwidth))
        return views

    # ----- idle stop (on_demand) and the always mode -------------------------------------------------------

    def _watch_idle(self) -> None:
        if self._idle_task is None or self._idle_task.done():
            self._idle_task = asyncio.get_running_loop().create_task(self._idle_loop(), name="transcode idle")

    async def _idle_loop(self) -> None:
        interval = max(0.05, min(1.0, self.abr.idle_grace / 4))
        while self.jobs:
            await asyncio.sleep(interval)
            if self.abr.mode != "on_demand":
                continue
            now = self.clock()
            for job in list(self.jobs.values()):
                if job.stopped:
                    continue
                if job.in_use(self.viewers):
                    job.last_used = now
                elif now - job.last_used >= self.abr.idle_grace:
                    event(log, "transcode_idle", stream=str(job.source), idle_s=round(now - job.last_used, 1))
                    job.stop("idle")

    def _published(self, stream: Stream) -> None:
        if self.abr.mode != "always" or self._closed or not self.enabled_for(stream.key):
            return
        if stream.key in self._waiting or stream.key in self.jobs:
            return
        self._waiting[stream.key] = asyncio.get_running_loop().create_task(self._start_when_ready(stream))

    async def _start_when_ready(self, stream: Stream) -> None:
        """always: start once the stream's picture size is known (its video config came); while the node's
        budget is spent, try again every ALWAYS_RETRY_S (a job ending frees a place)."""
        try:
            while _size(stream) is None and not stream.ended:
                await stream.changed()
            while not stream.ended and not self._closed:
                found = await self._job(stream.key, True)
                if not (isinstance(found, AbrRefusal) and found.reason == "budget"):
                    break
                await asyncio.sleep(ALWAYS_RETRY_S)
        finally:
            self._waiting.pop(stream.key, None)

    def _stream_ended(self, stream: Stream) -> None:
        job = self.jobs.get(stream.key)
        if job is not None and job.source_stream is stream:
            job.stop("source_ended")
        waiting = self._waiting.pop(stream.key, None)
        if waiting is not None:
            waiting.cancel()

    async def close(self) -> None:
        """Stop every job and wait for its worker to exit (server shutdown)."""
        self._closed = True
        for task in list(self._waiting.values()):
            task.cancel()
        jobs = list(self.jobs.values())
        for job in jobs:
            job.stop("server_shutdown")
        if jobs:
            await asyncio.gather(*(j.wait_stopped() for j in jobs))
        if self._idle_task is not None:
            self._idle_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_task


def source_rung(stream: Stream, size: tuple[int, int], codec: str) -> Rendition:
    """The top rung that replaces the source's passthrough when the watermark marks the source: the source's
    size and bit rate (its metadata's, else what the kept media measures), its codec where we encode it."""
    declared = stream.info.metadata_values.get("videodatarate")
    kbps = int(declared) if isinstance(declared, (int, float)) and not isinstance(declared, bool) and declared > 0 else 0
    kbps = kbps or _measured_bps(stream) // 1000 or SOURCE_RUNG_KBPS
    rung_codec = codec if codec in ("h264", "hevc") else "h264"
    return Rendition(SOURCE_LABEL, size[0], size[1], max(100, kbps), rung_codec, DEFAULT_PRESETS[rung_codec], 2)


def _measured_bps(stream: Stream) -> int:
    """Bits per second of the stream's kept media (video and audio), for a variant's BANDWIDTH."""
    frames = [f for f in stream.gop.frames_from(stream.gop.history_start()) if not f.is_config]
    if len(frames) < 2:
        return 0
    span_ms = max(1, frames[-1].dts_ms - frames[0].dts_ms)
    return int(sum(f.size for f in frames) * 8000 / span_ms)


def _size(stream: Stream) -> tuple[int, int] | None:
    """The picture size from the video config (H.264's SPS) or else the publisher's onMetaData."""
    info = stream.info
    if info.width and info.height:
        return info.width, info.height
    if info.video_config is None:
        return None
    meta = info.metadata_values
    w, h = meta.get("width"), meta.get("height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w >= 2 and h >= 2:
        return int(w), int(h)
    return None


__all__ = ["TranscodePool", "JobState"]
