"""RelayPull's states against sources in this process: a dead port (retrying with the reason, then idle
after the grace), and an HTTP-FLV source (live, a viewer's locate finds the stream, stopped at close)."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from mediaserver.config import PullRelay, RelayConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import FrameKind
from mediaserver.relay.pull import PullRelays
from mediaserver.remux.flv import flv_header

AAC_CONFIG = b"\xaf\x00\x12\x10"
AAC_FRAME = b"\xaf\x01" + b"\x21" * 40
KEY = StreamKey("live", "cam")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relays(url: str, mode: str = "on_demand") -> PullRelays:
    settings = RelayConfig(pull=(PullRelay("live", "cam", url, mode),), pull_grace=0.6, pull_retry_max=0.5,
                           pull_wait=0.4)
    return PullRelays(StreamRegistry(), settings, {"KEY": "secret-key"}, connect_timeout=1.0)


async def test_a_dead_source_is_retried_with_its_reason_and_the_pull_goes_idle_without_viewers():
    relays = _relays(f"rtmp://127.0.0.1:{_closed_port()}/live/${{KEY}}")
    pull = relays.pulls[KEY]
    told: list[dict] = []
    relays.listeners.append(told.append)
    assert pull.state == "idle" and relays.publish_refusal(KEY) is not None
    try:
        assert await relays.locate(KEY) is None  # nothing came within pull_wait
        assert pull.state in ("retrying", "connecting") and "ConnectionRefused" in pull.last_error, pull.describe()
        for _ in range(40):
            if pull.state == "idle":
                break
            await asyncio.sleep(0.1)
        assert pull.state == "idle", pull.describe()
        assert "secret-key" not in str(relays.describe()) and "secret-key" not in str(told)
        # on_relay_state: connecting, retrying once for the one error (not at every attempt), then idle
        assert [t["state"] for t in told] == ["connecting", "retrying", "idle"], told
        assert told[1]["id"] == "pull-0" and told[1]["source"] == "pull" and told[1]["stream"] == "live/cam"
        assert "ConnectionRefused" in told[1]["error"] and told[1]["url"] == pull.source.shown
        assert told[2]["error"] == "pull_idle"
    finally:
        await relays.close()


async def test_an_http_flv_source_goes_live_and_stops_at_close():
    async def flv(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(flv_header(True, False) + build_tag(FrameKind.AUDIO, 0, AAC_CONFIG))
        for i in range(400):
            await resp.write(build_tag(FrameKind.AUDIO, 23 * i, AAC_FRAME))
            await asyncio.sleep(0.005)
        return resp

    app = web.Application()
    app.router.add_get("/live/{name}", flv)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    relays = _relays(f"http://127.0.0.1:{port}/live/${{KEY}}.flv", mode="always")
    pull = relays.pulls[KEY]
    told: list[dict] = []
    relays.listeners.append(told.append)
    try:
        relays.start()
        stream = await relays.locate(KEY)
        assert stream is not None and pull.state == "live", pull.describe()
        assert stream.publisher is pull and pull.bytes_in > 0
        await relays.close()
        assert pull.state == "stopped"
        assert [(t["state"], t["error"]) for t in told] == [("connecting", None), ("live", None),
                                                           ("stopped", "server_shutdown")]
        assert told[1]["bytes"] > 0 and told[1]["reconnects"] == 0
    finally:
        await relays.close()
        await runner.cleanup()


async def test_an_always_pull_waits_in_standby_while_another_node_holds_its_claim(monkeypatch):
    monkeypatch.setattr("mediaserver.relay.pull.STANDBY_POLL_S", 0.05)
    relays = _relays(f"rtmp://127.0.0.1:{_closed_port()}/live/${{KEY}}", mode="always")
    pull = relays.pulls[KEY]
    told: list[dict] = []
    relays.listeners.append(told.append)
    answers = ["live/cam is already being published on node origin-2", None]
    asked: list[StreamKey] = []

    async def claim(key: StreamKey) -> str | None:
        asked.append(key)
        await asyncio.sleep(0)
        return answers[0] if len(asked) < 4 else None  # held elsewhere three times, then ours

    relays.cluster_claim = claim
    try:
        relays.start()
        for _ in range(50):
            if len(asked) >= 2:
                break
            await asyncio.sleep(0.02)
        assert pull.state == "standby" and "origin-2" in pull.last_error, pull.describe()
        for _ in range(50):
            if pull.state == "retrying":
                break
            await asyncio.sleep(0.05)
        assert pull.state == "retrying" and "ConnectionRefused" in pull.last_error, pull.describe()
        states = [t["state"] for t in told]
        assert states[:3] == ["connecting", "standby", "connecting"] and states.count("standby") == 1, told
        assert told[1]["error"] == answers[0]
    finally:
        await relays.close()


async def test_a_viewer_of_a_stream_in_standby_is_sent_to_the_cluster_to_find_it():
    relays = _relays(f"rtmp://127.0.0.1:{_closed_port()}/live/cam")
    asked: list[StreamKey] = []

    async def cluster_locate(key: StreamKey, address: str):
        asked.append(key)
        return "found on origin-2"

    _, locate = relays.gate_hooks(None, cluster_locate)
    relays.pulls[KEY]._set("standby")
    assert await locate(KEY, "10.0.0.9") == "found on origin-2" and asked == [KEY]
    relays.pulls[KEY]._set("idle")
    try:
        assert await locate(KEY, "10.0.0.9") is None and asked == [KEY]  # not standby: the pull itself starts
    finally:
        await relays.close()
