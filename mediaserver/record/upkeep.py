"""The RecordingManager's periodic duties: retention, the free-space guard of record.path, and the catalog's
readiness for /readyz; and the counters /metrics reads.

Retention runs once at start and every RETENTION_S: the catalog's usage and oldest candidates of this node's
scope (its own rows, whose files only it can reach, and object-storage rows of any node: deleting one twice
is harmless), `retention.plan`, then `RecordingManager.delete` for each (file and row; the bucket's copy when
the row lives there). One log line per run that deleted something.

The disk guard measures record.path every DISK_CHECK_S (os.statvfs in a thread), and at once after a write
failed: under record.min_free_gb every recording of the node stops (one error line, the
mediaserver_recording_disk_low gauge, the on_record_disk webhook), live streaming goes on; above the limit
plus a margin they resume in new files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..log import event
from .catalog import CatalogUnavailable
from .disk import LOW, DiskChange, free_bytes
from .objectstore import StorageError
from .retention import Deletion, Policy, plan

if TYPE_CHECKING:
    from .manager import RecordingManager

log = logging.getLogger(__name__)

RETENTION_S = 60.0
RETENTION_BATCH = 500
RETENTION_MAX_BATCHES = 20
"""Batches one run deletes at most (the next run goes on): a huge backlog never holds the catalog long."""
DISK_CHECK_S = 2.0
CATALOG_CHECK_S = 2.0
"""How long /readyz reuses the catalog's last answer."""
CATALOG_TIMEOUT_S = 1.5


@dataclass(slots=True)
class RecordingStats:
    """Running totals for /metrics (they only grow)."""

    bytes_written: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """Recordings cut short, by reason: disk_full, disk_error, disk_low (stopped by the guard), fsync,
    catalog (a row the catalog never got)."""
    retention_deleted: Counter[str] = field(default_factory=Counter)
    """Recordings deleted by retention, by reason (age, size)."""
    retention_bytes: int = 0


DiskListener = Callable[[DiskChange, str, list[str]], None]
"""Told (change, record.path, the streams stopped or resumed) when the guard changes state."""


