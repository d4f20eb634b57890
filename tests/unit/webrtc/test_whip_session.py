"""A WHIP session in one process (aiohttp test server, aiortc client): every phase has a deadline, and the
node's session limit and the registry's one-publisher rule are answered before any ICE work."""

from __future__ import annotations

import asyncio
import time

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.whip import WhipClient
from mediaserver.auth.admission import Admission
from mediaserver.config import Config
from mediaserver.gate import Gate
from mediaserver.hub.registry import RegistryPolicy, StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.webrtc.ingest import IngestTimeouts
from mediaserver.webrtc.sessions import Sessions
from mediaserver.webrtc.whip import add_whip_routes


@pytest.fixture
async def node():
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=0))
    sessions = Sessions(max_sessions=1)
    app = web.Application()
    service = add_whip_routes(app, Config(), registry, Gate(Admission(failure_delay_s=0), registry), sessions)
    service.timeouts = IngestTimeouts(connect_s=1.0, media_s=1.0)
    async with TestClient(TestServer(app)) as http:
        yield http, registry, sessions


def stop_reasons(caplog) -> list[str]:
    return [r.fields["reason"] for r in caplog.records if r.getMessage() == "publish_stop"]


async def until(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_session_whose_ice_never_connects_ends_at_its_deadline(node, caplog):
    http, registry, sessions = node
    caplog.set_level(logging.INFO, "mediaserver.webrtc")
    client = WhipClient(str(http.make_url("/live/cam/whip")), audio=False)
    try:
        offer = await client.offer()
        async with http.post("/live/cam/whip", data=offer, headers={"Content-Type": "application/sdp"}) as resp:
            assert resp.status == 201, await resp.text()  # the answer is never applied: no ICE, no media
        assert len(sessions) == 1 and registry.get(StreamKey("live", "cam")).publisher is not None
        await until(lambda: len(sessions) == 0, 5)
        assert registry.get(StreamKey("live", "cam")) is None  # released; no grace in this registry
        assert stop_reasons(caplog) == ["connect_timeout"]
    finally:
        await client.close()


async def test_a_publisher_that_stops_sending_ends_after_the_media_timeout_and_the_limit_frees(node, caplog):
    http, registry, sessions = node
    caplog.set_level(logging.INFO, "mediaserver.webrtc")
    client = WhipClient(str(http.make_url("/live/cam/whip")))
    other = WhipClient(str(http.make_url("/live/other/whip")), video=False)
    try:
        status, body = await client.publish(http.session)
        assert status == 201, body
        status, body = await other.publish(http.session)
        assert status == 503 and "webrtc.max_sessions" in body, body  # the node's limit of 1
        await until(lambda: (s := registry.get(StreamKey("live", "cam"))) is not None and s.frames_in > 10, 10)
        for sender in client.pc.getSenders():
            await sender.stop()  # the connection stays up; no more media
        await until(lambda: len(sessions) == 0, 5)
        assert registry.get(StreamKey("live", "cam")) is None
        assert stop_reasons(caplog) == ["media_timeout"]
    finally:
        await client.close()
        await other.close()


async def test_a_high_profile_offer_is_answered_with_video_in_its_own_profile(node):
    http, registry, sessions = node
    client = WhipClient(str(http.make_url("/live/cam/whip")))
    try:
        high = (await client.offer()).replace("profile-level-id=42e01f", "profile-level-id=640c1f")
        async with http.post("/live/cam/whip", data=high, headers={"Content-Type": "application/sdp"}) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
        video = answer[answer.index("m=video"):answer.index("m=audio")]
        assert not video.startswith("m=video 0 ") and "a=recvonly" in video, video
        assert "profile-level-id=640c1f" in video and "42e01f" not in video, video
    finally:
        await client.close()


async def test_offers_from_one_address_that_never_connect_are_capped_with_429():
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=0))
    sessions = Sessions(max_sessions=100, max_connecting_per_client=2)
    app = web.Application()
    service = add_whip_routes(app, Config(), registry, Gate(Admission(failure_delay_s=0), registry), sessions)
    service.timeouts = IngestTimeouts(connect_s=1.0, media_s=1.0)
    client = WhipClient("http://unused/", audio=False)
    try:
        offer = await client.offer()
        async with TestClient(TestServer(app)) as http:
            statuses = []
            for n in range(3):  # answers never applied: each session waits for ICE that never comes
                async with http.post(f"/live/cam{n}/whip", data=offer, headers={"Content-Type": "application/sdp"}) as resp:
                    statuses.append(resp.status)
                    body = await resp.text()
            assert statuses == [201, 201, 429] and "webrtc.max_connecting_per_ip" in body, body
            await until(lambda: len(sessions) == 0, 5)  # their deadline frees the places
            async with http.post("/live/cam9/whip", data=offer, headers={"Content-Type": "application/sdp"}) as resp:
                assert resp.status == 201
            await until(lambda: len(sessions) == 0, 5)
    finally:
        await client.close()


async def test_a_certificate_that_does_not_match_the_offers_fingerprint_ends_as_dtls_failed(node, caplog):
    # ICE connects, the DTLS handshake fails its fingerprint check: an operator is told which (a client bug
    # or a man in the middle), not "ice_failed", which would send them after firewalls.
    http, registry, sessions = node
    caplog.set_level(logging.INFO, "mediaserver.webrtc")
    client = WhipClient(str(http.make_url("/live/cam/whip")), audio=False)
    try:
        offer = await client.offer()
        line = next(x for x in offer.splitlines() if x.startswith("a=fingerprint:sha-256 "))
        digest = line.split()[1]
        wrong = ":".join("00" if part != "00" else "11" for part in digest.split(":"))
        status, body = await client.publish(http.session, offer.replace(digest, wrong))
        assert status == 201, body
        await until(lambda: len(sessions) == 0, 10)
        assert stop_reasons(caplog) == ["dtls_failed"]
        assert registry.get(StreamKey("live", "cam")) is None
    finally:
        await client.close()
