"""Rendition play names (STREAM@LABEL) at the gate and on the play routes: a valid rendition name is
admitted with its source's credential, a rendition that is not live is asked of the rendition locator (the
transcode pool), whose refusal carries its HTTP status; publishing a rendition name is refused."""

from __future__ import annotations

import time

from mediaserver.auth.admission import Admission
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action
from mediaserver.edge.names import stream_key
from mediaserver.gate import ABR, CREDENTIAL, NAME, Gate, Refusal
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey

SECRET = b"0123456789abcdef0123"


class FakePublisher:
    peer = "transcoder"

    def close(self, reason: str) -> None:
        pass


def make_gate(locate=None) -> tuple[Gate, StreamRegistry]:
    registry = StreamRegistry(call_later=lambda d, f: None)
    policy = AccessPolicy(play_open=(), secrets=(SECRET,))
    gate = Gate(Admission(policy=policy, failure_delay_s=0), registry, rendition_locate=locate)
    return gate, registry


def test_play_routes_accept_rendition_names_and_nothing_looser():
    assert stream_key("live", "demo@360p") == StreamKey("live", "demo@360p")
    for bad in ("demo@", "demo@360P", "demo@3 60p", "@360p", "demo@360p@x", "demo/360p", ".demo@360p"):
        assert stream_key("live", bad) is None, bad
    assert stream_key("live@x", "demo") is None


async def test_a_token_for_the_source_plays_its_renditions_and_a_rendition_not_live_is_located():
    asked = []
    gate, registry = make_gate()

    async def locate(key: StreamKey, address: str):
        asked.append((key, address))
        return registry.claim_publisher(key, FakePublisher())

    gate.rendition_locate = locate
    token = gate.admission.policy.mint(Action.PLAY, "live", "demo", 60, time.time())
    verdict = await gate.admit_play("live", "demo@360p", token=token, query={"token": token},
                                    address="10.0.0.1", protocol="flv")
    assert verdict.allowed and verdict.key == StreamKey("live", "demo@360p")
    assert verdict.stream is registry.get(StreamKey("live", "demo@360p"))
    assert asked == [(StreamKey("live", "demo@360p"), "10.0.0.1")]
    assert gate.viewers(StreamKey("live", "demo@360p")) == 1  # counted per rendition: the pool's idle check reads it
    gate.viewer_left(verdict)

    # Live already: not located again.
    verdict = await gate.admit_play("live", "demo@360p", token=token, query={}, address="10.0.0.1", protocol="hls")
    assert verdict.allowed and len(asked) == 1

    other = gate.admission.policy.mint(Action.PLAY, "live", "other", 60, time.time())
    verdict = await gate.admit_play("live", "demo@360p", token=other, query={}, address="10.0.0.1", protocol="flv")
    assert verdict.refusal is not None and verdict.refusal.kind == CREDENTIAL
    verdict = await gate.admit_play("live", "demo@360P", token=token, query={}, address="10.0.0.1", protocol="flv")
    assert verdict.refusal is not None and verdict.refusal.kind == NAME


async def test_a_refused_rendition_keeps_its_status_and_plain_names_are_not_asked():
    async def locate(key: StreamKey, address: str):
        return Refusal(ABR, "ladder", "the source is 240p: no rung of the ladder is below it", "add a rung",
                       status=409)

    gate, _ = make_gate(locate)
    gate.admission.policy = AccessPolicy()
    verdict = await gate.admit_play("live", "low@240p", token="", query={}, address="::1", protocol="rtmp")
    assert verdict.refusal is not None and verdict.refusal.kind == ABR and verdict.refusal.status == 409
    assert gate.viewers(StreamKey("live", "low@240p")) == 0
    verdict = await gate.admit_play("live", "low", token="", query={}, address="::1", protocol="flv")
    assert verdict.allowed and verdict.stream is None  # not published: the route answers 404


async def test_publishing_a_rendition_name_is_refused():
    gate, _ = make_gate()
    gate.admission.policy = AccessPolicy()
    verdict = await gate.admit_publish("live", "demo@360p", token="", query={}, address="10.0.0.2")
    assert verdict.refusal is not None and verdict.refusal.kind == NAME
