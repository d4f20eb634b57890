"""Metrics (`GET /metrics`, Prometheus text format) and health (`GET /healthz`, `GET /readyz`).

Counting costs nothing on the hot path: the hub already keeps per-stream counters (`Stream.bytes_in`,
`frames_in`, `frames_dropped`), and a collector reads them when Prometheus scrapes. What a stream counted
is added to running totals when it ends, so the counters never go back.

Egress is counted when it is sent, never reconstructed at a scrape: viewer writers (HTTP-FLV,
WebSocket-FLV, RTMP play) add each batch to `StreamRegistry.egress_bytes` by format as the write
completes, so viewers that came and went between two scrapes are counted in full (issue 9, defect 12).
Other HTTP responses (HLS-TS playlists and segments as "hls"; LL-HLS parts and DASH over CMAF as "cmaf";
the rest as "other") are counted once each, when they complete, by the edge's admission middleware;
viewer responses count there as requests only, their bytes being the writer's.

HLS has no per-viewer state in the server; an "HLS viewer" is a client address that fetched from a stream
within the last `HLS_VIEWER_WINDOW_S` seconds (viewers behind one NAT count once).

Event-loop lag is measured by one small task that sleeps `LAG_INTERVAL_S` and records how late it woke.
Process CPU and memory come from prometheus-client's ProcessCollector (Linux /proc).

`/readyz` answers 200 when every readiness check passes (the RTMP listener is accepting), else 503 with
what failed: a load balancer stops sending new clients, while `/healthz` (alive) keeps the process from
being restarted during a drain. Advisory checks (the cluster store, the recordings catalog, the recordings
bucket) are reported beside them with `"degraded": true` when one fails, but keep the node ready: live
streaming does not need them (an origin serves its own streams, rows and files wait locally meanwhile),
and a shared Redis, database or bucket that is away must not take every node of a cluster out of its load
balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..auth.admission import Admission
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream
from ..tls import HANDSHAKE_ERROR, HANDSHAKE_TIMEOUT, HandshakeFailures
from ..transcode.pool import TranscodePool
from .cmaf import CMAF_MANIFESTS
from .connections import ConnectionGate
from .keys import METRICS
from .origin_pull import OriginPull

if TYPE_CHECKING:
    from ..record.manager import RecordingManager
    from ..transcode.health_monitor import HealthWatch
    from .thumbnails import ThumbnailService

LAG_INTERVAL_S = 0.5
LAG_WINDOW_S = 10.0
HLS_VIEWER_WINDOW_S = 10.0
_MAX_HLS_CLIENTS = 200_000

ReadyCheck = Callable[[], "tuple[bool, str] | Awaitable[tuple[bool, str]]"]


class Metrics:
    """The server's Prometheus registry and the few running totals the hub does not keep."""

    def __init__(
        self,
        registry: StreamRegistry,
        admission: Admission | None = None,
        packager_count: Callable[[], int] | None = None,
        hook_outcomes: Callable[[], Counter[tuple[str, str]]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.admission = admission
        self.packager_count = packager_count
        self.hook_outcomes = hook_outcomes
        self.prom = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.prom)
        self.loop_lag = Histogram(
            "mediaserver_event_loop_lag_seconds", "How late a periodic timer fired: the event loop was busy.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=self.prom,
        )
        self.prom.register(_Collector(self))
        self.http_bytes: Counter[str] = Counter()
        """Body bytes of completed HTTP responses other than viewers', by format (hls, cmaf, other)."""
        self.http_requests: Counter[str] = Counter()
        self.hls_clients: dict[tuple[str, str], float] = {}
        self.connections: ConnectionGate | None = None
        """The HTTP listener's connection gate (open connections, refusals), when there is one."""
        self.abr: TranscodePool | None = None
        """This node's transcode jobs, when ABR is set up."""
        self._ended = Counter()  # bytes_in, frames_in, frames_dropped, ... of streams that ended
        self._ended_skipped: Counter[str] = Counter()  # frames skipped by packagers of ended streams, by format
        self._lags: deque[tuple[float, float]] = deque()
        self.ready_checks: dict[str, ReadyCheck] = {}
        self.advisory_checks: dict[str, ReadyCheck] = {}
        """Reported on /readyz, without making the node unready (see the module's note)."""
        self.required_token: str | None = None
        """The bearer token /metrics requires (None: public)."""
        self.health: HealthWatch | None = None
        """Stream health flags ([health] enabled), read at scrape time."""
        self.thumbnails: ThumbnailService | None = None
        self.recordings: RecordingManager | None = None
        """This node's recordings ([record] mode api or all)."""
        self.tls_failures: list[HandshakeFailures] = []
        """TLS handshakes that failed, per TLS listener (rtmps, https)."""
        registry.on_stream_ended.append(self._stream_ended)

    # ----- what the edge tells ----------------------------------------------------------------------

    def _stream_ended(self, stream: Stream) -> None:
        ended = self._ended
        ended["bytes_in"] += stream.bytes_in
        ended["frames_in"] += stream.frames_in
        ended["frames_dropped"] += stream.frames_dropped
        ended["bad_sequence_headers"] += stream.bad_sequence_headers
        if isinstance(stream.publisher, OriginPull):
            ended["pulled_bytes_in"] += stream.bytes_in
        self._ended_skipped.update(stream.frames_skipped)

    def response_done(self, fmt: str, body_bytes: int) -> None:
        self.http_requests[fmt] += 1
        self.http_bytes[fmt] += body_bytes

    def hls_request(self, client: str, stream: str) -> None:
        now = self.clock()
        clients = self.hls_clients
        clients[(client, stream)] = now
        if len(clients) > _MAX_HLS_CLIENTS:
            self._forget_hls_clients(now)

    def _forget_hls_clients(self, now: float) -> None:
        cutoff = now - HLS_VIEWER_WINDOW_S
        self.hls_clients = {k: t for k, t in self.hls_clients.items() if t >= cutoff}

    # ----- event-loop lag ---------------------------------------------------------------------------

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(self._watch_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL_S)
            now = loop.time()
            lag = max(0.0, now - started - LAG_INTERVAL_S)
            self.loop_lag.observe(lag)
            lags = self._lags
            lags.append((now, lag))
            while lags and lags[0][0] < now - LAG_WINDOW_S:
                lags.popleft()

    @property
    def recent_max_lag_s(self) -> float:
        return max((lag for _, lag in self._lags), default=0.0)

    # ----- serving ----------------------------------------------------------------------------------

    def render(self) -> bytes:
        return generate_latest(self.prom)

    def egress(self) -> dict[str, int]:
        """Bytes sent by format: viewers' batches as the hub counted them, plus other HTTP responses.
        Both only grow, so the sums never go back."""
        totals = Counter({fmt: 0 for fmt in ("flv", "ws-flv", "rtmp", "hls", "cmaf", "other")})
        totals.update(self.registry.egress_bytes)
        totals.update(self.http_bytes)
        return dict(totals)


def response_format(request: web.Request, fmt: str) -> str:
    """The egress label of a completed HTTP response whose play format is `fmt`: "cmaf" for the fMP4
    outputs (cmaf.m3u8 and its media playlists and parts, manifest.mpd and its segments)."""
    if fmt == "hls":
        file = request.match_info.get("file", "")
        if file in CMAF_MANIFESTS or file.endswith((".m4s", ".mp4")):  # as the play-hls route tells them
            return "cmaf"
    return fmt


class _Collector:
    """Reads the hub's counters at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Any:
        m = self.m
        streams = m.registry.streams()
        states: Counter[str] = Counter()
        viewers: Counter[str] = Counter()
        bytes_in = m._ended["bytes_in"]
        frames_in = m._ended["frames_in"]
        dropped = m._ended["frames_dropped"]
        bad_configs = m._ended["bad_sequence_headers"]
        skipped = Counter(m._ended_skipped)
        pulled, pulled_bytes_in, internal_viewers = 0, m._ended["pulled_bytes_in"], 0
        for stream in streams:
            states[stream.state.value] += 1
            if isinstance(stream.publisher, OriginPull):  # a copy of another node's stream
                pulled += stream.state.value == "live"
                pulled_bytes_in += stream.bytes_in
            bytes_in += stream.bytes_in
            frames_in += stream.frames_in
            dropped += stream.frames_dropped
            bad_configs += stream.bad_sequence_headers
            skipped.update(stream.frames_skipped)
            for sub in stream.subscribers:
                viewers[sub.kind] += 1
                internal_viewers += sub.internal
        m._forget_hls_clients(m.clock())
        viewers["hls"] = len(m.hls_clients)

        g = GaugeMetricFamily("mediaserver_streams", "Streams by state: live (publishing) or idle (waiting for "
                              "the publisher to come back).", labels=["state"])
        for state in ("live", "idle"):
            g.add_metric([state], states[state])
        yield g
        g = GaugeMetricFamily("mediaserver_viewers", "Viewers by format (HLS: client addresses that fetched "
                              f"within {HLS_VIEWER_WINDOW_S:g} s).", labels=["format"])
        for fmt in sorted({"flv", "ws-flv", "rtmp", "hls", *viewers}):
            g.add_metric([fmt], viewers[fmt])
        yield g
        yield GaugeMetricFamily("mediaserver_internal_viewers", "Viewers that are other nodes' pulls of this node's "
                                "streams (cluster edges, sibling workers): counted in mediaserver_viewers{format=\"flv\"} "
                                "too; a cluster's people watching are the viewers less these.", value=internal_viewers)
        yield GaugeMetricFamily("mediaserver_pulled_streams", "Live streams this node copies from another node (an "
                                "edge's pulls): counted in mediaserver_streams{state=\"live\"} too.", value=pulled)
        yield CounterMetricFamily("mediaserver_ingress_bytes", "Media bytes received from publishers.", value=bytes_in)
        yield CounterMetricFamily("mediaserver_pulled_ingress_bytes", "The part of mediaserver_ingress_bytes that "
                                  "copies another node's streams (an edge's pulls).", value=pulled_bytes_in)
        yield CounterMetricFamily("mediaserver_ingress_frames", "Frames received from publishers.", value=frames_in)
        c = CounterMetricFamily("mediaserver_egress_bytes", "Bytes sent to viewers by format, counted as they are "
                                "sent (viewers: FLV tags or RTMP chunks; other HTTP responses: bodies).",
                                labels=["format"])
        for fmt, value in sorted(m.egress().items()):
            c.add_metric([fmt], value)
        yield c
        yield CounterMetricFamily("mediaserver_internal_egress_bytes", "The part of mediaserver_egress_bytes"
                                  "{format=\"flv\"} sent to other nodes' pulls of this node's streams.",
                                  value=m.registry.internal_egress_bytes)
        yield CounterMetricFamily("mediaserver_frames_dropped", "Frames dropped for viewers that fell behind.",
                                  value=dropped)
        c = CounterMetricFamily("mediaserver_frames_skipped", "Frames a packager could not use (malformed media "
                                "from a publisher), skipped by output format.", labels=["format"])
        for fmt in sorted({"hls", "cmaf", *skipped}):
            c.add_metric([fmt], skipped[fmt])
        yield c
        yield CounterMetricFamily("mediaserver_bad_sequence_headers", "Malformed codec configurations received "
                                  "(new viewers and packagers keep the last good one).", value=bad_configs)
        c = CounterMetricFamily("mediaserver_http_responses", "Completed HTTP responses by kind.", labels=["kind"])
        for kind, value in sorted(m.http_requests.items()):
            c.add_metric([kind], value)
        yield c
        admission = m.admission
        c = CounterMetricFamily("mediaserver_auth_failures", "Refused credentials (tokens, stream keys, webhook "
                                "verdicts) by action and reason.", labels=["action", "reason"])
        if admission is not None:
            for (action, reason), value in sorted(admission.failures.items()):
                c.add_metric([action, reason], value)
        yield c
        c = CounterMetricFamily("mediaserver_limit_refusals", "Connections, publishers or viewers refused by a "
                                "limit.", labels=["limit"])
        if admission is not None:
            for limit, value in sorted(admission.limits.refusals.items()):
                c.add_metric([limit], value)
        yield c
        if m.hook_outcomes is not None:
            c = CounterMetricFamily("mediaserver_webhook_calls", "Webhook calls by event and outcome.",
                                    labels=["event", "outcome"])
            for (event_name, outcome), value in sorted(m.hook_outcomes().items()):
                c.add_metric([event_name, outcome], value)
            yield c
        gate = m.connections
        if gate is not None:
            yield GaugeMetricFamily("mediaserver_http_connections", "Open HTTP connections (idle keep-alive "
                                    f"included; the cap is {gate.limits.max_connections}).", value=gate.open)
            c = CounterMetricFamily("mediaserver_http_connections_refused", "HTTP connections refused or closed "
                                    "by a cap or the request-head deadline, by reason.", labels=["reason"])
            for reason in gate.REASONS:
                c.add_metric([reason], gate.refused[reason])
            yield c
        if m.tls_failures:
            c = CounterMetricFamily("mediaserver_tls_handshake_failures", "TLS handshakes that did not complete "
                                    "(a plain client on a TLS port, an untrusted certificate, a deadline), by "
                                    "listener and reason.", labels=["listener", "reason"])
            for failures in m.tls_failures:
                for reason in (HANDSHAKE_ERROR, HANDSHAKE_TIMEOUT):
                    c.add_metric([failures.listener, reason], failures.counts[reason])
            yield c
        if m.packager_count is not None:
            yield GaugeMetricFamily("mediaserver_packagers", "HLS packagers in memory (live streams and ended "
                                    "ones lingering).", value=m.packager_count())
        if m.abr is not None:
            yield from _abr_metrics(m.abr)
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside a running event loop (unit tests): nothing to count
            tasks = None
        if tasks is not None:
            yield GaugeMetricFamily("mediaserver_asyncio_tasks", "Asyncio tasks not yet done (connections, "
                                    "viewers, timers); a count that only grows is a leak.", value=tasks)
        yield from _media_pipeline(m)
        if m.recordings is not None:
            yield from _recording_metrics(m.recordings)
        yield GaugeMetricFamily("mediaserver_event_loop_lag_max_seconds",
                                f"The largest event-loop lag seen in the last {LAG_WINDOW_S:g} s.",
                                value=m.recent_max_lag_s)


def _abr_metrics(abr: TranscodePool) -> Any:
    yield GaugeMetricFamily("mediaserver_abr_jobs", f"Transcode jobs running on this node (at most "
                            f"{abr.max_jobs}, abr.max_jobs).", value=len(abr.jobs))
    c = CounterMetricFamily("mediaserver_abr_refused", "ABR requests answered without renditions, by reason "
                            "(budget: abr.max_jobs spent; ladder, codec, no_source, off, or a worker's error).",
                            labels=["reason"])
    for reason in sorted({"budget", *abr.refused}):
        c.add_metric([reason], abr.refused[reason])
    yield c
    yield CounterMetricFamily("mediaserver_abr_restarts", "Transcoder workers restarted (crashed, stuck, too slow "
                              "or broken output).", value=abr.restarts_total)
    yield CounterMetricFamily("mediaserver_abr_cpu_seconds", "CPU time the transcoder workers used, as they "
                              "report it.", value=abr.cpu_seconds_total)


def _recording_metrics(rec: RecordingManager) -> Any:
    stats = rec.stats
    yield GaugeMetricFamily("mediaserver_recordings_active", "Streams being recorded now.",
                            value=sum(1 for r in list(rec.active.values()) if not r.recorder.stopped))
    yield CounterMetricFamily("mediaserver_recording_bytes_written", "Bytes written to recording files.",
                              value=stats.bytes_written)
    c = CounterMetricFamily("mediaserver_recording_failures", "Recordings cut short, by reason: disk_full, "
                            "disk_error, disk_low (stopped under record.min_free_gb), fsync, catalog (a row "
                            "never written).", labels=["reason"])
    for reason in sorted({"disk_full", "disk_error", "disk_low", "fsync", "catalog", *stats.failures}):
        c.add_metric([reason], stats.failures[reason])
    yield c
    c = CounterMetricFamily("mediaserver_recording_retention_deleted", "Recordings deleted by retention, by "
                            "reason (age: record.max_age_days, size: record.max_total_gb).", labels=["reason"])
    for reason in ("age", "size"):
        c.add_metric([reason], stats.retention_deleted[reason])
    yield c
    yield CounterMetricFamily("mediaserver_recording_retention_deleted_bytes", "Bytes of the recordings "
                              "retention deleted.", value=stats.retention_bytes)
    if rec.disk.free_bytes is not None:
        yield GaugeMetricFamily("mediaserver_recording_disk_free_bytes", "Free space on record.path at the "
                                "last check.", value=rec.disk.free_bytes)
    yield GaugeMetricFamily("mediaserver_recording_disk_low", "1 while record.path has less free space than "
                            "record.min_free_gb (recording stopped), else 0.", value=1 if rec.disk.low else 0)


# ----- HTTP handlers ------------------------------------------------------------------------------



async def serve_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


async def _run_check(check: ReadyCheck) -> tuple[bool, str]:
    try:
        outcome = check()
        if asyncio.iscoroutine(outcome) or isinstance(outcome, Awaitable):
            async with asyncio.timeout(2.0):
                outcome = await outcome
        ok, detail = outcome  # type: ignore[misc]
        return bool(ok), detail
    except Exception as err:  # a failing check means "not ready", never a 500
        return False, f"{type(err).__name__}: {err}"[:200]


async def serve_readyz(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    results: dict[str, Any] = {}
    ready, degraded = True, False
    for name, check in metrics.ready_checks.items():
        ok, detail = await _run_check(check)
        results[name] = {"ok": ok, "detail": detail}
        ready = ready and ok
    for name, check in metrics.advisory_checks.items():
        ok, detail = await _run_check(check)
        results[name] = {"ok": ok, "detail": detail, "advisory": True}
        degraded = degraded or not ok
    return web.json_response({"ready": ready, "degraded": degraded, "checks": results},
                             status=200 if ready else 503, headers={"Cache-Control": "no-store"})


# ----- thumbnails and stream health --------------------------------------------------------------


def _media_pipeline(m: Metrics) -> Any:
    """Thumbnails and stream health. One health series per condition of each watched live stream: the
    label set is bounded by the live streams and goes when they end."""
    if m.thumbnails is not None:
        yield CounterMetricFamily("mediaserver_thumbnail_decodes", "Keyframes decoded for thumbnails (at most one "
                                  "per keyframe interval per stream).", value=m.thumbnails.decodes)
        yield CounterMetricFamily("mediaserver_thumbnail_renders", "Thumbnails scaled and encoded as JPEG (cache "
                                  "misses).", value=m.thumbnails.renders)
    health = m.health
    if health is None:
        return
    g = GaugeMetricFamily("mediaserver_stream_health", "1 while a stream's condition (black, frozen, silent) "
                          "is flagged, else 0; watched streams only.", labels=["stream", "condition"])
    for key, condition, flagged in health.flagged():
        g.add_metric([str(key), condition], 1 if flagged else 0)
    yield g
    c = CounterMetricFamily("mediaserver_stream_health_flags", "Conditions flagged since start, by condition.",
                            labels=["condition"])
    for condition in ("black", "frozen", "silent"):
        c.add_metric([condition], health.flag_starts[condition])
    yield c
    yield CounterMetricFamily("mediaserver_health_sampling_cpu_seconds", "CPU time spent decoding and measuring "
                              "health samples.", value=health.cpu_s)
