"""VOD of a recording on another node's disk: the edge fetches it from the node that recorded it.

In a cluster every node sees every recording (the shared catalog), but a file kept locally (no object
storage) lies on the disk of the node that recorded it. Any other node answers `/vod/ID.mp4`,
`/vod/ID/index.m3u8` (and the other files of a recording) and the DVR playlist of a stream recorded
elsewhere by fetching the same path from that node, found by its heartbeat (`NodeInfo.http`), and
streaming the answer as it comes: status, Range (206, 416, Content-Range) and length as the recording node
answers them, memory bounded by one chunk, deadlines on connect and on every read, and a viewer who hangs
up closes the upstream request. The viewer was admitted here (play tokens, limits) as for a local file;
the recording node accepts the request by the cluster credential (origin_pull's internal middleware),
without admitting it again, and puts the play token admitted here (sent in the query) in the URIs of the
playlists it answers.

Loops: a fetched request carries PROXIED_HEADER, and a node never fetches for a request that has it (a
file that is not where the catalog says is 404 there). A recording node that is not up is 503 with a
hint, at once; one that does not answer is 503 after `connect_timeout`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from ..cluster.locator import NodeInfo
from ..hub.stream import StreamKey
from ..log import LogGate, event
from ..record.catalog import Recording
from ..record.manager import on_other_node
from .common import PLAY_QUERY, cors_headers, json_error
from .keys import CONFIG, RECORDINGS, REMOTE_VOD
from .origin_pull import CREDENTIAL_HEADER
from .sendfile import write_within

log = logging.getLogger(__name__)

PROXIED_HEADER = "X-Mediaserver-Proxied"
"""Set on a request one node fetches from another, to the fetching node's id: never fetched further."""
REQUEST_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")
"""What a viewer's request passes on: the byte range and the cache validators."""
RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Content-Encoding", "Accept-Ranges",
                    "ETag", "Last-Modified", "Cache-Control", "Retry-After")
"""What the recording node's answer passes back (hop-by-hop headers, cookies and its CORS stay behind)."""
CHUNK = 64 * 1024
NODE_CACHE_S = 2.0
"""A node's address is looked up again after this long (a player's range requests come in bursts)."""
RETRY_AFTER_S = "10"


def is_proxied(headers: Mapping[str, str]) -> bool:
    return PROXIED_HEADER in headers


def upstream_headers(incoming: Mapping[str, str], node_id: str, secret: str) -> dict[str, str]:
    """The headers of the request to the recording node: the viewer's range and validators, the cluster
    credential, the loop marker, and no compression (bytes are passed as they are)."""
    headers = {name: incoming[name] for name in REQUEST_HEADERS if name in incoming}
    headers.update({CREDENTIAL_HEADER: secret, PROXIED_HEADER: node_id, "Accept-Encoding": "identity"})
    return headers


def upstream_query(query: Mapping[str, str], play_query: str) -> str:
    """The viewer's query for the recording node, its play token replaced by the one admitted here (which may
    have come as a bearer token): the recording node puts it in the URIs of the playlists it answers."""
    pairs = [(k, v) for k, v in query.items() if k != "token"]
    pairs += parse_qsl(play_query)
    return urlencode(pairs)


def downstream_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    return {name: upstream[name] for name in RESPONSE_HEADERS if name in upstream}


NodeFinder = Callable[[str], Awaitable[NodeInfo | None]]


