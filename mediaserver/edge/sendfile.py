"""Files and byte ranges of files sent from the page cache to the socket with os.sendfile.

aiohttp's FileResponse costs about 1 ms of CPU per VOD range request on this server, almost all of it
Python: two trips through the thread pool (open and stat, looking for .gz/.br siblings too; close), its
conditional-request logic, and `loop.sendfile`, which uvloop does not implement, so the bytes are read in
256 KiB chunks in the thread pool and written. Here the file is opened and stat'ed on the loop (a local
file's metadata is cached), the range is parsed by `byte_range` (pure), and once the response head has
left (the transport's buffer is empty) `os.sendfile` puts as much of the range as the socket takes now
straight on the plain TCP socket. What it does not take (a slow reader's full socket buffer) is read with
`os.pread` in a thread and written through the transport, which waits for the reader. The transport never
sees the sendfile'd bytes, which is safe because nothing else writes to an HTTP/1.1 connection while its
response is being sent.

TLS connections (the bytes must be encrypted by the transport) and a head still queued take the pread way.
A range that is not in the page cache (`in_page_cache`) is first read into it in a thread
(`read_into_cache`): os.sendfile would read it from the disk inside the call, stopping the event loop, and
every stream and viewer on it, for the disk's time (nginx's default, sendfile on and no aio threads, does;
the thread cannot take the socket's sendfile itself, which would race the connection's descriptor being
closed). Recordings are written past the page cache (O_DIRECT, record/writer.py), so the first viewer of a
range (a DVR viewer at the newest fragment, a VOD viewer seeking) waits for the disk in the thread, and the
viewers after it find the range cached: what is cached is what is watched.

Conditional requests: an ETag (mtime and size) and Last-Modified go with every answer; If-None-Match
gives 304, and a Range with an If-Range that no longer matches (a recording that grew) gives the whole
file, so a player never splices bytes of two versions.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from ..transports import reset

MIN_SENDFILE = 16 * 1024
"""Below this a range is sent the ordinary way: one syscall either way."""
CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes\s*=\s*(\d{0,40})\s*-\s*(\d{0,40})", re.ASCII | re.IGNORECASE)  # units: any case


_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux; elsewhere the head is a packet of its own


class Unsatisfiable(ValueError):
    """A Range header this file cannot answer: 416."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int
    """Exclusive."""

    @property
    def size(self) -> int:
        return self.end - self.start