class Upkeep:
    def __init__(self, manager: RecordingManager, clock: Callable[[], datetime] | None = None) -> None:
        self.manager = manager
        self.policy = Policy.from_config(manager.cfg)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.disk_listeners: list[DiskListener] = []
        self._disk_wake = asyncio.Event()
        self._retention_lock = asyncio.Lock()  # one run at a time: each plans from what the last one left
        self._disk_error: str | None = None
        self._retention_error: str | None = None
        self._probe: asyncio.Task[tuple[bool, str]] | None = None
        self._probed: tuple[float, tuple[bool, str]] | None = None

    def tasks(self) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._disk_loop(), name="recording disk guard")]
        if self.policy.enabled:
            tasks.append(loop.create_task(self._retention_loop(), name="recording retention"))
        return tasks

    # ----- retention ----------------------------------------------------------------------------

    async def retention_once(self) -> list[Deletion]:
        """Delete what the limits say, oldest first; returns what was deleted."""
        if not self.policy.enabled:
            return []
        async with self._retention_lock:
            return await self._retention_run()

    async def _retention_run(self) -> list[Deletion]:
        catalog, node = self.manager.catalog, self.manager.node
        own = sorted(self.policy.own_budget)
        done: list[Deletion] = []
        kept: list[str] = []
        for _ in range(RETENTION_MAX_BATCHES):
            used = await catalog.usage(node)
            batches = [await catalog.deletable(node, apps=[app], limit=RETENTION_BATCH) for app in own]
            batches.append(await catalog.deletable(node, exclude_apps=own, limit=RETENTION_BATCH))
            deletions = plan([row for batch in batches for row in batch], used, self.policy, self.clock())
            before = len(done)
            for deletion in deletions:
                try:
                    deleted = await self.manager.delete(deletion.row.id)
                except StorageError as err:  # its object cannot be deleted now: the row stays, for the next run
                    kept.append(str(err))
                    continue
                if deleted:
                    done.append(deletion)
            if len(done) == before or all(len(batch) < RETENTION_BATCH for batch in batches):
                break
        if kept:
            event(log, "recording_retention_kept", logging.WARNING, kept=len(kept), error=kept[0],
                  hint="recordings in object storage are deleted once the bucket answers")
        if done:
            stats = self.manager.stats
            for deletion in done:
                stats.retention_deleted[deletion.reason] += 1
                stats.retention_bytes += deletion.row.bytes
            reasons = Counter(d.reason for d in done)
            event(log, "recording_retention", deleted=len(done), bytes=sum(d.row.bytes for d in done),
                  by_age=reasons["age"], by_size=reasons["size"])
        return done

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.retention_once()
                self._retention_error = None
            except (CatalogUnavailable, StorageError) as err:
                if self._retention_error is None:  # once per outage, not every run
                    event(log, "recording_retention_skipped", logging.WARNING, error=str(err),
                          hint="retention runs again when the catalog (or the bucket) returns")
                self._retention_error = str(err)
            except Exception:
                log.exception("recording retention failed")
            await asyncio.sleep(RETENTION_S)

    # ----- free space -----------------------------------------------------------------------------

    def add_disk_listener(self, listener: DiskListener) -> None:
        """Tell `listener` of every change from now on, and of the low state at once if the disk is
        already low (the first measure is taken at start, before anyone listens)."""
        self.disk_listeners.append(listener)
        disk = self.manager.disk
        if disk.low and disk.free_bytes is not None:
            listener(DiskChange(LOW, disk.free_bytes, disk.min_free_bytes), self.manager.cfg.path, [])

    def check_disk_soon(self) -> None:
        """Measure now rather than at the next tick (a write just failed)."""
        self._disk_wake.set()

    async def check_disk(self) -> DiskChange | None:
        manager = self.manager
        path = manager.cfg.path
        try:
            free = await asyncio.to_thread(free_bytes, path)
        except OSError as err:
            if self._disk_error is None:
                event(log, "recording_disk_unmeasurable", logging.WARNING, path=path, error=str(err),
                      hint="check that record.path exists and is readable")
            self._disk_error = str(err)
            return None
        self._disk_error = None
        change = manager.disk.observe(free)
        if change is None:
            return None
        gb = change.min_free_bytes / 1e9
        if change.state == LOW:
            streams = manager.pause_all()
            event(log, "recording_disk_low", logging.ERROR, path=path, free_bytes=free,
                  min_free_bytes=change.min_free_bytes, stopped=len(streams),
                  hint=f"free space on record.path (or lower record.max_total_gb / max_age_days); recordings "
                       f"resume by themselves above {manager.disk.resume_bytes / 1e9:.3g} GB free; live "
                       f"streaming is not affected")
        else:
            streams = manager.resume_paused()
            event(log, "recording_disk_ok", path=path, free_bytes=free, min_free_gb=f"{gb:g}",
                  resumed=len(streams))
        for listener in list(self.disk_listeners):
            listener(change, path, [str(key) for key in streams])
        return change

    async def _disk_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._disk_wake.wait(), DISK_CHECK_S)
            except TimeoutError:
                pass
            self._disk_wake.clear()
            try:
                await self.check_disk()
            except Exception:
                log.exception("recording disk check failed")

    # ----- readiness ------------------------------------------------------------------------------

    async def catalog_ready(self) -> tuple[bool, str]:
        """/readyz's check: a `SELECT 1` at most every CATALOG_CHECK_S, shared by concurrent requests."""
        now = time.monotonic()
        if self._probed is not None and now - self._probed[0] < CATALOG_CHECK_S:
            return self._probed[1]
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._ping())
        return await asyncio.shield(self._probe)

    async def _ping(self) -> tuple[bool, str]:
        catalog = self.manager.catalog
        try:
            async with asyncio.timeout(CATALOG_TIMEOUT_S):
                await catalog.ping()
            result = (True, f"catalog {catalog.url} reachable")
        except (CatalogUnavailable, TimeoutError) as err:
            reason = str(err) or f"no answer within {CATALOG_TIMEOUT_S:g} s"
            waiting = self.manager.pending_writes
            result = (False, f"{reason}; {waiting} catalog writes wait in memory (the files are written)"[:300])
        finally:
            self._probe = None
        self._probed = (time.monotonic(), result)
        return result
