"""Thumbnails and stream health on a live server: ffmpeg publishes generated pictures and sound (a test
pattern, black frames with silence, a still picture), thumbnails are decoded back with PyAV, health flags
are read from the admin API and /metrics, and on_health events are received by a small webhook server."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import av
import pytest
from aiohttp import web

from support.checks import wait_live
from support.publisher import Publisher, lavfi_publish_args
from support.server import ServerProcess

ADMIN = "admin-token-e2e-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
HEALTH = {
    "health.enabled": "true", "health.interval": "0.5", "health.black_after": "1.5",
    "health.frozen_after": "1.5", "health.silence_after": "1.5",
}

LivePublish = Callable[..., Publisher]


@pytest.fixture
def live_publish(tmp_path: Path) -> Iterator[LivePublish]:
    """live_publish(server, name, video_source, audio_source) -> Publisher: ffmpeg encodes lavfi sources in
    real time (H.264 with a keyframe every 0.5 s, AAC) and publishes them over RTMP."""
    publishers: list[Publisher] = []

    def start(server: ServerProcess, name: str, video: str, audio: str) -> Publisher:
        args = lavfi_publish_args(server.rtmp_url(name), video, audio)
        publisher = Publisher(args, tmp_path / f"publisher{len(publishers)}-{name}.log")
        publishers.append(publisher)
        server.publishers.append(publisher)
        return publisher

    yield start
    for p in publishers:
        p.close()


def jpeg_size(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data), format="mjpeg") as container:
        picture = next(container.decode(video=0))
        return picture.width, picture.height


async def wait_for(check: Callable[[], object], timeout_s: float, what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        server.check()
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s} s")


class HookSink:
    """A webhook receiver: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    async def receive(self, request: web.Request) -> web.Response:
        self.events.append(await request.json())
        return web.Response(status=204)

    def seen(self, condition: str, state: str) -> list[dict]:
        return [e for e in self.events if e.get("condition") == condition and e.get("state") == state]


@pytest.fixture
async def hooks() -> AsyncIterator[tuple[HookSink, str]]:
    sink = HookSink()
    app = web.Application()
    app.router.add_post("/health", sink.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield sink, f"http://127.0.0.1:{port}/health"
    await runner.cleanup()


async def stream_health(http: aiohttp.ClientSession, server: ServerProcess, name: str) -> dict | None:
    async with http.get(f"{server.http_base}/api/v1/streams/live/{name}", headers=AUTH) as resp:
        if resp.status != 200:
            return None
        return (await resp.json())["health"]


async def test_a_thumbnail_is_the_newest_keyframe_at_the_asked_size(server_factory, live_publish, stream_name):
    server = server_factory()
    live_publish(server, stream_name, "testsrc", "sine=frequency=440:sample_rate=48000")
    await wait_live(server, stream_name)
    url = f"{server.http_base}/live/{stream_name}/thumbnail.jpg"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, params={"width": "320"}) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.content_type == "image/jpeg"
            assert jpeg_size(await resp.read()) == (320, 180)
            first_tag = resp.headers["ETag"]
            assert resp.headers["Cache-Control"].startswith("max-age=")
        async with http.get(url) as resp:
            assert jpeg_size(await resp.read()) == (640, 360)
        await asyncio.sleep(1.6)  # the stream moves on: a newer keyframe, more than a second newer
        async with http.get(url, params={"width": "320"}) as resp:
            assert resp.status == 200 and resp.headers["ETag"] != first_tag
        async with http.get(url, params={"width": "abc"}) as resp:
            assert resp.status == 400 and "whole number" in (await resp.json())["hint"]
        async with http.get(f"{server.http_base}/live/nobody/thumbnail.jpg") as resp:
            assert resp.status == 404
        async with http.get(f"{server.http_base}/metrics") as resp:
            text = await resp.text()
    decodes = [line for line in text.splitlines() if line.startswith("mediaserver_thumbnail_decodes_total")]
    assert decodes and 2 <= float(decodes[0].split()[-1]) <= 3


async def test_black_and_silence_are_flagged_and_cleared_with_webhook_events(
        server_factory, live_publish, stream_name, hooks, monkeypatch):
    sink, hook_url = hooks
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**HEALTH, **{"webhooks.on_health": hook_url})
    dark = live_publish(server, stream_name, "color=c=black", "anullsrc=r=48000:cl=stereo")
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        async def flagged() -> bool:
            health = await stream_health(http, server, stream_name)
            return bool(health and health["black"] and health["silent"])

        await wait_for(flagged, 10, "black and silent flags in the API", server)
        health = await stream_health(http, server, stream_name)
        assert health["black"]["duration_s"] >= 1.5 and health["black"]["since"] <= time.time()
        await wait_for(lambda: sink.seen("black", "start") and sink.seen("silent", "start"), 5,
                       "on_health start events", server)
        start = sink.seen("black", "start")[0]
        assert start["event"] == "health" and start["app"] == "live" and start["stream"] == stream_name
        assert start["duration_s"] >= 1.5 and abs(start["since"] - health["black"]["since"]) < 1
        async with http.get(f"{server.http_base}/metrics") as resp:
            metrics = await resp.text()
        assert f'mediaserver_stream_health{{condition="black",stream="live/{stream_name}"}} 1.0' in metrics

        dark.stop()  # the publisher switches to a live picture and a tone (within the reconnect grace)
        live_publish(server, stream_name, "testsrc", "sine=frequency=440:sample_rate=48000")
        await wait_for(lambda: sink.seen("black", "end") and sink.seen("silent", "end"), 10,
                       "on_health end events", server)
        end = sink.seen("black", "end")[0]
        assert end["duration_s"] >= start["duration_s"] and "reason" not in end
        health = await stream_health(http, server, stream_name)
        assert health["black"] is None and health["silent"] is None
    assert len(sink.seen("black", "start")) == 1 and len(sink.seen("silent", "start")) == 1


async def test_a_still_picture_is_flagged_frozen_but_not_black_or_silent(
        server_factory, live_publish, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**HEALTH)
    live_publish(server, stream_name, "smptebars", "sine=frequency=440:sample_rate=48000")
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        async def frozen() -> bool:
            health = await stream_health(http, server, stream_name)
            return bool(health and health["frozen"])

        await wait_for(frozen, 10, "a frozen flag in the API", server)
        health = await stream_health(http, server, stream_name)
        assert health["black"] is None and health["silent"] is None


async def test_a_moving_picture_with_sound_raises_no_flag(server_factory, live_publish, stream_name, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**HEALTH)
    live_publish(server, stream_name, "testsrc", "sine=frequency=440:sample_rate=48000")
    await wait_live(server, stream_name)
    await asyncio.sleep(3.0)  # twice the *_after times
    async with aiohttp.ClientSession() as http:
        assert await stream_health(http, server, stream_name) == {"black": None, "frozen": None, "silent": None}
