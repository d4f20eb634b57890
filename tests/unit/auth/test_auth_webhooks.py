"""The webhook client against a real HTTP server on loopback: what each kind of answer means."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mediaserver.auth.hooks import HookRequest
from mediaserver.config import WebhooksConfig
from mediaserver.edge.webhooks import WebhookClient
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from support.http import serving


class HookServer:
    """A webhook receiver whose answer depends on the path: /allow, /deny, /slow, /garbage, ..."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, dict]] = []
        app = web.Application()
        app.router.add_post("/{kind}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        self.calls.append((kind, await request.json(), dict(request.headers)))
        if kind == "allow":
            return web.Response(status=204)
        if kind == "allow_text":
            return web.Response(text="ok")
        if kind == "rename":
            return web.json_response({"stream": "public-name", "expires_in": 30})
        if kind == "deny":
            return web.json_response({"error": "no"}, status=403)
        if kind == "broken":
            return web.Response(status=500)
        if kind == "redirect":
            raise web.HTTPFound("/allow")
        if kind == "slow":
            await asyncio.sleep(5)
            return web.Response(status=200)
        if kind == "garbage":
            return web.Response(body=b"{not json", content_type="application/json")
        if kind == "bad_rename":
            return web.json_response({"stream": "../../etc/passwd"})
        if kind == "array":
            return web.json_response([1, 2])
        if kind == "huge":
            return web.Response(body=b"{\"a\": \"" + b"x" * 200_000 + b"\"}", content_type="application/json")
        if kind == "nested":
            return web.Response(body=b"[" * 5000, content_type="application/json")
        if kind in ("split", "trickle"):  # the answer in pieces, 0.2 s apart (trickle: never finished in time)
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            pieces = [b" ", b'{"expires_in": ', b"3}"] if kind == "split" else [b" "] * 50
            for piece in pieces:
                await resp.write(piece)
                await asyncio.sleep(0.2)
            return resp
        raise web.HTTPNotFound()

    def url(self, kind: str) -> str:
        return str(self.server.make_url(f"/{kind}"))


@contextlib.asynccontextmanager
async def running(cfg: WebhooksConfig, environ: dict[str, str] | None = None) -> AsyncIterator[WebhookClient]:
    client = WebhookClient(cfg, environ or {})
    ctx = client.cleanup_ctx(web.Application())
    await ctx.__anext__()
    try:
        yield client
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await ctx.__anext__()


@pytest.fixture
async def hook_server() -> AsyncIterator[HookServer]:
    hs = HookServer()
    await hs.server.start_server()
    yield hs
    await hs.server.close()


def publish_request(**extra) -> HookRequest:
    return HookRequest("publish", "live", "cam", "10.0.0.1", "rtmp", {"user": "7"}, extra)


@pytest.mark.parametrize("kind, allowed, reason", [
    ("allow", True, "allowed"),
    ("allow_text", True, "allowed"),
    ("deny", False, "denied"),
    ("broken", False, "status_500"),
    ("redirect", False, "status_302"),
    ("garbage", False, "bad_answer"),
    ("bad_rename", False, "bad_answer"),
    ("array", False, "bad_answer"),
    ("huge", False, "bad_answer"),
    ("nested", False, "bad_answer"),  # 5,000 levels: past the JSON parser's depth
    ("missing", False, "denied"),  # 404 from the hook is a refusal
])
async def test_each_kind_of_answer_has_one_meaning(hook_server, kind, allowed, reason):
    async with running(WebhooksConfig(on_publish=hook_server.url(kind), timeout=2.0)) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.reason) == (allowed, reason)
    assert client.outcomes[("publish", reason)] == 1


async def test_a_hook_that_does_not_answer_in_time_denies_by_default_and_allows_when_configured(hook_server):
    loop = asyncio.get_running_loop()
    async with running(WebhooksConfig(on_publish=hook_server.url("slow"), timeout=0.3)) as client:
        started = loop.time()
        verdict = await client.ask(publish_request())
        assert loop.time() - started < 1.5
    assert (verdict.allowed, verdict.reason) == (False, "timeout")
    async with running(WebhooksConfig(on_publish=hook_server.url("slow"), timeout=0.3, on_failure="allow")) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.reason) == (True, "timeout")


async def test_a_hook_nobody_listens_on_is_a_failure_not_a_crash():
    async with running(WebhooksConfig(on_publish="http://127.0.0.1:9/hook", timeout=1.0)) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.reason) == (False, "connection")


