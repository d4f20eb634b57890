"""Composition root: read the config, set up logging and uvloop, build and wire everything, run, and
shut down in order (stop accepting, end publishers and viewers, flush, exit 0).

`mediaserver token ...` mints a play or publish token instead of starting the server.

Nothing imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import __version__
from .api.admin import AdminDeps, make_admin_app
from .auth.forwarded import TrustedProxies
from .auth.policy import AccessPolicy
from .auth.tokens import Action
from .collector import CycleSweeper, tune_gc
from .config import Config, ConfigError, load_config
from .edge.app import make_app
from .edge.connections import ConnectionGate, GuardedSite, connection_limits
from .edge.keys import ABR, METRICS, RECORDINGS, REMOTE_VOD
from .edge.packagers import PackagerPool
from .errors import UsageError
from .gate import Gate
from .hub.gop import GopLimits
from .hub.registry import RegistryPolicy, StreamRegistry
from .hub.subscriber import SlowPolicy
from .log import event, setup
from .rtmp.server import RtmpServer
from .tls import CertFiles, TlsCertificate
from .transcode.health_monitor import HealthWatch
from .transcode.job import worker_command
from .relay.pull import PullCollector, build_pulls
from .record.catalog import CatalogUnavailable
from .record.manager import RecordingManager
from .record.objectstore import StorageNotInstalled
from .record.owner import local_node
from .record.uploader import UploadCollector
from .relay.loop import ThisHost, this_host
from .relay.manager import RelayManager, configured_pushes
from .relay.metrics import RelayCollector
from .relay.pusher import PushSettings
from .relay.target import TargetError
from .transcode.cluster_abr import ClusterAbr
from .transcode.pool import TranscodePool
from .webrtc.sessions import Sessions
from .webrtc.whep import WhepService
from .webrtc.whip import add_whip_routes
from .wiring.access import admin_token, build_admission, log_access
from .wiring.cluster import ClusterWiring, load_routing, rendition_locate
from .workers import WORKER_ENV
from .workers import count as worker_count
from .wiring.worker import WorkerSetup

log = logging.getLogger("mediaserver")


class QuietBadRequests(logging.Filter):
    """aiohttp logs a malformed request (bad URL bytes, an over-long line) with a traceback at error
    level; it was answered 400 and is the client's fault, so keep one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad_http_request", ()
            record.fields = {"status": exc.code, "error": str(exc.message).splitlines()[0][:200]}
        return True


def build_registry(config: Config) -> StreamRegistry:
    hub = config.hub
    return StreamRegistry(
        limits=GopLimits(
            max_gop_ms=hub.gop_cache_max_ms,
            max_gop_frames=hub.gop_cache_max_frames,
            max_gop_bytes=hub.gop_cache_max_bytes,
            audio_only_ms=hub.audio_only_cache_ms,
            window_ms=hub.viewer_queue_ms,
            window_bytes=hub.viewer_queue_bytes,
            # Enough media for a packager started by its first viewer to list a full playlist at once.
            history_ms=int(4 * config.hls.segment_duration * 1000) if config.hls.enabled else 0,
        ),
        slow=SlowPolicy(max_overflows=hub.slow_viewer_max_overflows, overflow_window=hub.slow_viewer_window),
        policy=RegistryPolicy(stale_publisher_timeout=hub.stale_publisher_timeout, reconnect_grace=hub.reconnect_grace),
    )


def this_host_of(config: Config) -> ThisHost:
    """This server's names, addresses and ports, for refusing relays that loop back into their own stream."""
    advertised = urlsplit(config.cluster.advertise_url).hostname if config.cluster.advertise_url else None
    ports = {"rtmp": config.rtmp.port, "https" if config.http.cert_file else "http": config.http.port}
    if config.rtmps.enabled:
        ports["rtmps"] = config.rtmps.port
    return ThisHost.of(this_host([config.rtmp.bind, config.http.bind, advertised or ""]), ports)


