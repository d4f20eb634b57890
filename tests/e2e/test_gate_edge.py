"""The gate on an edge: every viewer is admitted the same way, the first viewers of a stream the edge must
pull included (issue 9, defect 9: the on_play hook and the viewers-per-stream limit were skipped while the
stream was not local yet). A real redis-server, an origin and an edge process, a real webhook receiver.
Also the 404 a viewer gets for a stream that is not here: on an edge it says the cluster has no such
stream, and for a kicked-and-blocked stream it says it is blocked and until when."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from e2e.test_admin_live import ADMIN as ADMIN_TOKEN
from e2e.test_admin_live import api as admin_api
from e2e.test_auth_limits import _idle_viewers_gone
from e2e.test_auth_publish import rtmp_attempt
from e2e.test_auth_webhooks import hook  # noqa: F401  (the fixture)
from e2e.test_cluster import cluster, redis, wait_owner  # noqa: F401  (fixtures)
from support.checks import wait_live


async def test_the_on_play_hook_is_asked_for_the_first_viewers_of_a_pulled_stream(cluster, redis, hook, publish,
                                                                                   media):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1", **{"webhooks.on_play": hook.url, "webhooks.on_play_done": hook.url,
                                         "webhooks.timeout": "2.0",
                                         "auth.failure_delay_ms": "50"})
    publish(origin, "deny-show", media.av, loop=True)
    publish(origin, "allow-show", media.av, loop=True)
    await wait_owner(redis, "deny-show")
    await wait_owner(redis, "allow-show")
    async with aiohttp.ClientSession() as http:
        # The edge has neither stream yet: the hook decides all the same, for every format.
        async with http.get(edge.flv_url("deny-show")) as resp:
            assert resp.status == 403, f"the first viewer of a pulled stream passed the on_play hook: {resp.status}"
        async with http.get(edge.hls_url("deny-show")) as resp:
            assert resp.status == 403, await resp.text()
    refused = await rtmp_attempt(edge.rtmp_port, "deny-show", play=True)
    assert refused.codes == ["NetStream.Play.Failed"], refused.codes

    async with edge.flv_viewer("allow-show") as viewer:
        assert await viewer.wait_video_frames(10, timeout_s=15), viewer.describe_start()
    asked = await hook.wait_for("play", "allow-show")
    assert asked["protocol"] == "flv" and asked["client_ip"] == "127.0.0.1"
    done = await hook.wait_for("play_done", "allow-show")
    assert done["bytes_sent"] > 10_000
    assert "reason=webhook_denied" in edge.log_text()


async def test_the_viewers_limit_holds_for_viewers_arriving_together_at_a_pulling_edge(cluster, redis, publish, media,
                                                                                       stream_name):
    origin = cluster("origin", "origin-1")
    edge = cluster("edge", "edge-1", **{"limits.max_viewers_per_stream": "2"})
    publish(origin, stream_name, media.av, loop=True)
    await wait_owner(redis, stream_name)
    async with aiohttp.ClientSession() as http:
        # Four viewers at once while the edge still has to pull the stream: two get in, two get 503.
        async def view() -> int:
            async with http.get(edge.flv_url(stream_name)) as resp:
                if resp.status == 200:
                    await resp.content.readexactly(64 * 1024)  # watching while the others are answered
                    await asyncio.sleep(1.0)
                return resp.status

        statuses = await asyncio.gather(*(view() for _ in range(4)))
        assert sorted(statuses) == [200, 200, 503, 503], statuses
        await _idle_viewers_gone(edge, http)
        # An RTMP player is one more viewer of the same stream: refused while two watch over HTTP.
        async with edge.flv_viewer(stream_name) as a, edge.flv_viewer(stream_name) as b:
            assert await a.wait_video_frames(5, timeout_s=10) and await b.wait_video_frames(5, timeout_s=10)
            played = await rtmp_attempt(edge.rtmp_port, stream_name, play=True)
            assert played.codes == ["NetStream.Play.Failed"], played.codes
    assert "limit=limits.max_viewers_per_stream" in edge.log_text()


async def test_an_edge_says_a_stream_is_not_published_anywhere_in_the_cluster(cluster, redis):
    edge = cluster("edge", "edge-1")
    async with aiohttp.ClientSession() as http:
        for url in (edge.flv_url("nobody-publishes-this"), edge.hls_url("nobody-publishes-this")):
            async with http.get(url) as resp:
                body = await resp.json()
            assert resp.status == 404 and "any node of the cluster" in body["error"], body
            assert "publish it first" not in body["hint"] and "origin" in body["hint"], body
    played = await rtmp_attempt(edge.rtmp_port, "nobody-publishes-this", play=True)
    assert played.codes == ["NetStream.Play.StreamNotFound"], played.codes
    assert "cluster" in played.statuses[0].description


async def test_a_kicked_and_blocked_stream_says_it_is_blocked_and_until_when(server_factory, monkeypatch, publish,
                                                                             media, stream_name):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN_TOKEN)
    server = server_factory()
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        status, kicked = await admin_api(http, server, "POST", f"/streams/live/{stream_name}/kick",
                                         json={"block_seconds": 600, "reason": "spam"})
        assert status == 200 and kicked["blocked_until"]
        for _ in range(50):
            async with http.get(server.flv_url(stream_name)) as resp:
                body = await resp.json()
            if resp.status == 404:
                break
            await asyncio.sleep(0.1)
        assert resp.status == 404 and "blocked" in body["error"] and "spam" in body["error"], body
        until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(kicked["blocked_until"]))
        assert until in body["error"], (kicked, body)  # until when, to the minute
        assert "publish it first" not in body["hint"], body
        async with http.get(server.hls_url(stream_name)) as resp:
            assert resp.status == 404 and "blocked" in (await resp.json())["error"]


async def test_a_stream_key_sent_to_a_reserved_app_or_with_a_bad_character_never_reaches_the_log(server_factory,
                                                                                                 monkeypatch):
    secret = "studio-key-never-logged-0123"
    monkeypatch.setenv("STUDIO_KEY", secret)
    server = server_factory(**{"auth.stream_keys": '["live/studio=STUDIO_KEY"]'})
    for app, key in (("play", secret), ("live", secret + "!")):
        attempt = await rtmp_attempt(server.rtmp_port, key, app=app)
        assert attempt.codes == ["NetStream.Publish.BadName"] and attempt.closed_by_server, attempt.codes
    log = server.log_text()
    assert "reason=reserved_app" in log and "reason=bad_name" in log
    assert secret not in log, log
