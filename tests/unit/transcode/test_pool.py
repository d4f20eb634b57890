"""TranscodePool with a stand-in worker (tests/support/fake_worker.py) that speaks the worker's protocol
and passes the source video through as each rung: jobs start and get ready, stop when idle, follow the
source in `always` mode, respect the budget, and survive crashes and garbage with the rendition's
timestamps still the source's; no worker is ever left behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from mediaserver.config import AbrConfig, RungConfig, WatermarkConfig
from mediaserver.hub.registry import RegistryPolicy, StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.pool import TranscodePool
from mediaserver.transcode.service import AbrRefusal
from support.codec_clips import codec_clip

SOURCE = StreamKey("live", "demo")
FAKE = [sys.executable, str(Path(__file__).parents[2] / "support" / "fake_worker.py")]


class Publisher:
    def __init__(self) -> None:
        self.peer = "test"
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


class Recorder:
    """A sink on a rendition stream: its frames and discontinuities."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.discontinuities = 0
        self.ended = False

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)

    def on_discontinuity(self) -> None:
        self.discontinuities += 1

    def on_end(self) -> None:
        self.ended = True

    def video_dts(self) -> list[int]:
        return [f.dts_ms for f in self.frames if f.kind == FrameKind.VIDEO and not f.is_config]


