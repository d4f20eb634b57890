"""The whole configuration: one field per TOML section, each a dataclass of its section module."""

from __future__ import annotations

from dataclasses import dataclass, field

from .access import ApiConfig, AuthConfig, LimitsConfig, WebhooksConfig
from .cluster import ClusterConfig
from .media import AbrConfig, HealthConfig, ThumbnailConfig, WatermarkConfig
from .record import RecordConfig
from .relay import RelayConfig
from .server import HlsConfig, HttpConfig, HubConfig, LogConfig, RtmpConfig, RtmpsConfig, ServerConfig
from .webrtc import WebrtcConfig


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one field per TOML section, each a dataclass of its section module."""

    server: ServerConfig = field(default_factory=ServerConfig)
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
    webrtc: WebrtcConfig = field(default_factory=WebrtcConfig)
