"""The process, the listeners and the stream hub: [server], [rtmp], [rtmps], [http], [hub], [hls], [log]."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .schema import Config


@dataclass(frozen=True, slots=True)
class ServerConfig:
    workers: str = "1"
    """Processes sharing the RTMP and HTTP ports: a whole number, or "auto" (one per core). Read with
    mediaserver.workers.count; TOML may say 2 or "auto"."""


@dataclass(frozen=True, slots=True)
class RtmpConfig:
    bind: str = "0.0.0.0"
    port: int = 1935
    chunk_size: int = 4096
    """Our outgoing chunk size."""
    max_message_size: int = 16 * 1024 * 1024
    max_command_size: int = 64 * 1024
    """Largest command or data message (AMF, decoded on the event loop): metadata, connect, publish."""
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    """Seconds after the handshake to connect and start publishing or playing, however slowly bytes trickle."""
    idle_timeout: float = 30.0
    """A connection that completes no message for this long is closed."""
    max_messages_per_s: int = 10_000
    """Messages a connection is read at, at most, on average (bursts of 5 s of it pass at once; each further
    chunk of a message counts an eighth of one): a stream sends a few hundred a second, a flood of tiny
    messages tens of thousands. Past it the connection is read more slowly, as TCP slows its sender. 0: no bound."""
    read_merge_ms: int = 50
    """A publisher's socket is read at most this often: fewer wakeups per stream, a little more delay."""
    read_merge_unwatched_ms: int = 250
    """The same while nothing consumes the stream (no viewer, no packager): nobody sees this delay."""
    play_merge_ms: int = 150
    """How long an RTMP player's writes are merged, at most: fewer wakeups per viewer, a little more delay.
    Adaptive merging reaches it only at 250+ viewers of a stream or a busy loop; there, 150 ms windows cost
    half the CPU of 50 ms ones (bench/README.md, "Merged writes")."""
    merge_mode: str = "adaptive"
    """"adaptive": read_merge_ms and play_merge_ms are ceilings, reached as load grows; "fixed": always."""


