"""Configuration: frozen dataclasses, one per TOML section, with built-in defaults.

`load_config(path, overrides)` reads a TOML file (optional) and `SECTION.KEY=VALUE` overrides, and refuses
unknown keys (with a did-you-mean), wrong types and out-of-range values with a message that names the key
and what it accepts; every problem in one message. No file at all gives a working single node. `config.example.toml` documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError


class ConfigError(UsageError):
    """The configuration names an unknown key or holds a value the server cannot use."""


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
    """A connection that sends nothing for this long is closed."""
    read_merge_ms: int = 50
    """A publisher's socket is read at most this often: fewer wakeups per stream, a little more delay."""


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
    flv_merge_ms: int = 100
    """How long an FLV viewer's writes are merged: fewer syscalls per viewer, a little more delay."""
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


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "text"


# ----- auth, admin API, limits, webhooks -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthConfig:
    publish_open: tuple[str, ...] = ("*",)
    """Apps anyone may publish to without a credential; "*" is every app."""
    play_open: tuple[str, ...] = ("*",)
    """Apps anyone may watch without a play token; "*" is every app."""
    token_secret_env: str = "MEDIASERVER_TOKEN_SECRET"
    """The environment variable holding the HMAC secret(s) for publish and play tokens."""
    stream_keys: tuple[str, ...] = ()
    """"APP/PUBLIC_NAME=ENV_VAR": publishing with the value of $ENV_VAR as stream key publishes APP/PUBLIC_NAME."""
    failure_delay_ms: int = 500
    """A refused credential is answered after a random delay of half to all of this."""


@dataclass(frozen=True, slots=True)
class ApiConfig:
    token_env: str = "MEDIASERVER_ADMIN_TOKEN"
    """The environment variable holding the admin API's bearer token; unset or empty disables the API."""
    cors_origins: tuple[str, ...] = ()
    """Web origins allowed to call the admin API from a browser ("*" for any)."""
    metrics_public: bool = True
    """Serve /metrics without the admin token."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_connections_per_ip: int = 0
    """RTMP connections plus HTTP requests in progress from one address; 0 is unlimited."""
    max_publishers_per_app: int = 0
    max_viewers_per_stream: int = 0
    """HTTP-FLV, WebSocket-FLV and RTMP viewers of one stream; 0 is unlimited."""


@dataclass(frozen=True, slots=True)
class WebhooksConfig:
    on_publish: str = ""
    on_play: str = ""
    on_publish_done: str = ""
    on_play_done: str = ""
    on_health: str = ""
    """Told when a stream's picture turns black or frozen or its sound silent, and when that ends ([health])."""
    on_record_done: str = ""
    """Told when a recording's file is closed (complete or failed), with its catalog row ([record])."""
    on_record_disk: str = ""
    """Told when record.path's free space falls under record.min_free_gb (state "low": recordings stop) and
    when it returns (state "ok": they resume)."""
    on_relay_state: str = ""
    """Told when a push ([relay], the admin API) goes live, starts retrying (with the error) or stops."""
    timeout: float = 2.0
    on_failure: str = "deny"
    """What a hook that times out, fails (5xx, no connection) or answers garbage means: "deny" or "allow"."""
    auth_header_env: str = ""
    """An environment variable whose value is sent as `Authorization: Bearer ...` to the hooks."""
    hls_cache_s: float = 30.0
    """How long an on_play answer for an HLS client (address and stream) is reused."""


# ----- end of auth, admin API, limits, webhooks ------------------------------------------------------


