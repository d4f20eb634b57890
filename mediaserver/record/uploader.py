"""Uploads each finished recording to object storage (record.storage = "s3"), one file at a time, in order.

A file that closes is handed over by the RecordingManager with its row already "uploading" and its final
status (complete, interrupted, failed: a disk error's file is uploaded with the data it has) kept in
`final_status`. Here: the file's VOD index is built locally (in a thread) and stored beside the object
(record/sidecar.py), the file is sent and verified (record/objectstore.py), the row's location becomes
s3://BUCKET/KEY and its status the final one, and only then is the local file removed. The manager's
listeners (the on_record_done webhook) are told the row at that moment, when the file is final.

A bucket that is away or refuses (unreachable, no such bucket, bad credentials) holds the queue: the file
is retried with capped backoff, kept locally meanwhile (VOD serves it from the disk), and the outage is
logged once (again only if its cause changes), reported on /readyz (`ready`) and counted in /metrics.
While the bucket is failing and nothing waits, it is probed on the same backoff, so /readyz recovers.
At start, rows of this node still on its disk (a restart cut an upload short, or recorded before
storage was "s3") are queued again; the latter keep their status while they are sent (their on_record_done
was told long ago), so only the location changes.

A file a live stream's DVR window still reaches (`held`: record/dvr.py renders the window from the files'
indexes on disk) keeps its local copy after its upload, until a pass (every SWEEP_S) finds it has left every
window (or the stream ended). The copies kept are listed in record.path/KEPT_FILE, so a restart removes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..config import RecordConfig
from ..errors import MediaError
from ..log import event
from .catalog import Catalog, CatalogUnavailable, Recording
from .objectstore import ObjectStore, StorageError, object_key, parse_uri
from .sidecar import dump_index, sidecar_key
from .vod import index_file

log = logging.getLogger(__name__)

RETRY_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Pauses between attempts while the bucket fails; the last one repeats."""


SWEEP_S = 5.0
"""How often the local copies kept for DVR windows are checked; the ones no window reaches are removed."""
KEPT_FILE = ".dvr-kept.json"
"""In record.path: the uploaded files whose local copy a DVR window keeps ({id: path}), for the next start."""


def backoff_s(attempt: int) -> float:
    return RETRY_S[min(attempt, len(RETRY_S) - 1)]


