"""Play tokens and the on_play hook apply to VOD as to live: /vod/ID.mp4, /vod/ID/index.m3u8 and
/vod/ID/manifest.mpd are plays of the recording's stream (live or not). The token travels into the
playlist's and the manifest's URIs, so every byte-range request carries it; one player's range requests
are one on_play question, as for live HLS."""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import aiohttp
import m3u8
from aiohttp import web
from aiohttp.test_utils import TestServer
from mpegdash.parser import MPEGDASHParser

from e2e.test_auth_publish import SECRET, token
from mediaserver.auth.tokens import Action
from support.decode import decode_media

ADMIN = "admin-token-vod-play-0123456789ab"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


class PlayHook:
    """on_play: allows until `deny` is set; counts the questions."""

    def __init__(self) -> None:
        self.deny = False
        self.calls: list[dict] = []
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        return web.json_response({"reason": "not today"}, status=403) if self.deny else web.Response(status=204)


async def _get(http: aiohttp.ClientSession, url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def _recording(http: aiohttp.ClientSession, server, name: str) -> dict:
    base = f"{server.http_base}/api/v1"
    for _ in range(150):  # until the publisher is on (404 before)
        async with http.post(f"{base}/streams/live/{name}/record", headers=AUTH) as resp:
            if resp.status == 200:
                break
            assert resp.status == 404, await resp.text()
        await asyncio.sleep(0.1)
    await asyncio.sleep(3)
    async with http.delete(f"{base}/streams/live/{name}/record", headers=AUTH) as resp:
        rec_id = (await resp.json())["id"]
    for _ in range(50):
        async with http.get(f"{base}/recordings/{rec_id}", headers=AUTH) as resp:
            row = await resp.json()
        if row.get("status") == "complete":
            return row
        await asyncio.sleep(0.1)
    raise AssertionError(f"recording {rec_id} was not completed: {row}")


async def test_vod_needs_the_stream_s_play_token_carries_it_and_asks_the_on_play_hook(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path):
    hook = PlayHook()
    await hook.server.start_server()
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", SECRET)
    server = server_factory(**{
        "record.path": str(tmp_path / "rec"), "auth.play_open": "", "auth.failure_delay_ms": "50",
        "webhooks.on_play": str(hook.server.make_url("/hook")), "webhooks.hls_cache_s": "2",
    })
    publisher = publish(server, stream_name, media.av, loop=True)
    try:
        async with aiohttp.ClientSession() as http:
            row = await _recording(http, server, stream_name)
            publisher.stop()  # a recording is played whether its stream is live or not
            base = server.http_base
            good = token(Action.PLAY, stream_name)
            urls = {fmt: urljoin(base, path) for fmt, path in row["vod"].items()}
            assert set(urls) == {"mp4", "hls", "dash"}

            for fmt, url in urls.items():
                status, body, headers = await _get(http, url)
                assert status == 401 and b"play token" in body and b"hint" in body, (fmt, status, body)
                assert headers["WWW-Authenticate"].startswith("Bearer")
                status, body, _ = await _get(http, f"{url}?token={token(Action.PLAY, 'another')}")
                assert status == 403, (fmt, status, body)
            hook.calls.clear()
            status, data, _ = await _get(http, f"{urls['mp4']}?token={good}")
            assert status == 200 and len(data) == row["bytes"]
            status, _, _ = await _get(http, urls["mp4"], {"Authorization": f"Bearer {good}", "Range": "bytes=0-9"})
            assert status == 206

            # HLS: the token is in every URI; the byte ranges it names decode.
            status, text, _ = await _get(http, f"{urls['hls']}?token={good}")
            assert status == 200
            playlist = m3u8.loads(text.decode(), uri=urls["hls"])
            uris = {playlist.segment_map[0].absolute_uri} | {s.absolute_uri for s in playlist.segments}
            assert uris == {f"{urls['mp4']}?token={good}"}, uris
            media_bytes = b""
            for byterange in [playlist.segment_map[0].byterange] + [s.byterange for s in playlist.segments[:2]]:
                size, offset = (int(x) for x in byterange.split("@"))
                status, part, _ = await _get(http, next(iter(uris)), {"Range": f"bytes={offset}-{offset + size - 1}"})
                assert status == 206 and len(part) == size
                media_bytes += part
            report = decode_media(media_bytes, "mp4")
            assert report.errors == [] and report.video_frames >= 25, report.summary()

            # DASH: the static manifest's BaseURL carries it too.
            status, text, headers = await _get(http, f"{urls['dash']}?token={good}")
            assert status == 200 and headers["Content-Type"].startswith("application/dash+xml")
            mpd = MPEGDASHParser.parse(text.decode())
            rep = mpd.periods[0].adaptation_sets[0].representations[0]
            assert mpd.type == "static" and "mp4a" in rep.codecs and "avc1" in rep.codecs
            file_url = urljoin(urls["dash"], rep.base_urls[0].base_url_value)
            assert file_url == f"{urls['mp4']}?token={good}"
            first, last = rep.segment_lists[0].segment_urls[0].media_range.split("-")
            status, part, _ = await _get(http, file_url, {"Range": f"bytes={first}-{last}"})
            assert status == 206 and len(part) == int(last) - int(first) + 1

            # Those dozen requests from one client were one on_play question (its answer is reused for
            # webhooks.hls_cache_s; a second one if a loaded machine took longer than that).
            plays = [c for c in hook.calls if c["event"] == "play"]
            assert 1 <= len(plays) <= 2 and plays[0]["stream"] == stream_name, hook.calls
            assert plays[0]["protocol"].startswith("vod-") and "token" not in plays[0]["params"]

            hook.deny = True
            await asyncio.sleep(2.2)  # webhooks.hls_cache_s: the allowing answer is no longer reused
            for fmt, url in urls.items():
                status, body, _ = await _get(http, f"{url}?token={good}")
                assert status == 403 and b"hook" in body, (fmt, status, body)
    finally:
        await hook.server.close()
