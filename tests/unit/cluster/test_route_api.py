"""GET /api/v1/route/APP/NAME in-process: public but subject to the play token, the URLs of the node chosen
with the caller's token in each, 503 when no edge can take a viewer; and which requests an edge at its
ceiling may move (edge/overload.py)."""

from __future__ import annotations

import random
import time
from urllib.parse import parse_qs, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from mediaserver.api.admin import AdminDeps, make_admin_app
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action
from mediaserver.cluster.locator import NodeInfo
from mediaserver.edge.keys import METRICS
from mediaserver.edge.overload import starting_viewer
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey

SECRET = b"s3cret-s3cret-s3cret-0123456789"
EDGE = NodeInfo(id="edge-b", role="edge", http="http://10.0.0.8:8080", rtmp="rtmp://10.0.0.8:1936", version="t",
                viewers=3, egress_bps=1000, max_viewers=100, play_url="https://edge-b.example",
                outputs=["flv", "ws-flv", "rtmp", "hls", "llhls", "dash", "webrtc"])


def client_for(choice: tuple[NodeInfo | None, str] | None, policy: AccessPolicy | None = None,
               registry: StreamRegistry | None = None, stream_live=None) -> TestClient:
    async def route():
        return choice

    deps = AdminDeps(registry if registry is not None else StreamRegistry(call_later=lambda d, f: None),
                     policy or AccessPolicy(), token=None,
                     failure_delay_s=0.01, rng=random.Random(1), route=route if choice is not None else None,
                     play_cors_origin="*", stream_live=stream_live)
    root = web.Application()
    root.add_subapp("/api/v1", make_admin_app(deps))
    return TestClient(TestServer(root))


async def test_the_route_answers_the_chosen_edges_urls_without_the_admin_token():
    async with client_for((EDGE, "")) as client:
        resp = await client.get("/api/v1/route/live/cam@360p", headers={"Origin": "https://site.example"})
        assert resp.status == 200, await resp.text()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = await resp.json()
    assert body["node"] == "edge-b" and body["standalone"] is False and body["base"] == "https://edge-b.example"
    assert body["urls"] == {
        "flv": "https://edge-b.example/live/cam%40360p.flv",
        "ws-flv": "wss://edge-b.example/live/cam%40360p.flv",
        "hls": "https://edge-b.example/live/cam%40360p/index.m3u8",
        "llhls": "https://edge-b.example/live/cam%40360p/cmaf.m3u8",
        "dash": "https://edge-b.example/live/cam%40360p/manifest.mpd",
        "rtmp": "rtmp://edge-b.example:1936/live/cam%40360p",
        "webrtc": "https://edge-b.example/live/cam%40360p/whep",
    }
    assert body["player"] == "https://edge-b.example/play/live/cam%40360p"
    assert body["load"] == {"viewers": 3, "egress_bps": 1000, "max_viewers": 100, "max_egress_bps": 0}


async def test_only_the_formats_the_node_serves_are_answered():
    no_hls = NodeInfo(id="e", role="edge", http="http://e:8080", rtmp="", version="t", outputs=["flv", "ws-flv"])
    async with client_for((no_hls, "")) as client:
        body = await (await client.get("/api/v1/route/live/cam")).json()
    assert set(body["urls"]) == {"flv", "ws-flv"} and body["base"] == "http://e:8080"


async def test_a_standalone_node_answers_its_own_urls_on_the_host_the_caller_used():
    async with client_for(None) as client:
        resp = await client.get("/api/v1/route/live/cam", headers={"Host": "media.example:8443"})
        body = await resp.json()
    assert body["standalone"] is True
    assert body["urls"]["flv"] == "http://media.example:8443/live/cam.flv"


