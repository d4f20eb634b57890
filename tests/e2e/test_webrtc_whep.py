"""WHEP playback from a server process fed by ffmpeg (H.264 baseline without B-frames + AAC): an aiortc viewer
in the test process decodes video and Opus audio; the admin API and /metrics list it as a "webrtc" viewer;
a kick ends it. Offers and requests the server cannot serve get a 4xx with a reason."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiortc import RTCSessionDescription

from e2e.test_auth_publish import SECRET, token
from mediaserver.auth.tokens import Action
from support.whep import WhepViewer, baseline_clip as make_baseline_clip

ADMIN = "whep-admin-token-0123456789"
WEBRTC = {"webrtc.public_ip": "127.0.0.1", "webrtc.udp_port_range": "42000-42999"}


@pytest.fixture(scope="module")
def baseline_clip(tmp_path_factory):
    return make_baseline_clip(tmp_path_factory.mktemp("whep"))


async def _wait_published(server, *names: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        log = server.log_text()
        if all("event=publish_start" in log and f"stream=live/{n} " in log for n in names):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{names} not published within {timeout_s} s:\n{server.log_tail()}")


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as resp:
        return resp.status, (await resp.json() if resp.content_type == "application/json" else {})


async def test_an_aiortc_viewer_plays_whep_is_listed_and_a_kick_ends_it(server_factory, monkeypatch, publish,
                                                                       baseline_clip, stream_name):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**WEBRTC)
    publish(server, stream_name, baseline_clip, loop=True)
    url = f"{server.http_base}/live/{stream_name}/whep"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as http:
        await _wait_published(server, stream_name)
        viewer = WhepViewer(url)
        try:
            answer = await viewer.play(http)
            assert answer.status == 201, answer.body
            assert answer.headers["Content-Type"].startswith("application/sdp")
            assert viewer.location and viewer.location.startswith(f"/live/{stream_name}/whep/")
            assert "a=candidate:" in answer.body and " 127.0.0.1 " in answer.body
            port = int(answer.body.split(" 127.0.0.1 ")[1].split()[0])
            assert 42000 <= port <= 42999, f"host candidate port {port} outside webrtc.udp_port_range"
            assert await viewer.wait_frames(video=25, audio=25, timeout_s=10), viewer.frames
            assert viewer.sizes == {(320, 240)}

            status, body = await _json(http, "GET", f"{server.http_base}/api/v1/streams/live/{stream_name}/viewers",
                                       headers=admin)
            assert status == 200
            webrtc = [v for v in body["viewers"] if v["format"] == "webrtc"]
            assert len(webrtc) == 1 and webrtc[0]["bytes_sent"] > 0, body
            async with http.get(f"{server.http_base}/metrics") as resp:
                assert 'mediaserver_viewers{format="webrtc"} 1.0' in await resp.text()

            status, _ = await _json(http, "POST", f"{server.http_base}/api/v1/streams/live/{stream_name}/viewers/"
                                    f"{webrtc[0]['id']}/kick", headers=admin)
            assert status == 200
            await asyncio.wait_for(viewer.ended.wait(), 10)
            # The server logs the leave once the peer connection is closed, and the transcode's end once its worker
            # process has exited.
            for _ in range(50):
                log = server.log_text()
                if "reason=kicked" in log and "event=opus_transcode_stop" in log:
                    break
                await asyncio.sleep(0.1)
            assert "event=viewer_leave" in log and "format=webrtc" in log and "reason=kicked" in log, log[-3000:]
            assert "event=opus_transcode_stop" in log, "the shared AAC -> Opus worker stops with its last viewer"
            async with http.delete(f"{server.http_base}{viewer.location}") as resp:
                assert resp.status == 404  # the kick ended it already
        finally:
            await viewer.close()


async def test_whep_requests_the_server_cannot_serve_get_a_4xx_with_a_reason(server_factory, monkeypatch, publish,
                                                                            media, baseline_clip, stream_name):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", SECRET)
    server = server_factory(**WEBRTC, **{"auth.play_open": "", "auth.failure_delay_ms": "50",
                                         "http.cors_origin": "*", "webrtc.max_sessions_per_stream": "1"})
    bframes = stream_name + "b"
    publish(server, stream_name, baseline_clip, loop=True)
    publish(server, bframes, media.av, loop=True)  # H.264 High with B-frames, ABR off in tests
    base = f"{server.http_base}/live"
    good = token(Action.PLAY, stream_name)
    async with aiohttp.ClientSession() as http:
        await _wait_published(server, stream_name, bframes)
        await asyncio.sleep(0.5)  # a GOP of the B-frame stream, to tell it has them
        viewer = WhepViewer("")
        offer = await viewer.offer()
        await viewer.close()

        async def post(url: str, body: str = offer, content_type: str = "application/sdp") -> tuple[int, dict]:
            return await _json(http, "POST", url, data=body, headers={"Content-Type": content_type})

        status, body = await post(f"{base}/{stream_name}/whep?token={good}", "v=0\r\nnot an offer\r\n")
        assert status == 400 and "bad SDP offer" in body["error"], body
        status, body = await post(f"{base}/{stream_name}/whep?token={good}", offer, "text/plain")
        assert status == 415 and "application/sdp" in body["error"], body
        status, body = await post(f"{base}/nobody/whep?token={token(Action.PLAY, 'nobody')}")
        assert status == 404 and "not being published" in body["error"] and body["hint"], body
        status, body = await post(f"{base}/{stream_name}/whep")
        assert status == 401 and body["hint"], body
        status, body = await post(f"{base}/{stream_name}/whep?token={token(Action.PLAY, 'other')}")
        assert status == 403 and body["error"], body
        status, body = await post(f"{base}/{bframes}/whep?token={token(Action.PLAY, bframes)}")
        assert status == 415 and "B-frames" in body["error"] and "ABR" in body["hint"], body
        status, body = await _json(http, "PATCH", f"{base}/{stream_name}/whep/x", data="a=candidate",
                                   headers={"Content-Type": "application/trickle-ice-sdpfrag"})
        assert status == 405 and body["hint"], body
        async with http.options(f"{base}/{stream_name}/whep", headers={
                "Origin": "http://player.example", "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 204
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "DELETE" in resp.headers["Access-Control-Allow-Methods"]

        # One session of the stream (answered, never connected: it holds its place until its ICE deadline), then
        # the per-stream limit; DELETE gives the place back.
        first = WhepViewer(f"{base}/{stream_name}/whep?token={good}")
        try:
            answer = await first.post(http, await first.offer())
            assert answer.status == 201, answer.body
            assert answer.headers.get("Access-Control-Expose-Headers", "").startswith("Location")
            status, body = await post(f"{base}/{stream_name}/whep?token={good}")
            assert status == 429 and "max_sessions_per_stream" in body["error"], body
            async with http.delete(f"{server.http_base}{answer.headers['Location']}") as resp:
                assert resp.status == 200
            again = WhepViewer(f"{base}/{stream_name}/whep?token={good}")
            answer = await again.post(http, await again.offer())
            await again.close()
            assert answer.status == 201, answer.body
        finally:
            await first.close()


async def test_a_viewer_whose_certificate_does_not_match_its_fingerprint_leaves_as_dtls_failed(
        server_factory, publish, baseline_clip, stream_name):
    server = server_factory(**WEBRTC)
    publish(server, stream_name, baseline_clip, loop=True)
    async with aiohttp.ClientSession() as http:
        await _wait_published(server, stream_name)
        viewer = WhepViewer(f"{server.http_base}/live/{stream_name}/whep")
        try:
            offer = await viewer.offer()
            digest = next(x for x in offer.splitlines() if x.startswith("a=fingerprint:sha-256 ")).split()[1]
            wrong = ":".join("00" if part != "00" else "11" for part in digest.split(":"))
            answer = await viewer.post(http, offer.replace(digest, wrong))
            assert answer.status == 201, answer.body
            await viewer.pc.setRemoteDescription(RTCSessionDescription(answer.body, "answer"))
            for _ in range(100):
                log = server.log_text()
                if "event=viewer_leave" in log and "format=webrtc" in log:
                    break
                await asyncio.sleep(0.1)
            assert "reason=dtls_failed" in log and "reason=ice_failed" not in log, log[-3000:]
            assert viewer.frames == {"video": 0, "audio": 0}
        finally:
            await viewer.close()