def build_relays(config: Config, registry: StreamRegistry, environ: Mapping[str, str],
                 cluster: ClusterWiring | None = None, here: ThisHost | None = None) -> RelayManager:
    """Pushes to other servers: [[relay.push]] URLs filled from the environment now (a missing variable
    stops the start); a push back into this server's own stream is refused as a loop."""
    cfg = config.relay
    here = here or this_host_of(config)
    try:
        pushes = configured_pushes(cfg.push, environ, here)
    except TargetError as err:
        raise ConfigError(str(err)) from err
    return RelayManager(
        registry, pushes,
        PushSettings(connect_timeout=cfg.push_connect_timeout, write_timeout=cfg.push_write_timeout,
                     retry_min=cfg.push_retry_min, retry_max=cfg.push_retry_max, chunk_size=config.rtmp.chunk_size),
        here=here,
        pulled=cluster.pulls.is_relay if cluster else None,  # cluster: pushed by the node it is published to
    )


def ladder_labels(rungs):
    """(track id, height) -> the label of the ladder rung of that height, else "HEIGHTp" (multitrack)."""
    from .hub.tracks import default_label

    by_height = {r.height: r.label for r in rungs}

    def label_for(track_id: int, height: int) -> str:
        return by_height.get(height) or default_label(track_id, height)

    return label_for