@dataclass(frozen=True, slots=True)
class RtmpsConfig:
    """RTMP over TLS on a port of its own (on rtmp.bind), with rtmp's deadlines; off without cert and key."""

    port: int = 1936
    cert_file: str = ""
    """PEM certificate chain; reloaded on SIGHUP."""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    bind: str = "0.0.0.0"
    port: int = 8080
    cors_origin: str = "*"
    flv_merge_ms: int = 200
    """How long an FLV viewer's writes are merged, at most: fewer syscalls per viewer, a little more delay.
    Adaptive merging reaches it only at 250+ viewers of a stream or a busy loop; there, 200 ms windows cost
    two thirds of the CPU of 100 ms ones (bench/README.md, "Merged writes")."""
    flv_merge_mode: str = "adaptive"
    """"adaptive": flv_merge_ms is a ceiling, reached as viewers and load grow; "fixed": always flv_merge_ms."""
    write_timeout: float = 15.0
    """A viewer whose socket accepts nothing for this long is disconnected."""
    header_timeout: float = 10.0
    """Seconds a new connection gets to send its first complete request head before it is closed."""
    keepalive_timeout: float = 30.0
    """Seconds an idle kept-alive connection waits for its next request before it is closed."""
    max_connections: int = 0
    """Open HTTP connections in all (idle ones included); 0 is half the process's open-file limit."""
    max_connections_per_ip: int = 256
    """Open HTTP connections from one client address; 0 is no cap (behind a reverse proxy, every viewer
    comes from the proxy's address)."""
    cert_file: str = ""
    """PEM certificate chain: with key_file, the HTTP port speaks HTTPS only. Reloaded on SIGHUP."""
    key_file: str = ""
    trusted_proxies: tuple[str, ...] = ()
    """Addresses or CIDRs of reverse proxies whose X-Forwarded-For / Forwarded header names the client."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    gop_cache_max_ms: int = 12_000
    gop_cache_max_frames: int = 2_000
    gop_cache_max_bytes: int = 64 * 1024 * 1024
    audio_only_cache_ms: int = 1_000
    viewer_queue_ms: int = 3_000
    viewer_queue_bytes: int = 16 * 1024 * 1024
    slow_viewer_max_overflows: int = 3
    slow_viewer_window: float = 60.0
    stale_publisher_timeout: float = 5.0
    reconnect_grace: float = 10.0


@dataclass(frozen=True, slots=True)
class HlsConfig:
    enabled: bool = True
    segment_duration: float = 2.0
    playlist_length: int = 6
    part_duration: float = 0.333
    """LL-HLS part target of the fMP4 flavour (cmaf.m3u8)."""
    idle_timeout: float = 30.0
    """A packager nobody asked anything of for this long stops; the next request starts it again."""
    ended_linger: float = 60.0
    """How long the final playlist (with EXT-X-ENDLIST) stays after a stream ends."""
    fast_lane: bool = True
    """Answer simple live HLS/LL-HLS/DASH GETs beside aiohttp (edge/fastlane.py); false: all through aiohttp."""
    sendfile_segments: bool = True
    """Copy a requested MPEG-TS segment into a memfd and send it with os.sendfile (twice the watched window's memory)."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "rtmp.port": (1, 65535),
    "http.port": (1, 65535),
    "rtmps.port": (1, 65535),
    "rtmp.chunk_size": (128, 65536),
    "rtmp.max_message_size": (64 * 1024, 256 * 1024 * 1024),
    "rtmp.max_command_size": (4 * 1024, 16 * 1024 * 1024),
    "rtmp.handshake_timeout": (0.1, 600),
    "rtmp.connect_timeout": (0.1, 600),
    "rtmp.idle_timeout": (0.5, 3600),
    "rtmp.max_messages_per_s": (0, 100_000_000),
    "rtmp.read_merge_ms": (0, 500),
    "rtmp.read_merge_unwatched_ms": (0, 2000),
    "rtmp.play_merge_ms": (0, 1000),
    "http.flv_merge_ms": (0, 1000),
    "http.write_timeout": (0.5, 600),
    "http.header_timeout": (0.5, 600),
    "http.keepalive_timeout": (1, 3600),
    "http.max_connections": (0, 10_000_000),
    "http.max_connections_per_ip": (0, 10_000_000),
    "hub.gop_cache_max_ms": (0, 600_000),
    "hub.gop_cache_max_frames": (0, 100_000),
    "hub.gop_cache_max_bytes": (0, 4 * 1024**3),
    "hub.audio_only_cache_ms": (0, 60_000),
    "hub.viewer_queue_ms": (100, 600_000),
    "hub.viewer_queue_bytes": (64 * 1024, 4 * 1024**3),
    "hub.slow_viewer_max_overflows": (1, 1000),
    "hub.slow_viewer_window": (1, 86_400),
    "hub.stale_publisher_timeout": (0.1, 3600),
    "hub.reconnect_grace": (0, 3600),
    "hls.segment_duration": (0.5, 60),
    "hls.playlist_length": (2, 100),
    "hls.part_duration": (0.1, 2.0),
    "hls.idle_timeout": (1, 86_400),
    "hls.ended_linger": (0, 86_400),
}
NUMBER_OR_AUTO = ("server.workers",)
"""Keys that take a whole number or "auto" (kept as a string: "2", "auto")."""
MAX_WORKERS = 256
CHOICES: dict[str, tuple[str, ...]] = {
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("text", "json"),
    "rtmp.merge_mode": ("adaptive", "fixed"),
    "http.flv_merge_mode": ("adaptive", "fixed"),
}


def problems(config: Config) -> list[str]:
    """Certificate settings that cannot work together (the files themselves are read at start)."""
    found = []
    workers = config.server.workers
    if workers != "auto" and not (workers.isdigit() and 1 <= int(workers) <= MAX_WORKERS):
        found.append(f'server.workers = {workers!r} must be 1..{MAX_WORKERS} or "auto"')
    elif workers != "1" and config.cluster.role != "standalone":
        found.append(f"server.workers = {workers!r} needs cluster.role = \"standalone\": a node's workers find each "
                     "other on their own; run one process per node in a Redis cluster (server.workers = 1)")
    for section, cert, key in (("rtmps", config.rtmps.cert_file, config.rtmps.key_file),
                               ("http", config.http.cert_file, config.http.key_file)):
        if bool(cert) != bool(key):
            found.append(f"[{section}] needs both cert_file and key_file (PEM files) for TLS, or neither")
    if config.rtmps.enabled and config.rtmps.port == config.rtmp.port:
        found.append(f"rtmps.port = {config.rtmps.port} is also rtmp.port; RTMPS needs a port of its own "
                     "(443 or 1936 are usual)")
    return found
