"""/vod/ID/index.m3u8 and manifest.mpd of a finished local recording (edge/vod.py _describe): rendered once
per file, each viewer's play token filled into the file's URIs; a recording still being written is rendered
per request (its file grows)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.edge import vod
from mediaserver.edge.common import PLAY_QUERY
from mediaserver.config import Config
from mediaserver.edge.keys import CONFIG, RECORDINGS


@pytest.fixture
def rendered(monkeypatch):
    calls: list[tuple[str, str]] = []

    def hls_playlist(index, uri, live=False):
        calls.append(("hls", uri))
        return f'#EXTM3U\n#EXT-X-MAP:URI="{uri}"\n{uri}\n{"" if live else "#EXT-X-ENDLIST"}\n'

    def dash_manifest(index, uri):
        calls.append(("dash", uri))
        return f"<MPD><BaseURL>{uri}</BaseURL></MPD>"

    monkeypatch.setattr(vod, "hls_playlist", hls_playlist)
    monkeypatch.setattr(vod, "dash_manifest", dash_manifest)
    monkeypatch.setattr(vod, "index_path", lambda path: SimpleNamespace(path=path))
    monkeypatch.setattr(vod, "_finished", type(vod._finished)())
    return calls


def _app(rows: dict) -> web.Application:
    app = web.Application()
    app[CONFIG] = Config()

    async def row_of(rec_id):
        return rows.get(rec_id)

    app[RECORDINGS] = SimpleNamespace(row_of=row_of)

    def with_query(handler):
        async def route(request: web.Request) -> web.StreamResponse:
            if "token" in request.query:  # as the gate's admission leaves it
                request[PLAY_QUERY] = f"token={request.query['token']}"
            return await handler(request)
        return route

    app.router.add_get("/vod/{id}/index.m3u8", with_query(vod.serve_playlist))
    app.router.add_get("/vod/{id}/manifest.mpd", with_query(vod.serve_manifest))
    return app


def _row(rec_id: str, status: str = "complete", size: int = 1000):
    return SimpleNamespace(id=rec_id, status=status, bytes=size, app="live", stream="cam"), f"/rec/{rec_id}.mp4"


async def test_a_finished_recordings_playlist_is_rendered_once_and_each_viewer_gets_their_token(rendered):
    rows = {"done1": _row("done1")}
    async with TestClient(TestServer(_app(rows))) as client:
        texts = [await (await client.get(f"/vod/done1/index.m3u8?token={t}")).text() for t in ("a", "b", "c")]
        plain = await (await client.get("/vod/done1/index.m3u8")).text()
        mpd = [await (await client.get(f"/vod/done1/manifest.mpd?token={t}")).text() for t in ("a", "b")]
    assert rendered == [("hls", "../done1.mp4"), ("dash", "../done1.mp4")]
    for token, text in zip("abc", texts):
        assert text.count(f"../done1.mp4?token={token}\"") == 1 and text.count(f"\n../done1.mp4?token={token}\n") == 1
    assert "?" not in plain and plain.count("../done1.mp4") == 2
    assert mpd == [f"<MPD><BaseURL>../done1.mp4?token={t}</BaseURL></MPD>" for t in ("a", "b")]


async def test_a_recording_being_written_is_rendered_per_request_and_a_changed_row_anew(rendered):
    rows = {"live1": _row("live1", status="recording")}
    async with TestClient(TestServer(_app(rows))) as client:
        for token in ("a", "b"):
            text = await (await client.get(f"/vod/live1/index.m3u8?token={token}")).text()
            assert "#EXT-X-ENDLIST" not in text and text.count(f"../live1.mp4?token={token}") == 2
        assert len(rendered) == 2
        rows["live1"] = _row("live1", size=5000)  # it finished: rendered once more, then kept
        for _ in range(3):
            assert "#EXT-X-ENDLIST" in await (await client.get("/vod/live1/index.m3u8")).text()
        assert len(rendered) == 3