# ----- cluster ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    role: str = "standalone"
    """standalone (no Redis), origin (takes publishers), edge (pulls for viewers), both, or transcoder (makes
    the renditions of other nodes' streams: ABR jobs claimed cluster-wide, sources pulled from origins)."""
    redis_url: str = ""
    """redis://HOST:PORT/DB shared by every node; required unless role is standalone."""
    node_id: str = ""
    """This node's name in the cluster; empty is HOSTNAME-HTTPPORT."""
    advertise_url: str = ""
    """The HTTP base URL other nodes reach this one on; empty is http://BIND:PORT (the hostname for 0.0.0.0)."""
    secret_env: str = "MEDIASERVER_CLUSTER_SECRET"
    """The environment variable holding the secret internal pulls present; every node needs the same."""
    claim_ttl: float = 15.0
    """Seconds a stream claim lives without a refresh (refreshed every third of it)."""
    node_ttl: float = 1.5
    """Seconds a node's heartbeat lives (kept alive every third of it); a dead node's claims move at once."""
    pull_grace: float = 10.0
    """Seconds an edge keeps pulling a stream after its last viewer left."""
    pull_wait: float = 5.0
    """Seconds a viewer waits for a starting pull's first keyframe."""
    upstream: str = ""
    """An edge's parent edge (http://HOST:PORT) to pull from instead of the origin (tiered)."""
    serve_edges: bool = False
    """Let other edges pull through this one (a parent edge in a tiered setup)."""
    max_pulls: int = 1000
    """Streams this node pulls from others at once; 0 is no limit."""
    max_pulls_per_client: int = 10
    """Running pulls one viewer address may have started; 0 is no limit."""


# ----- end of cluster -----------------------------------------------------------------------------


# ----- media pipeline: ABR ladder, watermark, thumbnails, stream health ------------------------------


@dataclass(frozen=True, slots=True)
class RungConfig:
    """One rendition of the ABR ladder (`[[abr.ladder]]`)."""

    label: str
    """The rendition's name suffix: STREAM@LABEL (1-32 of a-z, 0-9, '_', '-')."""
    height: int
    video_kbps: int
    codec: str = "h264"
    """h264, hevc, av1 or vp9; each output lists only the renditions it can carry."""
    preset: str = ""
    """Encoder speed preset; empty is the codec's own default here (veryfast for h264/hevc, 10 for av1,
    realtime speed 8 for vp9)."""
    threads: int = 2
    """Encoder threads for this rung; 0 lets the encoder decide (all cores)."""
    width: int = 0
    """0 keeps the source's aspect ratio (rounded to even)."""


DEFAULT_LADDER = (
    RungConfig("1080p", 1080, 5000),
    RungConfig("720p", 720, 2800),
    RungConfig("480p", 480, 1200),
    RungConfig("360p", 360, 700),
    RungConfig("240p", 240, 400),
)


@dataclass(frozen=True, slots=True)
class AbrConfig:
    mode: str = "on_demand"
    """on_demand (the first request for a rendition or master.m3u8 starts the transcode), always (every live
    stream of `apps`), off."""
    apps: tuple[str, ...] = ("*",)
    """Apps whose streams get the ladder; "*" is every app."""
    ladder: tuple[RungConfig, ...] = DEFAULT_LADDER
    """Only rungs below the source's height are made; the source is the top rung, never re-encoded."""
    max_jobs: int = 0
    """Transcode jobs this node runs at once (one per source stream); 0 is one per two CPU cores (at least 1).
    Beyond it a request for a rendition gets 503 and master.m3u8 lists the source only."""
    idle_grace: float = 30.0
    """Seconds a job keeps running after the last viewer of every rendition left (on_demand)."""
    wait: float = 6.0
    """Seconds a first ABR request waits for a starting job's first rendition keyframe."""
    max_keyframe_interval: float = 10.0
    """A rung forces a keyframe at every source keyframe; beyond this many seconds without one it makes its own."""


@dataclass(frozen=True, slots=True)
class WatermarkConfig:
    file: str = ""
    """A PNG (with alpha) burnt into the transcoded renditions; empty is no watermark."""
    apps: tuple[str, ...] = ("*",)
    position: str = "top-right"
    """top-left, top-right, bottom-left, bottom-right or center."""
    margin: int = 16
    """Pixels between the picture's edge and the watermark, at the rendition's size."""
    opacity: float = 0.8
    scale: float = 0.15
    """The watermark's width as a share of the rendition's width (its aspect kept)."""
    source: bool = False
    """Also burn it into the top rung: the source is re-encoded at its own size instead of passed through."""


@dataclass(frozen=True, slots=True)
class ThumbnailConfig:
    enabled: bool = True
    max_width: int = 1920
    """The largest ?width= a request may ask for; wider answers are scaled to this."""
    quality: int = 80
    """JPEG quality, 1-100."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool = False
    apps: tuple[str, ...] = ("*",)
    interval: float = 2.0
    """Seconds between samples of a stream's newest keyframe and its audio."""
    black_after: float = 5.0
    """Seconds of black picture before the stream is flagged."""
    frozen_after: float = 10.0
    """Seconds of an unchanging picture before the stream is flagged."""
    silence_after: float = 10.0
    """Seconds of silence before the stream is flagged."""
    black_luma: int = 24
    """A picture whose mean luma (0-255) is at most this, with little variation, counts as black."""
    silence_dbfs: float = -60.0
    """Audio whose RMS level is below this counts as silence."""


