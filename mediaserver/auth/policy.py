"""Who may publish and who may watch: per-app rules, stream keys, tokens, and blocked streams.

Publishing. An app is either open (anyone may publish) or closed (a credential is needed). A credential is
  - a stream key: a secret the streamer puts in OBS's "Stream Key" field, mapped by the config to a public
    stream name (`live/studio=STUDIO_KEY`: publishing to `live/<value of $STUDIO_KEY>` publishes
    `live/studio`), so viewers and logs only ever see the public name; or
  - a publish token in the stream key's query (`NAME?token=...`), signed with the server's secret.
A public name that a stream key maps to is reserved even in an open app: publishing it directly needs a
token, so nobody can take a streamer's name by guessing it. Stream keys are compared in constant time.

Playing. An app is open, or its play URLs need a play token (`?token=...`).

Blocking. A public stream name can be blocked until a time: publishing it is refused, whatever the
credential, until then (an operator's "kick and keep out").

Pure: no IO, no clock (callers pass `now`, Unix seconds), no sleeping. Secrets come in as values (the
caller reads the environment variables the config names).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import UsageError
from .names import valid_name
from .tokens import Action, AuthError, Grant, mint, parse_secrets, verify


@dataclass(frozen=True, slots=True)
class PublishGrant:
    """A publisher was admitted: it publishes app/name (the public name) because of `via`."""

    app: str
    name: str
    via: str
    """"open", "key" or "token"."""
    expires_at: int | None = None
    """The token's expiry (Unix seconds) when admitted by token."""