def clip(height: int = 480) -> list[Frame]:
    return codec_clip("h264", "aac", width=height * 4 // 3, height=height, fps=25, seconds=2.0, gop_frames=12)


class Source:
    """Publishes a clip in a loop into the registry, `speed` times faster than real time."""

    def __init__(self, registry: StreamRegistry, key: StreamKey = SOURCE, height: int = 480, speed: float = 4.0):
        self.registry = registry
        self.key = key
        self.frames = clip(height)
        self.speed = speed
        self.publisher = Publisher()
        self.stream = registry.claim_publisher(key, self.publisher)
        self.video_dts: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def publish_some(self, count: int) -> None:
        """Publish the first `count` frames at once (history for a fast start)."""
        for frame in self.frames[:count]:
            self._publish(frame, 0)
        self._done = count

    def _publish(self, frame: Frame, offset: int) -> None:
        loop = asyncio.get_running_loop()
        body = bytes(frame.body)
        if frame.kind == FrameKind.VIDEO:
            out = self.stream.publish_video(frame.dts_ms + offset, body, loop.time())
            if out is not None and not out.is_config:
                self.video_dts.add(out.dts_ms)
        elif frame.kind == FrameKind.AUDIO:
            self.stream.publish_audio(frame.dts_ms + offset, body, loop.time())
        self.stream.flush_sinks()

    def run(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        span = self.frames[-1].dts_ms + 40
        offset = 0
        start = getattr(self, "_done", 0)
        t0 = loop.time() - self.frames[start].dts_ms / 1000 / self.speed if start else loop.time()
        while True:
            for frame in self.frames[start:]:
                if offset and frame.is_config:
                    continue
                due = t0 + (frame.dts_ms + offset) / 1000 / self.speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._publish(frame, offset)
            start = 0
            offset += span

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def children() -> list[tuple[int, str]]:
    """This process's child processes (pid, state letter): a "Z" is a zombie."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            out.append((int(entry), fields[0]))
    return out


def make_pool(registry: StreamRegistry, *options: str, **abr) -> TranscodePool:
    cfg = dataclasses.replace(AbrConfig(), **{"wait": 8.0, "idle_grace": 30.0, **abr})
    return TranscodePool(registry, cfg, command=[*FAKE, *options], cpus=2)


async def eventually(check, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def registry() -> StreamRegistry:
    return StreamRegistry(policy=RegistryPolicy(reconnect_grace=0.5))


@pytest.fixture(autouse=True)
def no_workers_left():
    before = {pid for pid, _ in children()}
    yield
    left = [c for c in children() if c[0] not in before]
    assert not left, f"worker processes left behind: {left}"


async def test_first_request_starts_a_job_whose_renditions_are_ready_with_the_sources_timestamps(registry):
    source = Source(registry)
    source.publish_some(30)  # history: the job starts from it at once
    pool = make_pool(registry)
    try:
        views = await pool.renditions(SOURCE)
        assert not isinstance(views, AbrRefusal), views
        assert [v.label for v in views] == ["360p", "240p"]
        assert [(v.width, v.height) for v in views] == [(480, 360), (320, 240)]
        assert all(v.codec == "h264" and v.bandwidth > v.height for v in views)
        stream = registry.get(StreamKey("live", "demo@360p"))
        assert stream is not None and stream.gop.gop_start is not None
        assert stream.info.metadata_values["width"] == 480 and stream.info.metadata_values["height"] == 360
        assert stream.info.audio_config is not None
        assert await pool.renditions(SOURCE, start=False) == views
        assert await pool.renditions(StreamKey("live", "unknown"), start=False) != []  # 404, never []
        snap = pool.snapshot()["jobs"][0]
        assert snap["state"] == "running" and snap["pid"] > 0 and snap["source"] == "live/demo"
        assert [r["label"] for r in snap["renditions"]] == ["360p", "240p"]
        recorder = Recorder()
        stream.add_sink(recorder)
        source.run()
        await eventually(lambda: len(recorder.video_dts()) > 40, what="rendition frames")
        assert set(recorder.video_dts()) <= source.video_dts
        located = await pool.locate(StreamKey("live", "demo@240p"))
        assert located is registry.get(StreamKey("live", "demo@240p"))
        missing = await pool.locate(StreamKey("live", "demo@999p"))
        assert isinstance(missing, AbrRefusal) and missing.status == 404 and "demo@360p" in missing.hint
    finally:
        await source.stop()
        await pool.close()
    assert registry.get(StreamKey("live", "demo@360p")) is None
    assert pool.snapshot()["jobs"] == []


async def test_an_idle_job_stops_and_its_renditions_end(registry):
    source = Source(registry)
    source.publish_some(30)
    source.run()
    pool = make_pool(registry, idle_grace=0.5)
    try:
        views = await pool.renditions(SOURCE)
        assert len(views) == 2
        job = pool.job(SOURCE)
        viewer, _ = registry.get(views[0].key).subscribe("flv", "v", 0.0)
        await asyncio.sleep(1.2)
        assert pool.job(SOURCE) is job, "a job with a viewer must keep running"
        registry.get(views[0].key).unsubscribe(viewer)
        await eventually(lambda: pool.job(SOURCE) is None, timeout=5, what="the idle stop")
        assert registry.get(views[0].key) is None and registry.get(views[1].key) is None
        assert job.state.value == "stopped"
        assert not [c for c in children() if c[0] == job.pid], "the worker must be gone"
    finally:
        await source.stop()
        await pool.close()


async def test_always_mode_follows_the_source(registry):
    pool = make_pool(registry, mode="always")
    source = Source(registry)
    try:
        source.run()
        await eventually(lambda: pool.job(SOURCE) is not None, what="the job to start by itself")
        await eventually(lambda: registry.get(StreamKey("live", "demo@240p")) is not None, what="a rendition")
        job = pool.job(SOURCE)
        await source.stop()
        registry.kick(SOURCE)
        await job.wait_stopped()
        assert job.stop_reason == "source_ended"
        assert registry.get(StreamKey("live", "demo@240p")) is None
    finally:
        await source.stop()
        await pool.close()


async def test_always_mode_starts_a_stream_refused_for_the_budget_once_a_place_frees(registry, monkeypatch):
    monkeypatch.setattr("mediaserver.transcode.pool.ALWAYS_RETRY_S", 0.1)
    pool = make_pool(registry, mode="always", max_jobs=1)
    first = Source(registry)
    second = Source(registry, StreamKey("live", "other"))
    try:
        first.run()
        await eventually(lambda: pool.job(SOURCE) is not None, what="the first job")
        second.run()
        await asyncio.sleep(0.5)
        assert pool.job(StreamKey("live", "other")) is None and pool.snapshot()["refused"].get("budget")
        job = pool.job(SOURCE)
        await first.stop()
        registry.kick(SOURCE)
        await job.wait_stopped()
        await eventually(lambda: pool.job(StreamKey("live", "other")) is not None, what="the second job")
    finally:
        await first.stop()
        await second.stop()
        await pool.close()


def two_sources_one_job(registry: StreamRegistry) -> TranscodePool:
    """live/demo and live/other published, and a pool with room for one job."""
    for key in (SOURCE, StreamKey("live", "other")):
        Source(registry, key).publish_some(30)
    return make_pool(registry, max_jobs=1)


async def test_the_budget_refuses_with_503_and_counts(registry):
    pool = two_sources_one_job(registry)
    try:
        assert len(await pool.renditions(SOURCE)) == 2
        refused = await pool.renditions(StreamKey("live", "other"))
        assert isinstance(refused, AbrRefusal) and refused.status == 503 and "abr.max_jobs" in refused.hint
        refused = await pool.locate(StreamKey("live", "other@360p"))
        assert isinstance(refused, AbrRefusal) and refused.status == 503
        assert pool.snapshot()["refused"] == {"budget": 2}
    finally:
        await pool.close()


async def test_a_made_up_label_starts_no_job_and_holds_no_place_of_the_budget(registry):
    pool = two_sources_one_job(registry)
    try:
        for label in ("nope", "1080p", "source"):
            refused = await pool.locate(StreamKey("live", f"demo@{label}"))
            assert isinstance(refused, AbrRefusal) and refused.status == 404 and refused.reason == "no_rung"
            assert "demo@360p" in refused.hint
        assert pool.jobs == {}
        found = await pool.locate(StreamKey("live", "other@240p"))
        assert not isinstance(found, AbrRefusal) and found.key == StreamKey("live", "other@240p")
        refused = await pool.locate(StreamKey("live", "other@nope"))
        assert isinstance(refused, AbrRefusal) and refused.status == 404
        assert list(pool.jobs) == [StreamKey("live", "other")]
    finally:
        await pool.close()


async def test_refusals_name_why(registry):
    small = Source(registry, StreamKey("live", "small"), height=240)
    small.publish_some(20)
    pool = make_pool(registry)
    try:
        refused = await pool.renditions(StreamKey("live", "small"))
        assert isinstance(refused, AbrRefusal) and refused.status == 409
        assert refused.error == "the source is 240p: no rung of the ladder is below it"
        refused = await pool.locate(StreamKey("live", "small@240p"))  # a rung's label, none below the source
        assert isinstance(refused, AbrRefusal) and refused.status == 409 and pool.jobs == {}
        refused = await pool.renditions(StreamKey("live", "nobody"))
        assert isinstance(refused, AbrRefusal) and refused.status == 404
        off = make_pool(registry, apps=("studio",))
        refused = await off.renditions(StreamKey("live", "small"))
        assert isinstance(refused, AbrRefusal) and refused.status == 404 and "abr.apps" in refused.hint
        assert await pool.renditions(StreamKey("live", "small"), start=False) != []
    finally:
        await pool.close()


async def test_a_crashed_worker_is_restarted_and_renditions_go_on_after_a_discontinuity(registry, tmp_path):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--crash-once", str(tmp_path / "crashed"), "--after", "80")
    try:
        views = await pool.renditions(SOURCE)
        assert len(views) == 2
        stream = registry.get(StreamKey("live", "demo@360p"))
        recorder = Recorder()
        stream.add_sink(recorder)
        source.run()
        job = pool.job(SOURCE)
        await eventually(lambda: job.restarts == 1, what="the restart")
        before = len(recorder.video_dts())
        await eventually(lambda: len(recorder.video_dts()) > before + 30, what="frames after the restart")
        assert recorder.discontinuities >= 1
        assert registry.get(StreamKey("live", "demo@360p")) is stream, "the rendition stream goes on"
        dts = recorder.video_dts()
        assert set(dts) <= source.video_dts, "rendition timestamps are the source's"
        assert dts == sorted(dts) and len(set(dts)) == len(dts), "never a frame older than one already published"
        assert pool.snapshot()["restarts_total"] == 1
    finally:
        await source.stop()
        await pool.close()


async def test_a_worker_killed_with_sigkill_is_restarted(registry):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry)
    try:
        await pool.renditions(SOURCE)
        source.run()
        job = pool.job(SOURCE)
        first = job.pid
        os.kill(first, 9)
        await eventually(lambda: job.restarts == 1 and job.pid != first and job.state.value == "running",
                         what="the restart")
        assert first not in {pid for pid, _ in children()}
    finally:
        await source.stop()
        await pool.close()


@pytest.mark.parametrize("reason, status", [("undecodable", 415), ("codec", 415), ("encoder", 503)])
async def test_a_worker_error_stops_the_job_and_is_answered_with_its_reason(registry, reason, status):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--error", reason, "--after", "5")
    try:
        await pool.renditions(SOURCE)
        await eventually(lambda: pool.job(SOURCE) is None, what="the job to stop")
        refused = await pool.renditions(SOURCE)
        assert isinstance(refused, AbrRefusal) and refused.status == status and refused.reason == reason
        assert "cannot decode" in refused.error
        assert pool.status(SOURCE)["refusal"]["status"] == status
        assert pool.job(SOURCE) is None
        started = await pool.start(SOURCE)  # an operator tries again at once: the worker is asked again
        assert isinstance(started, AbrRefusal) and started.reason == reason
    finally:
        await pool.close()


async def test_garbage_on_stdout_restarts_the_worker(registry, tmp_path):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--garbage-once", str(tmp_path / "garbled"), "--after", "60")
    try:
        await pool.renditions(SOURCE)
        source.run()
        job = pool.job(SOURCE)
        await eventually(lambda: job.restarts == 1 and job.state.value == "running", what="the restart")
        stream = registry.get(StreamKey("live", "demo@360p"))
        recorder = Recorder()
        stream.add_sink(recorder)
        await eventually(lambda: len(recorder.video_dts()) > 10, what="frames after the restart")
    finally:
        await source.stop()
        await pool.close()


async def test_a_shed_rung_ends_its_rendition(registry):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--shed", "240p", "--after", "40")
    try:
        await pool.renditions(SOURCE)
        source.run()
        await eventually(lambda: registry.get(StreamKey("live", "demo@240p")) is None, what="the shed")
        snap = pool.snapshot()["jobs"][0]
        assert snap["shed"] == ["240p"] and snap["state"] == "running"
        assert [v.label for v in await pool.renditions(SOURCE)] == ["360p"]
    finally:
        await source.stop()
        await pool.close()


async def test_a_worker_that_ignores_the_end_of_its_input_is_terminated(registry):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--ignore-eof")
    await pool.renditions(SOURCE)
    job = pool.job(SOURCE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pool.close()
    assert loop.time() - started < 6
    assert job.state.value == "stopped"


async def test_a_publisher_reconnecting_within_the_grace_keeps_the_job(registry):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry)
    try:
        await pool.renditions(SOURCE)
        job = pool.job(SOURCE)
        stream = registry.get(StreamKey("live", "demo@360p"))
        recorder = Recorder()
        stream.add_sink(recorder)
        source.run()
        await eventually(lambda: len(recorder.video_dts()) > 20, what="rendition frames")
        await source.stop()
        registry.release_publisher(source.stream, source.publisher)  # the encoder drops ...
        await asyncio.sleep(0.2)
        assert registry.claim_publisher(SOURCE, source.publisher) is source.stream  # ... and is back in time
        before = len(recorder.video_dts())
        source.run()
        await eventually(lambda: len(recorder.video_dts()) > before + 20, what="frames after the reconnect")
        assert pool.job(SOURCE) is job and job.restarts == 0
        dts = recorder.video_dts()
        assert dts == sorted(dts) and set(dts) <= source.video_dts
    finally:
        await source.stop()
        await pool.close()


async def test_a_worker_that_stops_reading_its_input_is_restarted(registry, tmp_path, monkeypatch):
    # About 4 s of this 8x source (~1 MB/s): a stalled worker passes it soon, while the restarted one has time
    # to start reading even on a loaded machine (a smaller bound would restart it again before it could).
    monkeypatch.setattr("mediaserver.transcode.job.STDIN_BOUND_BYTES", 4 * 1024 * 1024)
    source = Source(registry, speed=8.0)
    source.publish_some(30)
    pool = make_pool(registry, "--stall-once", str(tmp_path / "stalled"), "--after", "40")
    try:
        await pool.renditions(SOURCE)
        source.run()
        job = pool.job(SOURCE)
        await eventually(lambda: job.restarts == 1 and job.state.value == "running", timeout=30, what="the restart")
    finally:
        await source.stop()
        await pool.close()


async def test_a_worker_slower_than_real_time_with_one_rung_is_restarted(registry, monkeypatch):
    monkeypatch.setattr("mediaserver.transcode.pool.STATS_INTERVAL_S", 0.1)
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--speed", "0.5", ladder=(RungConfig(label="240p", height=240, video_kbps=400),))
    try:
        assert [v.label for v in await pool.renditions(SOURCE)] == ["240p"]
        source.run()
        job = pool.job(SOURCE)
        await eventually(lambda: job.restarts >= 1, timeout=10, what="the restart")
        assert job.speed == 0.5
    finally:
        await source.stop()
        await pool.close()


async def test_a_worker_that_keeps_failing_is_given_up_and_answered_503(registry, monkeypatch):
    monkeypatch.setattr("mediaserver.transcode.job.BACKOFF_S", (0.01,))
    monkeypatch.setattr("mediaserver.transcode.job.MAX_FAILURES", 3)
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry, "--crash-always", "--after", "1")
    try:
        await pool.renditions(SOURCE)
        await eventually(lambda: pool.job(SOURCE) is None, what="the job to give up")
        refused = await pool.renditions(SOURCE)
        assert isinstance(refused, AbrRefusal) and refused.status == 503 and refused.reason == "worker_failing"
        assert pool.restarts_total == 3
    finally:
        await pool.close()


async def test_kicking_every_rendition_stops_the_job(registry):
    source = Source(registry)
    source.publish_some(30)
    pool = make_pool(registry)
    try:
        views = await pool.renditions(SOURCE)
        job = pool.job(SOURCE)
        registry.kick(views[0].key, "kicked_by_operator")
        await asyncio.sleep(0.2)
        assert pool.job(SOURCE) is job and [v.label for v in await pool.renditions(SOURCE)] == ["240p"]
        registry.kick(views[1].key, "kicked_by_operator")
        await job.wait_stopped()
        assert pool.job(SOURCE) is None
    finally:
        await pool.close()


def test_the_worker_is_told_the_watermark_of_its_app(registry):
    wm = WatermarkConfig(file="/srv/logo.png", apps=("live",), position="bottom-left", margin=8, opacity=0.5,
                         scale=0.2)
    pool = TranscodePool(registry, AbrConfig(max_keyframe_interval=4.0), wm, command=FAKE)
    options = pool._options(StreamKey("live", "demo"))
    assert options["watermark"] == {"file": "/srv/logo.png", "position": "bottom-left", "margin": 8,
                                    "opacity": 0.5, "scale": 0.2}
    assert options["max_keyframe_interval_ms"] == 4000 and options["max_backlog_ms"] == 3000
    assert pool._options(StreamKey("studio", "demo"))["watermark"] is None
    assert TranscodePool(registry, AbrConfig(), command=FAKE)._options(SOURCE)["watermark"] is None
