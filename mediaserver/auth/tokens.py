"""Signed publish and play tokens: HMAC-SHA256 over (action, app/stream, expiry[, client address]).

A token looks like `1767225600.a.<43 characters>`: the expiry (Unix seconds), whether it is bound to one
client address (`a` any address, `i` the address given when it was minted), and the URL-safe base64 of

    HMAC-SHA256(secret, "mediaserver-token-v1\\n" action "\\n" app/stream "\\n" expiry "\\n" address)

It travels in a URL query (`NAME?token=...` for RTMP, `?token=...` for HTTP), so every character is one
that needs no escaping. The signature covers the action and the stream, so a play token cannot publish and
a token for one stream opens no other. Signatures are compared with `hmac.compare_digest`; when several
secrets are configured (a rotation: new first, old after) each is tried and the first mints.

Pure: no clock (time comes in as `now`, Unix seconds), no sleeping, no IO. The short random delay before
answering a refusal belongs to the callers (the RTMP server and the edge). Error reasons are short codes
for logs and metrics; none of them ever contains the token or the secret.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from urllib.parse import parse_qsl

from ..errors import MediaServerError, UsageError

_DOMAIN = "mediaserver-token-v1"
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_SIG_CHARS = 43  # base64url of 32 bytes, without padding
MAX_TOKEN_CHARS = 256
"""Longer tokens are refused before any work is done on them."""
MIN_SECRET_BYTES = 16
MAX_TTL_S = 10 * 365 * 86_400
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Action(Enum):
    PUBLISH = "publish"
    PLAY = "play"


class AuthError(MediaServerError):
    """A credential was refused. `reason` is a short code for logs and metrics: missing, malformed,
    invalid (forged, for another stream, or signed with another secret), wrong_action, wrong_address,
    expired, no_secret, blocked, unknown_key, or a webhook's verdict."""

    def __init__(self, reason: str, message: str = "", subject: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.subject = subject
        """What the refusal was about, safe to log (never a secret)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows."""

    action: Action
    app: str
    name: str
    expires_at: int
    """Unix seconds."""
    address: str | None
    """The client address the token is bound to, or None for any."""


@lru_cache(maxsize=4096)  # asked on every play request; a client's address repeats, and parsing it does not
def normalize_address(address: str | None) -> str:
    """The canonical text of an IP address ("::ffff:10.0.0.1" -> "10.0.0.1"); other text unchanged."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _message(action: Action, app: str, name: str, expires_at: int, address: str) -> bytes:
    return f"{_DOMAIN}\n{action.value}\n{app}/{name}\n{expires_at}\n{address}".encode()


@lru_cache(maxsize=32)
def _keyed(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256's inner and outer hashes, already keyed (RFC 2104): signing then costs two hash copies
    instead of keying OpenSSL's HMAC on every call (2.7 -> 1 us)."""
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _sign(secret: bytes, message: bytes) -> bytes:
    inner, outer = _keyed(secret)
    h = inner.copy()
    h.update(message)
    o = outer.copy()
    o.update(h.digest())
    return binascii.b2a_base64(o.digest(), newline=False).translate(_URLSAFE)[:_SIG_CHARS]


def mint(secret: bytes, action: Action, app: str, name: str, expires_at: int, address: str | None = None) -> str:
    """A token allowing `action` on app/name until `expires_at` (Unix seconds), from `address` only if given."""
    if len(secret) < MIN_SECRET_BYTES:
        raise UsageError(f"token secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES}")
    if expires_at < 0 or expires_at > 10**11:
        raise UsageError(f"token expiry {expires_at} is not a Unix time in seconds")
    bound = normalize_address(address)
    sig = _sign(secret, _message(action, app, name, expires_at, bound))
    return f"{expires_at}.{'i' if bound else 'a'}.{sig.decode()}"


def verify(
    token: str | None,
    action: Action,
    app: str,
    name: str,
    now: float,
    secrets: tuple[bytes, ...],
    address: str | None = None,
) -> Grant:
    """The Grant a token gives for `action` on app/name from `address` at `now`; raises AuthError.

    The signature is checked before the expiry, so "expired" is only said of tokens we minted."""
    if not token:
        raise AuthError("missing", "a token is required")
    if not secrets:
        raise AuthError("no_secret", "no token secret is configured on this server")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise AuthError("malformed", "the token is not one this server mints")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed", "the token is not one this server mints")
    expiry_text, binding, sig_text = parts
    sig = sig_text.encode()
    if (
        not expiry_text.isdigit() or len(expiry_text) > 11 or binding not in ("a", "i")
        or len(sig) != _SIG_CHARS or not _B64URL.issuperset(sig)
    ):
        raise AuthError("malformed", "the token is not one this server mints")
    expires_at = int(expiry_text)
    bound = normalize_address(address) if binding == "i" else ""
    if binding == "i" and not bound:
        raise AuthError("wrong_address", "the token is bound to a client address, and this client's is unknown")
    if not _matches(sig, secrets, _message(action, app, name, expires_at, bound)):
        # Say why when it is cheap and tells an operator something: a token for the other action.
        other = Action.PLAY if action is Action.PUBLISH else Action.PUBLISH
        if _matches(sig, secrets, _message(other, app, name, expires_at, bound)):
            raise AuthError("wrong_action", f"the token allows {other.value}, not {action.value}")
        if binding == "i":
            raise AuthError("invalid", "the token is not valid for this stream and client address")
        raise AuthError("invalid", "the token is not valid for this stream")
    if expires_at <= now:
        raise AuthError("expired", f"the token expired {int(now - expires_at)} s ago")
    return Grant(action, app, name, expires_at, bound or None)


def _matches(sig: bytes, secrets: tuple[bytes, ...], message: bytes) -> bool:
    ok = False
    for secret in secrets:  # no early exit: the time taken does not say which secret matched
        ok |= hmac.compare_digest(sig, _sign(secret, message))
    return ok


def token_from_query(query: str, param: str = "token") -> str:
    """The value of `param` in a URL query string ("a=1&token=xyz" -> "xyz"; "" if absent)."""
    if not query or param not in query:
        return ""
    for key, value in parse_qsl(query[:4096], keep_blank_values=True):
        if key == param:
            return value
    return ""


def query_without(query: str, param: str | None = "token") -> dict[str, str]:
    """The query's parameters except `param` (for webhooks: never forward a credential of ours)."""
    return {k: v for k, v in parse_qsl(query[:4096], keep_blank_values=True) if k != param}


def parse_secrets(text: str) -> tuple[bytes, ...]:
    """Secrets from an environment variable's value: one, or several separated by commas or spaces
    (the first mints, all verify). Raises UsageError for a secret too short to be safe."""
    found = tuple(part.encode() for part in text.replace(",", " ").split())
    for secret in found:
        if len(secret) < MIN_SECRET_BYTES:
            raise UsageError(
                f"a token secret is {len(secret)} characters; use at least {MIN_SECRET_BYTES}, e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
    return found


def bearer_token(authorization: str | None) -> str:
    """The credential of an `Authorization: Bearer <token>` header (the scheme is case-insensitive,
    RFC 7235 2.1); "" when the header is absent or names another scheme."""
    scheme, _, sent = (authorization or "").partition(" ")
    return sent.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """Whether the header carries `expected` as its bearer token, compared in constant time; never true
    for an empty `expected` (a credential that is not configured opens nothing)."""
    sent = bearer_token(authorization)
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())
