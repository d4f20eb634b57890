"""The access policy: open and closed apps, stream keys mapped to public names, tokens, blocks, limits,
and what a webhook's answer means."""

from __future__ import annotations

import random

import pytest

from mediaserver.auth.admission import Admission
from mediaserver.auth.hooks import HookRequest, read_answer
from mediaserver.auth.limits import Limits
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action, AuthError, mint
from mediaserver.errors import UsageError

SECRET = "s3cret-s3cret-s3cret-0123456789"
KEY = "studio-Xk29fLq8Zp"
NOW = 1_800_000_000.0


def closed(**kwargs) -> AccessPolicy:
    settings = dict(publish_open=(), play_open=(), token_secret_env="SECRET", stream_keys=("live/studio=STUDIO_KEY",),
                    environ={"SECRET": SECRET, "STUDIO_KEY": KEY})
    settings.update(kwargs)
    return AccessPolicy.from_settings(**settings)


def token(action=Action.PUBLISH, app="live", name="cam", ttl=60) -> str:
    return mint(SECRET.encode(), action, app, name, int(NOW + ttl))


def refusal(fn, *args) -> AuthError:
    with pytest.raises(AuthError) as err:
        fn(*args)
    return err.value


def test_with_no_config_every_app_is_open_to_publishers_and_viewers():
    policy = AccessPolicy()
    grant = policy.authorize_publish("any", "thing", "", "10.0.0.1", NOW)
    assert (grant.app, grant.name, grant.via) == ("any", "thing", "open")
    assert policy.authorize_play("any", "thing", "", None, NOW) is None
    assert policy.problems() == []


def test_an_open_app_ignores_a_token_it_does_not_need_but_a_closed_one_requires_it():
    policy = AccessPolicy(publish_open=("open",), secrets=(SECRET.encode(),))
    assert policy.authorize_publish("open", "x", "", None, NOW).via == "open"
    assert policy.authorize_publish("open", "x", "not-ours-maybe-a-webhooks", None, NOW).via == "open"
    err = refusal(policy.authorize_publish, "live", "cam", "", None, NOW)
    assert err.reason == "missing" and err.subject == "live/cam"
    grant = policy.authorize_publish("live", "cam", token(), None, NOW)
    assert (grant.via, grant.expires_at) == ("token", int(NOW + 60))


@pytest.mark.parametrize("bad, reason", [
    (token(ttl=-1), "expired"),
    (token(name="other"), "invalid"),
    (token(action=Action.PLAY), "wrong_action"),
    ("garbage", "malformed"),
])
def test_a_closed_app_refuses_bad_publish_tokens(bad, reason):
    assert refusal(closed().authorize_publish, "live", "cam", bad, None, NOW).reason == reason


def test_a_stream_key_publishes_under_its_public_name_and_is_never_named_in_a_refusal():
    policy = closed()
    grant = policy.authorize_publish("live", KEY, "", None, NOW)
    assert (grant.app, grant.name, grant.via) == ("live", "studio", "key")
    wrong = KEY[:-1] + "x"
    err = refusal(policy.authorize_publish, "live", wrong, "", None, NOW)
    assert err.reason == "unknown_key"
    assert wrong not in f"{err} {err.subject}" and KEY not in f"{err} {err.subject}"


def test_a_public_name_of_a_stream_key_is_reserved_even_in_an_open_app():
    policy = closed(publish_open=("*",))
    assert policy.authorize_publish("live", "anything", "", None, NOW).via == "open"
    assert refusal(policy.authorize_publish, "live", "studio", "", None, NOW).reason == "missing"
    assert policy.authorize_publish("live", "studio", token(name="studio"), None, NOW).via == "token"
    assert policy.authorize_publish("live", KEY, "", None, NOW).name == "studio"


def test_a_blocked_name_is_refused_whatever_the_credential_until_the_block_ends():
    policy = closed()
    policy.block("live", "studio", NOW + 30, "abuse")
    policy.block("live", "cam", NOW + 30)
    assert refusal(policy.authorize_publish, "live", KEY, "", None, NOW).reason == "blocked"
    assert refusal(policy.authorize_publish, "live", "cam", token(), None, NOW + 29).reason == "blocked"
    assert [b.name for b in policy.blocks(NOW)] == ["cam", "studio"]
    assert policy.authorize_publish("live", "cam", token(ttl=100), None, NOW + 30).name == "cam"
    assert policy.unblock("live", "studio") and not policy.unblock("live", "studio")
    assert policy.blocks(NOW + 31) == []


def test_play_tokens_are_checked_only_where_the_app_is_closed():
    policy = closed(play_open=("public",))
    assert policy.authorize_play("public", "x", "", None, NOW) is None
    assert refusal(policy.authorize_play, "live", "cam", "", None, NOW).reason == "missing"
    assert refusal(policy.authorize_play, "live", "cam", token(), None, NOW).reason == "wrong_action"
    assert policy.authorize_play("live", "cam", token(Action.PLAY), None, NOW).name == "cam"


