"""Pull relays: streams of other servers ingested here from a URL, as if an encoder published them here.

Each `[[relay.pull]]` is one RelayPull, the local stream's publisher while connected (the hub's Publisher):
every output, recording and ABR work on it as on any stream. The source is played with the project's
sans-IO RTMP client (`rtmp/client.py`, over asyncio, TLS for rtmps://) or fetched as HTTP-FLV (aiohttp);
either way the media goes through the same FlvIngest as an edge's origin pull (`edge/flv_ingest.py`:
timestamps unwrapped, metadata read leniently).

- mode "on_demand": the pull starts at the first viewer, through the gate's play_locate hook, the one an
  edge uses for a stream it does not have (the viewer waits up to relay.pull_wait for the first keyframe),
  and stops after relay.pull_grace without viewers or packagers. mode "always": it starts with the server.
- A source that drops or refuses is reconnected after 0.5 s, the wait doubling up to relay.pull_retry_max
  (back to 0.5 s once a connection played PLAYED_ENOUGH_S). An RTMP source that says its stream ended
  (onStatus NetStream.Play.UnpublishNotify) is dropped then, not after read_timeout of silence;
  meanwhile the local stream waits as for a reconnecting publisher (hub.reconnect_grace): viewers stay
  connected and see a discontinuity when the source comes back.
- In a cluster (an origin with Redis) an "always" pull configured on several origins runs on one: before
  each connection it claims the stream as a publisher would (`cluster_claim`, the same StreamLocator claim);
  the other nodes wait in state "standby" and claim again, so one of them takes over when the holder dies.
  Their viewers get the stream from the holder like any other node's stream (an edge's pull).
- A kick (admin API) stops the pull; an "always" pull starts again after RESTART_AFTER_KICK_S, or once the
  kick's block lapses. While the name is blocked no viewer starts its pull either.
- State (connecting, live, retrying with the last error, idle, stopped, standby), bytes and reconnects are in
  `describe()` (GET /api/v1/pulls) and the metrics. Logs and the API show the source URL without its key
  and query (`PullSource.shown`), and errors quoting the key have it replaced.

Its layer sits beside the edge: it needs aiohttp (HTTP-FLV client) and the RTMP client, and nothing below
it imports it; the composition root wires it into the gate (play_locate, publish_claim) and the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..config import RelayConfig
from ..edge.flv_ingest import FlvIngest
from ..errors import PeerError, UsageError
from ..hub.registry import PublishRefused, StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from ..media.frames import FrameKind
from ..rtmp.client import ClientSession
from ..rtmp.events import AudioReceived, ConnectResult, MetadataReceived, StatusReceived, VideoReceived
from ..transports import reset
from .loop import ThisHost, pull_loop
from .pull_source import Backoff, PullSource, parse_source
from .state import error_kind

log = logging.getLogger(__name__)

CONNECTING, LIVE, RETRYING, IDLE, STOPPED = "connecting", "live", "retrying", "idle", "stopped"
STANDBY = "standby"
"""Cluster: another origin holds the stream (its pull runs there); this one takes over when that node dies."""
STATES = (CONNECTING, LIVE, RETRYING, IDLE, STOPPED, STANDBY)
STANDBY_POLL_S = 1.0
"""Between two claims of a stream another node holds (each claim itself waits out a dying holder)."""
_WATCHDOG_S = 0.5
_READ_SIZE = 64 * 1024
_MAX_UNSENT = 256 * 1024
"""What this server's answers to an RTMP source (acknowledgements, pongs) may queue unsent: a source that
sends and never reads is dropped past it, not given memory without end."""
_SOURCE_ENDED = frozenset({"NetStream.Play.UnpublishNotify", "NetStream.Play.Stop", "NetStream.Play.Complete"})
"""onStatus codes by which an RTMP server tells a player that the stream it plays has ended."""
RESTART_AFTER_KICK_S = 1.0
"""An "always" pull kicked by an operator (without a block) connects again after this, as an encoder would."""
BLOCK_RECHECK_S = 5.0
"""A blocked "always" pull looks at its block this often: an operator may lift it before it lapses."""
PLAYED_ENOUGH_S = 5.0
"""A connection that played this long (or relay.pull_retry_max, if less) starts the reconnect waits over."""


class SourceError(Exception):
    """The source refused or ended the pull; the message is shown as the pull's last error."""


