"""Publisher lifecycle: one publisher per key, reconnecting within the grace period, the end of a stream,
and shutting the server down under load. The server runs with hub.reconnect_grace = 2 s."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from mediaserver.media.frames import FrameKind
from support.checks import is_media, timeline_problems, track_timestamps, wait_live
from support.decode import decode_media
from support.flv_viewer import describe_tag
from support.hls import check_sliding_window

GRACE_S = 2.0  # support.server.TEST_SETTINGS["hub.reconnect_grace"]


async def test_a_second_publisher_on_a_live_key_is_refused(server, publish, media, stream_name):
    first = publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer:
        await viewer.wait_video_frames(10, timeout_s=5)
        second = publish(server, stream_name, media.av, expect_failure=True)
        t0 = time.monotonic()
        code = await second.wait_async(timeout_s=10)
        refused_after = time.monotonic() - t0
        assert code is not None, "the second publisher was still publishing after 10 s"
        assert code != 0, f"the second publisher exited 0; its log: {second.log_text()[-1500:]}"
        print(f"second publisher refused after {refused_after:.2f} s (ffmpeg exit {code})")

        before = viewer.video_frame_count
        assert await viewer.wait_video_frames(before + 25, timeout_s=5), "the first stream stopped after the refusal"
        assert first.running, f"the first publisher stopped: {first.log_text()[-1500:]}"
        assert not viewer.done
    assert timeline_problems(viewer.tags) == []


async def test_publisher_reconnecting_within_the_grace_period_keeps_the_viewer_connected(server, publish, media, stream_name):
    first = publish(server, stream_name, media.av, loop=True)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(40, timeout_s=10)
        first.kill()  # a crashed encoder: the TCP connection just drops
        cut = len(viewer.tags)
        await asyncio.sleep(0.5)
        publish(server, stream_name, media.av, loop=True)
        reconnected = await viewer.wait_until(
            lambda v: sum(1 for t in v.tags[cut:] if t.kind == FrameKind.VIDEO and is_media(t)) >= 50, timeout_s=10
        )
        assert reconnected, (
            f"after the reconnect: ended={viewer.ended} error={viewer.error!r}, "
            f"tags {', '.join(describe_tag(t) for t in viewer.tags[cut:cut + 8])}"
        )
        assert not viewer.done, "the viewer's response ended across the reconnect"

    after = viewer.tags[cut:]
    headers = [i for i, t in enumerate(after) if t.is_sequence_header]
    kinds = {after[i].kind for i in headers}
    assert kinds == {FrameKind.VIDEO, FrameKind.AUDIO}, (
        f"new sequence headers after the reconnect: {[describe_tag(after[i]) for i in headers]}"
    )
    first_key_after = next(i for i, t in enumerate(after) if t.is_video_keyframe and i > min(headers))
    first_video_after = next(i for i, t in enumerate(after) if t.kind == FrameKind.VIDEO and is_media(t) and i > min(headers))
    assert first_key_after == first_video_after, "the new publisher's video does not start with a keyframe"
    assert timeline_problems(viewer.tags) == []
    report = decode_media(viewer.complete_flv(), "flv")
    assert report.errors == [], report.summary()
    assert report.non_monotonic() == [], report.summary()


async def test_after_the_grace_period_the_flv_response_ends_and_the_playlist_gets_endlist(server, publish, media, stream_name):
    publisher = publish(server, stream_name, media.av)
    async with server.flv_viewer(stream_name) as viewer, aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        await poller.poll_until(lambda pl: len(pl.segments) >= 1, timeout_s=15, fetch_segments=False)
        assert await viewer.wait_video_frames(25, timeout_s=5)

        publisher.stop()  # SIGTERM: ffmpeg unpublishes cleanly
        gone_at = time.monotonic()
        assert await viewer.wait_end(timeout_s=GRACE_S + 5), "the FLV response did not end after the grace period"
        assert viewer.ended_at is not None
        ended_after = viewer.ended_at - gone_at
        print(f"FLV response ended {ended_after:.2f} s after the publisher left (grace {GRACE_S} s)")
        assert ended_after >= GRACE_S - 0.5, f"the response ended {ended_after:.2f} s after the publisher left, within the grace"
        assert viewer.error is None, f"the response broke instead of ending: {viewer.error!r}"

        final = await poller.poll_until(lambda pl: pl.ended, timeout_s=GRACE_S + 8, fetch_segments=False)
        assert final.segments, "the ended playlist lists no segments"
        check_sliding_window(poller.history)


async def test_sigterm_with_a_live_publisher_and_viewer_exits_0_within_a_few_seconds(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(25, timeout_s=10)
        t0 = time.monotonic()
        code = await asyncio.to_thread(server.terminate, 10.0)
        took = time.monotonic() - t0
        print(f"server exited with {code} {took:.2f} s after SIGTERM")
        assert code == 0, f"exit code {code} after SIGTERM; log:\n{server.log_tail()}"
        assert took < 5.0, f"the server took {took:.1f} s to exit"
        assert await viewer.wait_end(timeout_s=2), "the viewer's response stayed open after the server exited"
    assert len(track_timestamps(viewer.tags, FrameKind.VIDEO)) >= 25


async def test_publishing_to_an_app_the_pages_use_is_refused(server, publish, media):
    publisher = publish(server, "cam", media.av, app="play", expect_failure=True)
    code = await publisher.wait_async(20)
    assert code not in (None, 0), "a publisher on app 'play' must be refused"
    assert "reserved_app" in server.log_text()
