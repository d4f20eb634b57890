"""WebRTC: [webrtc] for WHEP playback and WHIP ingest (aiortc brings ICE, DTLS and SRTP)."""

from __future__ import annotations

import ipaddress
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
    max_connecting_per_ip: int = 16
    """Sessions of one client address still connecting (offer answered, ICE and DTLS not yet done: up to 15 s);
    0 is no limit. A player connects in a second, so only a flood of offers meets it; without it, offers never
    followed by ICE would hold every session place (and viewer place) for their 15 s."""
    consent_timeout_s: float = 10.0
    """A session ends when the peer answered no ICE consent check for this long (RFC 7675's upper bound: 30)."""


# Accepted values, checked after types: KEY -> (min, max), or KEY -> choices.
RANGES: dict[str, tuple[float, float]] = {
    "webrtc.max_sessions": (0, 1_000_000),
    "webrtc.max_sessions_per_stream": (0, 1_000_000),
    "webrtc.max_connecting_per_ip": (0, 1_000_000),
    "webrtc.consent_timeout_s": (2, 30),
}
CHOICES: dict[str, tuple[str, ...]] = {}


def problems(config) -> list[str]:
    """[webrtc] values the types and ranges let through but a peer connection could not use."""
    found = []
    cfg = config.webrtc
    text = cfg.udp_port_range.strip()
    if text:
        low, sep, high = text.partition("-")
        if not (low.isdigit() and (not sep or high.isdigit())) or not (1024 <= int(low) <= int(high or low) <= 65535):
            found.append(f"webrtc.udp_port_range = {text!r}: write FIRST-LAST within 1024-65535, e.g. \"40000-40100\"")
    if cfg.public_ip:
        try:
            ipaddress.ip_address(cfg.public_ip)
        except ValueError:
            found.append(f"webrtc.public_ip = {cfg.public_ip!r} is not an IP address; write the address clients "
                         "reach this node at, e.g. \"203.0.113.7\"")
    for entry in cfg.ice_servers:
        if entry.partition(":")[0] not in ("stun", "stuns", "turn", "turns"):
            found.append(f"webrtc.ice_servers entry {entry!r} is not a stun:, stuns:, turn: or turns: URL")
    return found
