"""WebRTC: [webrtc] for WHEP playback and WHIP ingest (aiortc brings ICE, DTLS and SRTP)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebrtcConfig:
    enabled: bool = True
    """Serve POST /APP/STREAM/whep (playback) and /APP/STREAM/whip (ingest)."""
    udp_port_range: str = ""
    """"40000-40100": the UDP ports ICE may use; "" is any free port the system gives."""
    public_ip: str = ""
    """The address advertised as the host candidate (behind NAT: the public address); "" is the local ones."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs given to the peer connections, e.g. "stun:stun.example:3478"."""
    max_sessions: int = 500
    """WebRTC sessions (viewers and publishers) this node holds at once; 0 is no limit."""
    max_sessions_per_stream: int = 0
    """WebRTC viewers of one stream; 0 is no limit (limits.max_viewers_per_stream still counts them)."""


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "webrtc.max_sessions": (0, 1_000_000),
    "webrtc.max_sessions_per_stream": (0, 1_000_000),
}
CHOICES: dict[str, tuple[str, ...]] = {}
