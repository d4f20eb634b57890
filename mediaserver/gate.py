"""The gate: the one place that decides whether a publisher or a viewer gets in, for RTMP and HTTP alike.

`rtmp/server.py` and the edge's admission middleware (`edge/app.py`) ask it and turn its `Verdict` into
their own answer (an onStatus code, an HTTP status); neither holds an admission rule of its own.

    publish: name rule -> reserved app -> credential (stream key, token, block) -> publishers per app
             -> on_publish webhook (may rename: the limit is checked again) -> cluster claim
    play:    name rule -> play token (of the source, for a rendition STREAM@LABEL) -> locate (an edge pulls a
             stream another node publishes; a rendition's transcode starts)
             -> (not published anywhere: allowed, with nothing to watch) -> viewers per stream -> on_play webhook
    a recording (protocol vod-*): name rule -> play token -> on_play webhook (live or not; never located)

Play admission locates first, so the viewers limit and the on_play hook apply to every viewer, the first
viewers of a stream an edge must pull included (issue 9, defect 9). The token is checked before locating:
a viewer without the right credential never starts a pull.

Accounting: `connection_opened/closed` count connections (RTMP) and requests in progress (HTTP) per client
address, normalized once here ("::ffff:10.0.0.1" and "10.0.0.1" are one client, whichever listener it
came through). An admitted viewer of a stream (HLS apart: it has no connection to count) holds a place
in the viewers-per-stream count from its verdict until `viewer_left`, so viewers admitted at the same
moment (all waiting for the same pull) cannot exceed the limit together; `viewer_left` also tells the
on_play_done webhook.

Refused credentials are answered after the random delay (the gate waits it, so timing tells nothing);
refusals and limit hits are logged once per interval per client and subject (`log.LogGate`); a name that
may be a stream key is logged only redacted until the credential has been checked.

Layers: this module awaits (webhooks, the cluster), so it cannot live in auth/ (pure, no asyncio); it
uses auth (rules), hub (the registry's public methods), log and config, and is called by rtmp.server and
edge. It never imports either of them, redis or aiohttp: the cluster hooks (`publish_claim`,
`play_locate`) come in from the composition root as plain async callables.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .auth.admission import Admission
from .auth.hooks import HookRequest, HookVerdict
from .auth.limits import LimitExceeded
from .auth.names import NAME_RULE, RESERVED_APPS, redacted, split_rendition, valid_name, valid_play_name
from .auth.tokens import AuthError, normalize_address
from .hub.registry import StreamRegistry
from .hub.stream import Stream, StreamKey
from .log import LogGate, event

log = logging.getLogger(__name__)

PublishClaim = Callable[[StreamKey], Awaitable[str | None]]
"""Claim a stream cluster-wide before its publisher is accepted: None accepts, a message refuses."""
PlayLocate = Callable[[StreamKey, str], Awaitable["Stream | Refusal | None"]]
"""(stream, client address) -> the local stream, pulled first when another node publishes it; None when
no node does; a Refusal (kind "limit") when the node's pull bounds refuse to start one for this client."""
RenditionLocate = Callable[[StreamKey, str], Awaitable["Stream | Refusal | None"]]
"""(APP/STREAM@LABEL, client address) -> the rendition's local stream, its transcode started first; a Refusal
(kind "abr", with its HTTP status) when it cannot be made."""

HLS_VERDICTS_MAX = 100_000
RECORDED = frozenset({"vod-mp4", "vod-hls", "vod-dash"})
"""A recording of the stream (/vod/...): admitted with the stream's play token and on_play hook, whether or
not the stream is live; nothing is located or pulled."""
UNCOUNTED = frozenset({"hls", "thumbnail"}) | RECORDED
"""Requests that are no viewer's connection: not counted against max_viewers_per_stream, and the on_play
answer for the client is reused for a while (an HLS player, a VOD player's range requests and a picker's
thumbnails ask every few seconds)."""

