"""Stream health sampling: one HealthMonitor task per live stream of `health.apps`, owned by a HealthWatch.

Every `health.interval` seconds a monitor takes what is new in its stream: the newest video keyframe (if
another arrived since the last sample) and the audio frames that arrived since the last sample (read from
the hub's frame log through a cursor; the log keeps at least `hub.viewer_queue_ms` of media, so an
interval shorter than that sees all of it). It decodes them in a thread (`asyncio.to_thread`, never on
the event loop): the keyframe alone into a small luma plane, the audio through a decoder kept for the
stream, into one RMS level. The pure detectors (`health.py`) turn the measures into flags.

Cost: at most one keyframe decode per interval and the stream's audio; the thread's CPU time is counted
(`cpu_s`) so /metrics and bench/media_pipeline.py can show it per stream-minute.

A HealthWatch starts a monitor when a stream of a watched app starts (renditions STREAM@LABEL are not
watched: they repeat their source's picture and sound) and stops it when the stream ends, ending its
flagged conditions ("end" events with reason "stream_ended"). Listeners get every start and end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from ..auth.names import split_rendition
from ..config import HealthConfig
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import LogGate, event
from ..media.frames import Frame, FrameKind
from .health import CONDITIONS, HealthChange, HealthDetector, rms_dbfs
from .ladder import applies
from .thumbnail import Keyframe, ThumbnailError, UnsupportedCodec, decode_keyframe, luma_plane

log = logging.getLogger(__name__)

AUDIO_DECODERS = {"aac": "aac", "opus": "opus", "mp3": "mp3float"}
LUMA_WIDTH = 160
"""Width of the luma plane the picture measures run on."""
_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A condition of a stream was flagged ("start") or cleared ("end"); what listeners and webhooks get."""

    key: StreamKey
    condition: str
    state: str
    since: float
    """Wall-clock time (Unix seconds) the condition was first observed."""
    duration_s: float
    reason: str | None = None
    """Why an "end" came without the condition ending: "stream_ended"."""


@dataclass(slots=True)
class Sample:
    """What one sample measured (None: nothing new to measure)."""

    luma: np.ndarray | None = None
    level_dbfs: float | None = None
    cpu_s: float = 0.0
    error: str | None = None


class MediaSampler:
    """The thread side of one stream's sampling: PyAV decoders and the measures. Called by one monitor,
    one sample at a time."""

    def __init__(self) -> None:
        self._audio: av.CodecContext | None = None
        self._audio_setup: tuple[str, bytes | None] | None = None
        self.video_unsupported = False

    def sample(self, keyframe: Keyframe | None, audio_codec: str | None, audio_config: bytes | None,
               audio: list[bytes]) -> Sample:
        started = time.thread_time()
        out = Sample()
        if keyframe is not None and not self.video_unsupported:
            try:
                out.luma = luma_plane(decode_keyframe(keyframe), LUMA_WIDTH)
            except UnsupportedCodec as err:
                self.video_unsupported = True
                out.error = str(err)
            except ThumbnailError as err:
                out.error = str(err)
        if audio and audio_codec is not None:
            out.level_dbfs = self._sound_level(audio_codec, audio_config, audio)
        out.cpu_s = time.thread_time() - started
        return out

    def _sound_level(self, codec: str, config: bytes | None, payloads: list[bytes]) -> float | None:
        name = AUDIO_DECODERS.get(codec)
        if name is None:
            return None
        if self._audio is None or self._audio_setup != (codec, config):
            ctx = av.CodecContext.create(name, "r")
            if config:
                ctx.extradata = config
            self._audio, self._audio_setup = ctx, (codec, config)
        ctx = self._audio
        chunks: list[np.ndarray] = []
        for payload in payloads:
            try:
                for frame in ctx.decode(av.Packet(payload)):
                    chunks.append(np.asarray(frame.to_ndarray(), dtype=np.float32).ravel())
            except (av.FFmpegError, ValueError):
                continue  # a damaged audio frame: measure the rest
        if not chunks:
            return None
        return rms_dbfs(np.concatenate(chunks))