# ----- end of media pipeline --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One app's retention limits (`[[record.retention]]`), in place of [record]'s for that app."""

    app: str
    max_age_days: float = -1.0
    """Left out (-1): record.max_age_days; 0 keeps this app's recordings whatever their age."""
    max_total_gb: float = -1.0
    """Left out (-1): the app's files count in record.max_total_gb; else the app's own budget (0: no limit)."""


@dataclass(frozen=True, slots=True)
class S3Config:
    """[record.s3]: the bucket finished recordings go to when record.storage = "s3". The credentials come
    from the environment only (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or any source botocore reads)."""

    endpoint: str = ""
    """http(s)://HOST:PORT of an S3-compatible store (MinIO, Ceph); "" is AWS's own endpoint for `region`."""
    bucket: str = ""
    prefix: str = ""
    """Put before each file's name under record.path to make its key (e.g. "recordings/")."""
    region: str = "us-east-1"
    part_size_mb: float = 16.0
    """Files larger than this are sent in parts of this size (multipart upload); S3 wants at least 5."""
    presign: bool = False
    """/vod/ID.mp4 answers with a redirect to a presigned URL (the bucket serves the bytes), else streams
    the ranges itself."""


@dataclass(frozen=True, slots=True)
class RecordConfig:
    mode: str = "api"
    """api (an operator starts and stops recordings through the admin API), all (every stream of `apps`), off."""
    apps: tuple[str, ...] = ("*",)
    path: str = "recordings"
    """Directory of the recording files (and of the SQLite catalog unless database_url names another)."""
    template: str = "{app}/{stream}/{start:%Y%m%d-%H%M%S}.mp4"
    """A file's path under `path`: {app}, {stream}, {start:STRFTIME} (UTC)."""
    segment_minutes: float = 60.0
    """A new file starts at the first keyframe after this long (and at a codec change)."""
    fsync_interval: float = 10.0
    """Seconds between fsyncs of a file being written (in a thread): what a power cut may lose at most."""
    database_url: str = ""
    """The catalog: "" is a SQLite file `recordings.db` in `path`; postgresql+asyncpg://... for a cluster."""
    dvr_window: float = 7200.0
    """Seconds of a recorded live stream that /APP/NAME/dvr.m3u8 lets a viewer scrub back through."""
    max_age_days: float = 0.0
    """Recordings whose end is older than this are deleted (file and row); 0 keeps them whatever their age."""
    max_total_gb: float = 0.0
    """This node's recordings (and the bucket's) beyond this many GB are deleted, oldest first; 0 is no limit."""
    retention: tuple[RetentionRule, ...] = ()
    """Per-app limits ([[record.retention]] app = "live", max_age_days = 7, max_total_gb = 50)."""
    min_free_gb: float = 1.0
    """Under this much free space on record.path every recording of the node stops (live streaming goes on);
    they resume by themselves above it plus 10 %. 0 never stops them."""
    storage: str = "local"
    """Where finished files live: "local" (record.path) or "s3" (uploaded to [record.s3], then removed here)."""
    s3: S3Config = field(default_factory=S3Config)


# ----- relay (push: restreaming to other servers) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One push target (`[[relay.push]]`): each stream of `app` named `stream` ("*": any) is pushed to `url`."""

    url: str
    """rtmp[s]://HOST[:PORT]/APP/KEY; ${VAR} is filled from the environment at start (and never logged)."""
    app: str = "*"
    stream: str = "*"
    rendition: str = ""
    """A label of the ABR ladder: push STREAM@LABEL (while it is transcoded) instead of the source."""


@dataclass(frozen=True, slots=True)
class PullRelay:
    """One `[[relay.pull]]`: a stream of another server ingested here as if published here."""

    app: str
    stream: str
    url: str
    """rtmp://, rtmps://, http:// or https:// (an .flv); ${VAR} is filled from the environment at start."""
    mode: str = "on_demand"
    """on_demand: pulled from the first viewer until relay.pull_grace without one; always: from the start."""


