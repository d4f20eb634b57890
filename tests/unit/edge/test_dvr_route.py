"""dvr.m3u8 (edge/vod.py serve_dvr): the viewers of a stream share one rendering per new fragment, also
those who ask while it is being made; a rendering that fails is a 503 with Retry-After, and tried again."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.config import Config
from mediaserver.edge.common import PLAY_QUERY
from mediaserver.edge.keys import CONFIG, RECORDINGS
from mediaserver.edge.vod import serve_dvr
from mediaserver.hub.stream import StreamKey


class Trail:
    files = ["one"]

    def __init__(self) -> None:
        self.version = 1
        self.renders = 0
        self.fail = False

    def key(self):
        return ("a", "b", self.version)

    def render(self, uri) -> str:
        self.renders += 1
        time.sleep(0.2)  # (in a thread: the requests arriving meanwhile wait for it)
        if self.fail:
            raise OSError("disk gone")
        return f"#EXTM3U\n#EXT-X-MAP:URI=\"{uri('r1')}\"\n{uri('r1')}\n# v{self.version}\n"


async def test_concurrent_viewers_share_one_rendering_and_a_failed_one_is_tried_again():
    trail = Trail()
    rec = SimpleNamespace(recorder=SimpleNamespace(stopped=False), row=object(), dvr=trail, dvr_text=None)
    app = web.Application()
    app[CONFIG] = Config()
    app[RECORDINGS] = SimpleNamespace(active={StreamKey("live", "cam"): rec})

    async def route(request: web.Request) -> web.StreamResponse:
        if "token" in request.query:  # as the play route's admission leaves it
            request[PLAY_QUERY] = f"token={request.query['token']}"
        return await serve_dvr(request, "live", request.match_info["name"])

    app.router.add_get("/live/{name}/dvr.m3u8", route)
    async with TestClient(TestServer(app)) as client:
        async def fetch() -> tuple[int, str, dict]:
            resp = await client.get("/live/cam/dvr.m3u8")
            return resp.status, await resp.text(), dict(resp.headers)

        answers = await asyncio.gather(*(fetch() for _ in range(20)))
        assert {(status, text) for status, text, _ in answers} == {(200, Trail().render(lambda r: f"../../vod/{r}.mp4"))}
        assert trail.renders == 1
        await fetch()
        assert trail.renders == 1  # no new fragment: the same text
        trail.version, trail.fail = 2, True
        status, _, headers = await fetch()
        assert status == 503 and headers["Retry-After"]
        trail.fail = False
        status, text, _ = await fetch()
        assert status == 200 and "# v2" in text and trail.renders == 3
        resp = await client.get("/live/cam/dvr.m3u8?token=abc")  # the token in every URI, not re-rendered
        assert (await resp.text()).count("../../vod/r1.mp4?token=abc") == 2 and trail.renders == 3
        assert (await client.get("/live/other/dvr.m3u8")).status == 404
