"""WHIP ingest (RFC 9725) end to end: an aiortc client in this process publishes H.264 + Opus to a server
process over loopback; the stream decodes from HTTP-FLV and CMAF with PyAV; a kick ends the WebRTC session;
refusals (credentials, bad SDP, codecs, a busy name) are 4xx with a reason. A WHEP viewer of a WHIP stream gets
the publisher's Opus passed through (no AAC -> Opus transcode), and a viewer that vanishes without DELETE is
ended by ICE consent expiry."""

from __future__ import annotations

import asyncio
import io
import re
import time
from urllib.parse import urljoin

import aiohttp
import av
import m3u8

from support.decode import decode_media
from bench.whip import WhipClient
from support.whep import WhepViewer

ADMIN = "admin-token-e2e-0123456789abcdef"
STUDIO_KEY = "whip-studio-key-0123456789"


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.read()


async def cmaf_track(http: aiohttp.ClientSession, root: str, track: str, timeout_s: float = 12.0) -> bytes:
    """The init segment and the first complete media segment of one CMAF track."""
    url = root + f"cmaf-{track}.m3u8"
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = await fetch(http, url)
        if status == 200:
            pl = m3u8.loads(body.decode(), uri=url)
            done = [s for s in pl.segments if s.uri]
            if done and pl.segment_map:
                data = bytearray((await fetch(http, urljoin(url, pl.segment_map[0].uri)))[1])
                data += (await fetch(http, urljoin(url, done[0].uri)))[1]
                return bytes(data)
        assert time.monotonic() < deadline, f"{url} listed no complete segment: {status} {body[:300]!r}"
        await asyncio.sleep(0.3)