async def serve(config: Config, stop: asyncio.Event) -> None:
    worker = WorkerSetup.from_environ(os.environ)  # workers: one of several processes on this machine
    if worker is not None:
        config = worker.adapt(config)  # a node of the node-local cluster
        worker.stop = stop.set
    rtmps_cert, https_cert = tls_certificates(config)  # a bad file stops the start before anything runs
    registry = build_registry(config)
    packagers = PackagerPool(registry, config.hls)
    sweeper = CycleSweeper()
    registry.on_stream_ended.append(sweeper.ended)
    packagers.on_released.append(sweeper.ended)
    admission, hooks = build_admission(config, os.environ)
    token = admin_token(config, os.environ)
    if hooks is not None:
        hooks.watch(registry)
    cluster = ClusterWiring(config, registry, worker.environ(os.environ, config) if worker else os.environ,
                            locator_factory=worker.make_locator if worker else None,  # workers
                            ) if config.cluster.role != "standalone" else None  # cluster
    here = this_host_of(config)  # relay loops
    try:
        pulls = build_pulls(registry, config.relay, os.environ, here)  # relay pull: ${VAR} of the URLs filled here
    except UsageError as err:
        raise ConfigError(str(err)) from err
    relays = build_relays(config, registry, os.environ, cluster, here)
    pool = TranscodePool(registry, config.abr, config.watermark, node=cluster.node_id if cluster else socket.gethostname(),
                         command=worker_command(config.log.level, config.log.format))
    abr: TranscodePool | ClusterAbr = pool
    if cluster is not None:  # cluster: one job per stream cluster-wide, on transcoder nodes when there are any
        abr = ClusterAbr(pool, cluster.locator, cluster.node_id, cluster.http_url,
                         transcoder=config.cluster.role == "transcoder", pull_source=cluster.pulls.ensure,
                         claims=cluster.locator.claims)
    publish_claim = cluster.claim if cluster else None  # cluster: one publisher per stream
    # cluster: edges pull for their viewers (RTMP and HTTP) before admitting them
    play_locate = cluster.locate if cluster and config.cluster.role in ("edge", "both") else None
    if pulls is not None:  # relay pull
        publish_claim, play_locate = pulls.gate_hooks(publish_claim, play_locate)
        if cluster is not None and config.cluster.role in ("origin", "both"):  # cluster: one node pulls
            pulls.cluster_claim = cluster.claim
        pulls.blocked_until = lambda key: getattr(admission.policy.block_of(key.app, key.name, time.time()),
                                                  "until", None)
    gate = Gate(
        admission, registry, hls_reuse_s=config.webhooks.hls_cache_s,
        publish_claim=publish_claim, play_locate=play_locate,
        rendition_locate=rendition_locate(abr, registry, cluster, pulls),
    )
    pool.viewers = gate.viewers
    rtmp = RtmpServer(config.rtmp, registry, gate, tls=rtmps_cert, tls_port=config.rtmps.port)
    rtmp.reuse_port = worker is not None  # workers
    rtmp.label_for = ladder_labels(config.abr.ladder)  # an encoder's own ladder is named like ours
    recordings = None
    if config.record.mode != "off":  # the catalog opens (and migrates) before anything is accepted
        try:
            recordings = await RecordingManager.open(registry, config.record,
                                                     cluster.node_id if cluster else local_node(config.record.path),
                                                     relay=cluster.pulls.is_relay if cluster else None)  # cluster
        except CatalogUnavailable as err:
            await pool.close()
            raise ConfigError(f"{err}; fix record.database_url (or record.path), or set record.mode = \"off\"") from err
        except StorageNotInstalled:
            await pool.close()
            raise
    if recordings is not None and hooks is not None and hooks.wants("record_done"):
        recordings.add_listener(hooks.record_done)
    if recordings is not None and hooks is not None and hooks.wants("record_disk"):
        recordings.upkeep.add_disk_listener(hooks.record_disk)
    if hooks is not None and hooks.wants("relay_state"):
        relays.listeners.append(hooks.relay_state)
        if pulls is not None:  # relay pull
            pulls.listeners.append(hooks.relay_state)
    health = HealthWatch(registry, config.health) if config.health.enabled else None
    if health is not None:
        health.attach()
        if hooks is not None and hooks.wants("health"):
            health.listeners.append(hooks.health_event)
    admin_deps = AdminDeps(
        registry=registry, policy=admission.policy, token=token, token_env=config.api.token_env,
        health=health.flags if health else None,
        cors_origins=config.api.cors_origins, node_name=socket.gethostname(), failure_delay_s=admission.failure_delay_s,
        cluster_kick=cluster.kick if cluster else None, cluster_nodes=cluster.nodes if cluster else None,  # cluster
        cluster_streams=cluster.streams if cluster else None,  # cluster
        abr=abr, recordings=recordings, relays=relays,
        pulls=pulls.describe if pulls is not None else None,  # relay pull
        play_cors_origin=config.http.cors_origin,
    )
    admin = make_admin_app(admin_deps)

    def rtmp_listening() -> tuple[bool, str]:
        serving = rtmp.serving
        ports = f"{config.rtmp.port}" + (f" and rtmps {config.rtmps.port}" if rtmps_cert else "")
        return serving, f"rtmp {'accepting' if serving else 'not accepting'} on {config.rtmp.bind}:{ports}"

    # WebRTC: WHEP playback and WHIP ingest share one session count (webrtc.max_sessions).
    webrtc_sessions = Sessions(config.webrtc.max_sessions, config.webrtc.max_sessions_per_stream,
                               config.webrtc.max_connecting_per_ip)
    whep = WhepService(config, registry, gate, webrtc_sessions, abr)
    webrtc_routes: list[Callable[[web.Application], object]] = [whep.add_routes]
    if config.webrtc.enabled:  # WHIP ingest: POST /APP/STREAM/whip
        webrtc_routes.append(lambda app: add_whip_routes(app, config, registry, gate, webrtc_sessions))
    app = make_app(
        config, registry, packagers, gate=gate, hooks=hooks, admin=admin,
        ready_checks={"rtmp": rtmp_listening},
        metrics_token=None if config.api.metrics_public else token,
        health=health, add_routes=webrtc_routes,
    )
    log_access(config, admission.policy, hooks, token)
    admin_deps.route = load_routing(config, cluster, app)  # GET /api/v1/route/...; edges' redirects
    if cluster is not None:  # cluster and workers: the route's "live" asks the locator too
        admin_deps.stream_live = cluster.stream_live
    if worker is not None:  # workers: /metrics for the whole node
        worker.wire(app)
    if cluster is not None:  # cluster
        cluster.wire(app)
        await cluster.start()
        if isinstance(abr, ClusterAbr):
            await abr.start_scanning()
    connections = ConnectionGate(connection_limits(config.http.max_connections, config.http.max_connections_per_ip,
                                                   config.http.header_timeout, config.http.write_timeout),
                                 uncapped=TrustedProxies.parse(config.http.trusted_proxies).trusts)
    app[METRICS].connections = connections
    app[METRICS].tls_failures = [c.failures for c in (rtmps_cert, https_cert) if c is not None]
    app[METRICS].abr = abr
    if pulls is not None:  # relay pull
        app[METRICS].prom.register(PullCollector(pulls))
    app[ABR] = abr  # master.m3u8, cmaf.m3u8 and manifest.mpd list the renditions
    if recordings is not None:
        app[RECORDINGS] = recordings  # /vod/ID.mp4, /vod/ID/index.m3u8
        app[METRICS].recordings = recordings
        app[METRICS].advisory_checks["catalog"] = recordings.upkeep.catalog_ready
        if cluster is not None:  # cluster: recordings on another node's disk are fetched from it
            app[REMOTE_VOD] = cluster.remote_vod()
    app[METRICS].prom.register(RelayCollector(relays))
    if cluster is not None and worker is None:  # a Redis cluster (workers share a node-local locator)
        app[METRICS].advisory_checks["cluster_store"] = cluster.store_ready
        app[METRICS].prom.register(cluster)
    if recordings is not None and recordings.uploader is not None:  # record.storage = "s3"
        app[METRICS].advisory_checks["recording_storage"] = recordings.uploader.ready
        app[METRICS].prom.register(UploadCollector(recordings.uploader))
    handler_args = {"access_log": None, "keepalive_timeout": config.http.keepalive_timeout}
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, **handler_args)
    await runner.setup()
    http_site = GuardedSite(runner, config.http.bind, config.http.port, connections, handler_args,
                            tls=https_cert, reuse_port=worker is not None,
                            handoff=worker.handoff() if worker is not None else None)
    try:
        await http_site.start()
        await rtmp.start()
        if worker is not None:  # workers: siblings pull from the private loopback port
            await worker.start_private(runner, http_site)
    except OSError as err:
        await runner.cleanup()
        await rtmp.close()
        if cluster is not None:  # cluster
            await cluster.close()
        await pool.close()
        if recordings is not None:
            await recordings.close()
        raise ConfigError(
            f"cannot listen: {err.strerror or err}; is another server on rtmp port {config.rtmp.port}"
            f"{f', rtmps port {config.rtmps.port}' if rtmps_cert else ''} or "
            f"http port {config.http.port}? Choose others with --set rtmp.port=N --set http.port=M"
        ) from err
    event(
        log, "ready", version=__version__,
        rtmp=f"{config.rtmp.bind}:{config.rtmp.port}", http=f"{config.http.bind}:{config.http.port}",
        http_max_connections=connections.limits.max_connections,
        **({"rtmps": f"{config.rtmp.bind}:{config.rtmps.port}"} if rtmps_cert else {}),
        **({"https": "on"} if https_cert else {}),
        **({"trusted_proxies": ",".join(config.http.trusted_proxies)} if config.http.trusted_proxies else {}),
        **({"worker": worker.index, "pid": os.getpid()} if worker else {}),
    )
    if worker is not None:
        await worker.ready()
    reload_on_hangup(asyncio.get_running_loop(), [c for c in (rtmps_cert, https_cert) if c is not None])
    if pulls is not None:  # relay pull: "always" pulls start once the server is listening
        pulls.start()
    await stop.wait()
    event(log, "shutdown", streams=len(registry))
    if worker is not None:
        worker.stop_adopting()
    await rtmp.stop_accepting()
    if isinstance(abr, ClusterAbr):
        await abr.close()  # its job claims given up
    await pool.close()  # every worker process stopped and waited for
    if pulls is not None:  # relay pull
        await pulls.close()
    if recordings is not None:
        await recordings.close()  # files closed and synced, catalog rows written
    await relays.close()
    registry.close_all("server_shutdown")
    if health is not None:
        await health.close()
    await rtmp.close()
    if cluster is not None:  # cluster: withdraw claims, say node_down
        await cluster.close()
    if REMOTE_VOD in app:
        await app[REMOTE_VOD].close()
    await runner.cleanup()
    if worker is not None:
        await worker.close()
    packagers.close()
    sweeper.close()
    event(log, "stopped")


