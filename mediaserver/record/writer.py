"""DiskWriter: the recordings' writes, fsyncs and closes, in order, on a thread of their own.

A write to the page cache takes a few hundred microseconds, but one to a disk that does not keep up (the
kernel throttles writers once dirty pages pile up, or a network filesystem stalls) blocks for as long as
the disk wants; on the event loop that would stall every stream and viewer of the node. So the Recorders
hand their pieces here: one thread takes them in order (a file's fsync and close after its writes), and
an error comes back to the Recorder on the event loop (`on_error(file, error, good_bytes)`), the file
first cut back to its last whole piece. A file is named by its owner's object (anything with an `fd`), not
by its descriptor's number, which the system gives again once the thread has closed it. Creating a file
(`create`: its directory, then a name nobody holds) happens there too: a directory on a stalled disk or a
network filesystem blocks `mkdir` and `open` as long as any write. What waits is
bounded (`max_queued_bytes`): a disk that falls that far behind fails the recordings that write to it,
never the node's memory.

A recording is written once and seldom read soon after, save its newest minutes (DVR viewers near the
live edge, a VOD of what just ended). So after each fsync, what the fsync before it made durable leaves
the page cache (POSIX_FADV_DONTNEED): the last interval or two of each file stay cached, and the pages
the next writes take are ones just freed, not fresh memory. Without this, 50 recordings fill a 24 GB
node's cache in 25 minutes, pushing out what viewers read; on the benchmark VM the kernel's copy into
never-used pages cost twice what it costs into recycled ones (bench/README.md, "Recording cost").
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..remux.fmp4 import Pieces

log = logging.getLogger(__name__)

MAX_QUEUED_BYTES = 256 << 20
"""About 13 minutes of one 2.5 Mbit/s stream, or 16 s of 50 such streams, waiting for a stalled disk."""
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16
"""Buffers one writev takes at most (a 10 s fragment of 120 fps video has more samples than Linux's 1024)."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") and "SC_PAGE_SIZE" in os.sysconf_names else 4096

Buffers = Sequence[bytes | bytearray | memoryview]
WriteV = Callable[[int, Buffers], int]
"""os.writev's shape: the writes a recording makes (tests give their own, to fail or stall them)."""
Advise = Callable[[int, int, int, int], None]
"""os.posix_fadvise's shape."""
Create = Callable[[Path], tuple[Path, int]]
"""Makes a file at a path, or at the first free name beside it: (its path, its descriptor)."""


def write_whole(fd: int, data: bytes | bytearray | Pieces, writev: WriteV = os.writev) -> None:
    """`data` onto `fd`, whole: a Pieces' parts as they are (one writev, the kernel gathers them: no copy in
    Python), continued after a short write (a disk filling up takes what fits, then the next call fails)."""
    rest: list[bytes | bytearray | memoryview] = list(data.parts) if isinstance(data, Pieces) else [data]
    left = len(data)
    first = 0
    while first < len(rest):
        written = writev(fd, rest[first:first + IOV_MAX])
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        left -= written
        if not left:
            return  # all of it (the common case: one call, no walk over the pieces)
        while first < len(rest) and written >= len(rest[first]):
            written -= len(rest[first])
            first += 1
        if written:
            rest[first] = memoryview(rest[first])[written:]


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OpenFile(Protocol):
    fd: int


ErrorCallback = Callable[[Any, OSError, int], None]


class DiskWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 write: WriteV = os.writev, advise: Advise | None = getattr(os, "posix_fadvise", None)) -> None:
        self._loop = loop
        self.max_queued_bytes = max_queued_bytes
        self._write = write
        self._advise = advise
        """os.posix_fadvise (None where the system has none: the pages then stay cached)."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.queued_bytes = 0
        """Bytes handed over and not yet written (read on the loop; updated under the lock)."""
        self._files: dict[int, tuple[ErrorCallback, list[int]]] = {}
        """id(file) -> (its owner's error callback, [bytes written so far, or -1 once failed; bytes written at
        the last fsync; bytes advised out of the page cache]): the thread's."""
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="recording writer", daemon=True)
        self._thread.start()

    # ----- called on the event loop ---------------------------------------------------------------

    def create(self, file: OpenFile, path: Path, create: Create, on_error: ErrorCallback,
               on_created: Callable[[Any, Path], None]) -> None:
        """Create `file` on the thread with `create(path)`, before the jobs queued after this; its descriptor
        goes to `file.fd`, then `on_created(file, its path)` is called on the event loop. A failure comes back
        through `on_error(file, error, 0)`, and the file's later jobs are dropped."""
        self._jobs.put(("create", file, (path, create, on_error, on_created)))

    def write(self, file: OpenFile, data: bytes | bytearray | Pieces) -> bool:
        """Queue one piece (written whole, in one go, after what came before); False when the disk is too
        far behind (the caller fails its recording)."""
        with self._lock:
            if self.queued_bytes + len(data) > self.max_queued_bytes:
                return False
            self.queued_bytes += len(data)
        self._jobs.put(("write", file, data))
        return True

    def sync(self, file: OpenFile) -> None:
        self._jobs.put(("sync", file, None))

    def close(self, file: OpenFile, *, sync: bool) -> None:
        """fsync (when `sync`) and close the file's descriptor once its writes are done."""
        self._jobs.put(("close", file, sync))

    async def caught_up(self) -> None:
        """Return once the jobs queued before this call are done and what they told the loop has run."""
        if self._stopped:
            return  # `stop` finishes every job: none is left to wait for
        done = self._loop.create_future()
        self._jobs.put(("caught up", None, done))
        await done

    def stop(self, timeout_s: float | None = None) -> None:
        """Finish every job queued, then end the thread (blocking: run it in a thread)."""
        self._stopped = True
        self._jobs.put(("stop", None, None))
        self._thread.join(timeout_s)

    # ----- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            kind, file, arg = self._jobs.get()
            if kind == "stop":
                return
            if kind == "caught up":
                try:
                    self._loop.call_soon_threadsafe(_done, arg)  # after what the jobs before it told the loop
                except RuntimeError:
                    pass
                continue
            try:
                self._do(kind, file, arg)
            except Exception:  # never: each job catches its OSError; the thread must outlive a bug
                log.exception("recording writer job %s failed", kind)

    def _do(self, kind: str, file: OpenFile, arg) -> None:
        if kind == "create":
            path, create, on_error, on_created = arg
            entry = self._files[id(file)] = (on_error, [0, 0, 0])
            try:
                path, file.fd = create(path)
            except OSError as err:
                self._failed(file, entry, err)
                return
            try:
                self._loop.call_soon_threadsafe(on_created, file, path)
            except RuntimeError:
                pass  # the loop is closed: the server is gone
            return
        fd = file.fd
        entry = self._files.get(id(file))
        if kind == "write":
            with self._lock:
                self.queued_bytes -= len(arg)
            if entry is None or entry[1][0] < 0:
                return  # failed already: the rest of its pieces are dropped
            try:
                write_whole(fd, arg, self._write)
                entry[1][0] += len(arg)
            except OSError as err:
                self._failed(file, entry, err)
        elif kind == "sync":
            if entry is not None and entry[1][0] >= 0:
                try:
                    os.fsync(fd)
                    self._synced(fd, entry[1])
                except OSError as err:
                    self._failed(file, entry, err)
        elif kind == "close":
            self._files.pop(id(file), None)
            try:
                if arg and entry is not None and entry[1][0] >= 0:
                    os.fsync(fd)
                    self._synced(fd, entry[1])
            except OSError as err:
                if entry is not None:
                    self._failed(file, entry, err)
            finally:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def _synced(self, fd: int, sizes: list[int]) -> None:
        """An fsync made the file durable up to sizes[0]: the part the fsync before made durable leaves the
        page cache (see the module docstring); the part since stays, for readers near the end. Only what no
        earlier advice covered: pages a DVR or VOD reader brought back into older parts stay for it, and the
        kernel walks a few seconds of the file, not all of it (an hour's file is a gigabyte)."""
        durable_before, sizes[1] = sizes[1], sizes[0]
        start = sizes[2] - sizes[2] % PAGE_SIZE  # the kernel drops whole pages: the one cut last time, now
        if durable_before > start and self._advise is not None:
            sizes[2] = durable_before
            try:
                self._advise(fd, start, durable_before - start, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only advice

    def _failed(self, file: OpenFile, entry: tuple[ErrorCallback, list[int]], err: OSError) -> None:
        good = entry[1][0]
        entry[1][0] = -1
        if file.fd >= 0:  # (never created: nothing to cut)
            try:
                os.ftruncate(file.fd, good)  # drop a partly written piece, if the system lets us
            except OSError:
                pass
        try:
            self._loop.call_soon_threadsafe(entry[0], file, err, good)
        except RuntimeError:
            pass  # the loop is closed: the server is gone
