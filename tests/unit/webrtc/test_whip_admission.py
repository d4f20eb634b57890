"""A WHIP publisher's bearer token is what RTMP publish accepts: a stream key of the app (publishing the
key's public name) or a publish token for APP/STREAM; an open app needs none."""

from __future__ import annotations

import time

from mediaserver.auth.admission import Admission
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action
from mediaserver.gate import CREDENTIAL, Gate
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey

KEY = "studio-secret-key-0123"
SECRET = b"token-secret-for-whip-tests-0123456789"


def gate(publish_open=("open",)) -> Gate:
    policy = AccessPolicy(publish_open=publish_open, secrets=(SECRET,), stream_keys=[("live", "studio", KEY, "K")])
    return Gate(Admission(policy=policy, failure_delay_s=0), StreamRegistry(call_later=lambda d, f: None))


async def admit(g: Gate, app: str, name: str, bearer: str):
    return await g.admit_publish_bearer(app, name, bearer, query={}, address="10.0.0.9", protocol="whip")


async def test_a_stream_key_as_bearer_publishes_the_keys_public_name():
    verdict = await admit(gate(), "live", "studio", KEY)
    assert verdict.allowed and verdict.key == StreamKey("live", "studio")


async def test_a_publish_token_as_bearer_publishes_the_stream_in_the_url():
    g = gate()
    token = g.admission.policy.mint(Action.PUBLISH, "live", "cam", 60, time.time())
    verdict = await admit(g, "live", "cam", token)
    assert verdict.allowed and verdict.key == StreamKey("live", "cam")
    other = await admit(g, "live", "other", token)
    assert other.refusal is not None and other.refusal.kind == CREDENTIAL


async def test_an_open_app_needs_no_bearer_and_a_closed_one_says_what_is_missing():
    assert (await admit(gate(), "open", "cam", "")).key == StreamKey("open", "cam")
    missing = await admit(gate(), "live", "cam", "")
    wrong = await admit(gate(), "live", "cam", "not-a-key-nor-a-token")
    assert missing.refusal.kind == CREDENTIAL and wrong.refusal.kind == CREDENTIAL
    assert missing.refusal.reason in ("missing", "unknown_key") and wrong.refusal.reason != "missing"