def test_minting_needs_a_secret_a_valid_name_and_a_sane_ttl():
    policy = closed()
    assert policy.authorize_play("live", "cam", policy.mint(Action.PLAY, "live", "cam", 60, NOW), None, NOW + 59)
    for args in (("live", "../x", 60), ("live", "cam", 0), ("live", "cam", 1e12)):
        with pytest.raises(UsageError):
            policy.mint(Action.PLAY, *args, NOW)
    with pytest.raises(UsageError, match="token_secret_env"):
        AccessPolicy().mint(Action.PLAY, "live", "cam", 60, NOW)


@pytest.mark.parametrize("keys, environ, message", [
    (("studio=STUDIO_KEY",), {"STUDIO_KEY": KEY}, "APP/PUBLIC_NAME=ENV_VAR"),
    (("live/studio",), {}, "APP/PUBLIC_NAME=ENV_VAR"),
    (("live/../x=STUDIO_KEY",), {"STUDIO_KEY": KEY}, "APP/PUBLIC_NAME=ENV_VAR"),
    (("live/studio=STUDIO_KEY",), {}, "not set or empty"),
    (("live/studio=STUDIO_KEY",), {"STUDIO_KEY": "short"}, "hard to guess"),
    (("live/studio=STUDIO_KEY",), {"STUDIO_KEY": "has space in it ok"}, "12-128 letters"),
    (("live/a=K1", "live/b=K2"), {"K1": KEY, "K2": KEY}, "the same stream key"),
    (("live/studio-Xk29fLq8Zp=K1", "live/b=K2"), {"K1": "aaaaaaaaaaaaaa", "K2": KEY}, "is also a stream key"),
])
def test_bad_stream_key_settings_are_refused_naming_what_to_fix(keys, environ, message):
    with pytest.raises(UsageError, match=message):
        AccessPolicy.from_settings(publish_open=(), play_open=(), token_secret_env="", stream_keys=keys, environ=environ)


def test_settings_that_let_nobody_in_are_reported():
    policy = AccessPolicy.from_settings(publish_open=(), play_open=(), token_secret_env="NOPE", stream_keys=(), environ={})
    assert len(policy.problems()) == 2
    assert closed().problems() == []


# ----- limits ---------------------------------------------------------------------------------------


def test_connections_per_address_are_counted_and_refused_over_the_limit():
    limits = Limits(max_connections_per_ip=2)
    assert limits.connection_opened("a") is None and limits.connection_opened("a") is None
    refused = limits.connection_opened("a")
    assert refused is not None and refused.limit == "connections_per_ip"
    assert "limits.max_connections_per_ip = 2" in refused.message and "a has 2 connections" in refused.message
    assert limits.connection_opened("b") is None
    limits.connection_closed("a")
    assert limits.connections("a") == 1 and limits.connection_opened("a") is None
    for _ in range(5):
        limits.connection_closed("a")
    assert limits.connections("a") == 0
    assert limits.refusals["connections_per_ip"] == 1


def test_zero_means_unlimited():
    limits = Limits()
    assert all(limits.connection_opened("a") is None for _ in range(1000))
    assert limits.check_publishers("live", 10**6) is None and limits.check_viewers("live/x", 10**6) is None


def test_publisher_and_viewer_limits_name_the_key_to_raise():
    limits = Limits(max_publishers_per_app=1, max_viewers_per_stream=3)
    assert limits.check_publishers("live", 0) is None
    assert "limits.max_publishers_per_app" in limits.check_publishers("live", 1).message
    assert limits.check_viewers("live/x", 2) is None
    assert "stream live/x has 3 viewers" in limits.check_viewers("live/x", 3).message


# ----- admission and webhook answers ---------------------------------------------------------------


def test_a_refusal_is_counted_and_answered_after_a_random_delay_within_bounds():
    admission = Admission(failure_delay_s=0.4, rng=random.Random(7))
    delays = [admission.refused("play", "expired") for _ in range(200)]
    assert all(0.2 <= d <= 0.4 for d in delays) and len(set(delays)) > 100
    assert admission.failures[("play", "expired")] == 200
    assert Admission(failure_delay_s=0).refused("publish", "missing") == 0.0


@pytest.mark.parametrize("body, result", [
    (None, (None, None)),
    ({}, (None, None)),
    ({"stream": "renamed"}, ("renamed", None)),
    ({"expires_in": 30}, (None, 30.0)),
    ({"stream": "x", "expires_in": 0.5, "other": [1]}, ("x", 0.5)),
])
def test_a_webhook_answer_may_rename_and_set_an_expiry(body, result):
    assert read_answer(body) == result


@pytest.mark.parametrize("body", [
    [], "allow", 1, {"stream": "../etc"}, {"stream": 5}, {"stream": ""}, {"expires_in": 0}, {"expires_in": -1},
    {"expires_in": True}, {"expires_in": "10"}, {"expires_in": 1e12},
])
def test_a_webhook_answer_that_breaks_the_rule_is_refused(body):
    with pytest.raises(ValueError):
        read_answer(body)


def test_a_webhook_request_body_carries_the_public_name_and_no_token():
    body = HookRequest("publish", "live", "studio", "10.0.0.1", "rtmp", {"user": "7"}, {"via": "key"}).to_json()
    assert body == {"event": "publish", "app": "live", "stream": "studio", "client_ip": "10.0.0.1",
                    "protocol": "rtmp", "params": {"user": "7"}, "via": "key"}
