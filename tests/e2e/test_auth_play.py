"""Play auth: signed play URLs on HTTP-FLV, HLS and RTMP play, good and bad, and path tricks on the play
routes while tokens are required. HLS players need nothing special: the token in the playlist URL is
carried to every segment URI."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin

import aiohttp

from e2e.test_auth_publish import SECRET, rtmp_attempt, token
from mediaserver.auth.tokens import Action
from support.decode import decode_media
from support.hls import parse_media_playlist
from support.player import ffmpeg_play
from support.raw_net import raw_http_get


def play_server(server_factory, monkeypatch, **settings):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", SECRET)
    return server_factory(**{"auth.play_open": "", "auth.failure_delay_ms": "200", "hls.segment_duration": "1",
                             **settings})


async def _status(http: aiohttp.ClientSession, url: str) -> tuple[int, dict, float, dict]:
    started = time.monotonic()
    async with http.get(url) as resp:
        body = await resp.json() if resp.content_type == "application/json" else {}
        return resp.status, dict(resp.headers), time.monotonic() - started, body


async def test_http_flv_needs_a_valid_play_token_for_that_stream(server_factory, monkeypatch, publish, media, stream_name):
    server = play_server(server_factory, monkeypatch)
    publish(server, stream_name, media.av, loop=True)
    url = server.flv_url(stream_name)
    cases = {
        "missing": (url, 401),
        "expired": (f"{url}?token={token(Action.PLAY, stream_name, ttl=-1)}", 403),
        "forged": (f"{url}?token={token(Action.PLAY, stream_name, secret='some-other-secret-0123456789')}", 403),
        "another stream": (f"{url}?token={token(Action.PLAY, 'other')}", 403),
        "a publish token": (f"{url}?token={token(Action.PUBLISH, stream_name)}", 403),
        "garbage": (f"{url}?token=%ff%fe..", 403),
        "another address": (f"{url}?token={token(Action.PLAY, stream_name, address='10.1.2.3')}", 403),
    }
    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(_status(http, u) for u, _ in cases.values()))
    for (name, (_, expected)), (status, headers, took, body) in zip(cases.items(), answers):
        assert status == expected, (name, status, body)
        assert body["error"] and body["hint"], name
        assert took >= 0.09, f"{name}: refused after {took:.3f} s, without the random delay"
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers.get("Access-Control-Allow-Origin") == "*", "a refusal must be readable by a web player"
    good = server.flv_viewer(stream_name)
    good.url = f"{url}?token={token(Action.PLAY, stream_name)}"
    async with good:
        assert await good.wait_video_frames(25, timeout_s=10)
    log = server.log_text()
    for reason in ("missing", "expired", "invalid", "wrong_action", "malformed"):
        assert f"reason={reason}" in log, reason
    assert SECRET not in log and "token=" not in log


async def test_hls_carries_the_token_from_the_playlist_to_every_segment(
        server_factory, monkeypatch, publish, media, stream_name, ffmpeg, tmp_path):
    server = play_server(server_factory, monkeypatch)
    publish(server, stream_name, media.av, loop=True)
    tok = token(Action.PLAY, stream_name)
    url = f"{server.hls_url(stream_name)}?token={tok}"
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 15
        while True:
            async with http.get(url) as resp:
                text = await resp.text()
                if resp.status == 200 and parse_media_playlist(text).segments:
                    break
            assert time.monotonic() < deadline, (resp.status, text)
            await asyncio.sleep(0.3)
        playlist = parse_media_playlist(text)
        for seg in playlist.segments:
            assert seg.uri.endswith(f"?token={tok}"), seg.uri
        segment_url = urljoin(url, playlist.segments[0].uri)
        assert (await _status(http, segment_url))[0] == 200
        bare = segment_url.split("?")[0]
        assert (await _status(http, bare))[0] == 401
        assert (await _status(http, f"{bare}?token={token(Action.PLAY, 'other')}"))[0] == 403
        assert (await _status(http, server.hls_url(stream_name)))[0] == 401
    # A real player given only the playlist URL reads the stream.
    out = tmp_path / "played.ts"
    await ffmpeg_play(url, out, fmt="mpegts")
    report = decode_media(out.read_bytes(), "mpegts")
    assert report.errors == [] and report.video_frames >= 25, report.summary()


async def test_rtmp_play_needs_the_token_in_the_stream_name(server_factory, monkeypatch, publish, media, stream_name):
    server = play_server(server_factory, monkeypatch)
    publish(server, stream_name, media.av, loop=True)
    await asyncio.sleep(1.0)
    refused = await rtmp_attempt(server.rtmp_port, stream_name, play=True)
    assert refused.codes == ["NetStream.Play.Failed"], refused.codes
    refused = await rtmp_attempt(server.rtmp_port, f"{stream_name}?token={token(Action.PUBLISH, stream_name)}", play=True)
    assert refused.codes == ["NetStream.Play.Failed"], refused.codes
    played = await rtmp_attempt(server.rtmp_port, f"{stream_name}?token={token(Action.PLAY, stream_name)}", play=True)
    assert "NetStream.Play.Start" in played.codes, played.codes


PLAY_PATH_TRICKS = [
    b"/live/../live/x.flv", b"/live/%2e%2e/%2e%2e/etc/passwd", b"/live/x/../../../etc/passwd", b"/live/a%2Fb.flv",
    b"/live/a%2fb/index.m3u8", b"/live/x/..%2f..%2fetc%2fpasswd", b"/%2e%2e/%2e%2e/proc/self/environ",
    b"/live/" + b"a" * 5000 + b".flv", b"/live/\xff\xfe.flv", b"/live/%ff%fe/index.m3u8", b"/live/x.flv%00",
    b"/live/x/index.m3u8?token=" + b"A" * 3000, b"/live/x.flv?token=../../etc/passwd",
    b"/..%2f..%2f..%2fetc/passwd.flv", b"/live/x/..%252f..%252fetc%252fpasswd",
]


async def test_path_tricks_on_play_routes_with_tokens_required_never_reach_a_file(server_factory, monkeypatch):
    server = play_server(server_factory, monkeypatch, **{"auth.failure_delay_ms": "0"})
    wrong = []
    for target in PLAY_PATH_TRICKS:
        resp = await raw_http_get(server.http_port, target, timeout_s=5)
        if not 400 <= resp.status < 500 or b"root:" in resp.body or b"PATH=" in resp.body:
            wrong.append(f"{target[:60]!r}: {resp.status} {resp.body[:80]!r}")
    assert wrong == [], "\n".join(wrong)
    assert "Traceback" not in server.log_text()