@dataclass(frozen=True, slots=True)
class RelayConfig:
    push: tuple[PushTarget, ...] = ()
    """[[relay.push]] url = "rtmp://a.example/live2/${YOUTUBE_KEY}", app = "live", stream = "*"."""
    push_retry_min: float = 1.0
    """Seconds before the first retry of a push that failed; doubled each time up to push_retry_max."""
    push_retry_max: float = 30.0
    push_connect_timeout: float = 10.0
    """Seconds for a target to connect, handshake and accept publishing."""
    push_write_timeout: float = 10.0
    """Seconds a target may leave our writes unread before its connection is dropped and retried."""
    pull: tuple[PullRelay, ...] = ()
    pull_grace: float = 10.0
    """Seconds an on_demand pull goes on without viewers (a viewer back within it reuses it)."""
    pull_retry_max: float = 30.0
    """Longest wait between reconnects to a source that is down (the wait doubles from 0.5 s up to this)."""
    pull_wait: float = 5.0
    """Seconds a first viewer waits for an on_demand pull's first keyframe."""


# ----- end of relay -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    rtmp: RtmpConfig = field(default_factory=RtmpConfig)
    rtmps: RtmpsConfig = field(default_factory=RtmpsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    hls: HlsConfig = field(default_factory=HlsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    abr: AbrConfig = field(default_factory=AbrConfig)
    watermark: WatermarkConfig = field(default_factory=WatermarkConfig)
    thumbnails: ThumbnailConfig = field(default_factory=ThumbnailConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)


# Accepted values and ranges, checked after types: key -> (min, max) or a tuple of choices.
_RANGES: dict[str, tuple[float, float]] = {
    "rtmp.port": (1, 65535),
    "http.port": (1, 65535),
    "rtmps.port": (1, 65535),
    "rtmp.chunk_size": (128, 65536),
    "rtmp.max_message_size": (64 * 1024, 256 * 1024 * 1024),
    "rtmp.max_command_size": (4 * 1024, 16 * 1024 * 1024),
    "rtmp.handshake_timeout": (0.1, 600),
    "rtmp.connect_timeout": (0.1, 600),
    "rtmp.idle_timeout": (0.5, 3600),
    "rtmp.read_merge_ms": (0, 500),
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
    "auth.failure_delay_ms": (0, 10_000),
    "limits.max_connections_per_ip": (0, 1_000_000),
    "limits.max_publishers_per_app": (0, 1_000_000),
    "limits.max_viewers_per_stream": (0, 1_000_000),
    "webhooks.timeout": (0.1, 60),
    "webhooks.hls_cache_s": (0, 3600),
    "cluster.claim_ttl": (1, 3600),
    "cluster.pull_grace": (0, 3600),
    "cluster.pull_wait": (0.1, 60),
    "cluster.node_ttl": (0.3, 600),
    "cluster.max_pulls": (0, 1_000_000),
    "cluster.max_pulls_per_client": (0, 1_000_000),
    "abr.max_jobs": (0, 10_000),
    "abr.idle_grace": (0, 86_400),
    "abr.wait": (0.1, 120),
    "abr.max_keyframe_interval": (1, 600),
    "watermark.margin": (0, 10_000),
    "watermark.opacity": (0, 1),
    "watermark.scale": (0.01, 1),
    "thumbnails.max_width": (16, 7680),
    "thumbnails.quality": (1, 100),
    "health.interval": (0.2, 600),
    "health.black_after": (0.5, 86_400),
    "health.frozen_after": (0.5, 86_400),
    "health.silence_after": (0.5, 86_400),
    "health.black_luma": (0, 255),
    "health.silence_dbfs": (-150, 0),
    "record.segment_minutes": (0.01, 1440),
    "record.fsync_interval": (0.1, 3600),
    "record.dvr_window": (10, 7 * 86_400),
    "record.max_age_days": (0, 36_500),
    "record.max_total_gb": (0, 1_000_000),
    "record.min_free_gb": (0, 1_000_000),
    "retention.max_age_days": (0, 36_500),
    "retention.max_total_gb": (0, 1_000_000),
    "s3.part_size_mb": (0.01, 5120),
    "relay.push_retry_min": (0.1, 3600),
    "relay.push_retry_max": (0.1, 3600),
    "relay.push_connect_timeout": (0.5, 600),
    "relay.push_write_timeout": (0.5, 600),
    "ladder.height": (16, 4320),
    "ladder.width": (0, 7680),
    "ladder.video_kbps": (16, 200_000),
    "ladder.threads": (0, 64),
    "relay.pull_grace": (0, 86_400),
    "relay.pull_retry_max": (0.5, 3600),
    "relay.pull_wait": (0.1, 60),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("text", "json"),
    "webhooks.on_failure": ("deny", "allow"),
    "cluster.role": ("standalone", "origin", "edge", "both", "transcoder"),
    "abr.mode": ("on_demand", "always", "off"),
    "record.mode": ("api", "all", "off"),
    "record.storage": ("local", "s3"),
    "watermark.position": ("top-left", "top-right", "bottom-left", "bottom-right", "center"),
    "ladder.codec": ("h264", "hevc", "av1", "vp9"),
    "pull.mode": ("on_demand", "always"),
}
_LABEL = re.compile(r"[a-z0-9_-]{1,32}")
# Lists of tables whose default is empty (a non-empty default names its table's class itself).
_TABLE_LISTS: dict[str, type] = {"record.retention": RetentionRule, "relay.push": PushTarget, "relay.pull": PullRelay}
_URL_KEYS = ("webhooks.on_publish", "webhooks.on_play", "webhooks.on_publish_done", "webhooks.on_play_done",
             "webhooks.on_record_done", "webhooks.on_record_disk", "webhooks.on_relay_state",
             "cluster.advertise_url", "cluster.upstream", "s3.endpoint")


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; known keys: {', '.join(options)}"


def _coerce(where: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r} must be a whole number")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r} must be a string")
        return value
    if dataclasses.is_dataclass(default):  # a table of its own inside a section: [record.s3]
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table of keys, e.g. [{where}]")
        return _table(where, None, value, type(default))
    table_cls = _TABLE_LISTS.get(where) or (type(default[0]) if kind is tuple and default
                                             and dataclasses.is_dataclass(default[0]) else None)
    if table_cls is not None:  # a list of tables: [[abr.ladder]], [[record.retention]]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{where} must be a list of tables, e.g. [[{where}]] label = ...")
        tables = tuple(_table(where, i, v, table_cls) for i, v in enumerate(value))
        labels = [getattr(t, "label", None) for t in tables]
        twice = sorted({x for x in labels if x is not None and labels.count(x) > 1})
        if twice:
            raise ConfigError(f"{where} names {', '.join(twice)} more than once; each label names one rendition")
        apps = [getattr(t, "app", None) for t in tables if table_cls is RetentionRule]  # pushes, pulls: many per app
        twice = sorted({x for x in apps if x is not None and apps.count(x) > 1})
        if twice:
            raise ConfigError(f"{where} names app {', '.join(twice)} more than once; give each app one table")
        return tables
    if kind is tuple:  # a list of strings; on the command line also "a,b"
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where} = {value!r} must be a list of strings, e.g. ["a", "b"]')
        return tuple(value)
    raise ConfigError(f"{where} has an unsupported type")  # pragma: no cover - guards new fields