def none_match(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match `header` names `etag` (weakly: W/ prefixes pass) or is "*": the client's
    copy is current, 304."""
    return header is not None and (etag in header or header.strip() == "*")


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The range a `Range` header asks of a file of `size` bytes: None for the whole file (no header).

    One range of bytes only: several ranges, another unit, a malformed or unsatisfiable range
    (start past the end, a zero-byte suffix, an empty file) raise Unsatisfiable. An end past the file is
    clipped to it (RFC 9110 14.1.2)."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        raise Unsatisfiable(f"not a single range of bytes: {header[:60]!r}")
    first, last = m.groups()
    if not first:
        if not last or int(last) == 0 or size == 0:
            raise Unsatisfiable("an empty suffix")
        return ByteRange(max(0, size - int(last)), size)
    start = int(first)
    if start >= size:
        raise Unsatisfiable(f"starts at {start}, past the end ({size} bytes)")
    if not last:
        return ByteRange(start, size)
    if int(last) < start:
        raise Unsatisfiable(f"ends before it starts: {header[:60]!r}")
    return ByteRange(start, min(int(last) + 1, size))


_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
PROBE_SPAN = 4 << 20
"""How much of a range `in_page_cache` looks at: more than a socket takes at once, which is all os.sendfile
sends on the loop (the rest goes through the thread's reads)."""
_PROBE = [bytearray(1)]


def in_page_cache(fd: int, offset: int, count: int) -> bool:
    """Whether os.sendfile can send bytes [offset, offset+count) of `fd` without waiting for the disk: one
    byte a CHUNK (and the last) read with RWF_NOWAIT, which fails rather than wait (0.4 µs a probe; a miss also
    starts the kernel's readahead there). Pages are cached by whoever read the range, and dropped by age, so
    a range is cached whole or not at all but for its edges; a page missed between two probes costs one wait
    on the disk, as before. True where the system cannot tell (no RWF_NOWAIT, or a filesystem that refuses
    it): os.sendfile then reads inline, as nginx does. False past the end (a file cut short): the thread's
    read finds that out."""
    if not _RWF_NOWAIT or count <= 0:
        return True
    end = offset + min(count, PROBE_SPAN)
    try:
        for pos in range(offset, end, CHUNK):
            if os.preadv(fd, _PROBE, pos, _RWF_NOWAIT) < 1:
                return False
        return os.preadv(fd, _PROBE, end - 1, _RWF_NOWAIT) == 1
    except BlockingIOError:
        return False
    except OSError:
        return True  # EOPNOTSUPP and the like: this file cannot be asked


_devnull = -1
_devnull_lock = threading.Lock()


def read_into_cache(fd: int, offset: int, count: int) -> None:
    """Bytes [offset, offset+count) of `fd` read from the disk into the page cache. Blocking: run it in a
    thread. os.sendfile to /dev/null, which takes the pages without copying them out (a pread would copy
    every byte into a buffer thrown away); a pread where the system refuses that. If the caller closed `fd`
    meanwhile (a cancelled answer) and the number was reused, another file is read into the cache: no harm,
    nothing is sent from here."""
    global _devnull
    end = offset + count
    try:
        if _devnull < 0:
            with _devnull_lock:  # (threads of the pool may come here together)
                if _devnull < 0:
                    _devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        while offset < end:
            n = os.sendfile(_devnull, fd, offset, end - offset)
            if n <= 0:
                return  # the end of the file
            offset += n
    except OSError:
        while offset < end:  # (a file cut short or unreadable: the answer's own reads find that out)
            try:
                n = len(os.pread(fd, min(CHUNK, end - offset), offset))
            except OSError:
                return
            if not n:
                return
            offset += n


class MemFile:
    """Bytes also held in a memory-backed file (memfd), so each viewer's copy can be sent with os.sendfile
    instead of a write from Python's buffer: the kernel then takes the pages without copying them in. The
    file is made once per segment and closed when the last reference goes."""

    __slots__ = ("fd", "size", "__weakref__")

    def __init__(self, data: bytes) -> None:
        self.fd = -1
        fd = os.memfd_create("segment", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            written = 0
            while written < len(data):
                written += os.write(fd, view[written:])
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = len(data)

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def mem_file(data: bytes) -> MemFile | None:
    """A MemFile of `data`, or None where memfd is missing or refused (then bytes are written as they are)."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        return MemFile(data)
    except OSError:
        return None


def send_mem_file(transport: asyncio.Transport, file: MemFile, body: bytes, head: bytes = b"") -> int:
    """Send `head` (if any), then `body` (whose copy `file` is) on `transport`: as much of the body as the
    socket takes now with os.sendfile, the rest through the transport (which waits for the reader).
    Returns the bytes os.sendfile sent."""
    sent = send_fd(transport, file.fd, 0, file.size, head)
    if sent < len(body):
        transport.write(memoryview(body)[sent:] if sent else body)
    return sent


def send_fd(transport: asyncio.Transport, fd: int, offset: int, count: int, head: bytes = b"") -> int:
    """Write `head` (an answer's status line and headers; may be empty), then put bytes [offset, offset+count)
    of file `fd` on the transport's socket with os.sendfile, as many as it takes now, without waiting: plain
    TCP only, and only with nothing queued before them (else 0: the caller writes them). Returns how many.

    The head goes with MSG_MORE, so the kernel sends it in the file's first packet instead of one of its own
    (on loopback, each packet is also received in the sender's time: one fewer per answer)."""
    if (transport.get_write_buffer_size() or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("ssl_object") is not None):
        if head:
            transport.write(head)
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        if head:
            transport.write(head)
        return 0
    out = sock.fileno()
    if head:
        took = _send_more(out, sock.family, head) if count else 0
        if took < len(head):
            transport.write(head[took:] if took else head)  # queued: the body follows it through the transport
            return 0
    sent = 0
    try:
        while sent < count:
            n = os.sendfile(out, fd, offset + sent, count - sent)
            if n == 0:
                break
            sent += n
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        pass  # a reset peer: the transport's next write meets it
    Sent.direct += sent
    return sent


def _send_more(fileno: int, family: int, data: bytes) -> int:
    """send(fileno, data, MSG_MORE): how many bytes the socket took now (0 when full or reset: the transport
    then writes them, and meets the reset). The transport's own socket object does not send, so a socket
    object borrows the descriptor for the call (family and type given: no system call to learn them)."""
    borrowed = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fileno)
    try:
        return borrowed.send(data, _MSG_MORE)
    except OSError:  # BlockingIOError, InterruptedError, a reset peer
        return 0
    finally:
        borrowed.detach()  # never closes the transport's descriptor


class Sent:
    direct = 0
    """Bytes sent by os.sendfile since start (all responses): tells a test or a bench the path is used."""
    uncached = 0
    """Ranges read into the page cache in a thread first, not being there (`in_page_cache`)."""


async def serve_file(request: web.Request, path: str | Path, headers: dict[str, str],
                     write_timeout: float | None = None) -> web.StreamResponse:
    """`path` (whole, or the range asked) with `headers`; FileNotFoundError when it is not there. A reader
    that takes none of a chunk for `write_timeout` seconds is disconnected."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        resp = web.StreamResponse(headers=headers)
        resp.headers[hdrs.ETAG] = etag
        resp.headers[hdrs.LAST_MODIFIED] = formatdate(st.st_mtime, usegmt=True)
        resp.headers[hdrs.ACCEPT_RANGES] = "bytes"
        if none_match(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            resp.set_status(304)
            await resp.prepare(request)
            return resp
        asked = request.headers.get(hdrs.RANGE)
        if_range = request.headers.get(hdrs.IF_RANGE)
        if asked is not None and if_range is not None and if_range.strip() != etag:
            asked = None  # the file changed since the client's first part: the whole of it
        try:
            part = byte_range(asked, size)
        except Unsatisfiable:
            resp.set_status(416)
            resp.headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            resp.content_length = 0
            await resp.prepare(request)
            return resp
        if part is None:
            part = ByteRange(0, size)
        else:
            resp.set_status(206)
            resp.headers[hdrs.CONTENT_RANGE] = f"bytes {part.start}-{part.end - 1}/{size}"
        resp.content_length = part.size
        writer = await resp.prepare(request)
        if request.method != hdrs.METH_HEAD and part.size and writer is not None:
            try:
                await _send(writer, fd, part, write_timeout)
            except ConnectionError:
                transport = request.transport
                if transport is not None and not transport.is_closing():
                    raise  # the file was cut short: aiohttp ends the connection mid-answer
                return resp  # the viewer left mid-answer: aiohttp meets the lost connection, logs only the access
        await resp.write_eof()
        return resp
    finally:
        os.close(fd)


async def _send(writer: AbstractStreamWriter, fd: int, part: ByteRange, write_timeout: float | None) -> None:
    sent = 0
    if part.size >= MIN_SENDFILE and _may_send_direct(writer):  # (else the preads below read it, in the thread)
        if not in_page_cache(fd, part.start, part.size):
            Sent.uncached += 1  # (beyond what a socket takes at once the thread's preads below read it)
            await asyncio.to_thread(read_into_cache, fd, part.start, min(part.size, PROBE_SPAN))
        sent = _send_direct(writer, fd, part.start, part.size)
    offset, end = part.start + sent, part.end
    while offset < end:
        chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
        if not chunk:
            raise ConnectionResetError("the file was cut short while being sent")  # aiohttp closes the connection
        await write_within(writer.write, chunk, write_timeout, writer.transport)  # type: ignore[attr-defined]
        offset += len(chunk)


async def write_within(write: Callable[[bytes], Awaitable[None]], data: bytes, timeout_s: float | None,
                       transport: asyncio.BaseTransport | None) -> None:
    """await write(data) (which waits while the transport is above its high-water mark) for at most
    `timeout_s` (None: no limit). A reader that has not taken it by then is disconnected, its transport
    reset and its buffers freed, and ConnectionResetError raised: aiohttp takes it for a client gone.
    So `http.write_timeout` bounds how long a reader may take for a chunk (256 KiB)."""
    try:
        async with asyncio.timeout(timeout_s):
            await write(data)
    except TimeoutError:
        reset(transport, closing_too=True)
        raise ConnectionResetError("the reader took nothing within http.write_timeout") from None


def _may_send_direct(writer: AbstractStreamWriter) -> bool:
    """Whether os.sendfile may put bytes on the writer's socket: plain TCP, open."""
    transport = writer.transport  # type: ignore[attr-defined]
    if transport is None or transport.is_closing():
        return False
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
        return False  # TLS: the socket under it carries ciphertext
    return transport.get_extra_info("socket") is not None


def _send_direct(writer: AbstractStreamWriter, fd: int, offset: int, count: int) -> int:
    """Bytes of [offset, offset+count) os.sendfile put on the socket now, without waiting; 0 when it may not."""
    if not _may_send_direct(writer):
        return 0
    transport = writer.transport  # type: ignore[attr-defined]
    writer.send_headers()  # type: ignore[attr-defined]  # the head first: into the transport, normally onto the wire
    # The head still queued behind a full socket: send_fd answers 0, and the rest keeps its order the ordinary
    # way; a file that ended early (truncated meanwhile) is found by the pread path.
    return send_fd(transport, fd, offset, count)