def _build_sidecar(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return dump_index(index_file(f))
    except MediaError:
        return None  # no whole init (an empty file): served as /vod/ID.mp4 only


def _load_kept(journal: Path, root: Path) -> list[Path]:
    """The copies KEPT_FILE lists (never a path outside the recordings: a file edited by hand)."""
    try:
        paths = [Path(p) for p in json.loads(journal.read_bytes()).values()]
        return [p for p in paths if p.resolve().is_relative_to(root)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, AttributeError, TypeError) as err:
        event(log, "recording_kept_list_unreadable", logging.WARNING, path=str(journal), error=str(err))
        return []


def _save_kept(journal: Path, kept: dict[str, str]) -> None:
    if not kept:
        journal.unlink(missing_ok=True)
        return
    temporary = journal.with_name(journal.name + ".tmp")
    temporary.write_text(json.dumps(kept))
    os.replace(temporary, journal)  # whole or not at all, whenever the node stops


def _unlink_all(paths: list[Path]) -> list[tuple[Path, OSError]]:
    """Remove the files; the ones that could not be, with why (one already gone is no failure)."""
    failed = []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            failed.append((path, err))
    return failed


class Uploader:
    def __init__(self, catalog: Catalog, store: ObjectStore, cfg: RecordConfig, node: str,
                 on_final: Callable[[Recording], None],
                 held: Callable[[Recording], bool] = lambda row: False,
                 written: Callable[[], Awaitable[None]] | None = None) -> None:
        self.catalog = catalog
        self.store = store
        self.cfg = cfg
        self.node = node
        self.on_final = on_final
        self.held = held
        """Whether a live stream's DVR window still reaches a file (the manager's answer)."""
        self.written = written
        """Returns once the writes queued so far are on the disk (the DiskWriter's `caught_up`): a file is
        told closed when its close is queued, and its last pieces, or the cut of a direct write's padding,
        may still be on their way."""
        self.root = Path(cfg.path).resolve()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.kept: dict[str, tuple[Recording, Path]] = {}
        """Uploaded files whose local copy a DVR window keeps, by id."""
        self._journal = asyncio.Lock()  # one write of KEPT_FILE at a time, each with the newest list
        self.results: Counter[str] = Counter()
        """Upload attempts by result: uploaded, failed."""
        self.bytes_uploaded = 0
        self.failing_since: float | None = None
        self.error = ""
        self._logged_code = ""

    # ----- what the manager says ------------------------------------------------------------------

    async def start(self) -> None:
        """Queue this node's rows still on its disk and start the worker (which first probes the bucket).
        Local copies the last run kept for DVR windows are removed: no window reaches them now."""
        await self._remove(await asyncio.to_thread(_load_kept, self.root / KEPT_FILE, self.root))
        await self._save_kept()
        for row in await self.catalog.unuploaded(self.node):
            self.submit(row.id)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._worker(), name="recording uploads")
        self._sweeper = loop.create_task(self._sweep_loop(), name="recording local copies")

    def submit(self, rec_id: str) -> None:
        if rec_id not in self._queued:
            self._queued.add(rec_id)
            self._queue.put_nowait(rec_id)

    @property
    def pending(self) -> int:
        return len(self._queued)

    def ready(self) -> tuple[bool, str]:
        """The /readyz check: false while the bucket fails."""
        if self.failing_since is None:
            return True, f"{self.store.where}: reachable, {self.pending} file(s) to upload"
        return False, (f"{self.error} (failing for {time.monotonic() - self.failing_since:.0f} s; "
                       f"{self.pending} file(s) kept locally until it returns)")[:400]

    async def close(self) -> None:
        """Stop; an upload cut short leaves its row "uploading", resumed at the next start."""
        tasks = [t for t in (self._task, self._sweeper) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()

    # ----- the worker -----------------------------------------------------------------------------

    async def _worker(self) -> None:
        attempt = 0
        try:  # in the worker, not at start: a bucket that times out must not hold the server's start
            await self.store.check()
            event(log, "recording_storage", where=self.store.where, waiting=self.pending)
        except StorageError as err:
            self._failed(err)
        while True:
            if self.failing_since is not None and self._queue.empty():
                try:  # nothing to send: probe, so /readyz says when the bucket is back
                    rec_id = await asyncio.wait_for(self._queue.get(), backoff_s(attempt))
                    attempt = 0  # a new file is tried soon, whatever the probes' backoff had reached
                except TimeoutError:
                    try:
                        await self.store.check()
                        self._recovered()
                        attempt = 0
                    except StorageError as err:
                        self._failed(err)
                        attempt += 1
                    continue
            else:
                rec_id = await self._queue.get()
            while True:
                try:
                    if await self._upload(rec_id):
                        self._recovered()
                        attempt = 0
                    break
                except (StorageError, CatalogUnavailable) as err:
                    self.results["failed"] += 1
                    self._failed(err)
                    await asyncio.sleep(backoff_s(attempt))
                    attempt += 1
                except OSError as err:  # the file went (deleted through the API meanwhile?) or the disk fails
                    try:
                        await self._keep_local(rec_id, err)
                    except CatalogUnavailable:
                        pass  # still "uploading": the next start tries again
                    break
                except Exception:
                    log.exception("recording upload of %s failed", rec_id)
                    self.results["failed"] += 1
                    break
            self._queued.discard(rec_id)

    def _failed(self, err: Exception) -> None:
        code = getattr(err, "code", type(err).__name__)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.error = str(err)
        if code != self._logged_code:  # one line per outage (and per change of its cause)
            self._logged_code = code
            event(log, "recording_upload_failed", logging.ERROR, error=str(err), waiting=self.pending)

    def _recovered(self) -> None:
        if self.failing_since is not None:
            event(log, "recording_storage_back", where=self.store.where,
                  after_s=round(time.monotonic() - self.failing_since, 1), waiting=self.pending)
        self.failing_since = None
        self.error = self._logged_code = ""

    async def _upload(self, rec_id: str) -> bool:
        """Send one file; whether the bucket was asked anything (a row gone meanwhile: nothing to do)."""
        row = await self.catalog.get(rec_id)
        if row is None or row.location.startswith("s3://") or row.status == "recording":
            return False  # deleted meanwhile, or done by another path
        deferred = row.status == "uploading"  # its on_record_done waits for this upload
        final = (row.final_status or "complete") if deferred else row.status
        path = Path(row.location)
        try:
            relative = path.resolve().relative_to(self.root)
        except ValueError:
            relative = Path(row.app, row.stream, path.name)
        if self.written is not None:
            await self.written()
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(f"{path} is gone")
        key = object_key(self.cfg.s3.prefix, relative)
        sidecar = await asyncio.to_thread(_build_sidecar, path)
        if sidecar is not None:
            await self.store.put_bytes(sidecar_key(key), sidecar)
        stored = await self.store.upload(path, key)
        done = await self.catalog.update(rec_id, location=self.store.uri(key), status=final, final_status=None,
                                         bytes=stored.size)
        if done is None:  # deleted while it was being sent: the object goes too
            await self._delete_objects(key)
            return True
        self.results["uploaded"] += 1
        self.bytes_uploaded += stored.size
        if self.held(done):  # a live DVR window lists it: the copy goes once the window has passed it
            self.kept[rec_id] = (done, path)
            await self._save_kept()
        else:
            await self._remove([path])
        event(log, "recording_uploaded", id=rec_id, location=done.location, bytes=stored.size,
              kept_for_dvr=rec_id in self.kept)
        if deferred:
            self.on_final(done)
        return True

    async def _remove(self, paths: list[Path]) -> None:
        for path, err in await asyncio.to_thread(_unlink_all, paths):
            event(log, "recording_local_delete_failed", logging.WARNING, path=str(path), error=str(err))

    async def _save_kept(self) -> None:
        async with self._journal:
            kept = {rec_id: str(path) for rec_id, (_, path) in self.kept.items()}
            try:
                await asyncio.to_thread(_save_kept, self.root / KEPT_FILE, kept)
            except OSError as err:  # the copies are still removed by this run; a restart may leave them
                event(log, "recording_kept_list_failed", logging.WARNING, path=str(self.root / KEPT_FILE),
                      error=str(err))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                await self.sweep()
            except Exception:
                log.exception("removing the local copies kept for DVR failed")

    async def sweep(self) -> None:
        """Remove the kept local copies no DVR window reaches any more."""
        done = [rec_id for rec_id, (row, _) in self.kept.items() if not self.held(row)]
        if done:
            paths = [self.kept.pop(rec_id)[1] for rec_id in done]
            await self._remove(paths)
            await self._save_kept()  # after: a copy listed but gone is harmless, one unlisted would stay

    async def _keep_local(self, rec_id: str, err: OSError) -> None:
        """A file that cannot be read stays where it is: its row gets its final status back (and
        on_record_done is told, if it waited), so it can be deleted and retention sees it."""
        row = await self.catalog.get(rec_id)
        if row is None:
            return  # deleted while it was being read: nothing to say
        event(log, "recording_upload_unreadable", logging.ERROR, id=rec_id, path=row.location, error=str(err),
              hint="the row keeps its local location; check the disk, or delete the recording")
        if row.status == "uploading":
            done = await self.catalog.update(rec_id, status=row.final_status or "complete", final_status=None)
            if done is not None:
                self.on_final(done)

    async def _delete_objects(self, key: str) -> None:
        await self.store.delete(sidecar_key(key))
        await self.store.delete(key)

    async def delete(self, location: str) -> None:
        """Remove a recording's object and its sidecar (StorageError when the bucket refuses)."""
        bucket, key = parse_uri(location)
        if bucket != self.store.bucket:
            raise StorageError(f"{location} is in bucket {bucket!r}, not {self.store.bucket!r} (record.s3.bucket)",
                               "OtherBucket")
        await self._delete_objects(key)


class UploadCollector:
    """/metrics: uploads by result, bytes sent, files waiting, whether the bucket answers."""

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader

    def collect(self) -> Any:
        u = self.uploader
        c = CounterMetricFamily("mediaserver_recording_uploads", "Recording upload attempts to object storage "
                                "by result (failed ones are retried with backoff).", labels=["result"])
        for result in ("uploaded", "failed"):
            c.add_metric([result], u.results[result])
        yield c
        yield CounterMetricFamily("mediaserver_recording_upload_bytes", "Bytes of recordings uploaded and "
                                  "verified.", value=u.bytes_uploaded)
        yield GaugeMetricFamily("mediaserver_recording_uploads_pending", "Finished recordings waiting on this "
                                "node's disk for their upload.", value=u.pending)
        yield GaugeMetricFamily("mediaserver_recording_storage_up", "1 while the bucket answers, 0 while "
                                "uploads to it fail.", value=0 if u.failing_since is not None else 1)
