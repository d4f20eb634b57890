"""RecordingManager: which streams this node records, their Recorders (hub sinks) and the catalog rows.

`mode = "api"`: an operator starts and stops a stream's recording (`start`/`stop`, the admin API);
`"all"`: every stream of `apps` is recorded from its first publish; `"off"`: nothing (the routes say so).
A recording follows its stream: a publisher reconnecting within the hub's grace continues the same file
(the Recorder stays attached to the Stream), the end of the stream ends it.

Each file gets a catalog row when it opens (status "recording"), its size and duration as it grows (every
PROGRESS_S, all recordings' rows in one transaction) and its end when it closes ("complete", or "failed" after a disk error). The
Recorder's callbacks are synchronous (the hub's), so catalog writes go through one queue, in order, on a
task of their own; a catalog that is away is retried with backoff, and the files are written meanwhile.
At start, rows this node left "recording" (the server was killed) are closed as "interrupted" with the
duration and size read from their files (`vod.index_file`: up to the last whole fragment).

The Recorders' writes, fsyncs (every record.fsync_interval and at a file's close) and closes run in
order on one thread (writer.DiskWriter), so a disk that does not keep up never stalls the event loop.
Retention, the free-space guard and the catalog's readiness are `upkeep.Upkeep`'s: while record.path is
short of space every recording stops (`pause_all`) and new ones are refused (507); they resume in new
files when it returns (`resume_paused`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..config import RecordConfig
from ..errors import MediaError
from ..hub.registry import StreamRegistry
from ..hub.stream import Stream, StreamKey
from ..log import event
from .catalog import Catalog, CatalogUnavailable, Recording
from .disk import DiskGuard
from .dvr import DvrTrail
from .objectstore import ObjectStore, StorageError
from .recorder import FAILED, FileClosed, Recorder
from .retention import GB
from .upkeep import RecordingStats, Upkeep
from .uploader import Uploader
from .vod import VodIndex, index_file
from .writer import DiskWriter

log = logging.getLogger(__name__)

PROGRESS_S = 30.0
"""Growing files' sizes and durations go to their catalog rows this often (and at their end), every
recording's in one transaction: a row updated on its own costs 2 ms of CPU on SQLite, 50 at once 2 ms in all
(Catalog.progress). The file is the truth after a crash (the row is mended from it at the next start)."""
FILE_CACHE_S = 2.0
"""How long file_of keeps a row it read: every VOD request asks (each range a player fetches), and a catalog
read costs about a millisecond of CPU; a status change (the end of a recording) shows within this."""
SYNC_S = 1.0
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Pauses between tries of a catalog write while the database is away; the last one repeats."""


def _when(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, timezone.utc)


def summary(row: Recording) -> dict[str, Any]:
    """A row as the API and the on_record_done webhook show it: ISO times, the VOD URLs, not the file's path."""
    body = asdict(row)
    for name in ("started_at", "ended_at", "created_at", "updated_at"):
        value = body.get(name)
        body[name] = value.isoformat().replace("+00:00", "Z") if value is not None else None
    body.pop("location", None)  # where the file lies is the server's business; /vod/ID.mp4 serves it
    body["storage"] = "s3" if row.location.startswith("s3://") else "local"  # which, an operator may ask
    body["vod"] = {"mp4": f"/vod/{row.id}.mp4", "hls": f"/vod/{row.id}/index.m3u8", "dash": f"/vod/{row.id}/manifest.mpd"}
    return body


def failure_reason(error: str | None) -> str:
    """disk_full for ENOSPC (and a quota), else disk_error: the metric's label of a failed file."""
    full = (f"[Errno {errno.ENOSPC}]", f"[Errno {errno.EDQUOT}]")
    return "disk_full" if error is not None and error.startswith(full) else "disk_error"


def catalog_url(cfg: RecordConfig) -> str:
    if cfg.database_url:
        return cfg.database_url
    return f"sqlite+aiosqlite:///{Path(cfg.path).resolve() / 'recordings.db'}"


