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

Direct writes (`direct=True`, record.direct_io, the default): a file is written with O_DIRECT, from one
aligned buffer of the thread's, so its bytes never pass through the page cache at all. The kernel's copy
into fresh page-cache pages, and the writeback an fsync then does on this thread, were most of what
recording cost (bench/README.md); a direct write is one copy into a buffer whose pages stay the same and a
transfer from it. O_DIRECT writes whole blocks at block offsets, so each write is the file's last partial
block (kept here, `_Entry.tail`), the new bytes, and a `free` box padding them to the block's end: the file
is a valid MP4 after every write (a crash leaves its last `free` box, which readers skip) and each write
starts over the `free` box the one before left. The close cuts it off. A filesystem that refuses O_DIRECT
(for the file, at its first write) gets the file's writes buffered instead, as before.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import mmap
import os
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..log import event
from ..remux.fmp4 import Pieces

log = logging.getLogger(__name__)

MAX_QUEUED_BYTES = 256 << 20
"""About 13 minutes of one 2.5 Mbit/s stream, or 16 s of 50 such streams, waiting for a stalled disk."""
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") and "SC_IOV_MAX" in os.sysconf_names else 16
"""Buffers one writev takes at most (a 10 s fragment of 120 fps video has more samples than Linux's 1024)."""

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") and "SC_PAGE_SIZE" in os.sysconf_names else 4096

DIRECT_ALIGN = 4096
"""Offsets and sizes of direct writes: a multiple of every logical block size a disk has (512 or 4096)."""
DIRECT_BUFFER = 4 << 20
"""The direct writes' buffer: a fragment of 6 s at a few Mbit/s in one write; a bigger job goes out in several."""
HUGE_PAGE = 2 << 20
"""x86-64's and arm64's (4 kB pages) transparent huge page: the direct buffer's mapping is a whole number of them."""
_FREE_HEADER = 8
_ZEROS = memoryview(bytes(DIRECT_ALIGN))

Buffers = Sequence[bytes | bytearray | memoryview]
WriteV = Callable[[int, Buffers], int]
"""os.writev's shape: the writes a recording makes (tests give their own, to fail or stall them)."""
PWrite = Callable[[int, memoryview, int], int]
"""os.pwrite's shape: the direct writes."""
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


class _Entry:
    """The thread's state of one file."""

    __slots__ = ("on_error", "path", "written", "synced", "advised", "direct", "tail", "tail_at")

    def __init__(self, on_error: ErrorCallback, path: Path) -> None:
        self.on_error = on_error
        self.path = path
        self.written = 0
        """Bytes of the file's pieces written so far, or -1 once failed."""
        self.synced = 0
        """`written` at the last fsync."""
        self.advised = 0
        """Bytes advised out of the page cache."""
        self.direct = False
        """Written with O_DIRECT; `tail` is then the file's last partial block (its bytes from `tail_at`, a
        block boundary, to `written`), which the next write writes again, then its own bytes."""
        self.tail = b""
        self.tail_at = 0


def _done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class OpenFile(Protocol):
    fd: int


ErrorCallback = Callable[[Any, OSError, int], None]


def _set_direct(fd: int, direct: bool) -> bool:
    """Switch `fd` to O_DIRECT positioned writes (no O_APPEND: with it Linux ignores pwrite's offset), or
    back to buffered appends; False where the filesystem refuses O_DIRECT (the file stays buffered)."""
    o_direct = getattr(os, "O_DIRECT", 0)
    if direct and not o_direct:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & ~(os.O_APPEND | o_direct)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | (o_direct if direct else os.O_APPEND))
    except OSError:
        return False
    return direct


