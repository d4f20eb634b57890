"""Tokens: what a token allows, and every way one can be wrong (missing, malformed, expired, forged, for
another stream, for the other action, from another address, replayed after expiry)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediaserver.auth.tokens import (
    Action,
    AuthError,
    mint,
    normalize_address,
    parse_secrets,
    query_without,
    token_from_query,
    verify,
)
from mediaserver.errors import UsageError

SECRET = b"s3cret-s3cret-s3cret-0123456789"
OTHER = b"another-secret-another-secret-42"
NOW = 1_800_000_000


def _verify(token, action=Action.PLAY, app="live", name="cam", now=NOW, secrets=(SECRET,), address=None):
    return verify(token, action, app, name, now, secrets, address)


def _reason(token, **kwargs) -> str:
    with pytest.raises(AuthError) as err:
        _verify(token, **kwargs)
    return err.value.reason


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("address", [None, "10.0.0.5", "2001:db8::7"])
def test_a_minted_token_verifies_for_its_action_stream_and_address(action, address):
    token = mint(SECRET, action, "live", "cam", NOW + 60, address)
    grant = _verify(token, action=action, address=address or "192.0.2.1")
    assert (grant.action, grant.app, grant.name, grant.expires_at) == (action, "live", "cam", NOW + 60)
    assert grant.address == (normalize_address(address) if address else None)
    assert token.isascii() and all(c.isalnum() or c in "._-" for c in token), "tokens need no URL escaping"


def test_a_missing_token_is_refused_as_missing():
    assert _reason("") == "missing"
    assert _reason(None) == "missing"


@pytest.mark.parametrize("token", [
    "x", "1.2", "1.a.b.c", "abc.a." + "A" * 43, "1800000060.z." + "A" * 43, "1800000060.a." + "A" * 42,
    "1800000060.a." + "A" * 44, "1800000060.a." + "+" * 43, "1800000060.a." + "é" * 43, "9" * 300,
    "-5.a." + "A" * 43, "1800000060.a." + "A" * 43 + "\x00", "", "1" * 12 + ".a." + "A" * 43,
])
def test_malformed_tokens_are_refused_without_any_other_work(token):
    assert _reason(token) in ("malformed", "missing")


def test_an_expired_token_is_refused_and_so_is_a_replay_after_expiry():
    token = mint(SECRET, Action.PLAY, "live", "cam", NOW + 10)
    assert _verify(token, now=NOW + 9).name == "cam"
    assert _reason(token, now=NOW + 10) == "expired"
    assert _reason(token, now=NOW + 86_400) == "expired"


def test_a_forged_signature_or_a_changed_expiry_is_invalid_not_expired():
    token = mint(SECRET, Action.PLAY, "live", "cam", NOW - 100)
    expiry, binding, sig = token.split(".")
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert _reason(f"{expiry}.{binding}.{flipped}") == "invalid"
    # Moving an expired token's expiry forward breaks its signature.
    assert _reason(f"{NOW + 3600}.{binding}.{sig}") == "invalid"
    # The signature is checked before the expiry: an old forged token says "invalid", not "expired".
    assert _reason(f"{expiry}.{binding}.{flipped}", now=NOW + 10**6) == "invalid"


@pytest.mark.parametrize("app, name", [("live", "cam2"), ("live2", "cam"), ("liv", "ecam"), ("live/cam", "")])
def test_a_token_for_another_stream_is_invalid(app, name):
    token = mint(SECRET, Action.PLAY, app, name, NOW + 60)
    assert _reason(token) == "invalid"


def test_a_play_token_cannot_publish_and_a_publish_token_cannot_play():
    play = mint(SECRET, Action.PLAY, "live", "cam", NOW + 60)
    publish = mint(SECRET, Action.PUBLISH, "live", "cam", NOW + 60)
    assert _reason(play, action=Action.PUBLISH) == "wrong_action"
    assert _reason(publish, action=Action.PLAY) == "wrong_action"


def test_a_token_signed_with_another_secret_is_invalid_but_rotation_keeps_old_tokens_valid():
    old = mint(OTHER, Action.PLAY, "live", "cam", NOW + 60)
    assert _reason(old) == "invalid"
    assert _verify(old, secrets=(SECRET, OTHER)).name == "cam"
    assert _reason(old, secrets=()) == "no_secret"


def test_an_address_bound_token_only_works_from_that_address():
    token = mint(SECRET, Action.PLAY, "live", "cam", NOW + 60, "10.0.0.5")
    assert _verify(token, address="10.0.0.5").address == "10.0.0.5"
    assert _verify(token, address="::ffff:10.0.0.5").address == "10.0.0.5"  # IPv4-mapped IPv6 is the same client
    assert _reason(token, address="10.0.0.6") == "invalid"
    assert _reason(token, address=None) == "wrong_address"


def test_refusals_never_carry_the_token_or_the_secret():
    token = mint(SECRET, Action.PLAY, "live", "cam", NOW - 1)
    for kwargs in ({}, {"action": Action.PUBLISH}, {"name": "x"}, {"now": NOW + 100}):
        with pytest.raises(AuthError) as err:
            _verify(token, **kwargs)
        text = f"{err.value} {err.value.reason} {err.value.subject}"
        assert token.split(".")[2] not in text and SECRET.decode() not in text


@given(st.text(max_size=400))
def test_any_text_is_refused_with_an_auth_error_and_nothing_else(text):
    with pytest.raises(AuthError):
        _verify(text)


def test_short_secrets_are_refused_when_minting_and_when_configured():
    with pytest.raises(UsageError, match="at least 16"):
        mint(b"short", Action.PLAY, "live", "cam", NOW)
    with pytest.raises(UsageError, match="at least 16"):
        parse_secrets("short")
    assert parse_secrets(f"{SECRET.decode()}, {OTHER.decode()}") == (SECRET, OTHER)
    assert parse_secrets("") == ()


@pytest.mark.parametrize("query, token", [
    ("", ""), ("token=abc", "abc"), ("a=1&token=abc&b=2", "abc"), ("tokens=abc", ""), ("token=", ""),
    ("token=a%2Eb", "a.b"), ("a=token", ""), ("token=x&token=y", "x"),
])
def test_the_token_is_read_from_the_query(query, token):
    assert token_from_query(query) == token


def test_webhook_parameters_never_carry_the_token():
    assert query_without("token=abc&user=7&x=") == {"user": "7", "x": ""}


@pytest.mark.parametrize("text, normal", [
    ("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("2001:DB8::1", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"), ("", ""), (None, ""), ("not-an-ip", "not-an-ip"),
])
def test_client_addresses_are_compared_in_canonical_form(text, normal):
    assert normalize_address(text) == normal


@pytest.mark.parametrize("secret", [b"x" * 16, SECRET, b"k" * 64, b"long" * 40, bytes(range(256)) * 2])
def test_the_signature_is_standard_hmac_sha256_for_every_secret_length(secret):
    import base64
    import hashlib
    import hmac

    from mediaserver.auth.tokens import _message, _sign

    message = _message(Action.PLAY, "live", "cam", NOW, "10.0.0.1")
    assert message == b"mediaserver-token-v1\nplay\nlive/cam\n1800000000\n10.0.0.1"
    expected = base64.urlsafe_b64encode(hmac.digest(secret, message, hashlib.sha256)).rstrip(b"=")
    assert _sign(secret, message) == expected
