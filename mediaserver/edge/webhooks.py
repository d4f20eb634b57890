"""Webhooks: on_publish, on_play (asked, awaited), on_publish_done, on_play_done, on_health (told, not
awaited).

Each call is a `POST` of a JSON object (`auth.hooks.HookRequest.to_json`) to the configured URL, with
`Authorization: Bearer $WEBHOOK_TOKEN` when `webhooks.auth_header_env` names a variable. What an answer
means is the rule in `auth/hooks.py`: 2xx allows, 4xx refuses, and everything else (5xx, redirects, no
connection, no answer within `webhooks.timeout`, a malformed JSON answer) is a failure that refuses
unless `webhooks.on_failure = "allow"`.

The client owns one aiohttp ClientSession, opened and closed by the edge application's cleanup_ctx, so the
RTMP server (which receives this object from the composition root) and the play routes share it. Told
events run as tasks the client keeps; at cleanup they get up to a second (the done events of the shutdown
itself), then are cancelled. At most `MAX_PENDING` are kept, beyond that they are dropped and counted
(a dead hook must not pile up memory), and `TOLD_AT_ONCE` of them are sent at a time; asked calls never
wait behind them. An answer is read whole (up to `MAX_ANSWER_BYTES`) within `webhooks.timeout`. Failures are logged once per
interval per event, with the URL's scheme, host and path only (a query may carry a secret).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ..auth.names import split_rendition
from ..record.manager import summary
from ..auth.hooks import HookRequest, HookVerdict, read_answer
from ..config import WebhooksConfig
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream
from ..log import LogGate, event

if TYPE_CHECKING:
    from ..transcode.health_monitor import HealthEvent

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
MAX_PENDING = 1000
TOLD_AT_ONCE = 100
"""Told events in flight to the hooks at once (the rest of the MAX_PENDING wait their turn). Asked calls
are not counted against it: each has a publisher or viewer waiting for its verdict, and those are bounded
by the connection limits; a shared pool would make them wait behind told events and time out."""
_LOG_INTERVAL_S = 10.0


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class WebhookClient:
    """Implements `auth.hooks.Hooks` over HTTP."""

    def __init__(self, cfg: WebhooksConfig, environ: Mapping[str, str]) -> None:
        self.cfg = cfg
        self.urls = {
            "publish": cfg.on_publish, "play": cfg.on_play,
            "publish_done": cfg.on_publish_done, "play_done": cfg.on_play_done, "health": cfg.on_health,
            "record_done": cfg.on_record_done, "record_disk": cfg.on_record_disk,
            "relay_state": cfg.on_relay_state,
        }
        token = environ.get(cfg.auth_header_env, "") if cfg.auth_header_env else ""
        self._headers = {"Content-Type": "application/json", "User-Agent": "mediaserver-webhook"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.session: aiohttp.ClientSession | None = None
        self.outcomes: Counter[tuple[str, str]] = Counter()
        """Calls by (event, outcome): allowed, denied, or what failed; for metrics."""
        self._pending: set[asyncio.Task[None]] = set()
        self._early: list[HookRequest] | None = []
        """Events told before the application started (the recordings a killed server left, found at start),
        sent once the session exists; None from then on."""
        self._log_gate = LogGate(_LOG_INTERVAL_S)
        self._publishers: dict[int, tuple[Stream, str, float]] = {}
        self._telling: asyncio.Semaphore | None = None
        """TOLD_AT_ONCE places for told events (made with the session)."""

    @property
    def enabled(self) -> bool:
        return any(self.urls.values())

    def wants(self, event_name: str) -> bool:
        return bool(self.urls.get(event_name))

    # ----- lifetime ---------------------------------------------------------------------------------

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """Owns the ClientSession for the application's lifetime; cancels what is still pending."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # asked calls never wait for a pooled connection
            timeout=aiohttp.ClientTimeout(total=self.cfg.timeout),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._telling = asyncio.Semaphore(TOLD_AT_ONCE)
        early, self._early = self._early or [], None
        for request in early:
            self.tell(request)
        try:
            yield
        finally:
            if self._pending:  # done events of the shutdown itself: give them a moment, then cancel
                await asyncio.wait(list(self._pending), timeout=min(1.0, self.cfg.timeout))
            for task in list(self._pending):
                task.cancel()
            if self._pending:
                await asyncio.wait(list(self._pending), timeout=1.0)
            session, self.session = self.session, None
            await session.close()

    def watch(self, registry: StreamRegistry) -> None:
        """Send publish_done when a publisher session ends (it left, was kicked, or was replaced)."""
        if not self.wants("publish_done"):
            return
        registry.on_published.append(self._published)
        registry.on_unpublished.append(self._publish_done)
        registry.on_stream_ended.append(self._publish_done)

    def _published(self, stream: Stream) -> None:
        if split_rendition(stream.key.name)[1] is not None:
            return  # a rendition is made by this server (a transcode, an encoder's track): no on_publish, no done
        previous = self._publishers.get(id(stream))
        if previous is not None:
            self._publish_done(stream, reason="replaced")
        peer = stream.publisher.peer if stream.publisher is not None else ""
        self._publishers[id(stream)] = (stream, peer, time.monotonic())

    def _publish_done(self, stream: Stream, reason: str | None = None) -> None:
        entry = self._publishers.pop(id(stream), None)
        if entry is None:
            return
        _, peer, started = entry
        if reason is None:
            reason = "ended" if stream.ended else "unpublished"
        self.tell(HookRequest(
            "publish_done", stream.key.app, stream.key.name, peer.rsplit(":", 1)[0].strip("[]"), "rtmp",
            extra={"reason": reason, "duration_s": round(time.monotonic() - started, 3), "bytes_in": stream.bytes_in},
        ))

    def record_done(self, row) -> None:
        """A recording's file was closed (a RecordingManager listener): event "record_done" with its row."""
        body = summary(row)
        self.tell(HookRequest("record_done", row.app, row.stream, "", "", extra={
            k: v for k, v in body.items() if k not in ("app", "stream")}))

    def record_disk(self, change, path: str, streams: list[str]) -> None:
        """record.path's free space fell under record.min_free_gb (state "low": recordings stopped) or came
        back (state "ok": resumed); a RecordingManager disk listener. Event "record_disk"."""
        self.tell(HookRequest("record_disk", "", "", "", "", extra={
            "state": change.state, "free_bytes": change.free_bytes, "min_free_bytes": change.min_free_bytes,
            "path": path, "streams": streams}))

    def relay_state(self, info: dict) -> None:
        """A push went live, started retrying or stopped (a RelayManager listener): event "relay_state" with
        the relay's id, url (its key redacted), state, error, bytes and reconnects."""
        app, _, name = str(info.get("stream", "")).partition("/")
        self.tell(HookRequest("relay_state", app, name, "", "", extra={
            k: info.get(k) for k in ("id", "url", "source", "state", "error", "bytes", "reconnects")}))

    def health_event(self, ev: HealthEvent) -> None:
        """A stream's picture or sound changed health (a HealthWatch listener): event "health" with the
        condition (black, frozen, silent), state (start, end), since (Unix seconds) and duration_s."""
        extra: dict[str, object] = {"condition": ev.condition, "state": ev.state, "since": ev.since,
                                    "duration_s": ev.duration_s}
        if ev.reason is not None:
            extra["reason"] = ev.reason
        self.tell(HookRequest("health", ev.key.app, ev.key.name, "", "", extra=extra))

    # ----- calls ------------------------------------------------------------------------------------

    async def ask(self, request: HookRequest) -> HookVerdict:
        url = self.urls.get(request.event)
        if not url:
            return HookVerdict(True, "allowed")
        verdict = await self._call(url, request)
        self.outcomes[(request.event, verdict.reason)] += 1
        if verdict.reason not in ("allowed", "denied"):
            allowed = self.cfg.on_failure == "allow"
            self._log_failure(request.event, url, verdict.reason, "allowed" if allowed else "denied")
            return HookVerdict(allowed, verdict.reason)
        return verdict

    def tell(self, request: HookRequest) -> None:
        url = self.urls.get(request.event)
        if not url:
            return
        if self._early is not None and len(self._early) < MAX_PENDING:
            self._early.append(request)  # before start: sent when the session opens
            return
        if len(self._pending) >= MAX_PENDING or self.session is None:
            self.outcomes[(request.event, "dropped")] += 1
            return
        task = asyncio.get_running_loop().create_task(self._tell(url, request))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _tell(self, url: str, request: HookRequest) -> None:
        assert self._telling is not None  # (tell() makes no task before the session exists)
        async with self._telling:
            verdict = await self._call(url, request)
        outcome = "delivered" if verdict.reason in ("allowed", "denied") else verdict.reason
        self.outcomes[(request.event, outcome)] += 1
        if outcome != "delivered":
            self._log_failure(request.event, url, outcome, "not delivered")

    async def _call(self, url: str, request: HookRequest) -> HookVerdict:
        session = self.session
        if session is None:
            return HookVerdict(False, "not_started")
        try:
            async with asyncio.timeout(self.cfg.timeout):
                async with session.post(url, data=json.dumps(request.to_json()), headers=self._headers,
                                        allow_redirects=False) as resp:
                    status = resp.status
                    if 400 <= status < 500:
                        return HookVerdict(False, "denied")
                    if not 200 <= status < 300:
                        return HookVerdict(False, f"status_{status}")
                    # The whole answer (a hook may send it in pieces), up to one byte past the limit.
                    body = b""
                    while len(body) <= MAX_ANSWER_BYTES and (more := await resp.content.read(
                            MAX_ANSWER_BYTES + 1 - len(body))):
                        body += more
                    return self._allowed(resp.content_type, body)
        except TimeoutError:
            return HookVerdict(False, "timeout")
        except (aiohttp.ClientError, OSError):
            return HookVerdict(False, "connection")

    def _allowed(self, content_type: str, body: bytes) -> HookVerdict:
        if content_type != "application/json" or not body.strip():
            return HookVerdict(True, "allowed")
        if len(body) > MAX_ANSWER_BYTES:
            return HookVerdict(False, "bad_answer")
        try:
            stream, expires_in = read_answer(json.loads(body))
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting past the parser's depth
            return HookVerdict(False, "bad_answer")
        return HookVerdict(True, "allowed", stream, expires_in)

    def _log_failure(self, event_name: str, url: str, outcome: str, effect: str) -> None:
        count = self._log_gate.should_log(event_name, time.monotonic())
        if count:
            event(log, "webhook_failed", logging.WARNING, hook=event_name, url=_safe_url(url), outcome=outcome,
                  effect=effect, more_since_last_log=count - 1, timeout_s=self.cfg.timeout)
