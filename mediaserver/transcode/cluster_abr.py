"""ABR across a cluster: one transcode job per source stream cluster-wide, claimed in Redis like a stream.

A stream's job is claimed under the name "APP/NAME@" (no stream can be called that: '@' never ends a
name), with the same claims, refreshes and takeovers as published streams (cluster/locator.py). The node
holding the claim pulls the source from its origin (an ordinary internal pull), runs the job in its
TranscodePool, and claims and announces each rendition STREAM@LABEL as the streams it publishes; every
other node finds a rendition as it finds any stream (a lookup, then a pull) and lists the ladder in its
multivariant playlists from the claims.

Who takes a job: nodes with role "transcoder" when the cluster has any (a node that needs renditions
sends ABR_WANTED news and waits for a transcoder's claim; the transcoders race for it, the less loaded one
a little earlier); otherwise the node that first needs the renditions makes them itself. A transcoder
that dies stops refreshing its heartbeat: the other transcoders scan the job claims every `scan_s` and
take over those of dead nodes whose source is still published, so the renditions come back within about
node_ttl + scan_s + a GOP, and the edges' pulls of them reconnect (a discontinuity).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..auth.names import RENDITION_SEPARATOR, split_rendition
from ..cluster.locator import ABR_WANTED, ClusterEvent, Owner, StreamLocator
from ..hub.stream import Stream, StreamKey
from ..log import event
from .ladder import plan_ladder
from .pool import DEFAULT_AUDIO_BPS, TranscodePool
from .service import AbrRefusal, RenditionView

log = logging.getLogger(__name__)

JOB_SUFFIX = RENDITION_SEPARATOR
SCAN_S = 0.5
"""How often a transcoder looks for jobs whose node died."""
POLL_S = 0.1
LOAD_DELAY_S = 0.05
"""Per running job, how much later a transcoder answers ABR_WANTED: the least loaded one tends to win."""
NODES_CACHE_S = 2.0

PullSource = Callable[[StreamKey], Awaitable[Stream | None]]
"""Pull a stream of another node to this one (an internal pull); None when nobody publishes it."""
Claims = Callable[[], Awaitable[dict[str, Owner]]]


def job_claim(source: StreamKey) -> str:
    return f"{source.app}/{source.name}{JOB_SUFFIX}"


class ClusterAbr:
    """The AbrService of a node in a cluster (the edge's ABR key, the gate's rendition lookups, the API)."""

    def __init__(self, pool: TranscodePool, locator: StreamLocator, node_id: str, http_url: str, *,
                 transcoder: bool, pull_source: PullSource, claims: Claims | None = None,
                 wall_clock: Callable[[], float] = time.time, scan_s: float = SCAN_S) -> None:
        self.pool = pool
        self.locator = locator
        self.node_id = node_id
        self.http_url = http_url
        self.transcoder = transcoder
        self.pull_source = pull_source
        self.claims = claims
        """Every claim in the cluster, dead nodes' included (for the takeover scan of transcoders)."""
        self._wall = wall_clock
        self.scan_s = scan_s
        self.owned: dict[StreamKey, Owner] = {}
        """Job claims this node holds."""
        self.taken_over = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._taking: set[StreamKey] = set()
        self._nodes: tuple[float, bool] = (-1e9, False)
        self._scan_task: asyncio.Task[None] | None = None
        locator.watch(self.on_event)
        pool.on_job_ended.append(self._job_ended)

    @property
    def registry(self):
        return self.pool.registry

    # ----- AbrService -----------------------------------------------------------------------------------

    def enabled_for(self, source: StreamKey) -> bool:
        return self.pool.enabled_for(source)

    async def renditions(self, source: StreamKey, *, start: bool = True) -> list[RenditionView] | AbrRefusal:
        if self.pool.job(source) is not None or self.pool._encoder_ladder(source):
            return await self.pool.renditions(source, start=start)
        holder = await self._holder(source, start)
        if isinstance(holder, AbrRefusal):
            return holder
        if holder is None:
            return []
        if holder.node == self.node_id:
            return await self.pool.renditions(source, start=start)
        return await self._remote_views(source, wait=start)

    # ----- the gate: a viewer names a rendition that is not on this node ---------------------------------

    async def locate(self, key: StreamKey) -> Stream | AbrRefusal | None:
        """The stream of rendition `key` on this node (made here, or pulled from the node making it); None
        when it must be pulled (the caller pulls it as any stream of another node)."""
        local = self.registry.get(key)
        if local is not None and not local.ended:
            return local
        if await self.locator.lookup(str(key)) is not None:
            return None  # published on another node: pulled like any stream
        unknown = self.pool.unknown_rendition(key)
        if unknown is not None:
            return unknown  # before any claim: a made-up label must not start a transcode on any node
        source = StreamKey(key.app, split_rendition(key.name)[0])
        holder = await self._holder(source, True)
        if isinstance(holder, AbrRefusal):
            return holder
        if holder is None:
            return AbrRefusal(503, "no_transcoder", f"no node took the transcode of stream {source}",
                              f"try again in a few seconds (waited {self.pool.abr.wait:g} s, abr.wait)")
        if holder.node == self.node_id:
            return await self.pool.locate(key)
        if await self._wait_claimed([str(key)]):
            return None
        return AbrRefusal(503, "starting", f"rendition {key} is still starting on node {holder.node}",
                          f"try again in a few seconds; it waited {self.pool.abr.wait:g} s (abr.wait)")

    # ----- for the admin API (this node's jobs; a job elsewhere is named) -----------------------------------

    async def start(self, source: StreamKey):
        holder = await self._holder(source, True)
        if isinstance(holder, AbrRefusal):
            return holder
        if holder is not None and holder.node != self.node_id:
            return AbrRefusal(409, "elsewhere", f"stream {source} is transcoded on node {holder.node}",
                              f"ask that node ({holder.http}) to start or stop it")
        return await self.pool.start(source)

    async def stop(self, source: StreamKey, reason: str = "stopped_by_operator") -> bool:
        return await self.pool.stop(source, reason)

    def job(self, source: StreamKey):
        return self.pool.job(source)

    def status(self, source: StreamKey) -> dict[str, Any]:
        return self.pool.status(source)

    def snapshot(self) -> dict[str, Any]:
        return {**self.pool.snapshot(), "transcoder": self.transcoder, "jobs_taken_over": self.taken_over}

    def __getattr__(self, name: str) -> Any:  # metrics read the pool's counters through the service
        return getattr(self.pool, name)

    # ----- who runs a job ---------------------------------------------------------------------------------

    async def _holder(self, source: StreamKey, start: bool) -> Owner | AbrRefusal | None:
        """The owner of `source`'s job claim; with `start`, this node or a transcoder takes it first."""
        name = job_claim(source)
        holder = await self.locator.lookup(name)
        if holder is not None or not start:
            return holder
        if not self.pool.enabled_for(source):
            return await self.pool.renditions(source, start=False) or None  # the pool's own 404
        if self.transcoder or not await self._transcoders_exist():
            return await self._take(source)
        await self.locator.send(ClusterEvent(kind=ABR_WANTED, sender=self.node_id, stream=str(source)))
        deadline = time.monotonic() + self.pool.abr.wait
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            holder = await self.locator.lookup(name)
            if holder is not None:
                return holder
        return None

    async def _take(self, source: StreamKey) -> Owner | AbrRefusal | None:
        """Claim `source`'s job for this node and start it here (the source pulled first if need be)."""
        if source in self._taking:
            while source in self._taking:
                await asyncio.sleep(POLL_S)
            return await self.locator.lookup(job_claim(source))
        self._taking.add(source)
        try:
            mine = Owner(node=self.node_id, http=self.http_url, since=self._wall(), claim=secrets.token_hex(8))
            holder = await self.locator.announce(job_claim(source), mine)
            if holder.node != self.node_id:
                return holder
            self.owned[source] = holder
            local = self.registry.get(source)
            if local is None or local.ended:
                local = await self.pull_source(source)
            if local is None:
                await self._give_up(source)
                return AbrRefusal(404, "no_source", f"stream {source} is not being published in the cluster",
                                  "publish it first; its renditions start on their first request")
            started = await self.pool.start(source)
            if isinstance(started, AbrRefusal):
                await self._give_up(source)
                return started
            event(log, "cluster_transcode", stream=str(source), node=self.node_id)
            return holder
        finally:
            self._taking.discard(source)

    async def _give_up(self, source: StreamKey) -> None:
        owner = self.owned.pop(source, None)
        if owner is not None:
            await self.locator.withdraw(job_claim(source), owner)

    def _job_ended(self, source: StreamKey) -> None:
        if source in self.owned:
            self._spawn(self._give_up(source))

    async def _transcoders_exist(self) -> bool:
        at, exist = self._nodes
        now = time.monotonic()
        if now - at > NODES_CACHE_S:
            nodes = await self.locator.nodes()
            exist = any(n.role == "transcoder" for n in nodes)
            self._nodes = (now, exist)
        return exist

    # ----- renditions made on another node ------------------------------------------------------------------

    async def _remote_views(self, source: StreamKey, wait: bool) -> list[RenditionView]:
        """The ladder of a job running elsewhere, from the source's size here and the renditions' claims."""
        stream = self.registry.get(source)
        if stream is None or not stream.info.width or not stream.info.height:
            return []
        rungs = plan_ladder(self.pool.abr.ladder, stream.info.width, stream.info.height)
        names = {r.label: f"{source.app}/{r.stream_name(source.name)}" for r in rungs}
        if wait:
            await self._wait_claimed(list(names.values()))
        audio = stream.info.metadata_values.get("audiodatarate")
        audio_bps = (int(audio * 1000) if isinstance(audio, (int, float)) and not isinstance(audio, bool) and audio > 0
                     else DEFAULT_AUDIO_BPS) if stream.info.audio_config is not None else 0
        views = []
        for rung in rungs:
            if await self.locator.lookup(names[rung.label]) is None:
                continue
            views.append(RenditionView(rung.label, StreamKey(source.app, rung.stream_name(source.name)), rung.width,
                                       rung.height, rung.video_kbps * 1000 + audio_bps, rung.codec))
        return views

    async def _wait_claimed(self, names: list[str]) -> bool:
        deadline = time.monotonic() + self.pool.abr.wait
        while True:
            found = [await self.locator.lookup(n) for n in names]
            if all(f is not None for f in found):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    # ----- transcoders: news and takeovers -------------------------------------------------------------------

    def on_event(self, message: ClusterEvent) -> None:
        if message.kind == ABR_WANTED and self.transcoder and message.stream:
            app, _, name = message.stream.partition("/")
            self._spawn(self._answer(StreamKey(app, name)))

    async def _answer(self, source: StreamKey) -> None:
        running = sum(1 for j in self.pool.jobs.values() if not j.stopped)
        if running >= self.pool.max_jobs:
            return  # no room here: another transcoder takes it
        await asyncio.sleep(LOAD_DELAY_S * running)
        if await self.locator.lookup(job_claim(source)) is None:
            await self._take(source)

    async def start_scanning(self) -> None:
        if self.transcoder and self._scan_task is None:
            self._scan_task = asyncio.get_running_loop().create_task(self._scan(), name="abr takeover scan")

    async def _scan(self) -> None:
        claims = self.claims
        if claims is None:
            return
        while True:
            await asyncio.sleep(self.scan_s)
            try:
                for name in await claims():
                    if not name.endswith(JOB_SUFFIX) or len(self.pool.jobs) >= self.pool.max_jobs:
                        continue
                    if await self.locator.lookup(name) is not None:
                        continue  # its node is alive
                    app, _, rest = name[: -len(JOB_SUFFIX)].partition("/")
                    source = StreamKey(app, rest)
                    if await self.locator.lookup(str(source)) is None:
                        continue  # the source is gone too: nothing to take over
                    holder = await self._take(source)
                    if isinstance(holder, Owner) and holder.node == self.node_id:
                        self.taken_over += 1
                        event(log, "cluster_transcode_taken_over", stream=str(source))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ABR takeover scan failed; retrying")

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for source in list(self.owned):
            await self._give_up(source)
