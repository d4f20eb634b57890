"""Composition root: read the config, set up logging and uvloop, build and wire everything, run, and
shut down in order (stop accepting, end publishers and viewers, flush, exit 0).

Nothing imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from . import __version__
from .config import Config, ConfigError, load_config
from .edge.app import make_app
from .edge.packagers import PackagerPool
from .hub.gop import GopLimits
from .hub.registry import RegistryPolicy, StreamRegistry
from .hub.subscriber import SlowPolicy
from .log import event, setup
from .rtmp.server import RtmpServer

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


def tune_gc() -> None:
    """Media objects are freed by reference counting; the cycle collector only finds the rare cycle.
    Freezing what start-up built and collecting the young generation less often cut its share of a
    busy ingest node's CPU (bench/load.py publish) without growing memory."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


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
        ),
        slow=SlowPolicy(max_overflows=hub.slow_viewer_max_overflows, overflow_window=hub.slow_viewer_window),
        policy=RegistryPolicy(stale_publisher_timeout=hub.stale_publisher_timeout, reconnect_grace=hub.reconnect_grace),
    )


async def serve(config: Config, stop: asyncio.Event) -> None:
    registry = build_registry(config)
    packagers = PackagerPool(registry, config.hls)
    app = make_app(config, registry, packagers)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    http_site = web.TCPSite(runner, config.http.bind, config.http.port, reuse_address=True)
    rtmp = RtmpServer(config.rtmp, registry)
    try:
        await http_site.start()
        await rtmp.start()
    except OSError as err:
        await runner.cleanup()
        await rtmp.close()
        raise ConfigError(
            f"cannot listen: {err.strerror or err}; is another server on rtmp port {config.rtmp.port} or "
            f"http port {config.http.port}? Choose others with --set rtmp.port=N --set http.port=M"
        ) from err
    event(
        log, "ready", version=__version__,
        rtmp=f"{config.rtmp.bind}:{config.rtmp.port}", http=f"{config.http.bind}:{config.http.port}",
    )
    await stop.wait()
    event(log, "shutdown", streams=len(registry))
    await rtmp.stop_accepting()
    registry.close_all("server_shutdown")
    await rtmp.close()
    await runner.cleanup()
    packagers.close()
    event(log, "stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediaserver", description="Live-streaming server: RTMP in, HTTP-FLV and HLS out.")
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see config.example.toml); built-in defaults without it")
    parser.add_argument(
        "--set", metavar="SECTION.KEY=VALUE", action="append", default=[], dest="overrides",
        help="override one config key, e.g. --set rtmp.port=1936 (repeatable)",
    )
    parser.add_argument("--version", action="version", version=f"mediaserver {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"mediaserver: {err}", file=sys.stderr)
        return 2
    setup(config.log.level, config.log.format)
    logging.getLogger("aiohttp.server").addFilter(QuietBadRequests())
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
