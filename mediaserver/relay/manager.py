"""RelayManager: which pushes run for which stream. [[relay.push]] targets start when a matching stream
is published (a publisher reconnecting within the grace keeps its pushes going) and stop when it ends;
the admin API adds and removes pushes of a live stream. Pushes of ended streams stay listed (stopped)
until the stream is published again or `KEEP_STOPPED_S` passed.

Secrets: ${VAR}s in configured URLs are filled from the environment once, at start; only redacted URLs
are kept for logs, answers, metrics and webhooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..auth.names import split_rendition
from ..config import PushTarget
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from .chunks import SharedChunks
from .pusher import Pusher, PushSettings
from .loop import ThisHost, push_loop
from .target import PushUrl, TargetError, expand_env, parse_push_url, redact

log = logging.getLogger(__name__)

KEEP_STOPPED_S = 600.0
MAX_RELAYS_PER_STREAM = 32


class RelayRefused(Exception):
    def __init__(self, status: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


@dataclass(frozen=True, slots=True)
class ConfiguredPush:
    index: int
    rule: PushTarget
    target: PushUrl
    shown: str
    """The configured URL with its key redacted."""

    def matches(self, key: StreamKey) -> bool:
        rule = self.rule
        if rule.app not in ("*", key.app):
            return False
        base, label = split_rendition(key.name)
        if (label or "") != rule.rendition:
            return False
        return rule.stream in ("*", base)


def configured_pushes(rules: Iterable[PushTarget], environ: Mapping[str, str],
                      here: ThisHost | None = None) -> list[ConfiguredPush]:
    """Fill and check each [[relay.push]] URL; raises TargetError naming the table, also for a push of a
    named stream back into itself (a wildcard's loops are refused per stream, when it is published)."""
    out = []
    for i, rule in enumerate(rules):
        try:
            target = parse_push_url(expand_env(rule.url, environ))
        except TargetError as err:
            raise TargetError(f"relay.push[{i}].url ({redact(rule.url)}): {err}") from None
        if here is not None and "*" not in (rule.app, rule.stream):
            name = f"{rule.stream}@{rule.rendition}" if rule.rendition else rule.stream
            loop = push_loop(target, rule.app, name, here)
            if loop is not None:
                raise TargetError(f"relay.push[{i}].url: {loop}; push to another server or stream name")
        out.append(ConfiguredPush(i, rule, target, target.redacted))
    return out


class RelayManager:
    def __init__(self, registry: StreamRegistry, pushes: list[ConfiguredPush], settings: PushSettings, *,
                 here: ThisHost | None = None,
                 pulled: Callable[[Stream], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`here`: this host's names, addresses and ports (loops are refused); `pulled`: whether a stream is
        a cluster edge's copy of another node's (pushed there, not here)."""
        self.registry = registry
        self.pushes = pushes
        self.settings = settings
        self.here = here or ThisHost()
        self.clock = clock
        self.pulled = pulled or (lambda stream: False)
        self.relays: dict[StreamKey, dict[str, Pusher]] = {}
        self._ended_at: dict[StreamKey, float] = {}
        self._chunks: dict[StreamKey, tuple[Stream, SharedChunks]] = {}
        """Per stream, the chunks its pushes share (a frame is chunked once for all of them)."""
        self._next_id = 0
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        """Told of each relay's state change (the on_relay_state webhook)."""
        registry.on_published.append(self._published)
        registry.on_stream_ended.append(self._ended)

    # ----- hub hooks --------------------------------------------------------------------------------

    def _published(self, stream: Stream) -> None:
        key = stream.key
        current = self.relays.get(key, {})
        if any(p.stream is not stream for p in current.values()):  # a new stream under an old name
            current = {rid: p for rid, p in current.items() if p.stream is stream}
            self.relays[key] = current
        self._ended_at.pop(key, None)
        if self.pulled(stream):
            return  # the node it is published to pushes it; an edge's copy would push it twice
        for push in self.pushes:
            rid = f"config-{push.index}"
            if rid in current or not push.matches(key):
                continue
            loop = push_loop(push.target, key.app, key.name, self.here)
            if loop is not None:
                event(log, "relay_loop_refused", logging.ERROR, stream=str(key), url=push.shown, error=loop,
                      hint=f"relay.push[{push.index}] pushes {key} back into itself; change its url or stream")
                continue
            self._start(stream, rid, push.target, "config")

    def _ended(self, stream: Stream) -> None:
        for pusher in self.relays.get(stream.key, {}).values():
            if pusher.stream is stream:
                pusher.stream_ended()
        self._ended_at[stream.key] = self.clock()
        shared = self._chunks.get(stream.key)
        if shared is not None and shared[0] is stream:
            del self._chunks[stream.key]  # its frames are let go; pushes still sending hold their own cache
        self._prune()

    def _prune(self) -> None:
        now = self.clock()
        for key, at in list(self._ended_at.items()):
            if now - at > KEEP_STOPPED_S:
                del self._ended_at[key]
                relays = self.relays.get(key, {})
                if all(p.done for p in relays.values()):
                    self.relays.pop(key, None)

    def _start(self, stream: Stream, rid: str, target: PushUrl, source: str) -> Pusher:
        shared = self._chunks.get(stream.key)
        if shared is None or shared[0] is not stream:  # a new stream under an old name: frames of its own
            shared = self._chunks[stream.key] = (stream, SharedChunks())
        pusher = Pusher(rid, stream, target, self.registry, self.settings, source=source,
                        on_change=self._tell, chunks=shared[1])
        self.relays.setdefault(stream.key, {})[rid] = pusher
        event(log, "relay_start", stream=str(stream.key), relay=rid, url=pusher.url, source=source)
        pusher.start()
        return pusher

    def _tell(self, pusher: Pusher) -> None:
        info = pusher.describe()
        for listener in self.listeners:
            listener(info)

    # ----- the admin API ----------------------------------------------------------------------------

    def add(self, key: StreamKey, url: Any) -> dict[str, Any]:
        stream = self.registry.get(key)
        if stream is None or stream.ended:
            raise RelayRefused(404, f"stream {key} is not being published",
                               "start publishing it first; a push runs while its stream is live "
                               "(or put it in [[relay.push]] to start it with every publish)")
        if not isinstance(url, str):
            raise RelayRefused(400, "\"url\" must be a string", "e.g. {\"url\": \"rtmp://a.example/live2/KEY\"}; "
                               "accepted schemes are rtmp and rtmps")
        try:
            target = parse_push_url(url)
        except TargetError as err:
            raise RelayRefused(400, str(err), "accepted schemes are rtmp and rtmps") from None
        loop = push_loop(target, key.app, key.name, self.here)
        if loop is not None:
            raise RelayRefused(400, loop, "push to another server, or to another stream name")
        relays = self.relays.setdefault(key, {})
        if sum(1 for p in relays.values() if not p.done) >= MAX_RELAYS_PER_STREAM:
            raise RelayRefused(429, f"stream {key} already has {MAX_RELAYS_PER_STREAM} pushes",
                               "DELETE one first (GET .../relays lists them)")
        self._next_id += 1
        pusher = self._start(stream, f"r{self._next_id}", target, "api")
        return pusher.describe()

    def listing(self, key: StreamKey) -> list[dict[str, Any]] | None:
        """The stream's pushes; None when the stream is neither live nor has any listed."""
        relays = self.relays.get(key)
        stream = self.registry.get(key)
        if not relays and (stream is None or stream.ended):
            return None
        return [p.describe() for p in (relays or {}).values()]

    async def remove(self, key: StreamKey, rid: str) -> dict[str, Any] | None:
        pusher = self.relays.get(key, {}).pop(rid, None)
        if pusher is None:
            return None
        await pusher.stop("removed through the admin API")
        event(log, "relay_removed", stream=str(key), relay=rid, url=pusher.url)
        return pusher.describe()

    def all(self) -> list[Pusher]:
        return [p for relays in self.relays.values() for p in relays.values()]

    async def close(self) -> None:
        pushers = self.all()
        await asyncio.gather(*(p.stop("server shutdown") for p in pushers), return_exceptions=True)