def _table(where: str, index: int | None, value: dict[str, Any], cls: type) -> Any:
    """One table of a list such as [[abr.ladder]] (or a table of its own, index None): its keys checked
    like a section's."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING]
    here = where if index is None else f"{where}[{index}]"
    for key in value:
        if key not in fields:
            raise ConfigError(f"unknown key {here}.{key}" + _suggest(key, list(fields)))
    missing = [k for k in required if k not in value]
    if missing:
        example = {RetentionRule: 'app = "live"', PushTarget: 'url = "rtmp://a.example/live2/${KEY}"',
                   PullRelay: 'app = "live", stream = "cam1", url = "rtmp://camera.example/live/cam1"'}.get(
            cls, 'label = "480p", height = 480, video_kbps = 1200')
        raise ConfigError(f"{here} needs {', '.join(missing)}, e.g. {example}")
    built: dict[str, Any] = {}
    short = where.split(".")[-1]
    for key, f in fields.items():
        if key not in value:
            continue
        sample = f.default if f.default is not dataclasses.MISSING else {"label": "", "height": 0, "video_kbps": 0,
                                                                          "app": "", "stream": "", "url": ""}[key]
        coerced = _coerce(f"{here}.{key}", value[key], sample)
        _check(f"{short}.{key}", coerced, f"{here}.{key}")
        built[key] = coerced
    if short == "ladder" and not _LABEL.fullmatch(built["label"]):
        raise ConfigError(f"{here}.label = {built['label']!r} must be 1-32 of a-z, 0-9, '_' or '-' (it names STREAM@LABEL)")
    if short == "ladder" and built["label"] == "source":
        raise ConfigError(f"{here}.label = \"source\" is kept for the watermarked top rung; choose another label")
    if short == "push" and not built["url"].startswith(("rtmp://", "rtmps://")):
        raise ConfigError(f"{here}.url must be an rtmp:// or rtmps:// URL (rtmp://HOST[:PORT]/APP/KEY); "
                          "accepted schemes are rtmp and rtmps")
    if short == "push" and built.get("rendition") and not _LABEL.fullmatch(built["rendition"]):
        raise ConfigError(f"{here}.rendition = {built['rendition']!r} must be a label of [[abr.ladder]] "
                          "(1-32 of a-z, 0-9, '_' or '-'), or left out for the source")
    if short == "retention" and not built["app"].strip():
        raise ConfigError(f"{here}.app is empty; name the app whose recordings these limits keep")
    return cls(**built)


def _check(where: str, value: Any, shown: str = "") -> None:
    shown = shown or where
    if where in _RANGES:
        lo, hi = _RANGES[where]
        if not lo <= value <= hi:
            raise ConfigError(f"{shown} = {value!r} is out of range; must be {lo:g}..{hi:g}")
    if where in _CHOICES and value not in _CHOICES[where]:
        raise ConfigError(f"{shown} = {value!r} is not accepted; must be one of {', '.join(_CHOICES[where])}")
    if where in _URL_KEYS and value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{shown} = {value!r} must be an http:// or https:// URL, or \"\" for none")
    if where == "http.trusted_proxies":
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"{where} entry {entry!r} is not an IP address or CIDR; write e.g. "
                                  '"127.0.0.1", "10.0.0.0/8" or "fd00::/8"') from None


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML, refusing unknown sections and keys and bad values: every problem
    is named in one ConfigError, so a file with several mistakes is mended in one go."""
    problems: list[str] = []
    config = _build(raw, problems)
    if problems:
        raise _problems_error(problems)
    return config


