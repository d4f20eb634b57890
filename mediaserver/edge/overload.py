"""An edge at its ceiling sends new viewers elsewhere: 302 to a less loaded edge.

Only a viewer who is starting is moved: a new HTTP-FLV request, or the first request of an HLS, LL-HLS or
DASH player for its entry playlist (index.m3u8, master.m3u8, cmaf.m3u8, manifest.mpd) from a client that
fetched nothing of the stream here lately. Segments, parts, media playlists, blocking reloads
(`_HLS_msn`) and reloads of a player already watching here are served, so nobody is cut off mid-play.
WebSocket-FLV and RTMP players do not follow redirects and are served as well.

Never in a loop: the Location carries `balanced=1`, and an edge serves a request that has it, at its
ceiling or not; the node chosen is under its own ceilings (cluster/balance.py), and when no node is, the
edge serves the viewer itself. Where to send is the composition root's `LOAD_REDIRECT` callable (the
cluster's LoadRouter): the base URL of the node chosen, or None to serve here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth.tokens import normalize_address
from ..hub.stream import StreamKey
from ..log import LogGate, event
from .common import cors_headers
from .keys import METRICS

log = logging.getLogger(__name__)

LoadRedirect = Callable[[], Awaitable["str | None"]]
LOAD_REDIRECT: web.AppKey[LoadRedirect] = web.AppKey("load_redirect")
"""Set on edges with a ceiling (cluster.max_viewers, max_egress_mbps); absent: never redirect."""
MARKER = "balanced"
"""The query parameter a redirected request carries: the next edge serves it whatever its load."""
ENTRY_PLAYLISTS = frozenset({"index.m3u8", "master.m3u8", "cmaf.m3u8", "manifest.mpd"})
_log_gate = LogGate(10.0)


def may_move(app: web.Application, address: str, key: StreamKey, file: str, query: str) -> bool:
    """Whether a plain GET of `file` of `key` from `address` could be moved by this edge's ceiling: the
    fast lane (edge/fastlane.py) leaves such requests to the full stack, which decides."""
    if app.get(LOAD_REDIRECT) is None or file not in ENTRY_PLAYLISTS:
        return False
    names = {pair.partition("=")[0] for pair in query.split("&")} if query else set()
    if MARKER in names or any(name.startswith("_HLS_") for name in names):
        return False
    return (normalize_address(address), str(key)) not in app[METRICS].hls_clients


def starting_viewer(request: web.Request, key: StreamKey, fmt: str) -> bool:
    """True for a request that starts a viewer (see the module's note), which may be moved."""
    if request.method != "GET" or MARKER in request.query:
        return False
    if fmt == "flv":
        return True
    if fmt != "hls" or request.match_info.get("file") not in ENTRY_PLAYLISTS:
        return False
    if any(name.startswith("_HLS_") for name in request.query):
        return False  # an LL-HLS blocking reload: a player that is already watching
    return (normalize_address(request.remote or ""), str(key)) not in request.app[METRICS].hls_clients


async def redirect_if_full(request: web.Request, key: StreamKey, fmt: str) -> None:
    """Raise the 302 that moves a starting viewer when this edge is at its ceiling and another can take it."""
    where = request.app.get(LOAD_REDIRECT)
    if where is None or not starting_viewer(request, key, fmt):
        return
    base = await where()
    if not base:
        return
    separator = "&" if request.query_string else "?"
    location = f"{base.rstrip('/')}{request.path_qs}{separator}{MARKER}=1"
    count = _log_gate.should_log(("viewer_redirected", base), time.monotonic())
    if count:
        event(log, "viewer_redirected", stream=str(key), format=fmt, to=base, redirected=count,
              hint="this edge is at cluster.max_viewers or max_egress_mbps")
    raise web.HTTPFound(location, headers={"Cache-Control": "no-store", **cors_headers(request)})
