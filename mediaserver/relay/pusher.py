"""Pusher: one push target, publishing one hub stream to another RTMP or RTMPS server as it arrives.

It is a hub subscriber like an RTMP play viewer (kind "relay"): it starts at the cached GOP's keyframe
with metadata and sequence headers first, then sends each batch as it comes, without re-encoding, through
the project's sans-IO RTMP client (OBS's command sequence). A slow target overflows its own cursor only
(the usual slow-consumer policy): ingest and other viewers never wait for it. A write that does not drain
within `write_timeout` means the target stopped reading: the connection is dropped and retried.

When the target refuses (an RTMP error status such as NetStream.Publish.BadName), drops, or cannot be
reached, the push retries with capped exponential backoff, its state saying why. Timestamps start at 0 on
each connection. For HEVC, AV1 and VP9 streams connect announces Enhanced RTMP (fourCcList), and the
bodies go out as the publisher sent them (already Enhanced RTMP); a target that does not announce
fourCcList in its answer gets them anyway and the state's `note` says so.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import PeerError
from ..hub.rate import RateMeter
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream
from ..hub.subscriber import SlowConsumer, Subscriber
from ..log import event
from ..media.frames import Frame, FrameKind
from ..rtmp.client import ClientSession
from ..rtmp.events import CommandResultReceived, ConnectResult, StatusReceived
from ..transports import reset
from .chunks import SharedChunks
from .state import Backoff, RelayState, RelayStatus, error_kind
from .target import PushUrl

log = logging.getLogger(__name__)

_ENHANCED_VIDEO = {"hevc": "hvc1", "av1": "av01", "vp9": "vp09"}
_READ_SIZE = 64 * 1024
_MERGE_S = 0.05
"""A short pause between batches: fewer, larger writes and wake-ups (the RTMP play path's 50 ms)."""


def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    # uvloop raises RuntimeError (not an OSError) on a write to a transport the peer has closed.
    if writer.transport.is_closing():
        raise ConnectionError("the target closed the connection")
    writer.write(data)


class TargetRefused(Exception):
    """The target answered with an RTMP error; the message is its code and description."""


@dataclass(frozen=True, slots=True)
class PushSettings:
    connect_timeout: float = 10.0
    """Seconds to connect, handshake and have publishing accepted."""
    write_timeout: float = 10.0
    """Seconds a write may wait for the target to read before the connection counts as dead."""
    retry_min: float = 1.0
    retry_max: float = 30.0
    chunk_size: int = 4096
    ssl_context: ssl.SSLContext | None = None
    """For rtmps:// targets; None is the system's default verification (SSL_CERT_FILE is honoured)."""


def describe_error(err: BaseException) -> str:
    if isinstance(err, TargetRefused):
        return str(err)
    if isinstance(err, TimeoutError):
        return "timed out (the target did not answer, or stopped reading)"
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return f"TLS error: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing listens on that host and port)"
    if isinstance(err, SlowConsumer):
        return "the target reads too slowly for the stream's bit rate"
    if isinstance(err, OSError):
        return f"network error: {err.strerror or err}"
    if isinstance(err, PeerError):  # RtmpProtocolError, or AMF it sent that cannot be read
        return f"RTMP protocol error from the target: {err}"
    return f"{type(err).__name__}: {err}"


class Pusher:
    def __init__(self, relay_id: str, stream: Stream, target: PushUrl, registry: StreamRegistry,
                 settings: PushSettings, *, source: str = "api", template: str = "",
                 on_change: Callable[[Pusher], None] | None = None, chunks: SharedChunks | None = None) -> None:
        """`chunks`: the stream's chunk cache, shared with its other pushes (a private one when None)."""
        self.id = relay_id
        self.stream = stream
        self.target = target
        self.registry = registry
        self.settings = settings
        self.source = source
        """"config" (a [[relay.push]] table) or "api"."""
        self.url = template or target.redacted
        """What may be shown: the redacted URL."""
        self.chunks = chunks or SharedChunks()
        self.status = RelayStatus()
        self.bytes_sent = 0
        self.note: str | None = None
        self._reported_error: str | None = None
        self._stop_reason = "the stream ended"
        self._on_change = on_change
        self._rate = RateMeter(window_s=10.0, min_span_s=1.0)
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.status.since = self._loop.time()

    # ----- lifetime ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name=f"relay {self.stream.key} {self.id}")

    def stream_ended(self) -> None:
        """The source ended: a live push sends what is queued and stops; a retrying one stops now."""
        self._ended.set()
        if self.status.state is not RelayState.LIVE and self._task is not None:
            self._task.cancel()

    async def stop(self, reason: str = "removed") -> None:
        self._stop_reason = reason
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._set_stopped(reason)

    @property
    def done(self) -> bool:
        return self.status.state is RelayState.STOPPED

    def describe(self) -> dict[str, Any]:
        now = self._loop.time()
        self._rate.add(now, self.bytes_sent)
        rate = self._rate.per_second() if self.status.state is RelayState.LIVE else None
        status = self.status
        return {
            "id": self.id, "stream": str(self.stream.key), "url": self.url, "source": self.source,
            "state": status.state.value, "error": status.error, "note": self.note,
            "since_s": round(now - status.since, 1),
            "retry_in_s": round(max(0.0, status.retry_at - now), 1) if status.retry_at is not None else None,
            "bytes": self.bytes_sent, "bitrate_kbps": round(rate * 8 / 1000, 1) if rate else 0,
            "reconnects": status.reconnects,
        }

    # ----- the attempts -----------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.settings.retry_min, self.settings.retry_max)
        reason = None
        try:
            while not self.stream.ended and not self._ended.is_set():
                self._changed(self.status.connecting(self._loop.time()))
                try:
                    await self._session()
                    break  # the stream ended and the target was told
                except (OSError, TimeoutError, TargetRefused, PeerError, SlowConsumer, ConnectionError) as err:
                    error = self._scrub(describe_error(err))
                now = self._loop.time()
                live_since = self.status.live_since
                if live_since is not None and now - live_since >= self.settings.retry_max:
                    backoff.reset()  # it had been going for a while: start over quickly
                delay = backoff.next_delay()
                if self.stream.ended or self._ended.is_set():
                    break
                self.status.retrying(error, now, delay)
                kind = error_kind(error)
                if kind != self._reported_error:  # once per new kind of error, not every attempt
                    self._reported_error = kind
                    event(log, "relay_retrying", logging.WARNING, stream=str(self.stream.key), relay=self.id,
                          url=self.url, error=error, retry_in_s=delay)
                    self._changed(True)
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass
        except Exception as err:  # a bug: say so in the state rather than vanish
            log.exception("relay %s of %s failed", self.id, self.stream.key)
            reason = f"internal error: {type(err).__name__}"
        self._set_stopped(reason or self._stop_reason)

    def _scrub(self, text: str) -> str:
        """A target's error may quote the stream key (ours does): never repeat it."""
        for secret in sorted({self.target.key, self.target.stream_name, self.target.key.split("?", 1)[-1]},
                             key=len, reverse=True):
            if len(secret) >= 3:
                text = text.replace(secret, "***")
        return text[:300]

    def _set_stopped(self, reason: str) -> None:
        if self.status.stopped(reason, self._loop.time()):
            event(log, "relay_stopped", stream=str(self.stream.key), relay=self.id, url=self.url, reason=reason,
                  bytes=self.bytes_sent, reconnects=self.status.reconnects)
            self._changed(True)

    def _changed(self, news: bool) -> None:
        if news and self._on_change is not None:
            try:
                self._on_change(self)
            except Exception:
                log.exception("relay state listener failed")

    async def _session(self) -> None:
        target, settings = self.target, self.settings
        context = None
        if target.tls:
            context = settings.ssl_context or ssl.create_default_context()
        async with asyncio.timeout(settings.connect_timeout):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=context, server_hostname=target.host if context else None)
        clean = False
        try:
            client = ClientSession(chunk_size=settings.chunk_size)
            codec = self.stream.info.video_codec
            enhanced = codec in _ENHANCED_VIDEO
            client.connect(target.app, target.tc_url,
                           {"fourCcList": sorted(set(_ENHANCED_VIDEO.values()))} if enhanced else None)
            client.publish(target.key)
            _write(writer, client.data_to_send())
            async with asyncio.timeout(settings.connect_timeout):
                announced = await self._until_publishing(reader, writer, client)
            self.note = None
            if enhanced and not announced:
                self.note = (f"the target did not announce Enhanced RTMP (fourCcList); {codec} is sent anyway "
                             "and may not play there")
            self._reported_error = None
            self._changed(self.status.live(self._loop.time()))
            event(log, "relay_live", stream=str(self.stream.key), relay=self.id, url=self.url,
                  reconnects=self.status.reconnects)
            await self._stream_media(reader, writer, client)
            clean = True
        finally:
            if clean:
                writer.close()
            else:  # a reset: what a stuck target left in the send queue is dropped at once
                reset(writer.transport)

    async def _until_publishing(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                client: ClientSession) -> bool:
        """Read until the target accepts publishing; returns whether it announced Enhanced RTMP."""
        announced = False
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise ConnectionError("the target closed the connection before publishing started")
            client.receive_data(data)
            for e in client.events():
                if isinstance(e, ConnectResult):
                    if not e.accepted:
                        info = e.info if isinstance(e.info, dict) else {}
                        raise TargetRefused(f"connect refused: {info.get('code', '')} {info.get('description', '')}".strip())
                    announced = isinstance(e.properties, dict) and "fourCcList" in e.properties
                elif isinstance(e, StatusReceived):
                    if e.code == "NetStream.Publish.Start":
                        out = client.data_to_send()
                        if out:
                            _write(writer, out)
                        return announced
                    if e.level == "error" or e.code.endswith(("BadName", "Failed", "Rejected", "Unauthorized")):
                        raise TargetRefused(f"{e.code}: {e.description}" if e.description else e.code)
                elif isinstance(e, CommandResultReceived) and not e.accepted and e.method == "createStream":
                    raise TargetRefused("the target refused createStream")
            out = client.data_to_send()
            if out:
                _write(writer, out)

    async def _stream_media(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            client: ClientSession) -> None:
        stream = self.stream
        sub, start = stream.subscribe("relay", self.target.redacted, self._loop.time())
        watch = self._loop.create_task(self._watch(reader, writer, client))
        send = self._loop.create_task(self._send(sub, start, writer, client))
        reason = "viewer_left"
        try:
            done, _ = await asyncio.wait({watch, send}, return_when=asyncio.FIRST_COMPLETED)
            if send in done and send.exception() is None:
                return  # the stream ended; the target was told
            failed = send if send in done else watch
            err = failed.exception()
            if isinstance(err, SlowConsumer):
                reason = "slow_consumer"
            assert err is not None
            raise err
        finally:
            for task in (watch, send):
                if not task.done():
                    task.cancel()
            await asyncio.gather(watch, send, return_exceptions=True)
            sub.close(reason)

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientSession) -> None:
        """The target's side while publishing: acknowledgements and pings answered, an error status or the
        connection closing end the attempt."""
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                raise ConnectionError("the target closed the connection")
            client.receive_data(data)
            for e in client.events():
                if isinstance(e, StatusReceived) and (e.level == "error" or e.code.endswith(("Failed", "BadName"))):
                    raise TargetRefused(f"{e.code}: {e.description}" if e.description else e.code)
            out = client.data_to_send()
            if out:
                _write(writer, out)

    async def _send(self, sub: Subscriber, start: list[Frame], writer: asyncio.StreamWriter,
                    client: ClientSession) -> None:
        """Each batch: its frames' chunks (made once for every push that shares them), one write, one
        byte count; a drain waited for only when the kernel left bytes in the transport's buffer."""
        base: int | None = None
        batch: list[Frame] | None = start
        timeout = self.settings.write_timeout
        chunk_size, stream_id = client.out_chunk_size, client.stream_id
        loop, registry, transport = self._loop, self.registry, writer.transport
        rate_at = 0.0
        while batch is not None:
            if batch:
                if base is None:
                    base = next((f.dts_ms for f in batch if f.kind != FrameKind.DATA and not f.is_config), None)
                    if base is None:  # configs only so far: sent at 0, not shared (no base yet)
                        messages = SharedChunks(len(batch)).messages(batch, chunk_size, stream_id, None)
                    else:
                        messages = self.chunks.messages(batch, chunk_size, stream_id, base)
                else:
                    messages = self.chunks.messages(batch, chunk_size, stream_id, base)
                if transport.is_closing():
                    raise ConnectionError("the target closed the connection")
                writer.writelines(messages)
                size = sum(map(len, messages))
                self.bytes_sent += size
                registry.count_sent(sub, size)
                now = loop.time()
                if now - rate_at >= 1.0:  # the bit rate is read over 10 s: one sample a second is plenty
                    rate_at = now
                    self._rate.add(now, self.bytes_sent)
                if transport.get_write_buffer_size():  # the kernel took it all: nothing to wait for
                    async with asyncio.timeout(timeout):
                        await writer.drain()
                await asyncio.sleep(_MERGE_S)
            batch = await sub.next_batch()
        if not self.stream.ended:
            raise ConnectionError(f"the hub ended this push's subscription ({sub.close_reason})")
        client.unpublish()
        try:
            _write(writer, client.data_to_send())
            async with asyncio.timeout(min(timeout, 2.0)):
                await writer.drain()
        except (TimeoutError, OSError):
            pass  # the stream is over either way
