"""A worker's traffic with its siblings: what the node's /metrics must not count (node_metrics.py).

A viewer on a worker without the publisher is served from a copy the worker pulls over HTTP-FLV from the
publisher's worker, on loopback. Those bytes are counted twice by each worker's own metrics (ingress on
the puller, FLV egress on the pulled) though they never leave the machine. This counts them:

- ingress: the media of every stream whose publisher is an OriginPull (with workers, every OriginPull is
  a sibling's: a worker has no Redis cluster and no upstream), its streams that ended included;
- egress: the bytes sent to requests that carry the cluster credential (a sibling's pull), its ended
  pulls included.

Counters only grow, as Prometheus counters must: what an ended stream or pull had is kept.
"""

from __future__ import annotations

from aiohttp import web

from ..edge.flv import VIEWER
from ..edge.origin_pull import CREDENTIAL_HEADER, OriginPull
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream
from ..workers.node_metrics import SiblingTraffic

SWEEP_AT = 256
"""Pulls kept before the ended ones are let go at the next new one (each scrape of /metrics lets them go too)."""


class SiblingCounter:
    def __init__(self, registry: StreamRegistry) -> None:
        self._copies: dict[int, Stream] = {}
        self._ended_bytes = 0
        self._ended_frames = 0
        self._pulls: dict[int, web.BaseRequest] = {}
        self._ended_sent = 0
        registry.on_published.append(self._published)
        registry.on_stream_ended.append(self._ended)

    def wire(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._prepared)

    def _published(self, stream: Stream) -> None:
        if isinstance(stream.publisher, OriginPull):
            self._copies[id(stream)] = stream

    def _ended(self, stream: Stream) -> None:
        if self._copies.pop(id(stream), None) is not None:
            self._ended_bytes += stream.bytes_in
            self._ended_frames += stream.frames_in

    async def _prepared(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        # An FLV response is prepared before its viewer subscribes; the credential was checked by the
        # cluster's internal middleware, the outermost.
        if CREDENTIAL_HEADER in request.headers and request.path.endswith(".flv"):
            if len(self._pulls) >= SWEEP_AT:
                self._sweep()  # (also without a scrape of /metrics, ended pulls are let go)
            self._pulls[id(request)] = request

    def pull_viewer_ids(self) -> set[int]:
        """The subscriber ids of the siblings' pulls this worker serves now."""
        subs = (request.get(VIEWER) for request in list(self._pulls.values()))
        return {sub.id for sub in subs if sub is not None and not sub.closed}

    def _sweep(self) -> tuple[int, int]:
        """Let the ended pulls go (their bytes kept); (pulls served now, bytes sent to them)."""
        serving = 0
        sent = 0
        for key, request in list(self._pulls.items()):
            sub = request.get(VIEWER)
            if sub is not None and not sub.closed:
                serving += 1
                sent += sub.bytes_sent
            elif sub is not None or request.transport is None:  # the pull ended (or never subscribed)
                self._ended_sent += sub.bytes_sent if sub is not None else 0
                del self._pulls[key]
        return serving, sent

    def now(self) -> SiblingTraffic:
        serving, sent = self._sweep()
        live = list(self._copies.values())
        return SiblingTraffic(ingress_bytes=self._ended_bytes + sum(s.bytes_in for s in live),
                              ingress_frames=self._ended_frames + sum(s.frames_in for s in live),
                              egress_flv_bytes=self._ended_sent + sent, pulls_served=serving)
