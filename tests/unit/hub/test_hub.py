"""The stream hub: GOP cache, viewers' clean start, slow consumers, publishers and reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest

from mediaserver.hub.gop import GopCache, GopLimits
from mediaserver.hub.registry import PublishRefused, RegistryPolicy, StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.hub.subscriber import SlowConsumer, SlowPolicy
from mediaserver.media import flv_body
from mediaserver.media.frames import FrameKind

KEY = StreamKey("live", "test")


def video_body(keyframe: bool, size: int = 100, config: bool = False) -> bytes:
    b0 = 0x17 if keyframe or config else 0x27
    return bytes([b0, 0 if config else 1, 0, 0, 0]) + b"\x00" * size


def audio_body(size: int = 20, config: bool = False) -> bytes:
    return bytes([0xAF, 0 if config else 1]) + (b"\x12\x10" if config else b"\x00" * size)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, object]] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay, fn):
        entry = [self.now + delay, fn, False]

        class Handle:
            def cancel(self_inner):
                entry[2] = True

        self.timers.append(entry)
        return Handle()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now and not t[2]]
        self.timers = [t for t in self.timers if t not in due]
        for t in due:
            t[1]()


class FakePublisher:
    def __init__(self, peer: str = "127.0.0.1:5000") -> None:
        self.peer = peer
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


def make_registry(clock: FakeClock, **policy) -> StreamRegistry:
    return StreamRegistry(
        limits=GopLimits(window_ms=3000),
        slow=SlowPolicy(max_overflows=3, overflow_window=60),
        policy=RegistryPolicy(**policy),
        clock=clock,
        call_later=clock.call_later,
    )


def publish_gop(stream, start_ms: int, frames: int = 30, step_ms: int = 33, now: float = 0.0) -> int:
    ts = start_ms
    for i in range(frames):
        stream.publish_video(ts, video_body(i == 0), now)
        stream.publish_audio(ts, audio_body(), now)
        ts += step_ms
    return ts


def test_late_viewer_starts_with_headers_then_latest_keyframe():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    stream.publish_metadata(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09", {"width": 1}, clock())
    stream.publish_video(0, video_body(False, config=True), clock())
    stream.publish_audio(0, audio_body(config=True), clock())
    ts = publish_gop(stream, 0)
    publish_gop(stream, ts)
    sub, start = stream.subscribe("flv", "viewer", clock())
    assert [f.kind for f in start[:3]] == [FrameKind.DATA, FrameKind.VIDEO, FrameKind.AUDIO]
    assert all(f.is_config for f in start[:3])
    first_media = start[3]
    assert first_media.kind == FrameKind.VIDEO and first_media.keyframe and first_media.dts_ms == ts
    assert len(start) == 3 + 60  # the second GOP: 30 video + 30 audio frames


def test_two_viewers_share_the_same_tag_objects():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    a, _ = stream.subscribe("flv", "a", clock())
    b, _ = stream.subscribe("flv", "b", clock())
    publish_gop(stream, 0, frames=5)
    fa, fb = a.take(clock()), b.take(clock())
    assert len(fa) == 10 and all(x.tag is y.tag for x, y in zip(fa, fb))


def test_gop_cache_is_bounded_by_window_and_keeps_latest_gop():
    cache = GopCache(GopLimits(window_ms=1000, max_gop_ms=5000))
    for i in range(300):
        cache.append(flv_body.video_frame(video_body(i % 100 == 0), i * 33))
    assert cache.gop_start is not None and cache.dts_at(cache.gop_start) == 200 * 33
    assert len(cache) == 100  # the newest GOP protects itself; older frames are trimmed


def test_a_flood_of_tiny_frames_at_one_time_is_bounded_by_count_and_trimmed_in_batches(monkeypatch):
    """3-byte audio frames at one timestamp are never old enough to trim by time: the count bounds them, and
    the log is shifted once per sixteenth of a bound, not once per frame (quadratic at 900,000 frames)."""
    limits = GopLimits(window_bytes=1024 * 1024, window_frames=4_000)
    cache = GopCache(limits)
    shifts = 0
    real = GopCache._trim

    def counting(self):
        nonlocal shifts
        before = self.base
        real(self)
        shifts += self.base != before

    monkeypatch.setattr(GopCache, "_trim", counting)
    for _ in range(40_000):
        cache.append(flv_body.audio_frame(audio_body(size=1), 5))
    assert len(cache) <= 4_000 and cache.end == 40_000
    assert shifts <= 40_000 // (4_000 // 16) + 1
    big = GopCache(GopLimits(window_bytes=64 * 1024, window_frames=100_000))
    for i in range(20_000):
        big.append(flv_body.audio_frame(audio_body(size=100), 5))
    assert big.retained_bytes <= 64 * 1024 and len(big) > 64 * 1024 // 200


def test_too_long_gop_is_given_up_and_late_joiner_waits_for_keyframe():
    cache = GopCache(GopLimits(window_ms=1000, max_gop_ms=2000))
    for i in range(100):
        cache.append(flv_body.video_frame(video_body(i == 0), i * 33))
    assert cache.gop_start is None
    assert cache.late_joiner_start() == cache.end
    assert len(cache) < 40  # memory follows the window, not the endless GOP


def test_audio_only_stream_caches_recent_audio_by_duration():
    cache = GopCache(GopLimits(window_ms=3000, audio_only_ms=1000))
    for i in range(200):
        cache.append(flv_body.audio_frame(audio_body(), i * 23))
    start = cache.late_joiner_start()
    assert 0 < cache.newest_dts - cache.dts_at(start) <= 1000


def test_slow_viewer_drops_to_next_keyframe_and_counts_it():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    fast, _ = stream.subscribe("flv", "fast", clock())
    slow, _ = stream.subscribe("flv", "slow", clock())
    ts = 0
    for _ in range(5):  # 5 GOPs of 1 s: the slow viewer never reads
        ts = publish_gop(stream, ts)
        assert len(fast.take(clock())) == 60
    assert slow.take(clock()) == []  # overflowed: backlog dropped
    assert slow.frames_dropped > 0 and stream.frames_dropped == slow.frames_dropped
    stream.publish_video(ts, video_body(False), clock())
    stream.publish_audio(ts, audio_body(), clock())
    assert slow.take(clock()) == []  # still waiting for a keyframe
    publish_gop(stream, ts + 33, frames=2)
    got = slow.take(clock())
    assert got[0].keyframe and got[0].kind == FrameKind.VIDEO
    assert len(fast.take(clock())) == 6  # the fast viewer never noticed


def test_repeated_overflows_disconnect_the_slow_viewer():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    slow, _ = stream.subscribe("flv", "slow", clock())
    ts = 0
    with pytest.raises(SlowConsumer):
        for _ in range(10):
            for _ in range(5):
                ts = publish_gop(stream, ts)
            slow.take(clock())
    assert slow.closed and slow not in stream.subscribers


def test_second_publisher_on_live_key_is_refused():
    clock = FakeClock()
    reg = make_registry(clock, stale_publisher_timeout=5)
    first = FakePublisher("a")
    stream = reg.claim_publisher(KEY, first)
    stream.publish_video(0, video_body(True), clock())
    clock.advance(1)
    with pytest.raises(PublishRefused) as err:
        reg.claim_publisher(KEY, FakePublisher("b"))
    assert err.value.code == "NetStream.Publish.BadName"
    assert first.closed is None


def test_stale_publisher_is_replaced_by_newcomer():
    clock = FakeClock()
    reg = make_registry(clock, stale_publisher_timeout=5)
    first = FakePublisher("a")
    reg.claim_publisher(KEY, first)
    clock.advance(6)
    second = FakePublisher("b")
    stream = reg.claim_publisher(KEY, second)
    assert first.closed == "replaced_by_new_publisher" and stream.publisher is second


def test_reconnect_within_grace_continues_timeline_and_keeps_viewers():
    clock = FakeClock()
    reg = make_registry(clock, reconnect_grace=10)
    pub = FakePublisher()
    stream = reg.claim_publisher(KEY, pub)
    viewer, _ = stream.subscribe("flv", "v", clock())
    publish_gop(stream, 5000)
    reg.release_publisher(stream, pub)
    clock.advance(3)
    again = reg.claim_publisher(KEY, FakePublisher())
    assert again is stream and not stream.ended
    publish_gop(stream, 0)  # the new session starts from zero
    frames = viewer.take(clock())
    video = [f.dts_ms for f in frames if f.kind == FrameKind.VIDEO]
    assert video == sorted(video) and video[30] > video[29]


def test_stream_ends_after_grace_and_viewers_get_the_end():
    async def scenario():
        clock = FakeClock()
        reg = make_registry(clock, reconnect_grace=10)
        pub = FakePublisher()
        stream = reg.claim_publisher(KEY, pub)
        viewer, _ = stream.subscribe("flv", "v", clock())
        publish_gop(stream, 0, frames=3)
        assert len(await viewer.next_batch()) == 6
        waiting = asyncio.ensure_future(viewer.next_batch())
        await asyncio.sleep(0)
        reg.release_publisher(stream, pub)
        clock.advance(11)
        assert await asyncio.wait_for(waiting, 1) is None
        assert reg.get(KEY) is None and stream.ended

    asyncio.run(scenario())


def test_timestamp_jump_is_rebased_and_sinks_see_a_discontinuity():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())

    class Sink:
        def __init__(self):
            self.frames, self.discontinuities, self.ended = [], 0, False

        def on_frame(self, f):
            self.frames.append(f)

        def on_discontinuity(self):
            self.discontinuities += 1

        def on_end(self):
            self.ended = True

    sink = Sink()
    stream.add_sink(sink)
    publish_gop(stream, 0, frames=3)
    publish_gop(stream, 3_600_000, frames=3)  # an hour forward
    stream.flush_sinks()
    dts = [f.dts_ms for f in sink.frames if f.kind == FrameKind.VIDEO]
    assert sink.discontinuities == 1 and dts == sorted(dts) and dts[-1] < 1000


def test_unsupported_codec_track_is_left_out_and_other_track_continues():
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    viewer, _ = stream.subscribe("flv", "v", clock())
    assert stream.publish_video(0, bytes([0x14]) + b"\x00" * 20, clock()) is None  # VP6
    assert stream.publish_audio(0, audio_body(), clock()) is not None
    assert [f.codec for f in viewer.take(clock())] == ["aac"]


def test_kick_closes_publisher_and_ends_stream():
    clock = FakeClock()
    reg = make_registry(clock)
    pub = FakePublisher()
    reg.claim_publisher(KEY, pub)
    assert reg.kick(KEY, "kicked")
    assert pub.closed == "kicked" and reg.get(KEY) is None
    assert not reg.kick(KEY)


def test_a_waiting_viewer_cancelled_does_not_cancel_the_others():
    # An RTMP play task is cancelled when its connection drops; every other viewer of the stream is waiting
    # for the same next frame at that moment and must go on receiving.
    async def scenario():
        clock = FakeClock()
        reg = make_registry(clock)
        stream = reg.claim_publisher(KEY, FakePublisher())
        publish_gop(stream, 0, frames=2)
        viewers = [stream.subscribe("rtmp", f"v{i}", clock())[0] for i in range(3)]
        for viewer in viewers:
            viewer.take(clock())
        waiting = [asyncio.ensure_future(viewer.next_batch()) for viewer in viewers]
        await asyncio.sleep(0)
        waiting[0].cancel()
        await asyncio.sleep(0)
        publish_gop(stream, 100, frames=1)
        for task in waiting[1:]:
            assert len(await asyncio.wait_for(task, 1)) == 2
        assert waiting[0].cancelled()

    asyncio.run(scenario())


class PausedPublisher(FakePublisher):
    """A publisher whose reads are paused: once heard out it leaves (its unpublish was waiting) or not."""

    def __init__(self, reg: StreamRegistry, stream_key: StreamKey, leaves: bool, paused: bool = True) -> None:
        super().__init__("paused")
        self.reg, self.key, self.leaves, self.paused = reg, stream_key, leaves, paused
        self.heard = 0

    def hear_out(self) -> bool:
        self.heard += 1
        if not self.paused:
            return False
        if self.leaves:
            asyncio.get_running_loop().call_soon(lambda: self.reg.release_publisher(self.reg.get(self.key), self))
        return True


@pytest.mark.parametrize("leaves", [True, False])
async def test_a_paused_holder_is_heard_out_before_a_new_publisher_claims_its_name(leaves: bool):
    clock = FakeClock()
    reg = make_registry(clock, stale_publisher_timeout=5)
    holder = PausedPublisher(reg, KEY, leaves)
    stream = reg.claim_publisher(KEY, holder)
    stream.publish_video(0, video_body(True), clock())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await reg.hear_out_publisher(KEY, None, wait_s=0.2)
    waited = loop.time() - started
    assert holder.heard == 1
    if leaves:  # its unpublish was read: the name is free for the newcomer, at once
        assert stream.publisher is None and waited < 0.1
        reg.claim_publisher(KEY, FakePublisher("new"))
    else:  # still publishing: the newcomer waited the bound, and is refused as before
        assert stream.publisher is holder and 0.2 <= waited < 1.0
        with pytest.raises(PublishRefused):
            reg.claim_publisher(KEY, FakePublisher("new"))


async def test_a_holder_that_is_not_paused_or_is_the_asker_is_not_waited_for():
    clock = FakeClock()
    reg = make_registry(clock)
    holder = PausedPublisher(reg, KEY, leaves=False, paused=False)
    reg.claim_publisher(KEY, holder)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await reg.hear_out_publisher(KEY, None, wait_s=5)
    await reg.hear_out_publisher(KEY, holder, wait_s=5)
    await reg.hear_out_publisher(StreamKey("live", "other"), None, wait_s=5)
    assert loop.time() - started < 0.5 and holder.heard == 1


async def test_a_reading_holder_whose_unpublish_is_read_a_turn_later_frees_its_name():
    """The encoder stopped and started again at once: its unpublish, already in the socket of a holder that is
    not paused, is read in a later turn of the loop than the newcomer's publish."""
    clock = FakeClock()
    reg = make_registry(clock, stale_publisher_timeout=5)
    holder = PausedPublisher(reg, KEY, leaves=False, paused=False)
    stream = reg.claim_publisher(KEY, holder)
    stream.publish_video(0, video_body(True), clock())
    loop = asyncio.get_running_loop()
    loop.call_later(0.003, lambda: reg.release_publisher(stream, holder))
    await reg.hear_out_publisher(KEY, None)
    assert stream.publisher is None
    reg.claim_publisher(KEY, FakePublisher("new"))


