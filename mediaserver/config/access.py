"""Who may publish and play, and who is told: [auth], [api], [limits], [webhooks]."""

from __future__ import annotations

from dataclasses import dataclass


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


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "auth.failure_delay_ms": (0, 10_000),
    "limits.max_connections_per_ip": (0, 1_000_000),
    "limits.max_publishers_per_app": (0, 1_000_000),
    "limits.max_viewers_per_stream": (0, 1_000_000),
    "webhooks.timeout": (0.1, 60),
    "webhooks.hls_cache_s": (0, 3600),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "webhooks.on_failure": ("deny", "allow"),
}
URL_KEYS = ("webhooks.on_publish", "webhooks.on_play", "webhooks.on_publish_done", "webhooks.on_play_done", "webhooks.on_record_done", "webhooks.on_record_disk", "webhooks.on_relay_state")