def _build(raw: dict[str, Any], problems: list[str]) -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built: dict[str, Any] = {}
    for section_name, section_values in raw.items():
        if section_name not in sections:
            problems.append(f"unknown section [{section_name}]" + _suggest(section_name, list(sections)))
            continue
        if not isinstance(section_values, dict):
            problems.append(f"[{section_name}] must be a table of keys, not {section_values!r}")
            continue
        cls = sections[section_name].default_factory()  # type: ignore[misc]
        defaults = {f.name: getattr(cls, f.name) for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in section_values.items():
            where = f"{section_name}.{key}"
            if key not in defaults:
                problems.append(f"unknown key [{section_name}].{key}" + _suggest(key, list(defaults)))
                continue
            try:
                coerced = _coerce(where, value, defaults[key])
                _check(where, coerced)
            except ConfigError as err:
                problems.append(str(err))
                continue
            values[key] = coerced
        built[section_name] = dataclasses.replace(cls, **values)
    config = Config(**built)
    problems.extend(_record_problems(config.record))
    if config.relay.push_retry_min > config.relay.push_retry_max:
        problems.append(f"relay.push_retry_min = {config.relay.push_retry_min:g} is above relay.push_retry_max = "
                        f"{config.relay.push_retry_max:g}; the backoff grows from the first to the second")
    problems.extend(_tls_problems(config))
    problems.extend(_pull_problems(config))
    return config


def _record_problems(cfg: RecordConfig) -> list[str]:
    """What one key alone cannot say: S3 storage needs a bucket."""
    if cfg.storage == "s3" and not cfg.s3.bucket:
        return ['record.storage = "s3" needs record.s3.bucket (the bucket finished recordings go to); '
                'or set record.storage = "local"']
    return []


def _tls_problems(config: Config) -> list[str]:
    """Certificate settings that cannot work together (the files themselves are read at start)."""
    found = []
    for section, cert, key in (("rtmps", config.rtmps.cert_file, config.rtmps.key_file),
                               ("http", config.http.cert_file, config.http.key_file)):
        if bool(cert) != bool(key):
            found.append(f"[{section}] needs both cert_file and key_file (PEM files) for TLS, or neither")
    if config.rtmps.enabled and config.rtmps.port == config.rtmp.port:
        found.append(f"rtmps.port = {config.rtmps.port} is also rtmp.port; RTMPS needs a port of its own "
                     "(443 or 1936 are usual)")
    return found


PULL_SCHEMES = ("rtmp", "rtmps", "http", "https")
_PULL_NAME = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}")  # auth/names.py's rule (config imports no layer)
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::")