class RelayPull:
    """One configured pull: its loop, its state, and the local stream's publisher while connected."""

    def __init__(self, pool: PullRelays, key: StreamKey, source: PullSource, mode: str, index: int = 0) -> None:
        self.pool = pool
        self.id = f"pull-{index}"
        """Its [[relay.pull]] table's index: the id the on_relay_state webhook gives."""
        self.key = key
        self.source = source
        self.mode = mode
        self.peer = f"pull:{source.shown}"
        self.state = IDLE
        self.state_since = time.time()
        self.last_error = ""
        self.bytes_in = 0
        self.connects = 0
        """Connections that carried media (a reconnect is every one after the first)."""
        self.stream: Stream | None = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        self._waiters = 0
        self._backoff = Backoff(pool.settings.pull_retry_max)
        self._live_since: float | None = None
        """When this connection first delivered playable media (None: not yet)."""
        self._going_live: asyncio.Timeout | None = None
        """This connection's deadline to deliver it (lifted once it has)."""
        self._reported_error: str | None = None
        self._stop_reason = ""
        self._restart: asyncio.TimerHandle | None = None
        """An "always" pull's start again after a kick, or once an operator's block lapses."""

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ----- the hub's Publisher, start and stop ---------------------------------------------------------

    def close(self, reason: str) -> None:
        """The registry ends the stream (kick, shutdown): stop pulling. An "always" pull kicked starts again
        (after RESTART_AFTER_KICK_S, or once the operator's block on its name lapses), as its encoder would."""
        self.stop(reason)
        if self.mode == "always" and reason not in ("server_shutdown", "pull_idle"):
            self._start_later()

    def _start_later(self) -> None:
        if self._restart is not None:
            self._restart.cancel()
        until = self.pool.blocked_until(self.key)
        delay = RESTART_AFTER_KICK_S if until is None else min(max(0.0, until - time.time()) + 0.05, BLOCK_RECHECK_S)
        self._restart = asyncio.get_running_loop().call_later(delay, self._restart_now)

    def _restart_now(self) -> None:
        self._restart = None
        self.start()

    def start(self) -> None:
        if self.running:
            return
        if self.pool.blocked_until(self.key) is not None:  # kicked with a block: not pulled until it lapses
            self._stop_reason = "blocked"
            self._set(STOPPED)
            if self.mode == "always" and self._restart is None:
                self._start_later()
            return
        loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self._idle_since = None
        self._backoff.reset()
        self._set(CONNECTING)
        self._task = loop.create_task(self._run(), name=f"relay pull {self.key}")
        if self.mode == "on_demand":
            self._watchdog = loop.call_later(_WATCHDOG_S, self._check_idle)

    def stop(self, reason: str, state: str = STOPPED) -> None:
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self.running:
            return
        assert self._task is not None
        self._task.cancel()
        self._task = None
        self._release()
        self._stop_reason = reason
        self._set(state)
        event(log, "relay_pull_stop", stream=str(self.key), source=self.source.shown, reason=reason,
              connects=self.connects, bytes=self.bytes_in)

    async def wait_ready(self, timeout: float) -> None:
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            pass
        finally:
            self._waiters -= 1

    def _set(self, state: str) -> None:
        before = self.state
        if state != before:
            self.state = state
            self.state_since = time.time()
        # The on_relay_state webhook, as for pushes: each new state, but "retrying" once per new error and
        # not the "connecting" of every retry (a dead source would call it every few seconds).
        if state in (RETRYING, STANDBY):
            kind = error_kind(self.last_error)
            if kind == self._reported_error:
                return
            self._reported_error = kind
        elif state == before or (state == CONNECTING and before == RETRYING):
            return
        elif state == LIVE:
            self._reported_error = None
        self.pool.tell(self)

    def state_news(self) -> dict:
        """What the on_relay_state webhook is told: the fields of a push's, source "pull"."""
        return {"id": self.id, "stream": str(self.key), "url": self.source.shown, "source": "pull",
                "state": self.state,
                "error": (self.last_error if self.state in (RETRYING, STANDBY)
                          else self._stop_reason if self.state in (IDLE, STOPPED) else None),
                "bytes": self.bytes_in, "reconnects": self.reconnects}

    # ----- the pull loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        ready = self.ready  # this run's: a pull stopped and started again has a new one
        try:
            while True:
                await self._hold_claim()
                connects = self.connects
                self._live_since = None
                reason = self._scrub(await self._attempt())
                played = time.monotonic() - self._live_since if self._live_since is not None else 0.0
                if played >= min(PLAYED_ENOUGH_S, self._backoff.cap):
                    self._backoff.reset()  # it had been playing for a while: start over quickly
                # Logged once per loss: retries against a dead source stay quiet until media flows again.
                if self.connects > connects or not self.last_error:
                    event(log, "relay_pull_lost", logging.WARNING, stream=str(self.key), source=self.source.shown,
                          reason=reason)
                self.last_error = reason
                self._set(RETRYING)
                await asyncio.sleep(self._backoff.next_wait())
                self._set(CONNECTING)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("relay pull of %s failed", self.key)
            self._set(STOPPED)
        finally:
            self._release_if_current()
            ready.set()

    async def _hold_claim(self) -> None:
        """Cluster: wait in standby until this node holds the stream's claim ("always" pulls only: an
        on_demand pull starts where a viewer asks, and other nodes' viewers are served from there)."""
        claim = self.pool.cluster_claim
        if claim is None or self.mode != "always":
            return
        while (refused := await self._claim_cluster(claim)) is not None:
            if self.state != STANDBY:
                event(log, "relay_pull_standby", stream=str(self.key), source=self.source.shown, reason=refused)
            self.last_error = refused
            self._set(STANDBY)
            await asyncio.sleep(STANDBY_POLL_S)
        if self.state == STANDBY:
            self.last_error = ""
            self._set(CONNECTING)

    async def _claim_cluster(self, claim: Callable[[StreamKey], Awaitable[str | None]]) -> str | None:
        try:
            return await claim(self.key)
        except Exception as err:  # a cluster fault: wait and claim again, never a stopped pull
            log.exception("cluster claim of %s failed", self.key)
            return f"the cluster claim failed: {type(err).__name__}"

    async def _attempt(self) -> str:
        """One connection to the source; returns why it ended. From the connect to the first playable media
        (a keyframe with its configs) it has connect_timeout + read_timeout in all: a source that trickles
        its handshake or answers everything but play never holds the pull."""
        within = self.pool.connect_timeout + self.pool.read_timeout
        going_live = self._going_live = asyncio.timeout(within)
        try:
            async with going_live:
                if self.source.rtmp:
                    await self._pull_rtmp()
                else:
                    await self._pull_flv()
            return "the source ended the stream"
        except SourceError as err:
            return str(err)
        except TimeoutError:
            if going_live.expired():
                return f"the source sent no playable media within {within:g} s of the connect"
            return "TimeoutError: the source sent nothing in time"
        except (aiohttp.ClientError, OSError, PeerError) as err:  # PeerError: RTMP, AMF or media it sent
            return f"{type(err).__name__}: {str(err)[:160]}"
        finally:
            self._release_if_current()

    def _went_live(self) -> None:
        """The connection delivers playable media: viewers may come, and its deadline is lifted."""
        if self._live_since is None:
            self._live_since = time.monotonic()
            if self._going_live is not None:
                self._going_live.reschedule(None)
        self.ready.set()

    def _claim(self) -> Stream:
        try:
            self.stream = self.pool.registry.claim_publisher(self.key, self)
        except PublishRefused as err:
            raise SourceError(f"the local stream refused the pull: {err}") from err
        self.connects += 1
        self._set(LIVE)
        event(log, "relay_pull_start", stream=str(self.key), source=self.source.shown, connect=self.connects)
        return self.stream

    def _release_if_current(self) -> None:
        """A run ending releases the stream unless a newer run (stop, then start) has it now."""
        if self._task is None or self._task is asyncio.current_task():
            self._release()

    def _release(self) -> None:
        stream = self.stream
        if stream is not None and stream.publisher is self:
            self.pool.registry.release_publisher(stream, self)

    async def _pull_flv(self) -> None:
        settings = self.pool
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout)
        # Not redirected: a source could point the pull at anything, this server's own stream included.
        async with self.pool.session().get(self.source.url, timeout=timeout, allow_redirects=False) as resp:
            if 300 <= resp.status < 400:
                where = resp.headers.get("Location", "")[:200]
                raise SourceError(f"HTTP {resp.status}: the source redirects{f' to {where}' if where else ''}; "
                                  "give that URL in the pull's url (redirects are not followed)")
            if resp.status != 200:
                raise SourceError(f"HTTP {resp.status} {resp.reason or ''}".rstrip())
            # The stream is claimed at the first whole tag: a body that is not FLV (MediaError) or never gets
            # past its header does not go live, tell the webhook, or start the pushes.
            ingest = FlvIngest(claim=self._claim)  # a new connection: new timelines, rebased by the hub
            async for chunk in resp.content.iter_any():
                self.bytes_in += len(chunk)
                if not ingest.relay(chunk, time.monotonic(), self):
                    return  # replaced or kicked meanwhile
                if ingest.ready:
                    self._went_live()

    async def _pull_rtmp(self) -> None:
        source, pool = self.source, self.pool
        context = ssl.create_default_context() if source.tls else None
        async with asyncio.timeout(pool.connect_timeout):
            reader, writer = await asyncio.open_connection(source.host, source.port, ssl=context,
                                                           server_hostname=source.host if context else None)
        try:
            client = ClientSession()
            client.connect(source.app, source.tc_url)
            client.play(source.name)
            writer.write(client.data_to_send())
            ingest: FlvIngest | None = None
            while True:
                async with asyncio.timeout(pool.read_timeout):
                    data = await reader.read(_READ_SIZE)
                if not data:
                    raise SourceError("the source closed the RTMP connection")
                self.bytes_in += len(data)
                client.receive_data(data)
                if out := client.data_to_send():
                    writer.write(out)
                    if writer.transport.get_write_buffer_size() > _MAX_UNSENT:
                        raise SourceError(f"the source reads nothing of what this server answers (over "
                                          f"{_MAX_UNSENT >> 10} KiB unsent)")
                now = time.monotonic()
                fed = False
                for ev in client.events():
                    if isinstance(ev, (VideoReceived, AudioReceived, MetadataReceived)):
                        if ingest is None:
                            ingest = FlvIngest(self._claim())
                        kind = (FrameKind.VIDEO if isinstance(ev, VideoReceived)
                                else FrameKind.AUDIO if isinstance(ev, AudioReceived) else FrameKind.DATA)
                        ingest.publish(kind, ev.timestamp, ev.body, now)
                        fed = True
                    elif isinstance(ev, ConnectResult) and not ev.accepted:
                        info = ev.info if isinstance(ev.info, dict) else {}
                        raise SourceError(f"the source refused connect: {info.get('code', '')} "
                                          f"{info.get('description', '')}".strip())
                    elif isinstance(ev, StatusReceived) and ev.level == "error":
                        raise SourceError(f"{ev.code}: {ev.description}"[:300])
                    elif isinstance(ev, StatusReceived) and ev.code in _SOURCE_ENDED:
                        # The source's publisher left; the server keeps the connection open (a later
                        # publisher would play on it, or not): start over at once rather than wait out
                        # read_timeout in silence.
                        raise SourceError(f"the source's stream ended ({ev.code})")
                if fed and ingest is not None:
                    if not ingest.flush(self):
                        return
                    if ingest.ready:
                        self._went_live()
                await asyncio.sleep(0)  # a source that floods: the other streams' work runs between its reads
        finally:
            if writer.transport.get_write_buffer_size():
                reset(writer.transport)  # a source that does not read would hold a graceful close open
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _scrub(self, text: str) -> str:
        """An error as it may be shown: the source's stream name and query (which may be a key) replaced."""
        secret = self.source.name
        for part in {secret, secret.partition("?")[0], secret.partition("?")[2]}:
            if len(part) >= 3:
                text = text.replace(part, "***")
        return text

    # ----- idle (on_demand) ----------------------------------------------------------------------------

    def _check_idle(self) -> None:
        self._watchdog = None
        if not self.running:
            return
        stream = self.pool.registry.get(self.key)
        watched = stream is not None and not stream.ended and bool(stream.subscribers or stream.sinks)
        now = time.monotonic()
        if self._waiters > 0 or watched:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        elif now - self._idle_since >= self.pool.settings.pull_grace:
            self.stop("pull_idle", IDLE)  # releases the stream first: the kick below does not call close()
            if stream is not None and not stream.ended and stream.publisher is None:
                self.pool.registry.kick(self.key, "pull_idle")  # viewers need not wait reconnect_grace
            return
        self._watchdog = asyncio.get_running_loop().call_later(_WATCHDOG_S, self._check_idle)

    def describe(self) -> dict:
        return {"app": self.key.app, "stream": self.key.name, "source": self.source.shown, "mode": self.mode,
                "state": self.state, "since": self.state_since, "last_error": self.last_error,
                "bytes": self.bytes_in, "connects": self.connects, "reconnects": self.reconnects}


