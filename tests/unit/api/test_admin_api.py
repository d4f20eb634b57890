"""The admin API in-process: tokens, errors, every route, path tricks, and the OpenAPI document agreeing
with the routes."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.api import admin
from mediaserver.api.admin import ROUTES, AdminDeps, StreamRates, make_admin_app
from mediaserver.api.openapi import openapi_document
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action, verify
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey

TOKEN = "admin-token-0123456789abcdef"
SECRET = b"s3cret-s3cret-s3cret-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakePublisher:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


class Node:
    def __init__(self, token: str | None = TOKEN, secrets=(SECRET,), cors=()) -> None:
        self.registry = StreamRegistry(call_later=lambda delay, fn: None)
        self.policy = AccessPolicy(secrets=secrets)
        self.deps = AdminDeps(self.registry, self.policy, token, cors_origins=cors, failure_delay_s=0.01,
                              rng=random.Random(1))
        self.root = web.Application()
        self.root.add_subapp("/api/v1", make_admin_app(self.deps))

    def publish(self, app: str = "live", name: str = "cam", peer: str = "10.0.0.9:50000") -> FakePublisher:
        publisher = FakePublisher(peer)
        self.registry.claim_publisher(StreamKey(app, name), publisher)
        return publisher


@pytest.fixture
async def node() -> AsyncIterator[tuple[Node, TestClient]]:
    n = Node()
    client = TestClient(TestServer(n.root))
    await client.start_server()
    yield n, client
    await client.close()


async def _json(resp) -> dict:
    assert resp.content_type == "application/json", await resp.text()
    return await resp.json()


async def test_the_api_is_disabled_without_a_token_and_says_how_to_enable_it():
    n = Node(token=None)
    async with TestClient(TestServer(n.root)) as client:
        for method, path, _, name in ROUTES:
            resp = await client.request(method, "/api/v1" + path.replace("{app}", "live").replace("{name}", "x")
                                        .replace("{id}", "1"), headers=AUTH)
            if name in admin.PUBLIC:  # the document, and the route players call
                assert resp.status == 200
                continue
            body = await _json(resp)
            assert resp.status == 503, (method, path)
            assert "MEDIASERVER_ADMIN_TOKEN" in body["hint"] and body["error"]


@pytest.mark.parametrize("headers, detail", [
    ({}, "required"),
    ({"Authorization": "Bearer wrong-token-0123456789"}, "wrong"),
    ({"Authorization": f"Basic {TOKEN}"}, "required"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "wrong"),
    ({"Authorization": "Bearer "}, "required"),
])
async def test_a_missing_or_wrong_token_is_401_with_www_authenticate(node, headers, detail):
    _, client = node
    resp = await client.get("/api/v1/streams", headers=headers)
    body = await _json(resp)
    assert resp.status == 401 and detail in body["error"] and body["hint"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer realm=")


async def test_unknown_routes_need_the_token_too_then_say_where_the_routes_are(node):
    _, client = node
    assert (await client.get("/api/v1/secret")).status == 401
    resp = await client.get("/api/v1/secret", headers=AUTH)
    assert resp.status == 404 and "openapi.json" in (await _json(resp))["hint"]
    resp = await client.delete("/api/v1/streams", headers=AUTH)
    assert resp.status == 405 and "GET" in resp.headers["Allow"]


async def test_streams_are_listed_with_publisher_codecs_viewers_and_drops(node):
    n, client = node
    n.publish("live", "b", "10.0.0.2:1")
    n.publish("live", "a", "10.0.0.1:1")
    stream = n.registry.get(StreamKey("live", "a"))
    stream.subscribe("flv", "10.1.0.1:1", 0.0)
    stream.subscribe("flv", "10.1.0.2:1", 0.0)
    stream.subscribe("rtmp", "10.1.0.3:1", 0.0)
    body = await _json(await client.get("/api/v1/streams", headers=AUTH))
    assert [s["name"] for s in body["streams"]] == ["a", "b"]
    a = body["streams"][0]
    assert a["publisher"] == "10.0.0.1:1" and a["state"] == "live"
    assert a["viewers"] == {"flv": 2, "rtmp": 1} and a["viewers_total"] == 3
    for field in ("video", "audio", "uptime_s", "bytes_in", "frames_dropped", "bitrate_kbps"):
        assert field in a


async def test_an_unknown_scope_or_cluster_scope_on_a_standalone_node_is_400(node):
    _, client = node
    for query, text in (("scope=everything", "scope=node"), ("scope=cluster", "cluster.role")):
        resp = await client.get(f"/api/v1/streams?{query}", headers=AUTH)
        body = await resp.json()
        assert resp.status == 400 and text in body["hint"], (query, body)


async def test_one_stream_in_detail_and_its_viewers(node):
    n, client = node
    n.publish()
    stream = n.registry.get(StreamKey("live", "cam"))
    sub, _ = stream.subscribe("ws-flv", "10.1.0.1:7", 0.0)
    body = await _json(await client.get("/api/v1/streams/live/cam", headers=AUTH))
    assert body["name"] == "cam" and body["viewer_list"][0]["id"] == sub.id
    viewers = await _json(await client.get("/api/v1/streams/live/cam/viewers", headers=AUTH))
    assert viewers["viewers"] == [{"id": sub.id, "format": "ws-flv", "peer": "10.1.0.1:7",
                                   "connected_s": viewers["viewers"][0]["connected_s"], "bytes_sent": 0,
                                   "frames_dropped": 0}]


async def test_kicking_a_publisher_ends_its_stream_and_a_second_kick_finds_nothing(node):
    n, client = node
    publisher = n.publish()
    stream = n.registry.get(StreamKey("live", "cam"))
    sub, _ = stream.subscribe("flv", "10.1.0.1:1", 0.0)
    body = await _json(await client.post("/api/v1/streams/live/cam/kick", headers=AUTH))
    assert body["kicked"] == "live/cam" and body["viewers_ended"] == 1
    assert publisher.closed == "kicked" and stream.ended
    resp = await client.post("/api/v1/streams/live/cam/kick", headers=AUTH)
    assert resp.status == 404 and "just ended" in (await _json(resp))["hint"]


async def test_a_kick_can_block_the_name_so_a_reconnecting_encoder_is_refused(node):
    n, client = node
    n.publish()
    resp = await client.post("/api/v1/streams/live/cam/kick", json={"block_seconds": 60, "reason": "abuse"},
                             headers=AUTH)
    body = await _json(resp)
    assert body["blocked_until"] is not None
    blocks = await _json(await client.get("/api/v1/blocks", headers=AUTH))
    assert [(b["name"], b["reason"]) for b in blocks["blocks"]] == [("cam", "abuse")]
    with pytest.raises(Exception, match="blocked"):
        n.policy.authorize_publish("live", "cam", "", None, n.deps.wall_clock())


async def test_viewers_are_kicked_one_at_a_time_or_all_together(node):
    n, client = node
    publisher = n.publish()
    stream = n.registry.get(StreamKey("live", "cam"))
    subs = [stream.subscribe("flv", f"10.1.0.{i}:1", 0.0)[0] for i in range(3)]
    body = await _json(await client.post(f"/api/v1/streams/live/cam/viewers/{subs[0].id}/kick", headers=AUTH))
    assert body["viewer_kicked"] == subs[0].id
    assert subs[0].closed and subs[0].close_reason == "kicked" and not subs[1].closed
    resp = await client.post(f"/api/v1/streams/live/cam/viewers/{subs[0].id}/kick", headers=AUTH)
    assert resp.status == 404
    for bad in ("abc", "-1", "1" * 30, "1.5"):  # encoded slashes and dot segments: over raw sockets, in e2e
        assert (await client.post(f"/api/v1/streams/live/cam/viewers/{bad}/kick", headers=AUTH)).status in (400, 404)
    body = await _json(await client.post("/api/v1/streams/live/cam/viewers/kick", json={"reason": "x"}, headers=AUTH))
    assert sorted(body["viewers_kicked"]) == sorted(s.id for s in subs[1:])
    assert all(s.closed for s in subs) and publisher.closed is None and not stream.ended


@pytest.mark.parametrize("body, content_type, status", [
    (b"{not json", "application/json", 400),
    (b"[" * 5000, "application/json", 400),  # nested past the JSON parser's depth
    (b"[1, 2]", "application/json", 400),
    (b"\xff\xfe\x00", "application/json", 400),
    (b'{"seconds": "ten"}', "application/json", 400),
    (b'{"seconds": -5}', "application/json", 400),
    (b'{"seconds": true}', "application/json", 400),
    (b'{"reason": "x"}', "application/json", 400),
    (b"", "application/json", 400),
    (b"seconds=10", "application/x-www-form-urlencoded", 400),
    (b'{"seconds": 10, "pad": "' + b"x" * 20_000 + b'"}', "application/json", 413),
])
async def test_bad_bodies_get_a_400_family_answer_with_a_hint(node, body, content_type, status):
    _, client = node
    resp = await client.put("/api/v1/blocks/live/cam", data=body, headers={**AUTH, "Content-Type": content_type})
    answer = await _json(resp)
    assert resp.status == status, answer
    assert answer["error"] and answer["hint"]


async def _raw_put(client: TestClient, head_and_body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head_and_body)
    await writer.drain()
    return reader, writer


def _put_head(length: int) -> bytes:
    return (f"PUT /api/v1/blocks/live/cam HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


async def test_a_body_arriving_in_pieces_is_read_to_its_end(node):
    _, client = node
    body = b'{"seconds": 10, "pad": "' + b"y" * 3000 + b'"}'
    reader, writer = await _raw_put(client, _put_head(len(body)) + body[:5])
    try:
        for start in range(5, len(body), 1000):  # the rest in three more segments, a moment apart
            await asyncio.sleep(0.02)
            writer.write(body[start:start + 1000])
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        writer.close()


async def test_a_body_that_never_arrives_whole_is_408_and_the_connection_closed(node, monkeypatch):
    monkeypatch.setattr(admin, "BODY_TIMEOUT_S", 0.3)
    _, client = node
    reader, writer = await _raw_put(client, _put_head(100) + b'{"seconds": ')
    try:
        answer = await asyncio.wait_for(reader.read(), 15)  # read() to EOF: the server closes the connection
        head, _, text = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"did not arrive" in text and b"hint" in text
    finally:
        writer.close()


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "application/json"])
async def test_a_json_body_is_read_whatever_content_type_says(node, content_type):
    # curl -d '{...}' (the README's examples) labels the body a form
    _, client = node
    resp = await client.put("/api/v1/blocks/live/cam", data=b'{"seconds": 10}',
                            headers={**AUTH, "Content-Type": content_type})
    answer = await _json(resp)
    assert resp.status == 200 and 9 <= answer["remaining_s"] <= 10, answer


async def test_blocks_are_set_listed_and_lifted(node):
    _, client = node
    body = await _json(await client.put("/api/v1/blocks/live/cam", json={"seconds": 30}, headers=AUTH))
    assert body["name"] == "cam" and 29 <= body["remaining_s"] <= 30
    assert len((await _json(await client.get("/api/v1/blocks", headers=AUTH)))["blocks"]) == 1
    assert (await client.delete("/api/v1/blocks/live/cam", headers=AUTH)).status == 200
    assert (await client.delete("/api/v1/blocks/live/cam", headers=AUTH)).status == 404


async def test_tokens_are_minted_for_scripts_and_verify(node):
    n, client = node
    body = await _json(await client.post("/api/v1/tokens", json={"action": "play", "app": "live", "stream": "cam",
                                                                  "ttl": 120}, headers=AUTH))
    grant = verify(body["token"], Action.PLAY, "live", "cam", n.deps.wall_clock(), (SECRET,))
    assert grant.expires_at == body["expires_at"]
    for bad in ({"action": "watch", "app": "live", "stream": "cam"}, {"action": "play", "app": "..", "stream": "x"},
                {"action": "play", "app": "live", "stream": "cam", "ttl": 0},
                {"action": "play", "app": "live", "stream": "cam", "ip": 7}):
        assert (await client.post("/api/v1/tokens", json=bad, headers=AUTH)).status == 400


async def test_minting_without_a_secret_is_a_conflict_with_a_hint():
    n = Node(secrets=())
    async with TestClient(TestServer(n.root)) as client:
        resp = await client.post("/api/v1/tokens", json={"action": "play", "app": "live", "stream": "x"}, headers=AUTH)
        assert resp.status == 409 and "token_secret_env" in (await _json(resp))["hint"]


async def test_nodes_lists_this_node(node):
    n, client = node
    n.publish()
    body = await _json(await client.get("/api/v1/nodes", headers=AUTH))
    assert body["nodes"][0]["self"] and body["nodes"][0]["streams"] == 1


NAME_TRICKS = [
    "..", "%2e%2e", ".hidden", "a%2Fb", "a%2fb", "a%00b", "%ff%fe", "%c3%28", "x" * 129, "x" * 5000, "a%20b", "~",
]


async def test_path_tricks_on_every_route_that_takes_a_name_get_4xx(node):
    n, client = node
    n.publish("live", "cam")
    wrong = []
    for method, path, _, _ in ROUTES:
        if "{name}" not in path:
            continue
        for trick in NAME_TRICKS:
            for target in (path.replace("{app}", "live").replace("{name}", trick),
                           path.replace("{app}", trick).replace("{name}", "cam")):
                url = "/api/v1" + target.replace("{id}", "1")
                resp = await client.request(method, url, headers=AUTH, json={"seconds": 5})
                if trick == "~" and resp.status in (200, 404):
                    continue  # "~" is a valid (unknown) name
                if not 400 <= resp.status < 500:
                    wrong.append(f"{method} {url[:80]}: {resp.status}")
                elif resp.content_type == "application/json":
                    body = await resp.json()
                    assert set(body) == {"error", "hint"}, body
    assert wrong == []
    assert n.policy.blocks(0) == [] or all(b.name in ("cam", "~") for b in n.policy.blocks(0))


async def test_cors_preflight_and_answers_allow_configured_origins_only():
    n = Node(cors=("https://console.example",))
    async with TestClient(TestServer(n.root)) as client:
        resp = await client.options("/api/v1/streams", headers={"Origin": "https://console.example",
                                                                 "Access-Control-Request-Method": "GET"})
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "https://console.example"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        resp = await client.get("/api/v1/streams", headers={**AUTH, "Origin": "https://console.example"})
        assert resp.headers["Access-Control-Allow-Origin"] == "https://console.example"
        resp = await client.get("/api/v1/streams", headers={**AUTH, "Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers


def test_the_openapi_document_describes_exactly_the_routes():
    doc = openapi_document()
    app = make_admin_app(AdminDeps(StreamRegistry(), AccessPolicy(), TOKEN))
    served = set()
    for route in app.router.routes():
        if route.method == "OPTIONS":
            continue
        path = route.resource.canonical
        served.add((route.method.lower(), path))
        op = doc["paths"][path][route.method.lower()]
        in_path = set(re.findall(r"{(\w+)}", path))
        documented = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert in_path == documented, (path, in_path, documented)
        assert op["operationId"] == route.name
    described = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert served == described
    assert doc["openapi"].startswith("3.")


async def test_the_openapi_document_is_served_without_a_token(node):
    _, client = node
    body = await _json(await client.get("/api/v1/openapi.json"))
    assert body == openapi_document()


def test_measured_bit_rate_comes_from_bytes_received_over_the_window():
    now = [0.0]
    registry = StreamRegistry(clock=lambda: now[0], call_later=lambda d, f: None)
    stream = registry.claim_publisher(StreamKey("live", "cam"), FakePublisher("p"))
    meter = StreamRates(registry, clock=lambda: now[0])
    meter.sample()
    assert meter.kbps(stream) is None
    for _ in range(10):
        now[0] += 2.0
        stream.bytes_in += 250_000  # 1 Mbit/s
        meter.sample()
    assert meter.kbps(stream) == pytest.approx(1000.0)
    registry.kick(stream.key)
    meter.sample()
    assert meter._meters == {}