@dataclass(frozen=True, slots=True)
class Block:
    app: str
    name: str
    until: float
    """Unix seconds."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _StreamKey:
    app: str
    public_name: str
    secret: bytes
    env: str


class AccessPolicy:
    def __init__(
        self,
        *,
        publish_open: Iterable[str] = ("*",),
        play_open: Iterable[str] = ("*",),
        secrets: tuple[bytes, ...] = (),
        stream_keys: Iterable[tuple[str, str, str, str]] = (),
    ) -> None:
        """`stream_keys` holds (app, public name, secret, env var name) tuples."""
        self.publish_open = frozenset(publish_open)
        self.play_open = frozenset(play_open)
        self.secrets = secrets
        self._keys: dict[str, list[_StreamKey]] = {}
        self._reserved: set[tuple[str, str]] = set()
        for app, public, secret, env in stream_keys:
            self._keys.setdefault(app, []).append(_StreamKey(app, public, secret.encode(), env))
            self._reserved.add((app, public))
        self._blocks: dict[tuple[str, str], Block] = {}

    @classmethod
    def from_settings(
        cls,
        *,
        publish_open: Iterable[str],
        play_open: Iterable[str],
        token_secret_env: str,
        stream_keys: Iterable[str],
        environ: Mapping[str, str],
    ) -> AccessPolicy:
        """Build from config values and the environment; raises UsageError naming the key to fix."""
        secrets = parse_secrets(environ.get(token_secret_env, "")) if token_secret_env else ()
        keys = []
        seen: dict[tuple[str, str], str] = {}
        for entry in stream_keys:
            target, sep, env = entry.partition("=")
            app, slash, public = target.strip().partition("/")
            env = env.strip()
            if not sep or not slash or not valid_name(app) or not valid_name(public) or not env:
                raise UsageError(
                    f"auth.stream_keys entry {entry!r} must look like \"APP/PUBLIC_NAME=ENV_VAR\", "
                    "e.g. \"live/studio=STUDIO_STREAM_KEY\""
                )
            secret = environ.get(env, "")
            if not secret:
                raise UsageError(f"auth.stream_keys maps {app}/{public} to ${env}, which is not set or empty; "
                                 f"export {env}=<the stream key OBS will use>")
            if not valid_name(secret) or len(secret) < 12:
                raise UsageError(f"${env} (stream key of {app}/{public}) must be 12-128 letters, digits, "
                                 "'_', '-', '.' or '~', so that OBS sends it unchanged and it is hard to guess")
            if (app, secret) in seen:
                raise UsageError(f"${env} and ${seen[(app, secret)]} hold the same stream key for app {app}")
            seen[(app, secret)] = env
            keys.append((app, public, secret, env))
        for app, public, _, _ in keys:
            if (app, public) in seen:
                raise UsageError(f"the public name {app}/{public} is also a stream key; choose another name")
        return cls(publish_open=publish_open, play_open=play_open, secrets=secrets, stream_keys=keys)

    # ----- what is configured ----------------------------------------------------------------------

    def publish_is_open(self, app: str) -> bool:
        return "*" in self.publish_open or app in self.publish_open

    def play_is_open(self, app: str) -> bool:
        return "*" in self.play_open or app in self.play_open

    @property
    def can_mint(self) -> bool:
        return bool(self.secrets)

    def problems(self) -> list[str]:
        """Settings that let nobody in: worth refusing to start over."""
        found = []
        if not self.secrets:
            if not ("*" in self.play_open):
                found.append("auth.play_open leaves apps closed to viewers, but no token secret is set, so no "
                             "play token can be valid")
            if not ("*" in self.publish_open) and not self._keys:
                found.append("auth.publish_open leaves apps closed to publishers, but there is neither a token "
                             "secret nor a stream key, so nobody could publish")
        return found

    # ----- publishing ------------------------------------------------------------------------------

    def authorize_publish(self, app: str, name: str, token: str, address: str | None, now: float) -> PublishGrant:
        """Admit a publisher of app/name (name as sent: maybe a stream key) or raise AuthError."""
        grant = self._publish_credential(app, name, token, address, now)
        block = self._blocks.get((grant.app, grant.name))
        if block is not None:
            if block.until > now:
                raise AuthError("blocked", f"{grant.app}/{grant.name} is blocked for another {int(block.until - now) + 1} s",
                                f"{grant.app}/{grant.name}")
            del self._blocks[(grant.app, grant.name)]
        return grant

    def _publish_credential(self, app: str, name: str, token: str, address: str | None, now: float) -> PublishGrant:
        key = self._match_key(app, name)
        if key is not None:
            return PublishGrant(app, key.public_name, "key")
        subject = f"{app}/{name}"
        reserved = (app, name) in self._reserved
        if self.publish_is_open(app) and not reserved:
            # A token is not ours to check here: it may be meant for an on_publish hook.
            return PublishGrant(app, name, "open")
        if token:
            try:
                granted: Grant = verify(token, Action.PUBLISH, app, name, now, self.secrets, address)
            except AuthError as err:
                err.subject = subject
                raise
            return PublishGrant(app, name, "token", granted.expires_at)
        if reserved:
            raise AuthError("missing", f"{subject} is a reserved stream name; publish with its stream key", subject)
        if self._keys.get(app):
            # Most likely a mistyped stream key: never log what was sent.
            raise AuthError("unknown_key", f"publishing to app {app} needs a valid stream key or token",
                            f"{app}/(unrecognised key, {len(name)} characters)")
        raise AuthError("missing", f"publishing to app {app} needs a token: NAME?token=...", subject)

    def _match_key(self, app: str, name: str) -> _StreamKey | None:
        keys = self._keys.get(app)
        if not keys:
            return None
        sent = name.encode()
        found = None
        for key in keys:  # every key is compared, so the time taken does not tell how close a guess was
            if hmac.compare_digest(sent, key.secret):
                found = key
        return found

    # ----- playing ---------------------------------------------------------------------------------

    def authorize_play(self, app: str, name: str, token: str, address: str | None, now: float) -> Grant | None:
        """None when the app is open to viewers, else the token's Grant; raises AuthError."""
        if self.play_is_open(app):
            return None
        try:
            return verify(token, Action.PLAY, app, name, now, self.secrets, address)
        except AuthError as err:
            err.subject = f"{app}/{name}"
            raise

    # ----- tokens ----------------------------------------------------------------------------------

    def mint(self, action: Action, app: str, name: str, ttl_s: float, now: float, address: str | None = None) -> str:
        if not self.secrets:
            raise UsageError("no token secret is configured; set the environment variable named by "
                             "auth.token_secret_env (default MEDIASERVER_TOKEN_SECRET)")
        if not (valid_name(app) and valid_name(name)):
            raise UsageError(f"{app}/{name} is not a valid stream name (1-128 letters, digits, '_', '-', '.', '~')")
        if not 0 < ttl_s <= 10 * 365 * 86_400:
            raise UsageError(f"ttl {ttl_s} s must be above 0 and at most ten years")
        return mint(self.secrets[0], action, app, name, int(now + ttl_s), address)

    # ----- blocks ----------------------------------------------------------------------------------

    def block(self, app: str, name: str, until: float, reason: str = "") -> Block:
        block = Block(app, name, until, reason)
        self._blocks[(app, name)] = block
        return block

    def block_of(self, app: str, name: str, now: float) -> Block | None:
        """The block in force on app/name at `now`, if any."""
        block = self._blocks.get((app, name))
        return block if block is not None and block.until > now else None

    def unblock(self, app: str, name: str) -> bool:
        return self._blocks.pop((app, name), None) is not None

    def blocks(self, now: float) -> list[Block]:
        """Blocks still in force (expired ones are dropped)."""
        for k in [k for k, b in self._blocks.items() if b.until <= now]:
            del self._blocks[k]
        return sorted(self._blocks.values(), key=lambda b: (b.app, b.name))