class StalledHolder(PausedPublisher):
    """Heard out while the process is descheduled (a loaded machine): the first loop turn after the request
    takes longer than the whole wait, and the holder's unpublish is read a few turns later."""

    def __init__(self, reg: StreamRegistry, stream_key: StreamKey, stall_s: float) -> None:
        super().__init__(reg, stream_key, leaves=False)
        self.stall_s = stall_s

    def hear_out(self) -> bool:
        loop = asyncio.get_running_loop()

        def leave(hops: int) -> None:
            if hops:
                loop.call_soon(leave, hops - 1)
            else:
                self.reg.release_publisher(self.reg.get(self.key), self)

        def stall() -> None:
            time.sleep(self.stall_s)
            leave(3)

        loop.call_soon(stall)
        return True


async def test_a_holder_heard_out_while_the_process_stalls_past_the_wait_still_gets_its_turns_to_leave():
    clock = FakeClock()
    reg = make_registry(clock, stale_publisher_timeout=5)
    holder = StalledHolder(reg, KEY, stall_s=0.1)
    stream = reg.claim_publisher(KEY, holder)
    stream.publish_video(0, video_body(True), clock())
    await reg.hear_out_publisher(KEY, None, wait_s=0.05)
    assert stream.publisher is None  # it left: the newcomer is not refused for a publisher already gone
    reg.claim_publisher(KEY, FakePublisher("new"))


def test_a_new_unsupported_codec_in_every_message_is_logged_a_few_times_only(caplog):
    clock = FakeClock()
    reg = make_registry(clock)
    stream = reg.claim_publisher(KEY, FakePublisher())
    for i in range(200):
        fourcc = bytes((0x61 + i % 26, 0x61 + i // 26, 0, 1))  # a FourCC no codec has, with control bytes
        assert stream.publish_video(i, bytes((0x80 | 1 << 4 | 1,)) + fourcc + b"\x00" * 8, clock()) is None
    lines = [r for r in caplog.records if r.getMessage() == "unsupported_codec"]
    assert len(lines) == 8