class PullRelays:
    """The node's configured pulls, by stream; the hooks the gate and the admin API call."""

    def __init__(self, registry: StreamRegistry, settings: RelayConfig, environ: Mapping[str, str], *,
                 connect_timeout: float = 5.0, read_timeout: float = 10.0, here: ThisHost | None = None) -> None:
        """Raises UsageError naming the key when a URL's ${VAR} is not set, or when a pull would play the
        stream it feeds (`here`: this host's names and ports)."""
        self.registry = registry
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pulls: dict[StreamKey, RelayPull] = {}
        for i, spec in enumerate(settings.pull):
            source = parse_source(spec.url, environ, f"relay.pull[{i}].url")
            loop = pull_loop(source, spec.app, spec.stream, here) if here is not None else None
            if loop is not None:
                raise UsageError(f"relay.pull[{i}].url: {loop}; pull from another server or stream name")
            key = StreamKey(spec.app, spec.stream)
            self.pulls[key] = RelayPull(self, key, source, spec.mode, i)
        self._session: aiohttp.ClientSession | None = None
        self.listeners: list[Callable[[dict], None]] = []
        """Told of each pull's state change (the on_relay_state webhook)."""
        self.cluster_claim: Callable[[StreamKey], Awaitable[str | None]] | None = None
        """Cluster origins: claim a stream for this node (None) or say which node holds it."""
        self.blocked_until: Callable[[StreamKey], float | None] = lambda key: None
        """The wall-clock time until which an operator's block (a kick's block_seconds) keeps the stream's
        name from being published, or None: a pull is a publisher too."""

    def tell(self, pull: RelayPull) -> None:
        if not self.listeners:
            return
        news = pull.state_news()
        for listener in self.listeners:
            try:
                listener(news)
            except Exception:
                log.exception("relay pull state listener failed")

    def __len__(self) -> int:
        return len(self.pulls)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(auto_decompress=False, trust_env=False)
        return self._session

    def start(self) -> None:
        """Start the "always" pulls (the server is listening)."""
        for pull in self.pulls.values():
            event(log, "relay_pull", stream=str(pull.key), source=pull.source.shown, mode=pull.mode)
            if pull.mode == "always":
                pull.start()

    def publish_refusal(self, key: StreamKey) -> str | None:
        """The gate's publish_claim: an encoder may not publish a pulled stream's name."""
        pull = self.pulls.get(key)
        if pull is None:
            return None
        return (f"stream {key} is pulled from {pull.source.shown} ([[relay.pull]]); publish under another name, "
                "or remove that pull from the config")

    async def locate(self, key: StreamKey) -> Stream | None:
        """The gate's play_locate for a pulled stream that is not live here: start its pull (on_demand) and
        wait for its first keyframe, at most relay.pull_wait."""
        pull = self.pulls.get(key)
        if pull is None:
            return None
        stream = self.registry.get(key)
        if stream is not None and not stream.ended:
            return stream
        pull.start()
        if not pull.running:
            return None  # blocked by an operator
        await pull.wait_ready(self.settings.pull_wait)
        stream = self.registry.get(key)
        return stream if stream is not None and not stream.ended else None

    def gate_hooks(self, publish_claim, play_locate):
        """The gate's publish_claim and play_locate with the pulls in front: a pulled name cannot be
        published by an encoder, and its first viewer starts its pull (on_demand); other names go on to
        the hooks given (the cluster's, or none)."""

        async def claim(key: StreamKey) -> str | None:
            refused = self.publish_refusal(key)
            if refused is not None or publish_claim is None:
                return refused
            return await publish_claim(key)

        async def locate(key: StreamKey, address: str):
            pull = self.pulls.get(key)
            if pull is not None and not (pull.state == STANDBY and play_locate is not None):
                return await self.locate(key)  # a standby pull's stream is pulled from its holder (cluster)
            return await play_locate(key, address) if play_locate is not None else None

        return claim, locate

    def describe(self) -> list[dict]:
        return [p.describe() for p in self.pulls.values()]

    async def close(self) -> None:
        tasks = [p._task for p in self.pulls.values() if p._task is not None and not p._task.done()]
        for pull in self.pulls.values():
            pull.stop("server_shutdown")
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._session is not None:
            await self._session.close()


