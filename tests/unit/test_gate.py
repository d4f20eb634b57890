"""The gate (mediaserver/gate.py) with fakes: an in-memory registry, a webhook that answers when told, a
locator that publishes when asked. What both listeners rely on: one client address form, places in the
viewers count held from the verdict until the viewer leaves, redacted names before the credential."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mediaserver.auth.admission import Admission
from mediaserver.auth.hooks import HookRequest, HookVerdict
from mediaserver.auth.limits import Limits
from mediaserver.auth.policy import AccessPolicy
from mediaserver.gate import CREDENTIAL, HOOK, LIMIT, NAME, Gate
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.rtmp.server import RtmpConnection, RtmpServer
from mediaserver.config import RtmpConfig

KEY = StreamKey("live", "cam")
STREAM_KEY = "studio-secret-key-0123"


class FakePublisher:
    peer = "p"

    def close(self, reason: str) -> None:
        pass


class FakeHooks:
    """A webhook whose answers the test releases one by one."""

    def __init__(self, allowed: bool = True) -> None:
        self.allowed = allowed
        self.asked: list[HookRequest] = []
        self.told: list[HookRequest] = []
        self.release = asyncio.Event()

    def wants(self, event: str) -> bool:
        return True

    async def ask(self, request: HookRequest) -> HookVerdict:
        self.asked.append(request)
        await self.release.wait()
        return HookVerdict(self.allowed, "allowed" if self.allowed else "denied")

    def tell(self, request: HookRequest) -> None:
        self.told.append(request)


def make_gate(**limits) -> tuple[Gate, StreamRegistry]:
    registry = StreamRegistry(call_later=lambda d, f: None)
    policy = AccessPolicy(publish_open=("*",), stream_keys=[("live", "studio", STREAM_KEY, "STUDIO_KEY")])
    return Gate(Admission(policy=policy, limits=Limits(**limits), failure_delay_s=0), registry), registry


def test_one_client_is_one_address_whatever_form_its_address_takes():
    gate, _ = make_gate(max_connections_per_ip=2)
    assert gate.connection_opened("::ffff:10.0.0.1") is None  # an IPv4 client on a dual-stack socket
    assert gate.connection_opened("10.0.0.1") is None
    refused = gate.connection_opened("10.0.0.1")
    assert refused is not None and refused.kind == LIMIT and "10.0.0.1 has 2 connections" in refused.message
    gate.connection_closed("::ffff:10.0.0.1")
    assert gate.connection_opened("10.0.0.1") is None


def test_an_rtmp_connection_counts_under_the_same_address_as_http():
    """RTMP used to count the raw peer address: one client, two limit keys."""
    gate, registry = make_gate(max_connections_per_ip=1)

    class Transport:
        def get_extra_info(self, name):
            return ("::ffff:127.0.0.1", 50000, 0, 0) if name == "peername" else None

        def abort(self):
            self.aborted = True

        def write(self, data):
            pass

        def is_closing(self):
            return False

    async def run():
        server = RtmpServer(RtmpConfig(), registry, gate)
        conn = RtmpConnection(server, 1)
        conn.connection_made(Transport())
        assert conn.ip == "127.0.0.1"
        assert gate.connection_opened("127.0.0.1") is not None, "an HTTP request from the same client was not counted"
        conn.connection_lost(None)
        assert gate.connection_opened("127.0.0.1") is None

    asyncio.run(run())


@pytest.mark.parametrize("app, name, reason", [
    ("play", STREAM_KEY, "reserved_app"),
    ("live", STREAM_KEY + " ", "bad_name"),
    ("live", STREAM_KEY + "/x", "bad_name"),
])
def test_a_name_that_may_be_a_stream_key_is_never_logged_before_the_credential(app, name, reason, caplog):
    gate, _ = make_gate()
    with caplog.at_level(logging.DEBUG):
        verdict = asyncio.run(gate.admit_publish(app, name, token="", query={}, address="10.0.0.1"))
    assert verdict.refusal is not None and verdict.refusal.kind == NAME and verdict.refusal.reason == reason
    logged = " ".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert reason in logged and STREAM_KEY not in logged, logged
    assert f"{len(name)} characters" in logged


def test_a_stream_key_publishes_under_its_public_name():
    gate, _ = make_gate()
    verdict = asyncio.run(gate.admit_publish("live", STREAM_KEY, token="", query={}, address="10.0.0.1"))
    assert verdict.allowed and verdict.key == StreamKey("live", "studio")


def test_viewers_admitted_together_cannot_exceed_the_limit_and_leaving_frees_a_place():
    async def run():
        gate, registry = make_gate(max_viewers_per_stream=2)
        hooks = FakeHooks()
        gate.admission.hooks = hooks
        registry.claim_publisher(KEY, FakePublisher())
        admits = [asyncio.ensure_future(gate.admit_play("live", "cam", token="", query={"seat": str(i)},
                                                        address="10.0.0.1", protocol="flv")) for i in range(4)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        hooks.release.set()  # all four are past the limit check or refused by it before any hook answers
        verdicts = await asyncio.gather(*admits)
        assert [v.allowed for v in verdicts].count(True) == 2
        assert {v.refusal.kind for v in verdicts if not v.allowed} == {LIMIT}
        assert len(hooks.asked) == 2, "the hook was asked about viewers the limit refused"
        assert gate.viewers(KEY) == 2
        first = next(v for v in verdicts if v.allowed)
        gate.viewer_left(first, "viewer_left", 3.0, 1000, 0)
        gate.viewer_left(first, "viewer_left", 3.0, 1000, 0)  # once only
        assert gate.viewers(KEY) == 1
        assert [t.event for t in hooks.told] == ["play_done", "play_done"]
        assert hooks.told[0].params == first.params and hooks.told[0].extra["bytes_sent"] == 1000
        again = await gate.admit_play("live", "cam", token="", query={}, address="10.0.0.2", protocol="rtmp")
        assert again.allowed and gate.viewers(KEY) == 2

    asyncio.run(run())


def test_a_viewer_that_goes_away_during_the_hook_gives_its_place_back():
    async def run():
        gate, registry = make_gate(max_viewers_per_stream=1)
        gate.admission.hooks = FakeHooks()
        registry.claim_publisher(KEY, FakePublisher())
        task = asyncio.ensure_future(gate.admit_play("live", "cam", token="", query={}, address="a", protocol="flv"))
        await asyncio.sleep(0)
        assert gate.viewers(KEY) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.viewers(KEY) == 0

    asyncio.run(run())


def test_play_locates_first_so_the_hook_and_the_limit_see_a_pulled_stream():
    async def run():
        gate, registry = make_gate(max_viewers_per_stream=1)
        hooks = FakeHooks(allowed=False)
        hooks.release.set()
        gate.admission.hooks = hooks
        located: list[tuple[StreamKey, str]] = []

        async def locate(key, address):  # an edge: the stream appears once pulled
            located.append((key, address))
            return registry.get(key) or registry.claim_publisher(key, FakePublisher())

        gate.play_locate = locate
        verdict = await gate.admit_play("live", "cam", token="", query={}, address="::ffff:10.0.0.9", protocol="flv")
        assert located == [(KEY, "10.0.0.9")]
        assert verdict.refusal is not None and verdict.refusal.kind == HOOK and len(hooks.asked) == 1
        assert gate.viewers(KEY) == 0

    asyncio.run(run())


def test_a_viewer_without_the_play_token_never_starts_a_pull():
    async def run():
        gate, registry = make_gate()
        gate.admission.policy = AccessPolicy(play_open=(), secrets=(b"0123456789abcdef0123",))

        async def locate(key, address):
            raise AssertionError("located for a viewer without a token")

        gate.play_locate = locate
        verdict = await gate.admit_play("live", "cam", token="", query={}, address="a", protocol="hls")
        assert verdict.refusal is not None and verdict.refusal.kind == CREDENTIAL and verdict.refusal.reason == "missing"

    asyncio.run(run())


def test_not_found_says_blocked_until_when_or_not_in_the_cluster():
    gate, _ = make_gate()
    gate.wall_clock = lambda: 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert "publish it first" in gate.not_found(KEY)[1]
    gate.admission.policy.block(KEY.app, KEY.name, 1_767_225_600.0 + 600, "spam")
    error, hint = gate.not_found(KEY)
    assert "blocked (spam) until 2026-01-01T00:10:00Z" in error and "600 s" in hint

    async def nowhere(key, address):
        return None

    gate.play_locate = nowhere
    gate.admission.policy.unblock(KEY.app, KEY.name)
    error, hint = gate.not_found(KEY)
    assert "any node of the cluster" in error and "publish it first" not in hint


def test_thumbnails_take_no_viewer_place_and_reuse_the_hook_answer_like_hls():
    async def run():
        gate, registry = make_gate(max_viewers_per_stream=1)
        hooks = FakeHooks()
        hooks.release.set()
        gate.admission.hooks = hooks
        registry.claim_publisher(KEY, FakePublisher())
        watching = await gate.admit_play("live", "cam", token="", query={}, address="10.0.0.1", protocol="flv")
        assert watching.allowed and gate.viewers(KEY) == 1
        for _ in range(3):  # a picker refreshing its thumbnail while the stream is full
            verdict = await gate.admit_play("live", "cam", token="", query={}, address="10.0.0.2",
                                            protocol="thumbnail")
            assert verdict.allowed and not verdict.counted
        assert gate.viewers(KEY) == 1
        assert [r.protocol for r in hooks.asked] == ["flv", "thumbnail"]

    asyncio.run(run())