NAME = "name"
CREDENTIAL = "credential"
LIMIT = "limit"
HOOK = "hook"
TAKEN = "taken"
ABR = "abr"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the gate said no, in the terms each listener needs to answer."""

    kind: str
    """What refused, which decides the answer: "name" (bad or reserved), "credential" (token, stream
    key, block), "limit", "hook" (the webhook), "taken" (published elsewhere)."""
    reason: str
    """Short code for logs and metrics: bad_name, reserved_app, missing, expired, webhook_denied, ..."""
    message: str
    """What the client is told, without a leading verb ("the token expired 3 s ago"); never a secret."""
    hint: str = ""
    """What to do about it, for answers that carry a hint (HTTP)."""
    limit: LimitExceeded | None = None
    status: int = 0
    """The HTTP status of an "abr" refusal (404, 409, 415, 503)."""


@dataclass(slots=True)
class Verdict:
    """The gate's answer to one publish or play request."""

    key: StreamKey | None
    """The stream admitted: for a publisher its public name (maybe renamed by the on_publish hook)."""
    refusal: Refusal | None = None
    address: str = ""
    protocol: str = ""
    expires_in: float | None = None
    """End the session after this many seconds (set by a webhook)."""
    stream: Stream | None = None
    """Play: the local stream to subscribe to (pulled when another node publishes it); None when no node
    publishes it (an allowed verdict then admits to nothing: the caller answers not found)."""
    params: dict[str, str] = field(default_factory=dict)
    """The request's query as forwarded to webhooks (without a token of ours)."""
    play_token: str = ""
    """Play: the token the app required, to carry into segment URIs ("" when the app is open)."""
    counted: bool = False
    """Play: holds a place in the viewers-per-stream count until `Gate.viewer_left`."""

    @property
    def allowed(self) -> bool:
        return self.refusal is None