def direct_buffer(size: int) -> mmap.mmap:
    """A private mapping of at least `size` bytes for the direct writes, on transparent huge pages where the
    kernel grants them (`enabled` = madvise, the common default, or always). Each O_DIRECT write pins the
    pages it sends: on 4 kB pages its `pwrite` cost 0.09 ms per MB, on 2 MB ones 0.064, and the copy into it
    0.187 against 0.168 (fewer TLB misses; bench.record --probe, bench/README.md). Private, not mmap's default
    shared mapping: a shared anonymous one is shmem, which takes huge pages only by `shmem_enabled` (never,
    by default). A whole number of huge pages long, so that the kernel places it on a huge page's boundary."""
    length = -(-size // HUGE_PAGE) * HUGE_PAGE
    buffer = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            buffer.madvise(advice)
        except OSError:
            pass  # a kernel without transparent huge pages: small pages, as before
    return buffer


class DiskWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_queued_bytes: int = MAX_QUEUED_BYTES,
                 write: WriteV = os.writev, advise: Advise | None = getattr(os, "posix_fadvise", None),
                 direct: bool = False, pwrite: PWrite = os.pwrite, direct_buffer: int = DIRECT_BUFFER) -> None:
        self._loop = loop
        self.max_queued_bytes = max_queued_bytes
        self._write = write
        self.direct = direct
        """Files are written with O_DIRECT where their filesystem takes it (the module docstring)."""
        self._pwrite = pwrite
        self._direct_size = max(DIRECT_ALIGN, direct_buffer - direct_buffer % DIRECT_ALIGN)
        self._buffer: mmap.mmap | None = None
        """The direct writes' buffer (page-aligned, as O_DIRECT wants), made at the first: its pages stay
        the process's, touched once, where page-cache pages are taken afresh for every write."""
        self._advise = advise
        """os.posix_fadvise (None where the system has none: the pages then stay cached)."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.queued_bytes = 0
        """Bytes handed over and not yet written (read on the loop; updated under the lock)."""
        self._files: dict[int, _Entry] = {}
        """id(file) -> its state: the thread's."""
        self._stopped = False
        self._refused_told = False
        """A refused O_DIRECT was logged (once: `_refused`)."""
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
            entry = self._files[id(file)] = _Entry(on_error, path)
            try:
                path, file.fd = create(path)
            except OSError as err:
                self._failed(file, entry, err)
                return
            entry.path = path
            entry.direct = self.direct and _set_direct(file.fd, True)
            if self.direct and not entry.direct:
                self._refused(entry, "O_DIRECT refused when the file was opened")
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
            if entry is None or entry.written < 0:
                return  # failed already: the rest of its pieces are dropped
            try:
                if not (entry.direct and self._write_direct(fd, entry, arg)):
                    write_whole(fd, arg, self._write)
                entry.written += len(arg)
            except OSError as err:
                self._failed(file, entry, err)
        elif kind == "sync":
            if entry is not None and entry.written >= 0:
                try:
                    os.fsync(fd)
                    self._synced(fd, entry)
                except OSError as err:
                    self._failed(file, entry, err)
        elif kind == "close":
            self._files.pop(id(file), None)
            try:
                if entry is not None and entry.written >= 0:
                    if entry.direct:
                        os.ftruncate(fd, entry.written)  # the last write's `free` padding goes
                    if arg:
                        os.fsync(fd)
                        self._synced(fd, entry)
            except OSError as err:
                if entry is not None:
                    self._failed(file, entry, err)
            finally:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def _write_direct(self, fd: int, entry: _Entry, data: bytes | bytearray | Pieces) -> bool:
        """`data` after the file's bytes, by whole blocks from the buffer: the last partial block again, the
        data, then a `free` box to the block's end (zeros inside: never another file's bytes). A buffer's
        worth goes out as it fills; the `free` box only with the last. False, with nothing written, when a
        filesystem refuses the file's first write (EINVAL: O_DIRECT taken at open but not for writes): the
        file is buffered from here on, this data too."""
        if self._buffer is None:
            self._buffer = direct_buffer(self._direct_size + DIRECT_ALIGN)  # room for the padding past a full one
        buf = memoryview(self._buffer)
        size = self._direct_size
        at, tail = entry.tail_at, entry.tail
        pos = len(tail)
        buf[:pos] = tail
        for part in (data.parts if isinstance(data, Pieces) else (data,)):
            n = len(part)
            if pos + n <= size:
                buf[pos:pos + n] = part
                pos += n
                continue
            part = memoryview(part)
            done = 0
            while done < n:
                take = min(n - done, size - pos)
                buf[pos:pos + take] = part[done:done + take]
                pos += take
                done += take
                if pos == size:
                    if not self._put(fd, entry, buf[:size], at):
                        return False
                    at += size
                    pos = 0
        end = (pos + _FREE_HEADER + DIRECT_ALIGN - 1) & ~(DIRECT_ALIGN - 1)
        buf[pos:pos + _FREE_HEADER] = (end - pos).to_bytes(4, "big") + b"free"
        buf[pos + _FREE_HEADER:end] = _ZEROS[:end - pos - _FREE_HEADER]
        if not self._put(fd, entry, buf[:end], at):
            return False
        keep = pos & ~(DIRECT_ALIGN - 1)
        entry.tail, entry.tail_at = bytes(buf[keep:pos]), at + keep
        return True

    def _put(self, fd: int, entry: _Entry, block: memoryview, at: int) -> bool:
        """Whole blocks at a block offset; a short write goes on from where it stopped (a block boundary).
        False when the file's very first write is refused (EINVAL): it is buffered from now on."""
        while block:
            try:
                written = self._pwrite(fd, block, at)
            except OSError as err:
                if err.errno != errno.EINVAL or entry.written or at:
                    raise
                entry.direct = _set_direct(fd, False)
                self._refused(entry, f"its first direct write failed: {err}")
                return False
            if written <= 0 or written % 512:
                raise OSError(errno.EIO, f"a direct write wrote {written} of {len(block)} bytes")
            block, at = block[written:], at + written
        return True

    def _refused(self, entry: _Entry, why: str) -> None:
        """A filesystem would not take O_DIRECT: said once per server (every file on it is refused alike)."""
        if self._refused_told:
            return
        self._refused_told = True
        event(log, "recording_direct_io_refused", logging.WARNING, path=str(entry.path), reason=why,
              action="this file and others like it are written buffered, through the page cache",
              hint="the filesystem of record.path does not take O_DIRECT, so recording costs more CPU there "
                   "(bench/README.md); set record.direct_io = false to say so and silence this")

    def _synced(self, fd: int, entry: _Entry) -> None:
        """An fsync made the file durable up to `written`: the part the fsync before made durable leaves the
        page cache (see the module docstring); the part since stays, for readers near the end. Only what no
        earlier advice covered: pages a DVR or VOD reader brought back into older parts stay for it, and the
        kernel walks a few seconds of the file, not all of it (an hour's file is a gigabyte). A direct file
        has nothing there to drop."""
        durable_before, entry.synced = entry.synced, entry.written
        start = entry.advised - entry.advised % PAGE_SIZE  # the kernel drops whole pages: the one cut last time
        if durable_before > start and self._advise is not None and not entry.direct:
            entry.advised = durable_before
            try:
                self._advise(fd, start, durable_before - start, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only advice

    def _failed(self, file: OpenFile, entry: _Entry, err: OSError) -> None:
        good = entry.written
        entry.written = -1
        if file.fd >= 0:  # (never created: nothing to cut)
            try:
                os.ftruncate(file.fd, good)  # drop a partly written piece, if the system lets us
            except OSError:
                pass
        try:
            self._loop.call_soon_threadsafe(entry.on_error, file, err, good)
        except RuntimeError:
            pass  # the loop is closed: the server is gone
