"""A worker's part of the composition root (cli.serve): the node-local cluster it is a node of.

The supervisor names the worker in its environment (WORKER_ENV, SECRET_ENV). The worker then runs as a
cluster node of role "both" whose locator is the supervisor's stream book (client.LocalLocator): it binds
a private loopback HTTP port first and advertises it, so siblings pull its streams there (internal pulls
carry the per-start secret, as an edge's pulls carry the cluster's); it binds the public ports with
SO_REUSEPORT; its /metrics answers for the whole node (node_metrics.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from ..cluster.locator import NodeInfo
from ..config import Config, ConfigError
from ..log import event
from . import SECRET_ENV, WORKER_ENV
from .client import LocalLocator
from .node_metrics import Pulls, merge, merge_streams

log = logging.getLogger("mediaserver.workers")

LOCAL_HEADER = "X-Mediaserver-Worker"
"""On a sibling's request for /metrics or the stream list (with the secret): answer for this worker only."""
STREAMS_PATH = "/api/v1/streams"
SIBLING_TIMEOUT_S = 2.0


def node_id(index: int) -> str:
    return f"worker{index}"


class WorkerSetup:
    def __init__(self, index: int, socket_path: str, secret: str) -> None:
        self.index = index
        self.socket_path = socket_path
        self.secret = secret
        self.node_id = node_id(index)
        self.stop: Callable[[], None] = lambda: None
        """Set by cli.serve: ends the worker (the supervisor is gone)."""
        self.locator: LocalLocator | None = None
        self._private = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._private.bind(("127.0.0.1", 0))
        self._private.listen(128)
        self._private.setblocking(False)
        self.private_url = f"http://127.0.0.1:{self._private.getsockname()[1]}"
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerSetup | None:
        named = environ.get(WORKER_ENV)
        if not named:
            return None
        index, _, path = named.partition(":")
        secret = environ.get(SECRET_ENV, "")
        if not index.isdigit() or not path or len(secret) < 16:
            raise ConfigError(f"{WORKER_ENV}={named!r} is set by the supervisor only; unset it to run a server")
        return cls(int(index), path, secret)

    def adapt(self, config: Config) -> Config:
        """The worker's config: a node of role "both" advertising its private port."""
        cluster = dataclasses.replace(config.cluster, role="both", node_id=self.node_id,
                                      advertise_url=self.private_url, redis_url="", upstream="",
                                      serve_edges=False, max_pulls=0, max_pulls_per_client=0)
        return dataclasses.replace(config, cluster=cluster)

    def environ(self, environ: Mapping[str, str], config: Config) -> dict[str, str]:
        return {**environ, config.cluster.secret_env: self.secret}

    def make_locator(self, node: Callable[[], NodeInfo]) -> LocalLocator:
        self.locator = LocalLocator(self.socket_path, node, self.index, on_lost=lambda: self.stop())
        return self.locator

    def wire(self, app: web.Application) -> None:
        app.middlewares.insert(0, self._node_view)

    async def start_private(self, runner: web.AppRunner) -> None:
        """Serve the app on the private loopback port too (siblings' pulls and metrics)."""
        await web.SockSite(runner, self._private).start()

    async def ready(self) -> None:
        if self.locator is not None:
            await self.locator.ready()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # ----- /metrics and the stream list for the whole node ------------------------------------------

    @web.middleware
    async def _node_view(self, request: web.Request, handler):
        path = request.path
        if request.method != "GET" or path not in ("/metrics", STREAMS_PATH) or (
                path == STREAMS_PATH and "scope" in request.query):
            return await handler(request)
        own = await handler(request)  # the token check and this worker's own answer
        if request.headers.get(LOCAL_HEADER) == self.secret or self.locator is None:
            return own
        if not isinstance(own, web.Response) or own.status != 200 or own.body is None:
            return own
        nodes = await self.locator.nodes()
        claims = await self.locator.claims()
        label = {n.id: n.id.removeprefix("worker") for n in nodes}
        label[self.node_id] = str(self.index)
        answers = {str(self.index): bytes(own.body).decode()}  # type: ignore[arg-type]
        siblings = [n for n in nodes if n.id != self.node_id]
        fetched = await asyncio.gather(*(self._fetch(n.http + path, request) for n in siblings))
        for node, text in zip(siblings, fetched):
            if text is not None:
                answers[label[node.id]] = text
        answers = dict(sorted(answers.items()))
        if path == "/metrics":
            body = merge(answers, Pulls.of(nodes, claims, label))
            return web.Response(body=body.encode(), headers={
                "Content-Type": own.headers.get("Content-Type", "text/plain"), "Cache-Control": "no-store"})
        lists = {}
        for worker, text in answers.items():
            try:
                lists[worker] = list(json.loads(text)["streams"])
            except (ValueError, KeyError, TypeError):
                continue
        owners = {s: label[o.node] for s, o in claims.items() if o.node in label}
        return web.json_response({"streams": merge_streams(lists, owners), "workers": len(answers)})

    async def _fetch(self, url: str, request: web.Request) -> str | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(trust_env=False)
        headers = {LOCAL_HEADER: self.secret, "Accept": "text/plain"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        try:
            async with self._session.get(url, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)) as resp:
                if resp.status != 200:
                    return None
                return await resp.text()
        except (aiohttp.ClientError, asyncio.TimeoutError, UnicodeDecodeError) as err:
            event(log, "worker_sibling_unreachable", logging.WARNING, url=url, error=str(err)[:200])
            return None
