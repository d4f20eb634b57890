"""Configuration: frozen dataclasses, one per TOML section, with built-in defaults.

`load_config(path, overrides)` reads a TOML file (optional) and `SECTION.KEY=VALUE` overrides, and refuses
unknown keys (with a did-you-mean), wrong types and out-of-range values with a message that names the key
and what it accepts; every problem in one message. No file at all gives a working single node. `config.example.toml` documents every key.
"""

from __future__ import annotations

from .access import ApiConfig, AuthConfig, LimitsConfig, WebhooksConfig
from .base import ConfigError, TableRule
from .cluster import ClusterConfig
from .media import DEFAULT_LADDER, AbrConfig, HealthConfig, RungConfig, ThumbnailConfig, WatermarkConfig
from .record import RecordConfig, RetentionRule, S3Config
from .relay import PULL_SCHEMES, PullRelay, PushTarget, RelayConfig, pull_url_problem
from .server import HlsConfig, HttpConfig, HubConfig, LogConfig, RtmpConfig, RtmpsConfig
from .webrtc import WebrtcConfig
from .schema import Config  # noqa: I001 - after the sections it is made of
from .loader import config_from_dict, load_config, parse_override

__all__ = [
    "DEFAULT_LADDER", "PULL_SCHEMES", "AbrConfig", "ApiConfig", "AuthConfig", "ClusterConfig", "Config", "ConfigError",
    "HealthConfig", "HlsConfig", "HttpConfig", "HubConfig", "LimitsConfig", "LogConfig", "PullRelay", "PushTarget",
    "RecordConfig", "RelayConfig", "RetentionRule", "RtmpConfig", "RtmpsConfig", "RungConfig", "S3Config", "TableRule",
    "ThumbnailConfig", "WatermarkConfig", "WebhooksConfig", "WebrtcConfig", "config_from_dict", "load_config", "parse_override",
    "pull_url_problem",
]