async def test_an_answer_sent_in_pieces_is_read_whole_and_one_never_finished_is_a_timeout(hook_server):
    async with running(WebhooksConfig(on_publish=hook_server.url("split"), timeout=3.0)) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.reason, verdict.expires_in) == (True, "allowed", 3.0)
    async with running(WebhooksConfig(on_publish=hook_server.url("trickle"), timeout=1.0)) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.reason) == (False, "timeout")


async def test_a_burst_of_asked_calls_never_waits_behind_a_connection_pool():
    async def in_time(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)  # over half the timeout, for every call (0.8 s left for a loaded machine)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", in_time)
    async with serving(app, backlog=1024) as port:
        url = f"http://127.0.0.1:{port}/hook"
        async with running(WebhooksConfig(on_play=url, on_play_done=url, timeout=1.8)) as client:
            for _ in range(150):  # told events: at most TOLD_AT_ONCE of them in flight
                client.tell(HookRequest("play_done", "live", "cam", "10.0.0.1", "flv"))
            verdicts = await asyncio.gather(*(client.ask(HookRequest("play", "live", "cam", "10.0.0.1", "flv"))
                                              for _ in range(150)))
    # Behind a pool of 100 shared with the told events, most would wait 1.0 s for a connection, then time out.
    assert [v.reason for v in verdicts] == ["allowed"] * 150


async def test_an_allowing_answer_may_rename_the_stream_and_set_an_expiry(hook_server):
    async with running(WebhooksConfig(on_publish=hook_server.url("rename"))) as client:
        verdict = await client.ask(publish_request())
    assert (verdict.allowed, verdict.stream, verdict.expires_in) == (True, "public-name", 30.0)


async def test_the_hook_gets_a_json_body_and_the_configured_bearer_token(hook_server):
    cfg = WebhooksConfig(on_publish=hook_server.url("allow"), auth_header_env="HOOK_TOKEN")
    async with running(cfg, {"HOOK_TOKEN": "hook-secret-123"}) as client:
        await client.ask(publish_request(via="token"))
    _, body, headers = hook_server.calls[0]
    assert body == {"event": "publish", "app": "live", "stream": "cam", "client_ip": "10.0.0.1", "protocol": "rtmp",
                    "params": {"user": "7"}, "via": "token"}
    assert headers["Authorization"] == "Bearer hook-secret-123"
    assert headers["Content-Type"] == "application/json"


async def test_events_without_a_url_are_allowed_without_a_call(hook_server):
    async with running(WebhooksConfig(on_play=hook_server.url("deny"))) as client:
        assert client.wants("play") and not client.wants("publish")
        assert (await client.ask(publish_request())).allowed
    assert hook_server.calls == []


class FakePublisher:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


async def test_publish_done_is_told_once_per_publisher_session(hook_server):
    registry = StreamRegistry()
    async with running(WebhooksConfig(on_publish_done=hook_server.url("allow"))) as client:
        client.watch(registry)
        key = StreamKey("live", "cam")
        first = FakePublisher("10.0.0.1:5000")
        stream = registry.claim_publisher(key, first)
        registry.release_publisher(stream, first)  # left: grace begins -> done
        second = FakePublisher("10.0.0.2:5001")
        registry.claim_publisher(key, second)
        rendition = StreamKey("live", "cam@360p")  # made by the server: never told
        registry.claim_publisher(rendition, FakePublisher("transcoder"))
        registry.kick(rendition, "source_ended")
        registry.kick(key, "kicked")  # kicked: the stream ends -> done
        for _ in range(50):
            if len(hook_server.calls) >= 2:
                break
            await asyncio.sleep(0.02)
    bodies = [body for _, body, _ in hook_server.calls]
    assert [(b["event"], b["client_ip"], b["reason"]) for b in bodies] == [
        ("publish_done", "10.0.0.1", "unpublished"), ("publish_done", "10.0.0.2", "ended"),
    ]
    assert json.dumps(bodies)  # plain JSON


async def test_told_events_still_pending_at_shutdown_are_cancelled(hook_server):
    async with running(WebhooksConfig(on_play_done=hook_server.url("slow"), timeout=10)) as client:
        client.tell(HookRequest("play_done", "live", "cam", "10.0.0.1", "flv"))
        await asyncio.sleep(0.1)
        assert len(client._pending) == 1
    assert len(client._pending) == 0
