"""GET /api/v1/route/APP/NAME: where a player should watch a stream, as play URLs on one node.

Public like the play URLs themselves (players call it, not operators): no admin token, but the stream's
play admission up to what can be decided without playing: the name rule and the play token when the app
needs one (the token of the source for a rendition NAME@LABEL). The node chosen admits the viewer fully
(viewers limit, on_play hook) when the player comes. The caller's token is carried in every URL.

The choice itself (the least loaded edge under its ceilings) is the cluster's `balance` module, reached
through the `route` callable the composition root gives AdminDeps; this module turns the node chosen
into URLs. A standalone node answers its own URLs, on the host the caller used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ..cluster.locator import NodeInfo

ALL_OUTPUTS = ("flv", "ws-flv", "hls", "llhls", "dash", "rtmp", "webrtc")
"""Every play format a route may answer, in the player page's ids ("webrtc": the WHEP endpoint, where an SDP
offer is POSTed; a stream whose video WebRTC cannot carry answers it 415 with the reason)."""
_PATHS = {
    "flv": "/{app}/{name}.flv",
    "ws-flv": "/{app}/{name}.flv",
    "hls": "/{app}/{name}/index.m3u8",
    "llhls": "/{app}/{name}/cmaf.m3u8",
    "dash": "/{app}/{name}/manifest.mpd",
    "webrtc": "/{app}/{name}/whep",
}
REASONS = {
    "no_edge": ("no node of the cluster serves viewers (role edge or both)",
                "start an edge, or play from the origin's URLs (GET /api/v1/openapi.json)"),
    "all_full": ("every edge is at its ceiling (cluster.max_viewers, cluster.max_egress_mbps)",
                 "try again shortly, or add edges or raise their ceilings"),
}


def play_urls(node: NodeInfo, app: str, name: str, token: str, caller_base: str) -> dict[str, Any]:
    """The route's answer for `node`. `caller_base` (scheme://host[:port] the request came to) stands in
    for a node that names no URL of its own (standalone)."""
    base = (node.play_url or node.http or caller_base).rstrip("/")
    query = f"?{urlencode({'token': token})}" if token else ""
    path_app, path_name = quote(app, safe=""), quote(name, safe="")
    outputs = [o for o in ALL_OUTPUTS if o in node.outputs] if node.outputs else list(ALL_OUTPUTS)
    urls: dict[str, str] = {}
    for fmt in outputs:
        if fmt == "rtmp":
            rtmp = _rtmp_base(node.rtmp, base)
            if rtmp:
                urls[fmt] = f"{rtmp}/{path_app}/{path_name}{query}"
            continue
        url_base = ("ws" + base[4:]) if fmt == "ws-flv" else base  # http -> ws, https -> wss
        urls[fmt] = url_base + _PATHS[fmt].format(app=path_app, name=path_name) + query
    return {
        "app": app, "stream": name, "node": node.id, "standalone": node.role == "standalone",
        "base": base, "player": f"{base}/play/{path_app}/{path_name}{query}", "urls": urls,
        "load": {"viewers": node.viewers, "egress_bps": node.egress_bps, "max_viewers": node.max_viewers,
                 "max_egress_bps": node.max_egress_bps},
    }


def _rtmp_base(advertised: str, http_base: str) -> str:
    """rtmp://HOST:PORT on the host players reach the node's HTTP side on, with its RTMP port."""
    rtmp = urlsplit(advertised)
    host = urlsplit(http_base).hostname
    if rtmp.scheme not in ("rtmp", "rtmps") or not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f"{rtmp.scheme}://{host}" + (f":{rtmp.port}" if rtmp.port else "")
