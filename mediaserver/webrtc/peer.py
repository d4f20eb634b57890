"""Peer connections made from [webrtc]: the ICE servers given, and never aiortc's default public STUN server
(a server must not call out to a third party unless configured to)."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from ..config import WebrtcConfig


def ice_servers(config: WebrtcConfig) -> list[RTCIceServer]:
    """`stun:HOST:PORT`, `turn:HOST:PORT?transport=udp` or `turn:USER:PASSWORD@HOST:PORT` entries."""
    servers = []
    for entry in config.ice_servers:
        scheme, _, rest = entry.partition(":")
        username = credential = None
        if scheme in ("turn", "turns") and "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            username, _, credential = userinfo.partition(":")
        servers.append(RTCIceServer(urls=f"{scheme}:{rest}", username=username, credential=credential))
    return servers


def new_peer_connection(config: WebrtcConfig) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=ice_servers(config)))
