"""RelayManager: configured pushes start with each matching publish and stop with the stream; the API's
pushes need a live stream, refuse bad URLs and loops; every state change reaches the listeners."""

from __future__ import annotations

import pytest

from mediaserver.config import PushTarget
from mediaserver.hub.registry import RegistryPolicy, StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.relay.loop import ThisHost
from mediaserver.relay.manager import RelayManager, RelayRefused, configured_pushes
from mediaserver.relay.pusher import PushSettings

from support.rtmp_target import Publisher, Target, until


def manager(registry, rules, port):
    pushes = configured_pushes(rules, {"KEY": "k1"})
    return RelayManager(registry, pushes, PushSettings(retry_min=0.05, retry_max=0.1),
                        here=ThisHost.of(("myhost",), {"rtmp": port}))


async def test_configured_pushes_follow_the_stream_and_api_pushes_are_checked():
    target = Target()
    port = await target.start()
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=5))
    relays = manager(registry, [PushTarget(url=f"rtmp://127.0.0.1:{port}/app/${{KEY}}", app="live"),
                                PushTarget(url=f"rtmp://127.0.0.1:{port}/app/other", app="other")], 1935)
    told: list[tuple[str, str]] = []
    relays.listeners.append(lambda info: told.append((info["id"], info["state"])))
    key = StreamKey("live", "cam")
    with pytest.raises(RelayRefused) as refused:
        relays.add(key, f"rtmp://127.0.0.1:{port}/app/x")
    assert refused.value.status == 404
    assert relays.listing(key) is None
    stream = registry.claim_publisher(key, Publisher())
    try:
        listed = relays.listing(key)
        assert [r["id"] for r in listed] == ["config-0"] and listed[0]["url"] == f"rtmp://127.0.0.1:{port}/app/***"
        for bad, status in (("ftp://h/a/b", 400), (5, 400), ("rtmp://localhost/live/cam", 400)):
            with pytest.raises(RelayRefused) as refused:
                relays.add(key, bad)
            assert refused.value.status == status and "rtmp" in refused.value.message + refused.value.hint
        added = relays.add(key, "rtmp://localhost/live/another-name")  # our own port, another stream: no loop
        assert added["id"] == "r1" and added["source"] == "api"
        await until(lambda: ("config-0", "live") in told)
        assert target.keys == ["k1"]
        removed = await relays.remove(key, "r1")
        assert removed["state"] == "stopped" and await relays.remove(key, "r1") is None

        # A publisher reconnecting fires on_published again: no second push.
        registry.release_publisher(stream, stream.publisher)
        assert registry.claim_publisher(key, Publisher()) is stream
        assert [r["id"] for r in relays.listing(key)] == ["config-0"] and told.count(("config-0", "live")) == 1
        registry.kick(key)
        await until(lambda: ("config-0", "stopped") in told)
        assert [r["state"] for r in relays.listing(key)] == ["stopped"]  # still listed after the end
        registry.claim_publisher(key, Publisher())  # published again: a fresh push
        assert [r["state"] for r in relays.listing(key)] == ["connecting"]
        await until(lambda: target.keys == ["k1", "k1"])
    finally:
        await relays.close()
        await target.close()


async def test_a_configured_push_into_our_own_stream_is_refused_as_a_loop(caplog):
    registry = StreamRegistry()
    relays = manager(registry, [PushTarget(url="rtmp://myhost:1935/live/cam")], 1935)
    registry.claim_publisher(StreamKey("live", "cam"), Publisher())
    assert relays.listing(StreamKey("live", "cam")) == []
    assert "relay_loop_refused" in caplog.text
    registry.claim_publisher(StreamKey("live", "dog"), Publisher())  # another stream: pushed
    assert len(relays.listing(StreamKey("live", "dog"))) == 1
    await relays.close()