def tls_certificates(config: Config) -> tuple[TlsCertificate | None, TlsCertificate | None]:
    """RTMPS's and HTTPS's certificates, read now: a file that does not load stops the start."""
    try:
        rtmps = (TlsCertificate(CertFiles(config.rtmps.cert_file, config.rtmps.key_file, "rtmps"))
                 if config.rtmps.enabled else None)
        https = (TlsCertificate(CertFiles(config.http.cert_file, config.http.key_file, "http"))
                 if config.http.cert_file else None)
    except UsageError as err:
        raise ConfigError(str(err)) from err
    return rtmps, https


def reload_on_hangup(loop: asyncio.AbstractEventLoop, certificates: list[TlsCertificate]) -> None:
    """SIGHUP reloads the listeners' certificates in place (certbot's deploy hook: kill -HUP PID)."""
    if not certificates:
        return

    def reload() -> None:
        for cert in certificates:
            cert.reload()

    loop.add_signal_handler(signal.SIGHUP, reload)


def token_main(argv: list[str]) -> int:
    """`mediaserver token`: print a signed token (and URLs with --base-url); the secret comes from the
    environment variable auth.token_secret_env names."""
    parser = argparse.ArgumentParser(
        prog="mediaserver token",
        description="Mint a signed play or publish token. The secret is read from the environment variable named "
                    "by auth.token_secret_env (default MEDIASERVER_TOKEN_SECRET).",
    )
    parser.add_argument("--action", choices=("play", "publish"), required=True)
    parser.add_argument("--app", default="live", help="the app (default live)")
    parser.add_argument("--stream", required=True, help="the public stream name")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid (default 3600)")
    parser.add_argument("--ip", help="bind the token to this client address")
    parser.add_argument("--base-url", help="also print the full URL(s), e.g. http://HOST:8080 or rtmp://HOST")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (for auth.token_secret_env)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        policy = AccessPolicy.from_settings(publish_open=("*",), play_open=("*",),
                                            token_secret_env=config.auth.token_secret_env, stream_keys=(),
                                            environ=os.environ)
        token = policy.mint(Action(args.action), args.app, args.stream, args.ttl, time.time(), args.ip)
    except (ConfigError, UsageError) as err:
        print(f"mediaserver token: {err}", file=sys.stderr)
        return 2
    print(token)
    if args.base_url:
        base = args.base_url.rstrip("/")
        if args.action == "play":
            print(f"{base}/{args.app}/{args.stream}.flv?token={token}")
            print(f"{base}/{args.app}/{args.stream}/index.m3u8?token={token}")
        else:
            print(f"{base}/{args.app}/{args.stream}?token={token}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["token"]:
        return token_main(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="mediaserver",
        description="Live-streaming server: RTMP in; HTTP-FLV, WebSocket-FLV, RTMP, HLS, LL-HLS and MPEG-DASH out.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see config.example.toml); built-in defaults without it")
    parser.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
        help="override one config key, e.g. --set rtmp.port=1936 (repeatable)",
    )
    parser.add_argument("--version", action="version", version=f"mediaserver {__version__}")
    parser.epilog = "Also: mediaserver token --action play|publish --app APP --stream NAME [--ttl S] [--ip IP]"
    args = parser.parse_args(args_in)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"mediaserver: {err}", file=sys.stderr)
        return 2
    setup(config.log.level, config.log.format)
    logging.getLogger("aiohttp.server").addFilter(QuietBadRequests())
    logging.getLogger("aioice").setLevel(logging.WARNING)  # a line per ICE check of every WebRTC session
    if WORKER_ENV not in os.environ and worker_count(config.server.workers) > 1:  # workers: this is the supervisor
        from .workers.supervisor import supervise
        return supervise(config, args_in, worker_count(config.server.workers))
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        uvloop = None
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    with runner:
        loop = runner.get_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            runner.run(serve(config, stop))
        except ConfigError as err:
            print(f"mediaserver: {err}", file=sys.stderr)
            return 2
    return 0