def build_pulls(registry: StreamRegistry, settings: RelayConfig, environ: Mapping[str, str],
                here: ThisHost | None = None) -> PullRelays | None:
    """The pulls of the config, or None without any. UsageError for a ${VAR} that is not set or a loop."""
    return PullRelays(registry, settings, environ, here=here) if settings.pull else None


class PullCollector:
    """/metrics: each pull's state, bytes and reconnects, labelled by its stream (as many as the config has)."""

    def __init__(self, pulls: PullRelays) -> None:
        self.pulls = pulls

    def collect(self):
        state = GaugeMetricFamily("mediaserver_relay_pull_state", "1 for the state each pull relay is in "
                                  "(connecting, live, retrying, idle, stopped), 0 for the others.",
                                  labels=["stream", "state"])
        received = CounterMetricFamily("mediaserver_relay_pull_bytes", "Bytes received from each pull relay's "
                                       "source.", labels=["stream"])
        reconnects = CounterMetricFamily("mediaserver_relay_pull_reconnects", "Connections to each pull relay's "
                                         "source after its first that carried media.", labels=["stream"])
        for key, pull in self.pulls.pulls.items():
            name = str(key)
            for one in STATES:
                state.add_metric([name, one], 1 if pull.state == one else 0)
            received.add_metric([name], pull.bytes_in)
            reconnects.add_metric([name], pull.reconnects)
        yield state
        yield received
        yield reconnects