class Gate:
    """Admission and cluster decisions for every listener. Built once by the composition root."""

    def __init__(
        self,
        admission: Admission,
        registry: StreamRegistry,
        *,
        publish_claim: PublishClaim | None = None,
        play_locate: PlayLocate | None = None,
        rendition_locate: RenditionLocate | None = None,
        hls_reuse_s: float = 30.0,
        log_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.admission = admission
        self.registry = registry
        self.publish_claim = publish_claim
        self.play_locate = play_locate
        """Set on nodes that pull for their viewers (cluster roles edge and both)."""
        self.rendition_locate = rendition_locate
        """Set when ABR is on: starts the transcode of a rendition a viewer names (STREAM@LABEL)."""
        self.hls_reuse_s = hls_reuse_s
        """How long an on_play answer is reused for an HLS client (it makes a request every few seconds)."""
        self.clock = clock
        self.wall_clock = wall_clock
        self.log_gate = LogGate(log_interval_s)
        self._viewers: Counter[StreamKey] = Counter()
        self._hls_verdicts: dict[tuple[str, StreamKey], tuple[HookVerdict, float, float | None]] = {}

    # ----- connections per client address -----------------------------------------------------------

    def connection_opened(self, address: str | None, logger: Any = log, **context: Any) -> Refusal | None:
        """Count a connection (or HTTP request) from `address`, or refuse it (then it is not counted)."""
        refused = self.admission.limits.connection_opened(normalize_address(address))
        if refused is None:
            return None
        self._log_limit(refused, logger, context)
        return Refusal(LIMIT, refused.limit, refused.message, f"close other connections, or raise {refused.config_key}",
                       refused)

    def connection_closed(self, address: str | None) -> None:
        self.admission.limits.connection_closed(normalize_address(address))

    # ----- publishing -------------------------------------------------------------------------------

    async def admit_publish(
        self, app: str, name: str, *, token: str, query: Mapping[str, str], address: str, protocol: str = "rtmp",
        logger: Any = log,
    ) -> Verdict:
        """Decide on a publisher of app/name (name as sent: maybe a stream key). Waits the random delay
        before a refused credential, the webhook, and the cluster claim."""
        address = normalize_address(address)
        verdict = Verdict(None, address=address, protocol=protocol)
        admission = self.admission
        if not (valid_name(app) and valid_name(name)):
            event(logger, "publish_refused", logging.WARNING, app=app[:64] if valid_name(app) else redacted(app),
                  stream=redacted(name), reason="bad_name")
            verdict.refusal = Refusal(NAME, "bad_name", NAME_RULE)
            return verdict
        if app in RESERVED_APPS:
            # The name may be a stream key meant for another app: never logged as sent.
            event(logger, "publish_refused", logging.WARNING, app=app, stream=redacted(name), reason="reserved_app")
            verdict.refusal = Refusal(NAME, "reserved_app", f"the app name {app!r} is taken by the server's own pages "
                                      "and API; publish to another app, e.g. live")
            return verdict
        try:
            grant = admission.policy.authorize_publish(app, name, token, address, self.wall_clock())
        except AuthError as err:
            verdict.refusal = Refusal(CREDENTIAL, err.reason, str(err))
            await self._refused("publish", err.reason, err.subject, verdict, logger)
            return verdict
        key = StreamKey(grant.app, grant.name)
        verdict.key = key
        verdict.params = {k: v for k, v in query.items() if not (grant.via == "token" and k == "token")}
        if (refusal := self._publishers_over_limit(key, logger)) is not None:
            verdict.refusal = refusal
            return verdict
        if admission.wants_hook("publish"):
            assert admission.hooks is not None
            hook = HookRequest("publish", key.app, key.name, address, protocol, verdict.params, {"via": grant.via})
            answer = await admission.hooks.ask(hook)
            if not answer.allowed:
                verdict.refusal = Refusal(HOOK, f"webhook_{answer.reason}", "the on_publish hook refused it")
                await self._refused("publish", verdict.refusal.reason, str(key), verdict, logger)
                return verdict
            verdict.expires_in = answer.expires_in
            if answer.stream is not None and answer.stream != key.name:
                event(logger, "publish_renamed", stream=str(key), to=f"{key.app}/{answer.stream}", by="on_publish")
                key = verdict.key = StreamKey(key.app, answer.stream)
                if (refusal := self._publishers_over_limit(key, logger)) is not None:
                    verdict.refusal = refusal
                    return verdict
        if self.publish_claim is not None:
            taken = await self.publish_claim(key)
            if taken is not None:
                event(logger, "publish_refused", logging.WARNING, stream=str(key), reason="published_elsewhere")
                verdict.refusal = Refusal(TAKEN, "published_elsewhere", taken)
        return verdict

    async def admit_publish_bearer(
        self, app: str, name: str, bearer: str, *, query: Mapping[str, str], address: str, protocol: str,
        logger: Any = log,
    ) -> Verdict:
        """A publisher that names its stream in the URL and sends its credential apart, as a bearer token
        (WHIP): a stream key of the app publishes the key's public name, as over RTMP; anything else is the
        publish token of app/name (none is needed where the app is open)."""
        if bearer and valid_name(app) and valid_name(bearer) and app not in RESERVED_APPS:
            try:  # a pure check, nothing counted or logged: is the bearer one of the app's stream keys?
                is_key = self.admission.policy.authorize_publish(app, bearer, "", None, self.wall_clock()).via == "key"
            except AuthError:
                is_key = False
            if is_key:
                return await self.admit_publish(app, bearer, token="", query=query, address=address,
                                                protocol=protocol, logger=logger)
        return await self.admit_publish(app, name, token=bearer, query=query, address=address, protocol=protocol,
                                        logger=logger)

    def _publishers_over_limit(self, key: StreamKey, logger: Any) -> Refusal | None:
        limits = self.admission.limits
        if not limits.max_publishers_per_app:
            return None
        live = sum(1 for s in self.registry.streams() if s.key.app == key.app and s.key != key and s.publisher is not None)
        refused = limits.check_publishers(key.app, live)
        if refused is None:
            return None
        self._log_limit(refused, logger, {"protocol": "rtmp"})
        return Refusal(LIMIT, refused.limit, refused.message, f"raise {refused.config_key}", refused)

    # ----- playing ----------------------------------------------------------------------------------

    async def admit_play(
        self, app: str, name: str, *, token: str, query: Mapping[str, str], address: str, protocol: str,
        logger: Any = log,
    ) -> Verdict:
        """Decide on a viewer of app/name over `protocol` (rtmp, flv, ws-flv, hls; vod-* for its recordings). An
        allowed verdict of a non-HLS viewer holds a place in the viewers count: the caller must call
        `viewer_left` once."""
        address = normalize_address(address)
        verdict = Verdict(None, address=address, protocol=protocol)
        admission = self.admission
        if not (valid_name(app) and valid_play_name(name)):
            verdict.refusal = Refusal(NAME, "bad_name", NAME_RULE)
            return verdict
        key = verdict.key = StreamKey(app, name)
        base, label = split_rendition(name)
        try:  # a rendition is played with the credential of its source: a token for demo plays demo@360p
            grant = admission.policy.authorize_play(app, base, token, address, self.wall_clock())
        except AuthError as err:
            verdict.refusal = Refusal(CREDENTIAL, err.reason, str(err))
            await self._refused("play", err.reason, err.subject, verdict, logger)
            return verdict
        if grant is not None:
            verdict.play_token = token
        verdict.params = {k: v for k, v in query.items() if not (grant is not None and k == "token")}
        if protocol not in RECORDED:
            stream = self.registry.get(key)
            locate = self.rendition_locate if label is not None else self.play_locate
            if (stream is None or stream.ended) and locate is not None:
                located = await locate(key, address)
                if isinstance(located, Refusal):
                    verdict.refusal = located
                    return verdict
                stream = located
            if stream is None or stream.ended:
                # Nothing to watch, nobody to ask: the caller answers "not found" with `not_found`'s hint (or
                # serves what outlives a stream, such as an HLS playlist that has ended).
                return verdict
            verdict.stream = stream
        if protocol not in UNCOUNTED:
            refused = admission.limits.check_viewers(str(key), self._viewers[key])
            if refused is not None:
                self._log_limit(refused, logger, {"protocol": protocol})
                verdict.refusal = Refusal(LIMIT, refused.limit, refused.message,
                                          f"try again later, or ask the operator to raise {refused.config_key}", refused)
                return verdict
            self._viewers[key] += 1
            verdict.counted = True
        if admission.wants_hook("play"):
            try:
                answer = await self._ask_play_hook(verdict)
            except BaseException:  # the client went away meanwhile: give its place back
                self.viewer_left(verdict)
                raise
            if not answer.allowed:
                self.viewer_left(verdict)
                verdict.refusal = Refusal(HOOK, f"webhook_{answer.reason}", "the on_play hook refused it")
                await self._refused("play", verdict.refusal.reason, str(key), verdict, logger)
                return verdict
            verdict.expires_in = answer.expires_in
        return verdict

    async def _ask_play_hook(self, verdict: Verdict) -> HookVerdict:
        hooks = self.admission.hooks
        assert hooks is not None and verdict.key is not None
        key = verdict.key
        hook = HookRequest("play", key.app, key.name, verdict.address, verdict.protocol, verdict.params)
        if verdict.protocol not in UNCOUNTED:
            return await hooks.ask(hook)
        # HLS players make a request every few seconds: one answer per client and stream is reused, and
        # an expiry the hook set ends the reuse of an allowing answer.
        now = self.clock()
        cached = self._hls_verdicts.get((verdict.address, key))
        if cached is not None and now < cached[1]:
            answer, _, allowed_until = cached
            if answer.allowed and allowed_until is not None and now >= allowed_until:
                return HookVerdict(False, "expired")
            return answer
        answer = await hooks.ask(hook)
        until = now + answer.expires_in if answer.expires_in is not None else None
        cache = self._hls_verdicts
        if len(cache) >= HLS_VERDICTS_MAX:
            for k in [k for k, v in cache.items() if v[1] <= now]:
                del cache[k]
        if len(cache) < HLS_VERDICTS_MAX:
            cache[(verdict.address, key)] = (answer, now + self.hls_reuse_s, until)
        return HookVerdict(answer.allowed, answer.reason, answer.stream, None)  # HLS expiry: by the cache

    def viewer_left(
        self, verdict: Verdict, reason: str | None = None, duration_s: float = 0.0, bytes_sent: int = 0,
        frames_dropped: int = 0,
    ) -> None:
        """A viewer admitted by `verdict` is gone (or never got a subscriber: `reason` None). Gives its place
        back (once, however often called) and, for a viewer that watched, tells the on_play_done hook."""
        if verdict.counted:
            verdict.counted = False
            key = verdict.key
            assert key is not None
            left = self._viewers[key] - 1
            if left > 0:
                self._viewers[key] = left
            else:
                del self._viewers[key]
        if reason is None or verdict.key is None or not self.admission.wants_hook("play_done"):
            return
        assert self.admission.hooks is not None
        key = verdict.key
        self.admission.hooks.tell(HookRequest("play_done", key.app, key.name, verdict.address, verdict.protocol,
                                              verdict.params, {
            "reason": reason, "duration_s": round(duration_s, 3), "bytes_sent": bytes_sent,
            "frames_dropped": frames_dropped,
        }))

    def viewers(self, key: StreamKey) -> int:
        """Viewers of `key` the gate admitted that have not left (HLS clients apart)."""
        return self._viewers.get(key, 0)

    # ----- answers for streams that are not here -----------------------------------------------------

    def not_found(self, key: StreamKey) -> tuple[str, str]:
        """(error, hint) for a stream this node cannot serve: blocked by an operator, not published
        anywhere in the cluster (a node that pulls for its viewers), or not published here."""
        now = self.wall_clock()
        block = self.admission.policy.block_of(key.app, key.name, now)
        if block is not None:
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(block.until))
            why = f" ({block.reason})" if block.reason else ""
            return (f"stream {key} is blocked{why} until {until}",
                    f"an operator ended it and refuses its publisher for another {math.ceil(block.until - now)} s; "
                    "it can be watched once it is published again after that")
        if self.play_locate is not None:
            return (f"stream {key} is not published on any node of the cluster",
                    f"publish it to an origin first, e.g. ffmpeg -re -i FILE -c copy -f flv "
                    f"rtmp://ORIGIN/{key.app}/{key.name}")
        return (f"stream {key} is not being published",
                f"publish it first, e.g. ffmpeg -re -i FILE -c copy -f flv rtmp://HOST/{key.app}/{key.name}")

    # ----- refusals ---------------------------------------------------------------------------------

    async def _refused(self, action: str, reason: str, subject: str, verdict: Verdict, logger: Any) -> None:
        """Count a refusal, log it (once per interval per client, stream and reason) and wait the random
        delay before the caller answers: guessing is slow, and the timing tells nothing."""
        delay = self.admission.refused(action, reason)
        count = self.log_gate.should_log((action, verdict.address, subject, reason), self.clock())
        if count:
            event(logger, f"{action}_refused", logging.WARNING, stream=subject, reason=reason,
                  protocol=verdict.protocol, refused=count)
        if delay > 0:
            await asyncio.sleep(delay)

    def _log_limit(self, refused: LimitExceeded, logger: Any, context: Mapping[str, Any]) -> None:
        count = self.log_gate.should_log(("limit", refused.limit, refused.subject), self.clock())
        if count:
            event(logger, "limit_reached", logging.WARNING, limit=refused.config_key, subject=refused.subject,
                  current=refused.current, maximum=refused.maximum, refused=count, **context)