async def test_a_play_token_is_required_when_the_app_needs_one_and_is_carried_into_every_url():
    policy = AccessPolicy(play_open=(), secrets=(SECRET,))
    token = policy.mint(Action.PLAY, "live", "cam", 600, time.time())
    async with client_for((EDGE, ""), policy) as client:
        missing = await client.get("/api/v1/route/live/cam")
        assert missing.status == 401 and "token" in (await missing.json())["hint"]
        wrong = await client.get("/api/v1/route/live/other", params={"token": token})
        assert wrong.status == 403
        bad = await client.get("/api/v1/route/live/.hidden")
        assert bad.status == 400
        ok = await client.get("/api/v1/route/live/cam@360p", params={"token": token})  # the source's token
        assert ok.status == 200
        body = await ok.json()
    for url in [*body["urls"].values(), body["player"]]:
        assert parse_qs(urlsplit(url).query) == {"token": [token]}, url


async def test_no_edge_that_can_take_a_viewer_is_503_with_why_and_when_to_ask_again():
    async with client_for((None, "all_full")) as client:
        resp = await client.get("/api/v1/route/live/cam")
        body = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert "ceiling" in body["error"] and body["hint"]


def _request(path: str, metrics, method: str = "GET", remote: str = "10.1.1.1"):
    app = web.Application()
    app[METRICS] = metrics
    file = path.rsplit("/", 1)[1].split("?")[0]
    request = make_mocked_request(method, path, app=app, match_info={"file": file})
    request._cache["remote"] = remote  # what aiohttp's BaseRequest.remote caches
    return request


class _Metrics:
    def __init__(self) -> None:
        self.hls_clients: dict[tuple[str, str], float] = {}


def test_only_a_starting_viewer_may_be_moved():
    m = _Metrics()
    key = StreamKey("live", "cam")
    assert starting_viewer(_request("/live/cam.flv", m), key, "flv")
    assert not starting_viewer(_request("/live/cam.flv?balanced=1", m), key, "flv")  # redirected once already
    assert not starting_viewer(_request("/live/cam.flv", m, method="HEAD"), key, "flv")
    assert not starting_viewer(_request("/live/cam.flv", m), key, "ws-flv")  # WebSockets do not follow 302
    for entry in ("index.m3u8", "master.m3u8", "cmaf.m3u8", "manifest.mpd"):
        assert starting_viewer(_request(f"/live/cam/{entry}", m), key, "hls"), entry
    for playing in ("seg12.ts", "v1.m4s", "cmaf_video.m3u8", "cmaf.m3u8?_HLS_msn=5&_HLS_part=1"):
        assert not starting_viewer(_request(f"/live/cam/{playing}", m), key, "hls"), playing
    m.hls_clients[("10.1.1.1", "live/cam")] = 0.0  # this client fetched the stream here lately: a reload
    assert not starting_viewer(_request("/live/cam/index.m3u8", m), key, "hls")
    assert starting_viewer(_request("/live/cam/index.m3u8", m, remote="10.9.9.9"), key, "hls")


class _Publisher:
    def close(self, reason: str = "") -> None:
        pass


async def test_the_route_says_whether_the_stream_or_a_renditions_source_is_live_here_or_elsewhere():
    registry = StreamRegistry(call_later=lambda d, f: None)
    async with client_for(None, registry=registry) as client:
        assert (await (await client.get("/api/v1/route/live/cam")).json())["live"] is False
        registry.claim_publisher(StreamKey("live", "cam"), _Publisher())
        assert (await (await client.get("/api/v1/route/live/cam")).json())["live"] is True
        assert (await (await client.get("/api/v1/route/live/cam@360p")).json())["live"] is True
        assert (await (await client.get("/api/v1/route/live/other")).json())["live"] is False
    asked = []

    async def elsewhere(stream: str) -> bool:  # a cluster: the locator knows the node holding it
        asked.append(stream)
        return stream == "live/far"

    async with client_for((EDGE, ""), stream_live=elsewhere) as client:
        assert (await (await client.get("/api/v1/route/live/far@360p")).json())["live"] is True
        assert (await (await client.get("/api/v1/route/live/gone")).json())["live"] is False
    assert asked == ["live/far", "live/gone"]