class RemoteVod:
    """Fetches recordings from the nodes that hold them (one per node; `close` at shutdown)."""

    def __init__(self, node_id: str, secret: str, find_node: NodeFinder, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0) -> None:
        self.node_id = node_id
        self.secret = secret
        self.find_node = find_node
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.fetches = 0
        self.failures = 0
        self._nodes: dict[str, tuple[float, str | None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._log_gate = LogGate(10.0)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True),
                auto_decompress=False, trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def node_url(self, node: str) -> str | None:
        """The HTTP base URL `node` advertises while its heartbeat is current (cached NODE_CACHE_S)."""
        now = time.monotonic()
        cached = self._nodes.get(node)
        if cached is not None and now - cached[0] < NODE_CACHE_S:
            return cached[1]
        info = await self.find_node(node)
        url = info.http.rstrip("/") if info is not None and info.http else None
        if len(self._nodes) > 1000:
            self._nodes.clear()
        self._nodes[node] = (now, url)
        return url

    async def fetch(self, request: web.Request, node: str, what: str) -> web.StreamResponse:
        """Answer `request` with the same path fetched from `node` (`what` names it in errors)."""
        cors = cors_headers(request)
        base = await self.node_url(node)
        if base is None:
            self._failed(node, "node_down", what)
            raise json_error(503, f"{what} is on node {node}, which is not up",
                             f"start node {node} again (its disk holds the file), or keep recordings in object "
                             "storage (record.storage = \"s3\") so that every node serves them",
                             {"Retry-After": RETRY_AFTER_S, **cors})
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout, sock_read=self.read_timeout)
        headers = upstream_headers(request.headers, self.node_id, self.secret)
        self.fetches += 1
        try:
            query = upstream_query(request.query, request.get(PLAY_QUERY, ""))
            url = base + request.path + (f"?{query}" if query else "")
            async with self.session().request(request.method, url, headers=headers,
                                              timeout=timeout, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                              headers={**downstream_headers(upstream.headers), **cors})
                try:
                    await response.prepare(request)
                    await self._relay(upstream, response, node, what, request)
                except ConnectionResetError:  # the viewer hung up: leaving closes the upstream request
                    pass
                return response
        except (aiohttp.ClientError, TimeoutError) as err:  # before any byte was sent: say why
            self._failed(node, "connect", what, err)
            raise json_error(503, f"{what} is on node {node} ({base}), which does not answer",
                             f"check that node {node} is running and reachable from this one; retry later",
                             {"Retry-After": RETRY_AFTER_S, **cors}) from None

    async def _relay(self, upstream: aiohttp.ClientResponse, response: web.StreamResponse, node: str,
                     what: str, request: web.Request) -> None:
        timeout = request.app[CONFIG].http.write_timeout
        while True:
            try:
                chunk = await upstream.content.read(CHUNK)
            except (aiohttp.ClientError, TimeoutError) as err:  # the node went away mid-answer
                self._failed(node, "read", what, err)
                response.force_close()  # the viewer sees a short body (Content-Length says so), never a wrong one
                return
            if not chunk:
                break
            # waits while the viewer's socket is full (memory stays one chunk); a stuck viewer is dropped
            await write_within(response.write, chunk, timeout, request.transport)
        await response.write_eof()

    def _failed(self, node: str, reason: str, what: str, err: BaseException | None = None) -> None:
        self.failures += 1
        self._nodes.pop(node, None)
        count = self._log_gate.should_log((node, reason), time.monotonic())
        if count:
            event(log, "vod_remote_failed", logging.WARNING, node=node, reason=reason, what=what, failures=count,
                  error=(str(err) or type(err).__name__)[:160] if err is not None else "-")


async def remote_row(request: web.Request, rec_id: str) -> Recording | None:
    """The row of `rec_id` when its file lies on another node's disk and this node fetches it from there;
    None otherwise (standalone, unknown, local, in object storage, or a request already fetched by a node:
    never fetched further, so it is the local 404)."""
    manager = request.app.get(RECORDINGS)
    if manager is None or request.app.get(REMOTE_VOD) is None or is_proxied(request.headers):
        return None
    found = await manager.row_of(rec_id)  # away: 503 (app.errors_as_json)
    return found[0] if found is not None and fetches_remote(request, found[0]) else None


def fetches_remote(request: web.Request, row: Recording) -> bool:
    """This node answers for `row` by fetching it from the node whose disk holds it."""
    remote = request.app.get(REMOTE_VOD)
    return remote is not None and not is_proxied(request.headers) and on_other_node(row, remote.node_id)


async def fetch_remote(request: web.Request, row: Recording) -> web.StreamResponse:
    """Answer a request for a file of `row` (one remote_row returned) from the node that recorded it."""
    return await request.app[REMOTE_VOD].fetch(request, row.node, f"recording {row.id}")


async def serve_remote_dvr(request: web.Request, key: StreamKey) -> web.StreamResponse | None:
    """The DVR playlist of `key` when another node is recording it (its newest row), else None. The
    playlist's ../../vod/ID.mp4 ranges then come through this node too."""
    remote = request.app.get(REMOTE_VOD)
    manager = request.app.get(RECORDINGS)
    if remote is None or manager is None or is_proxied(request.headers):
        return None
    rows, _ = await manager.catalog.list(app=key.app, stream=key.name, limit=1)
    row = rows[0] if rows else None
    if row is None or row.status != "recording" or not on_other_node(row, remote.node_id):
        return None
    return await remote.fetch(request, row.node, f"the recording of {key}")