class NotRecordable(Exception):
    """Why a stream cannot be recorded now, as an HTTP status and a hint."""

    def __init__(self, status: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.status = status
        self.hint = hint


class ElsewhereError(Exception):
    """A recording whose file lies on another node's disk: only that node can delete it."""

    def __init__(self, rec_id: str, node: str) -> None:
        super().__init__(f"recording {rec_id} is on the disk of node {node}")
        self.node = node


def _mend(path: Path) -> VodIndex:
    """An interrupted recording's file, cut back to its last whole fragment (what a killed writer left of
    the next one is of no use to a player, and the row's size must be what /vod/ID.mp4 sends)."""
    with open(path, "rb") as f:
        index = index_file(f)
    if index.trailing_bytes:
        try:
            os.truncate(path, index.total_bytes)
        except OSError as err:  # read-only: the file stays as it is; VOD serves its whole fragments anyway
            event(log, "recording_not_mended", logging.WARNING, path=str(path), error=str(err))
    return index


def on_other_node(row: Recording, node: str) -> bool:
    """The row's file is local to another node (not in object storage, which every node reaches)."""
    return row.node != node and not row.location.startswith("s3://")


class _Recording:
    """One stream's recording: its Recorder and the catalog row of the file being written."""

    def __init__(self, manager: RecordingManager, stream: Stream) -> None:
        self.manager = manager
        self.stream = stream
        self.row: Recording | None = None
        self.figures: tuple[int, float] | None = None
        """The current file's (bytes, duration_s) not yet handed to the manager's next progress write."""
        self.written = 0  # bytes of the current file already counted in the stats
        cfg = manager.cfg
        self.recorder = Recorder(
            stream.key, cfg.path, template=cfg.template, segment_minutes=cfg.segment_minutes,
            fragment_s=cfg.fragment_duration, fsync_interval_s=cfg.fsync_interval, on_file_opened=self._opened,
            on_progress=self._progress, on_file_closed=self._closed, on_tail_lost=self._tail_lost,
            disk=manager.disk_writer,
        )
        self.closed_rows: dict[Path, str] = {}
        """The row ids of the last files closed, by path: a tail lost on the writer's thread finds its row."""
        self.dvr = DvrTrail(cfg.dvr_window)
        """The files of this recording the DVR window reaches (edge/vod.py serves it)."""
        self.dvr_text: tuple[tuple, asyncio.Future[tuple[bytes, bytes]]] | None = None
        """The DVR playlist last rendered (or being rendered), by DvrTrail.key()."""

    def _opened(self, path: Path, started_at: float) -> None:
        self.written = 0
        info = self.stream.info
        self.row = Recording.start(
            self.stream.key.app, self.stream.key.name, self.manager.node, str(path), _when(started_at),
            video_codec=info.video_codec, audio_codec=info.audio_codec, width=info.width, height=info.height,
        )
        row = self.row
        self.manager._queue(lambda: self.manager.catalog.add(row))
        self.dvr.opened(row.id, path, started_at)
        event(log, "recording_file", stream=str(self.stream.key), id=row.id, path=str(path))

    def _progress(self, size: int, duration_s: float) -> None:
        self.manager.stats.bytes_written += size - self.written
        self.written = size
        if self.row is not None:
            self.figures = (size, duration_s)  # the manager writes it with every row's, every PROGRESS_S

    def _closed(self, closed: FileClosed) -> None:
        manager = self.manager
        manager.stats.bytes_written += max(0, closed.bytes - self.written)
        self.written = 0
        row = self.row
        self.row = None
        self.figures = None  # the row's end carries them
        if row is not None:
            self.dvr.closed(row.id, closed.bytes)
            self.closed_rows[closed.path] = row.id
            while len(self.closed_rows) > 4:
                del self.closed_rows[next(iter(self.closed_rows))]
        if closed.status == FAILED:
            manager.stats.failures[failure_reason(closed.error)] += 1
            manager.upkeep.check_disk_soon()  # a full disk: stop every recording now, resume them later
            event(log, "recording_failed", logging.ERROR, stream=str(self.stream.key), id=row.id if row else None,
                  path=str(closed.path), error=closed.error,
                  hint="free disk space or check the disk; the file plays up to its last fragment, live viewers "
                  "are not affected")
        if row is None:
            return
        status = "failed" if closed.status == FAILED else "complete"
        ended = _when(closed.started_at + closed.duration_s)

        async def finish() -> None:
            # record.storage = "s3": the row waits "uploading" and on_record_done with it, until the file is final
            uploading = manager.uploader is not None and closed.bytes > 0
            done = await manager.catalog.update(
                row.id, ended_at=ended, duration_s=closed.duration_s, bytes=closed.bytes,
                status="uploading" if uploading else status, final_status=status if uploading else None,
                width=closed.width or None, height=closed.height or None)
            manager._files.pop(row.id, None)  # the row kept for serving said "recording": VOD playlists end now
            if done is not None and manager.uploader is not None and uploading:
                manager.uploader.submit(done.id)
            elif done is not None:
                for listener in list(manager.listeners):
                    listener(done)

        manager._queue(finish)

    def _tail_lost(self, path: Path, size: int, err: OSError) -> None:
        """The last pieces of a closed file did not reach the disk: its row says "failed", with the size and
        duration of what the file holds (it plays up to its last whole fragment)."""
        rec_id = self.closed_rows.get(path)
        if rec_id is None:
            return
        manager = self.manager
        manager.stats.failures[failure_reason(str(err))] += 1
        manager.upkeep.check_disk_soon()
        self.dvr.closed(rec_id, size)  # the next file's numbering waits for this one to be whole at its size

        def read_duration() -> float | None:
            try:
                with open(path, "rb") as f:
                    return index_file(f).duration_s
            except (OSError, MediaError):
                return None  # no whole fragment: the size says what is left

        async def correct() -> None:
            duration = await asyncio.to_thread(read_duration)  # (the disk just failed: off the loop)
            fields: dict = {"bytes": size, "status": "failed"}
            if duration is not None:
                fields["duration_s"] = duration
            row = await manager.catalog.get(rec_id)
            if row is None:
                return
            if row.status == "uploading":
                fields["final_status"] = fields.pop("status")  # the upload goes on, of what the file holds
            if duration is not None:
                fields["ended_at"] = row.started_at + timedelta(seconds=duration)
            manager._files.pop(rec_id, None)
            await manager.catalog.update(rec_id, **fields)

        manager._queue(correct)


class RecordingManager:
    def __init__(self, registry: StreamRegistry, cfg: RecordConfig, catalog: Catalog, node: str,
                 relay: Callable[[Stream], bool] | None = None) -> None:
        self.registry = registry
        self.relay = relay or (lambda stream: False)
        """A stream this node copies from another (an edge's pull): its origin records it, never this node."""
        self.cfg = cfg
        self.catalog = catalog
        self.node = node
        self.active: dict[StreamKey, _Recording] = {}
        self._ops: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._progress_due: dict[str, tuple[int, float]] = {}
        """Rows' (bytes, duration_s) waiting for the catalog: one entry per row, the newest figures."""
        self._progress_queued = False
        self._progress_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self.failed_writes = 0
        self.listeners: list[Callable[[Recording], None]] = []
        """Told each finished file's final row (the on_record_done webhook): see `add_listener`."""
        self._recovered: list[Recording] = []
        """The rows `_recover` closed as interrupted at start, for the listeners that come after."""
        self.disk_writer: DiskWriter | None = None
        """The recordings' writes, on a thread of their own (set by `open`, which has a running loop)."""
        self.uploader: Uploader | None = None
        """record.storage = "s3": sends finished files to the bucket."""
        self.stats = RecordingStats()
        self.disk = DiskGuard(int(cfg.min_free_gb * GB))
        self.paused: set[StreamKey] = set()
        """Streams whose recording the disk guard stopped: they resume when space returns."""
        self.upkeep = Upkeep(self)
        self._files: dict[str, tuple[float, Recording, Path | None]] = {}
        self._lookups: dict[str, asyncio.Future[tuple[Recording, Path | None] | None]] = {}
        registry.on_published.append(self._published)
        registry.on_stream_ended.append(self._ended)

    @classmethod
    async def open(cls, registry: StreamRegistry, cfg: RecordConfig, node: str,
                   relay: Callable[[Stream], bool] | None = None) -> RecordingManager:
        Path(cfg.path).mkdir(parents=True, exist_ok=True)
        store = await ObjectStore.open(cfg.s3) if cfg.storage == "s3" else None  # first: aiobotocore missing?
        try:
            catalog = await Catalog.open(catalog_url(cfg))
        except BaseException:
            if store is not None:
                await store.close()
            raise
        manager = cls(registry, cfg, catalog, node, relay)
        manager.disk_writer = DiskWriter(asyncio.get_running_loop(), direct=cfg.direct_io)
        await manager._recover()
        await manager.upkeep.check_disk()  # a full disk refuses recordings from the first stream on
        if store is not None:
            manager.uploader = Uploader(catalog, store, cfg, node, manager._final, held=manager._dvr_holds,
                                        written=manager.disk_writer.caught_up)
            await manager.uploader.start()
        loop = asyncio.get_running_loop()
        manager._tasks = [loop.create_task(manager._writer(), name="recording catalog"),
                          loop.create_task(manager._syncer(), name="recording fsync"), *manager.upkeep.tasks()]
        return manager

    # ----- what an operator asks ------------------------------------------------------------------

    def applies(self, key: StreamKey) -> bool:
        return self.cfg.mode != "off" and ("*" in self.cfg.apps or key.app in self.cfg.apps)

    def start(self, key: StreamKey) -> _Recording:
        """Record `key` from now (its kept history first, so the file starts at a keyframe)."""
        if not self.applies(key):
            raise NotRecordable(404, f"recording is off for stream {key}",
                                "set record.mode = \"api\" or \"all\" and add the app to record.apps")
        stream = self.registry.get(key)
        if stream is None or stream.ended or stream.publisher is None:
            raise NotRecordable(404, f"stream {key} is not being published",
                                "publish it first, then ask for its recording")
        if self.relay(stream):
            raise NotRecordable(409, f"stream {key} is copied here from the node that publishes it",
                                "ask its origin, which records it (GET /api/v1/streams?scope=cluster names the node)")
        if self.disk.low:
            free = self.disk.free_bytes or 0
            raise NotRecordable(507, f"{self.cfg.path} has {free / 1e9:.3g} GB free, under record.min_free_gb = "
                                f"{self.cfg.min_free_gb:g}: recording is stopped",
                                "free space on the recordings disk (or lower record.max_total_gb / max_age_days); "
                                "recordings resume by themselves when it returns")
        found = self.active.get(key)
        if found is not None and not found.recorder.stopped:
            return found
        if found is not None:
            self._detach(key)  # ended by a disk error: its sink leaves the stream, a new file starts
        rec = self.active[key] = _Recording(self, stream)
        for frame in stream.history():
            rec.recorder.on_frame(frame)
        stream.add_sink(rec.recorder)
        event(log, "recording_started", stream=str(key), mode=self.cfg.mode)
        return rec

    def stop(self, key: StreamKey) -> bool:
        paused = key in self.paused
        self.paused.discard(key)  # an operator's stop also cancels a resume after a full disk
        if not self._detach(key):
            return paused
        event(log, "recording_stopped", stream=str(key))
        return True

    def _detach(self, key: StreamKey) -> bool:
        rec = self.active.pop(key, None)
        if rec is None:
            return False
        rec.stream.remove_sink(rec.recorder)
        rec.recorder.stop()  # its file's last fsync and close are queued on the DiskWriter's thread
        return True

    def pause_all(self) -> list[StreamKey]:
        """The disk is short of space: stop every recording, to resume them with `resume_paused`."""
        keys = []
        for key, rec in list(self.active.items()):
            if not rec.recorder.stopped:
                self.stats.failures["disk_low"] += 1
            if not rec.stream.ended:
                keys.append(key)
            self._detach(key)
        self.paused.update(keys)
        return keys

    def resume_paused(self) -> list[StreamKey]:
        """Space is back: record the paused streams that are still live again (new files, new rows)."""
        resumed = []
        for key in sorted(self.paused, key=str):
            try:
                self.start(key)
                resumed.append(key)
            except NotRecordable:
                pass  # ended meanwhile
        self.paused.clear()
        return resumed

    @property
    def pending_writes(self) -> int:
        """Catalog writes waiting (for a database that is away)."""
        return self._ops.qsize()

    def current(self, key: StreamKey) -> str | None:
        """The id of the row of the file `key` is being recorded to, if it is."""
        rec = self.active.get(key)
        return rec.row.id if rec is not None and rec.row is not None else None

    def _dvr_holds(self, row: Recording) -> bool:
        """Whether the live DVR window of the row's stream still reaches its file (the uploader keeps the copy)."""
        rec = self.active.get(StreamKey(row.app, row.stream))
        return rec is not None and not rec.recorder.stopped and rec.dvr.holds(row.id)

    def _final(self, row: Recording) -> None:
        for listener in list(self.listeners):
            listener(row)

    def add_listener(self, listener: Callable[[Recording], None]) -> None:
        """Tell `listener` of every finished file's final row from now on (the on_record_done webhook), and
        at once of the rows this start found interrupted (the server was killed while they were written)."""
        self.listeners.append(listener)
        for row in self._recovered:
            listener(row)

    # ----- registry hooks -------------------------------------------------------------------------

    def _published(self, stream: Stream) -> None:
        if (self.cfg.mode == "all" and self.applies(stream.key) and "@" not in stream.key.name
                and not self.relay(stream)):  # renditions and other nodes' streams: recorded where they are made
            if self.disk.low:
                self.paused.add(stream.key)  # recorded when space returns
            elif (found := self.active.get(stream.key)) is None or found.recorder.stopped:
                self.start(stream.key)  # (stopped: a disk error ended it; a new publish tries a new file)

    def _ended(self, stream: Stream) -> None:
        self.paused.discard(stream.key)
        rec = self.active.get(stream.key)
        if rec is not None and rec.stream is stream:
            del self.active[stream.key]  # the hub ended the Recorder with the stream (Sink.on_end)

    # ----- background -----------------------------------------------------------------------------

    def _queue(self, op: Callable[[], Awaitable[Any]]) -> None:
        self._ops.put_nowait(op)

    def report_progress(self) -> None:
        """Every recording's newest size and duration, to the catalog in one write (`_syncer` calls it every
        PROGRESS_S). One write waits at most, carrying each row's newest figures, so a database away for
        hours holds one pending update per recording, not one per PROGRESS_S. A row's figures are taken
        while its file is open, so they are queued before the write that ends it."""
        for rec in self.active.values():
            if rec.row is not None and rec.figures is not None:
                self._progress_due[rec.row.id] = rec.figures
                rec.figures = None
        if self._progress_due and not self._progress_queued:
            self._progress_queued = True
            self._queue(self._write_progress)

    async def _write_progress(self) -> None:
        while self._progress_due:  # figures that came during a write go in the next
            due, self._progress_due = self._progress_due, {}
            try:
                await self.catalog.progress(due)
            except BaseException as err:
                for rec_id, figures in due.items():
                    self._progress_due.setdefault(rec_id, figures)  # for the next try, unless newer came
                if not isinstance(err, CatalogUnavailable):
                    self._progress_queued = False  # `_writer` drops this write: the next report queues one
                raise  # the database is away: `_writer` tries this same write again
        self._progress_queued = False

    async def _writer(self) -> None:
        """Catalog writes in order. One that fails for the database's absence is retried, with a backoff
        capped at RETRY_S[-1], until the database is back (the writes after it wait: their order matters)."""
        while True:
            op = await self._ops.get()
            failures = 0
            while True:
                try:
                    await op()
                    if failures:
                        event(log, "recording_catalog_back", pending=self._ops.qsize(), retries=failures)
                    break
                except CatalogUnavailable as err:
                    if failures == 0:
                        self.stats.failures["catalog"] += 1
                        event(log, "recording_catalog_unavailable", logging.WARNING, error=str(err),
                              hint="the files are written meanwhile; the rows follow when it returns")
                    await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
                    failures += 1
                except Exception:
                    log.exception("recording catalog write failed")
                    break
            self._ops.task_done()

    async def _syncer(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            if time.monotonic() - self._progress_at >= PROGRESS_S:
                self._progress_at = time.monotonic()
                self.report_progress()
            await self._sync()

    async def _sync(self) -> None:
        """The fsyncs due: queued on the DiskWriter's thread after each file's writes (a Recorder without one
        hands back jobs, run here in a thread; each closes its duplicate descriptor, even when it fails)."""
        for job in [job for rec in list(self.active.values()) for job in rec.recorder.take_sync_jobs()]:
            try:
                await asyncio.to_thread(job)
            except OSError as err:
                self.failed_writes += 1
                self.stats.failures["fsync"] += 1
                event(log, "recording_fsync_failed", logging.ERROR, error=str(err))

    async def _recover(self) -> None:
        """Rows left "recording" by this node (it was killed): closed as interrupted, from their files."""
        for row in await self.catalog.interrupted(self.node):
            path = Path(row.location)
            try:
                index = await asyncio.to_thread(_mend, path)  # open, read and cut off the loop
                duration, size = index.duration_s, index.total_bytes
            except (OSError, MediaError) as err:
                event(log, "recording_unreadable", logging.WARNING, id=row.id, path=str(path), error=str(err))
                duration, size = row.duration_s, row.bytes
            done = await self.catalog.finish(row.id, row.started_at + timedelta(seconds=duration), duration, size,
                                             status="interrupted")
            event(log, "recording_interrupted", id=row.id, stream=f"{row.app}/{row.stream}",
                  duration_s=round(duration, 1), bytes=size)
            if done is not None and self.cfg.storage != "s3":  # (to the bucket first: the Uploader tells then)
                self._recovered.append(done)
        if self.cfg.storage != "s3":  # back to local storage: uploads cut short are left local, as they were
            for row in await self.catalog.unuploaded(self.node, uploading_only=True):
                await self.catalog.update(row.id, status=row.final_status or "complete", final_status=None)

    async def close(self) -> None:
        for key in list(self.active):
            self.stop(key)
        if self.disk_writer is not None:
            try:  # files the writer's thread creates only now are told to the catalog before it closes
                await asyncio.wait_for(self.disk_writer.caught_up(), 10.0)
            except TimeoutError:
                pass  # a stalled disk: what it holds is logged below as unsaved
        try:
            await asyncio.wait_for(self._ops.join(), 10.0)
        except TimeoutError:
            event(log, "recording_catalog_unsaved", logging.WARNING, pending=self._ops.qsize())
        if self.disk_writer is not None:
            await asyncio.to_thread(self.disk_writer.stop, 30.0)  # every file written, synced and closed
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.uploader is not None:
            await self.uploader.close()
        await self.catalog.close()

    # ----- files --------------------------------------------------------------------------------

    async def file_of(self, rec_id: str) -> tuple[Recording, Path] | None:
        """A recording's row and its local file (None when unknown or not on this node's disk)."""
        found = await self.row_of(rec_id)
        return (found[0], found[1]) if found is not None and found[1] is not None else None

    async def row_of(self, rec_id: str) -> tuple[Recording, Path | None] | None:
        """A recording's row and its local file (None: in object storage or on another node's disk); None
        when unknown. A row found is kept FILE_CACHE_S (while its local file is there, if it has one)."""
        now = time.monotonic()
        cached = self._files.get(rec_id)
        if cached is not None and now - cached[0] < FILE_CACHE_S and (cached[2] is None or cached[2].is_file()):
            return cached[1], cached[2]  # (a file uploaded to object storage and removed: read the row again)
        # The viewers of one recording come together (a shared link; every player once its row expires):
        # one catalog read answers all of them.
        lookup = self._lookups.get(rec_id)
        if lookup is None:
            lookup = self._lookups[rec_id] = asyncio.ensure_future(self._look_up(rec_id))
            lookup.add_done_callback(lambda done: self._lookup_done(rec_id, done))
        return await asyncio.shield(lookup)

    def _lookup_done(self, rec_id: str, done: asyncio.Future) -> None:
        self._lookups.pop(rec_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have left

    async def _look_up(self, rec_id: str) -> tuple[Recording, Path | None] | None:
        now = time.monotonic()
        row = await self.catalog.get(rec_id)
        if row is None:
            return None
        path: Path | None = Path(row.location)
        root = Path(self.cfg.path).resolve()
        if row.location.startswith("s3://"):
            path = None
        elif path.resolve().is_relative_to(root) and path.is_file():
            pass  # here (never a path outside the recordings: a row edited by hand)
        elif on_other_node(row, self.node):
            path = None  # fetched from that node (edge/vod_remote.py)
        else:
            return None
        if len(self._files) >= 10_000:
            self._files = {k: v for k, v in self._files.items() if now - v[0] < FILE_CACHE_S}
        self._files[rec_id] = (now, row, path)
        return row, path

    async def delete(self, rec_id: str) -> bool | None:
        """Delete a finished recording (file or object, and row); None when it is still being written or
        uploaded. StorageError when its object cannot be deleted (the row stays); ElsewhereError when its
        file is on another node's disk (deleting the row here would orphan that file)."""
        row = await self.catalog.get(rec_id)
        if row is None:
            return False
        if row.status in ("recording", "uploading"):
            return None
        if row.location.startswith("s3://"):
            if self.uploader is None:
                raise StorageError(f"recording {rec_id} is in object storage, and this node has no "
                                   f"record.storage = \"s3\" to delete it with", "NotConfigured")
            await self.uploader.delete(row.location)
            deleted = await self.catalog.delete(rec_id)
            self._deleted(row)
            return deleted
        if on_other_node(row, self.node):
            raise ElsewhereError(rec_id, row.node)
        found = await self.file_of(rec_id)
        if found is not None:
            try:
                await asyncio.to_thread(_remove, found[1], Path(self.cfg.path).resolve())
            except OSError as err:
                event(log, "recording_delete_failed", logging.WARNING, id=rec_id, error=str(err))
        deleted = await self.catalog.delete(rec_id)
        self._files.pop(rec_id, None)
        self._deleted(row)
        return deleted

    def _deleted(self, row: Recording) -> None:
        """A DVR playlist of the stream being recorded may list the file: it is rendered again."""
        rec = self.active.get(StreamKey(row.app, row.stream))
        if rec is not None:
            rec.dvr.deleted(row.id)


def _remove(path: Path, root: Path) -> None:
    """Unlink a recording and the directories it leaves empty ({app}/{stream}/), up to the root."""
    os.unlink(path)
    parent = path.parent
    while parent != root and parent.is_relative_to(root):
        try:
            parent.rmdir()
        except OSError:
            break  # not empty (or busy): kept
        parent = parent.parent