class HealthMonitor:
    """Samples one stream every `cfg.interval` seconds until it ends or `stop()`."""

    def __init__(self, stream: Stream, cfg: HealthConfig, report: Callable[[Stream, HealthChange], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.cfg = cfg
        self.detector = HealthDetector(cfg)
        self.sampler = MediaSampler()
        self.report = report
        self.clock = clock
        self.cpu_s = 0.0
        """Thread CPU seconds spent decoding and measuring."""
        self.samples = 0
        self.started_at = clock()
        self._cursor = stream.gop.end
        self._keyframe: Frame | None = None
        self._errors = LogGate(_LOG_INTERVAL_S)

    async def run(self) -> None:
        stream = self.stream
        while not stream.ended:
            await asyncio.sleep(self.cfg.interval)
            if stream.ended:
                break
            try:
                await self.sample_once()
            except Exception as err:  # a bug or a decoder surprise: log it, keep sampling
                if self._errors.should_log("bug", self.clock()):
                    log.exception("health sample of %s failed: %s", stream.key, err)

    async def sample_once(self) -> None:
        """Take and measure what is new since the last sample; report what changed."""
        stream = self.stream
        keyframe = None
        newest = stream.gop.newest_keyframe
        if newest is not None and newest is not self._keyframe:
            self._keyframe = newest
            keyframe = Keyframe.of(newest, stream.info.video_config)
        audio = self._new_audio()
        if keyframe is None and not audio:
            return
        info = stream.info
        audio_config = bytes(info.audio_config.payload) if info.audio_config is not None else None
        sample = await asyncio.to_thread(self.sampler.sample, keyframe, info.audio_codec, audio_config, audio)
        self.samples += 1
        self.cpu_s += sample.cpu_s
        if sample.error is not None and self._errors.should_log("sample", self.clock()):
            event(log, "health_sample_failed", logging.WARNING, stream=str(stream.key), error=sample.error,
                  action="picture checks skipped until a keyframe decodes")
        now = self.clock()
        changes: list[HealthChange] = []
        if sample.luma is not None:
            changes += self.detector.observe_picture(sample.luma, now)
        if sample.level_dbfs is not None:
            changes += self.detector.observe_sound(sample.level_dbfs, now)
        for change in changes:
            self.report(stream, change)

    def _new_audio(self) -> list[bytes]:
        gop = self.stream.gop
        start = max(self._cursor, gop.base)
        self._cursor = gop.end
        if start >= gop.end:
            return []
        return [bytes(f.payload) for f in gop.frames_from(start)
                if f.kind == FrameKind.AUDIO and not f.is_config and not f.is_end]

    def end(self) -> list[HealthChange]:
        return self.detector.end(self.clock())


class HealthWatch:
    """Every stream's HealthMonitor: started by the registry's hooks, stopped when streams end."""

    def __init__(self, registry: StreamRegistry, cfg: HealthConfig,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self.cfg = cfg
        self.clock = clock
        self.wall_clock = wall_clock
        self.monitors: dict[StreamKey, HealthMonitor] = {}
        self.listeners: list[Callable[[HealthEvent], None]] = []
        self.flag_starts: Counter[str] = Counter()
        """Conditions flagged since start, by condition (metrics)."""
        self.cpu_s_ended = 0.0
        self._tasks: dict[StreamKey, asyncio.Task[None]] = {}

    def attach(self) -> None:
        self.registry.on_stream_started.append(self._stream_started)
        self.registry.on_stream_ended.append(self._stream_ended)

    def watches(self, key: StreamKey) -> bool:
        return applies(self.cfg.apps, key.app) and split_rendition(key.name)[1] is None

    def _stream_started(self, stream: Stream) -> None:
        key = stream.key
        if not self.watches(key) or key in self.monitors:
            return
        monitor = HealthMonitor(stream, self.cfg, self._report, self.clock)
        self.monitors[key] = monitor
        task = asyncio.get_running_loop().create_task(monitor.run(), name=f"health {key}")
        self._tasks[key] = task
        task.add_done_callback(lambda t, key=key: self._task_done(key, t))

    def _task_done(self, key: StreamKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("health monitor of %s failed", key, exc_info=task.exception())

    def _stream_ended(self, stream: Stream) -> None:
        monitor = self.monitors.get(stream.key)
        if monitor is None or monitor.stream is not stream:
            return
        del self.monitors[stream.key]
        self.cpu_s_ended += monitor.cpu_s
        task = self._tasks.pop(stream.key, None)
        if task is not None:
            task.cancel()
        for change in monitor.end():
            self._report(stream, change, reason="stream_ended")

    def _report(self, stream: Stream, change: HealthChange, reason: str | None = None) -> None:
        wall_since = self.wall_clock() - (self.clock() - change.since)
        ev = HealthEvent(stream.key, change.condition, change.state, round(wall_since, 3), round(change.duration_s, 3),
                         reason)
        if change.state == "start":
            self.flag_starts[change.condition] += 1
        event(log, "stream_health", logging.WARNING if change.state == "start" else logging.INFO,
              stream=str(stream.key), condition=change.condition, state=change.state,
              duration_s=ev.duration_s, **({"reason": reason} if reason else {}))
        for listener in self.listeners:
            try:
                listener(ev)
            except Exception:
                log.exception("health listener %r failed for %s", listener, stream.key)

    def flags(self, key: StreamKey) -> dict[str, Any] | None:
        """The admin API's "health" of a stream: condition -> {"since": UNIX_S, "duration_s": S} or None;
        None for a stream that is not watched."""
        monitor = self.monitors.get(key)
        if monitor is None:
            return None
        now, wall = self.clock(), self.wall_clock()
        out: dict[str, Any] = {}
        for condition, since in monitor.detector.flags().items():
            out[condition] = None if since is None else {
                "since": round(wall - (now - since), 3), "duration_s": round(now - since, 3),
            }
        return out

    def flagged(self) -> list[tuple[StreamKey, str, bool]]:
        """(stream, condition, flagged) for every watched stream (metrics)."""
        return [(key, condition, since is not None)
                for key, monitor in self.monitors.items()
                for condition, since in monitor.detector.flags().items()]

    @property
    def cpu_s(self) -> float:
        """Sampling CPU seconds since start, streams that ended included."""
        return self.cpu_s_ended + sum(m.cpu_s for m in self.monitors.values())

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["CONDITIONS", "HealthEvent", "HealthMonitor", "HealthWatch", "MediaSampler", "Sample"]
