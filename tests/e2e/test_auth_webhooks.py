"""Webhooks against a real server: a hook that allows, denies, times out, answers garbage, or renames the
stream; and the done events that follow a session's end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from e2e.test_auth_publish import rtmp_attempt
from support.checks import wait_live


class Hook:
    """Answers by the stream name's prefix: allow-, deny-, slow-, garbage-, rename-, broken-, expire-."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(body)
        self.changed.set()
        kind = body["stream"].split("-", 1)[0]
        if body["event"].endswith("_done") or kind == "allow":
            return web.Response(status=204)
        if kind == "deny":
            return web.json_response({"reason": "not on the list"}, status=403)
        if kind == "slow":
            await asyncio.sleep(3)
            return web.Response(status=204)
        if kind == "garbage":
            return web.Response(body=b"<html>{oops", content_type="application/json")
        if kind == "broken":
            return web.Response(status=502)
        if kind == "expire":
            return web.json_response({"expires_in": 1.5})
        if kind == "rename":
            return web.json_response({"stream": "public-" + body["stream"].split("-", 1)[1]})
        return web.Response(status=204)

    async def wait_for(self, event: str, stream: str, timeout_s: float = 10.0, where=lambda call: True) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            for call in self.calls:
                if call["event"] == event and call["stream"] == stream and where(call):
                    return call
            left = deadline - time.monotonic()
            assert left > 0, f"no {event} for {stream}; calls: {self.calls}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.server.start_server()
    yield h
    await h.server.close()


def hooked_server(server_factory, hook: Hook, **settings):
    return server_factory(**{
        "webhooks.on_publish": hook.url, "webhooks.on_play": hook.url, "webhooks.on_publish_done": hook.url,
        "webhooks.on_play_done": hook.url, "webhooks.timeout": "1.0", "auth.failure_delay_ms": "50", **settings,
    })


async def test_publish_hook_verdicts_allow_deny_timeout_garbage_and_failure(server_factory, hook):
    server = hooked_server(server_factory, hook)
    names = ["allow-a", "deny-a", "slow-a", "garbage-a", "broken-a"]
    attempts = await asyncio.gather(*(rtmp_attempt(server.rtmp_port, f"{n}?user=7&token=x") for n in names))
    codes = {n: a.codes for n, a in zip(names, attempts)}
    assert codes["allow-a"] == ["NetStream.Publish.Start"], codes
    for name in names[1:]:
        assert codes[name] == ["NetStream.Publish.Unauthorized"], codes
    slow = attempts[names.index("slow-a")]
    assert slow.answered_after_s is not None and slow.answered_after_s < 2.5, "the hook's timeout was not applied"
    call = await hook.wait_for("publish", "allow-a")
    # The app is open, so "token" is not the server's credential: the hook gets it (it may be the hook's own).
    assert call["params"] == {"user": "7", "token": "x"} and call["protocol"] == "rtmp" and call["via"] == "open"
    assert call["client_ip"] == "127.0.0.1"
    log = server.log_text()
    for reason in ("webhook_denied", "webhook_timeout", "webhook_bad_answer", "webhook_status_502"):
        assert f"reason={reason}" in log, reason
    assert "event=webhook_failed" in log


async def test_a_hook_that_fails_allows_when_the_config_says_so(server_factory, hook):
    server = hooked_server(server_factory, hook, **{"webhooks.on_failure": "allow"})
    slow, deny = await asyncio.gather(rtmp_attempt(server.rtmp_port, "slow-b"), rtmp_attempt(server.rtmp_port, "deny-b"))
    assert slow.codes == ["NetStream.Publish.Start"]
    assert deny.codes == ["NetStream.Publish.Unauthorized"], "a 4xx is a refusal whatever on_failure says"


async def test_the_publish_hook_may_rename_the_stream_and_hears_when_it_ends(server_factory, hook, publish, media):
    server = hooked_server(server_factory, hook)
    publisher = publish(server, "rename-cam", media.av, loop=True)
    await wait_live(server, "public-cam")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.flv_url("rename-cam")) as resp:
            assert resp.status == 404
    publisher.stop()
    done = await hook.wait_for("publish_done", "public-cam")
    assert done["reason"] in ("unpublished", "ended") and done["bytes_in"] > 0 and done["duration_s"] > 0


async def test_the_play_hook_admits_viewers_and_hears_when_they_leave(server_factory, hook, publish, media):
    server = hooked_server(server_factory, hook)
    publish(server, "allow-show", media.av, loop=True)
    await wait_live(server, "allow-show")
    viewer = server.flv_viewer("allow-show")
    viewer.url += "?seat=9"
    async with viewer:
        assert await viewer.wait_video_frames(10, timeout_s=10)
    play = await hook.wait_for("play", "allow-show", where=lambda c: c["params"] == {"seat": "9"})
    assert play["protocol"] == "flv" and play["client_ip"] == "127.0.0.1"
    done = await hook.wait_for("play_done", "allow-show", where=lambda c: c["params"] == {"seat": "9"})
    assert done["bytes_sent"] > 10_000 and done["duration_s"] > 0


async def test_a_refusing_play_hook_answers_403_and_hls_answers_are_reused(server_factory, hook, publish, media):
    server = hooked_server(server_factory, hook, **{"webhooks.on_publish": ""})
    publish(server, "deny-show", media.av, loop=True)
    await asyncio.sleep(1.5)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.flv_url("deny-show")) as resp:
            assert resp.status == 403, await resp.text()
        for _ in range(3):
            async with http.get(server.hls_url("deny-show")) as resp:
                assert resp.status == 403
    hls_calls = [c for c in hook.calls if c["event"] == "play" and c["protocol"] == "hls"]
    assert len(hls_calls) == 1, "an HLS client's answer must be reused, not asked per request"


async def test_an_expiry_from_the_hook_ends_the_publisher_or_the_viewer_on_time(server_factory, hook, publish, media):
    publishing = server_factory(**{"webhooks.on_publish": hook.url, "webhooks.timeout": "1.0"})
    publisher = publish(publishing, "expire-pub", media.av, loop=True, expect_failure=True)
    await wait_live(publishing, "expire-pub")
    assert await publisher.wait_async(8.0) is not None, "the publisher outlived the expiry the hook set"
    assert "reason=session_expired" in publishing.log_text()

    playing = server_factory(**{"webhooks.on_play": hook.url, "webhooks.timeout": "1.0"})
    publish(playing, "expire-show", media.av, loop=True)
    await asyncio.sleep(1.0)
    viewer = playing.flv_viewer("expire-show")
    async with viewer:
        assert await viewer.wait_video_frames(5, timeout_s=5)
        assert await viewer.wait_end(6.0) and viewer.ended, "the viewer outlived the expiry the hook set"
        assert 1.0 < viewer.ended_at - viewer.requested_at < 4.0