def decode_mp4(data: bytes) -> tuple[str, int]:
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams[0]
        frames = sum(len(packet.decode()) for packet in container.demux(stream) if packet.size)
        return stream.codec_context.name, frames


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_a_whip_publish_plays_over_http_flv_and_cmaf_and_a_kick_ends_it(server_factory, monkeypatch, stream_name):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"hls.segment_duration": "1"})
    client = WhipClient(f"{server.http_base}/live/{stream_name}/whip")
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await client.publish(http)
            assert status == 201, body
            assert client.location.startswith(f"/live/{stream_name}/whip/"), client.location
            assert "a=recvonly" in body and "H264" in body and "opus" in body, body
            async with server.flv_viewer(stream_name) as viewer:
                await viewer.wait_until(lambda v: sum(t.kind == 9 for t in v.tags) >= 25
                                        and sum(t.kind == 8 for t in v.tags) >= 25, timeout_s=10)
            report = decode_media(viewer.raw, "flv")
            assert report.video_codec == "h264" and report.audio_codec == "aac", report.summary()
            assert report.first_video_frame_key and report.video_frames >= 20 and report.audio_frames >= 20, report.summary()
            assert (report.width, report.height) == (320, 240) and not report.errors, report.summary()
            assert not report.non_monotonic(), report.summary()
            root = f"{server.http_base}/live/{stream_name}/"
            for track, codec in (("video", "h264"), ("audio", "aac")):
                got, frames = decode_mp4(await cmaf_track(http, root, track))
                assert got == codec and frames > 0, (track, got, frames)
            async with http.post(f"{server.http_base}/api/v1/streams/live/{stream_name}/kick",
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                assert resp.status == 200, await resp.text()
            await wait_for(lambda: client.pc.connectionState in ("closed", "failed"), 10,
                           f"the kicked session's peer connection is still {client.pc.connectionState}")
            assert await client.delete(http) == 404  # the session is gone
        assert "publisher_closed" in server.log_text() and "reason=kicked" in server.log_text() and "protocol=whip" in server.log_text()
    finally:
        await client.close()


async def test_whip_refusals_say_why_and_a_session_ends_on_delete(server_factory, monkeypatch, stream_name):
    monkeypatch.setenv("STUDIO_KEY", STUDIO_KEY)
    server = server_factory(**{"auth.publish_open": "", "auth.stream_keys": '["live/studio=STUDIO_KEY"]',
                               "auth.failure_delay_ms": "50"})
    url = f"{server.http_base}/live/studio/whip"
    first = WhipClient(url, STUDIO_KEY)
    second = WhipClient(url, STUDIO_KEY)
    vp8 = WhipClient(url, STUDIO_KEY, audio=False, video_codec="VP8")
    try:
        async with aiohttp.ClientSession() as http:
            offer = await first.offer()

            async def post(body: str, headers: dict[str, str]) -> tuple[int, dict, dict]:
                async with http.post(url, data=body.encode(), headers=headers) as resp:
                    return resp.status, await resp.json(), dict(resp.headers)

            sdp = {"Content-Type": "application/sdp"}
            status, answer, headers = await post(offer, sdp)
            assert status == 401 and "credential" in answer["error"] and answer["hint"], answer
            assert headers["WWW-Authenticate"].startswith("Bearer")
            status, answer, _ = await post(offer, {**sdp, "Authorization": "Bearer not-the-key"})
            assert status == 403 and "refused" in answer["error"], answer
            status, answer, _ = await post("v=0\r\nthis is not SDP\r\n", {**sdp, "Authorization": f"Bearer {STUDIO_KEY}"})
            assert status == 400 and "SDP" in answer["error"], answer
            status, answer, _ = await post(offer, {"Content-Type": "text/plain", "Authorization": f"Bearer {STUDIO_KEY}"})
            assert status == 415 and "application/sdp" in answer["error"], answer
            status, body = await vp8.publish(http)
            assert status == 400 and "H.264" in body, body

            async with http.options(url, headers={"Origin": "https://studio.example", "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "authorization, content-type"}) as resp:
                assert resp.status == 204 and "POST" in resp.headers["Access-Control-Allow-Methods"], dict(resp.headers)
            status, body = await first.publish(http, offer)
            assert status == 201, body
            status, body = await second.publish(http)
            assert status == 409 and "already being published" in body, body

            await wait_for(lambda: first.pc.connectionState == "connected", 10, "ICE/DTLS never connected")
            assert await first.delete(http) == 200
            assert await first.delete(http) == 404
            await wait_for(lambda: first.pc.connectionState == "closed", 10,
                           f"the peer connection is still {first.pc.connectionState} after DELETE")
    finally:
        for client in (first, second, vp8):
            await client.close()
    assert "reason=deleted" in server.log_text()


async def test_whep_viewers_of_a_whip_stream_get_its_opus_as_it_came_and_a_vanished_viewer_is_ended(
        server_factory, monkeypatch, stream_name):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"webrtc.public_ip": "127.0.0.1", "webrtc.consent_timeout_s": "2"})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    api = f"{server.http_base}/api/v1/streams/live/{stream_name}"
    client = WhipClient(f"{server.http_base}/live/{stream_name}/whip")
    viewer = WhepViewer(f"{server.http_base}/live/{stream_name}/whep")
    try:
        async with aiohttp.ClientSession() as http:
            async def get(url: str) -> dict:
                async with http.get(url, headers=admin) as resp:
                    return await resp.json() if resp.status == 200 else {}

            async def webrtc_viewers_metric() -> float:
                async with http.get(f"{server.http_base}/metrics") as resp:
                    found = re.search(r'^mediaserver_viewers\{format="webrtc"\} (\S+)$', await resp.text(), re.M)
                return float(found.group(1)) if found else 0.0

            status, body = await client.publish(http)
            assert status == 201, body
            candidates = [line.split()[4] for line in body.splitlines() if line.startswith("a=candidate:")]
            assert candidates and set(candidates) == {"127.0.0.1"}, f"WHIP must advertise webrtc.public_ip: {candidates}"
            for _ in range(100):  # the AAC made at ingest gives the hub stream its audio track
                if ((await get(api)).get("audio") or {}).get("codec") == "aac":
                    break
                await asyncio.sleep(0.1)
            answer = await viewer.play(http)
            assert answer.status == 201, answer.body
            assert await viewer.wait_frames(video=25, audio=25, timeout_s=10), viewer.frames
            log = server.log_text()
            assert "event=opus_passthrough" in log, log[-3000:]
            assert "opus_transcode_start" not in log, "the publisher's Opus went AAC -> Opus again"
            assert [v["format"] for v in (await get(f"{api}/viewers"))["viewers"]] == ["webrtc"]
            assert await webrtc_viewers_metric() == 1.0

            # The viewer vanishes (its sockets closed: no DELETE, no DTLS close); consent expiry ends the session.
            for transceiver in viewer.pc.getTransceivers():
                for protocol in transceiver.receiver.transport.transport._connection._protocols:
                    protocol.transport.abort()
            vanished = time.monotonic()
            await wait_for(lambda: "reason=ice_failed" in server.log_text(), 10,
                           "the vanished viewer's session did not end on consent expiry")
            assert time.monotonic() - vanished < 8, "consent_timeout_s is 2"
            assert (await get(f"{api}/viewers"))["viewers"] == []
            assert await webrtc_viewers_metric() == 0.0
        log = server.log_text()
        assert "event=webrtc_consent_expired" in log and "event=viewer_leave" in log, log[-3000:]
    finally:
        await viewer.close()
        await client.close()