def pull_url_problem(url: str) -> str | None:
    """What is wrong with a pull source URL (None: usable). ${VAR} placeholders count as filled."""
    from urllib.parse import urlsplit

    shown = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "x", url)
    try:
        parts = urlsplit(shown)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        return f"is not a URL ({err})"
    if parts.scheme not in PULL_SCHEMES:
        return f"has scheme {parts.scheme or 'none'!r}; accepted: rtmp://, rtmps://, http:// or https:// (FLV)"
    if not parts.hostname:
        return "names no host, e.g. rtmp://camera.example:1935/live/cam1"
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme.startswith("rtmp") and len(segments) < 2:
        return "needs an app and a stream name after the host: rtmp://HOST[:PORT]/APP/STREAM"
    if parts.scheme.startswith("http") and not segments:
        return "needs a path to the FLV: http://HOST[:PORT]/APP/STREAM.flv"
    return None


def _pull_problems(config: Config) -> list[str]:
    """Each [[relay.pull]] names a valid stream once, from a usable URL that is not this server's own stream."""
    from urllib.parse import urlsplit

    found = []
    seen: set[tuple[str, str]] = set()
    for i, pull in enumerate(config.relay.pull):
        here = f"relay.pull[{i}]"
        for key in ("app", "stream"):
            value = getattr(pull, key)
            if not _PULL_NAME.fullmatch(value):
                found.append(f"{here}.{key} = {value!r} is not a valid name: 1-128 letters, digits, '_', '-', "
                             "'.' or '~', not starting with '.'")
        if (pull.app, pull.stream) in seen:
            found.append(f"{here} pulls {pull.app}/{pull.stream} again; each stream has one source")
        seen.add((pull.app, pull.stream))
        problem = pull_url_problem(pull.url)
        if problem is not None:
            found.append(f"{here}.url {problem}")
            continue
        parts = urlsplit(pull.url)
        ports = {"rtmp": (config.rtmp.port, 1935), "rtmps": (config.rtmps.port, 443),
                 "http": (config.http.port, 80), "https": (config.http.port, 443)}[parts.scheme]
        host = (parts.hostname or "").lower()
        segments = [s for s in parts.path.split("/") if s]
        names = (segments[0], segments[-1].removesuffix(".flv")) if segments else ("", "")
        if (host in _LOCAL_HOSTS or host in (config.rtmp.bind, config.http.bind)) \
                and (parts.port or ports[1]) == ports[0] and names == (pull.app, pull.stream):
            found.append(f"{here}.url points to this server's own stream {pull.app}/{pull.stream}: a loop; "
                         "pull from another server, or under another name")
    return found


def _problems_error(problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0])
    return ConfigError(f"{len(problems)} problems in the configuration:\n  " + "\n  ".join(problems))


def parse_override(text: str) -> tuple[str, str, Any]:
    """`SECTION.KEY=VALUE` -> (section, key, value). VALUE is read as TOML, else taken as a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like SECTION.KEY=VALUE, e.g. rtmp.port=1936")
    path, raw_value = text.split("=", 1)
    section, key = path.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read the TOML file at `path` (if any), apply overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {p}: {err.strerror}; check the path given to --config") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"config file {p} is not UTF-8 text") from err
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {p} is not valid TOML: {err}") from err
    problems: list[str] = []
    for text in overrides:
        try:
            section, key, value = parse_override(text)
        except ConfigError as err:
            problems.append(str(err))
            continue
        table = raw.setdefault(section, {})
        if "." in key:  # a key of a table inside the section: record.s3.bucket=NAME
            inner, key = key.split(".", 1)
            table = table.setdefault(inner, {}) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            problems.append(f"[{section}] must be a table of keys")
            continue
        table[key] = value
    config = _build(raw, problems)
    if problems:
        raise _problems_error(problems)
    return config
