"""A file response whose bytes go from the page cache to the socket with os.sendfile.

aiohttp's FileResponse asks the loop for `loop.sendfile`, which uvloop does not implement, so it falls back
to reading 256 KiB chunks in the thread pool and writing them: about four times the CPU of sendfile for a
VOD segment. Here, once the response head has left (the transport's buffer is empty), `os.sendfile` puts as
much of the range as the socket takes now straight on the plain TCP socket; what it does not take (a slow
reader's full socket buffer) goes the fallback way. The transport never sees those bytes, which is safe
because nothing else writes to an HTTP/1.1 connection while its response is being sent.

Not for TLS connections (the bytes must be encrypted by the transport) nor when the head is still queued:
those take aiohttp's path unchanged. Like nginx's default (sendfile on, no aio threads), a range that is not
in the page cache is read from the disk inside the call; recordings are mostly watched while they are
still cached, and the alternative (a thread) would race the connection's file descriptor being closed.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import IO, Any

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

MIN_SENDFILE = 16 * 1024
"""Below this a range is sent the ordinary way: one syscall either way."""
_ZERO_SUFFIX = re.compile(r"\s*bytes\s*=\s*-0+\s*")


class SendfileResponse(web.FileResponse):
    sent_direct = 0
    """Bytes sent by os.sendfile since start (all responses): tells a test or a bench the path is used."""

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._file = Path(path)

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if _ZERO_SUFFIX.fullmatch(request.headers.get(hdrs.RANGE, "")):
            # A suffix of zero bytes is unsatisfiable (RFC 9110 14.1.1); aiohttp would send the whole file.
            size = (await asyncio.to_thread(os.stat, self._file)).st_size
            self.set_status(416)
            self.headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            self.content_length = 0
            return await web.StreamResponse.prepare(self, request)
        return await super().prepare(request)

    async def _sendfile_fallback(self, writer: AbstractStreamWriter, fobj: IO[Any], offset: int,
                                 count: int) -> AbstractStreamWriter:
        sent = _send_direct(writer, fobj, offset, count) if count >= MIN_SENDFILE else 0
        if sent >= count:
            return writer
        return await super()._sendfile_fallback(writer, fobj, offset + sent, count - sent)


def _send_direct(writer: AbstractStreamWriter, fobj: IO[Any], offset: int, count: int) -> int:
    """Bytes of [offset, offset+count) os.sendfile put on the socket now, without waiting; 0 when it may not."""
    transport = writer.transport  # type: ignore[attr-defined]
    if transport is None or transport.is_closing():
        return 0
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
        return 0  # TLS: the socket under it carries ciphertext
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    writer.send_headers()  # type: ignore[attr-defined]  # the head first: into the transport, normally onto the wire
    if transport.get_write_buffer_size():
        return 0  # the head is still queued behind a full socket: keep the order, send the ordinary way
    sent = 0
    try:
        out, src = sock.fileno(), fobj.fileno()
        while sent < count:
            n = os.sendfile(out, src, offset + sent, count - sent)
            if n == 0:
                break  # the file ended early (truncated meanwhile): let the fallback find out
            sent += n
    except (BlockingIOError, InterruptedError):
        pass  # the socket is full: the rest goes through the transport, which waits for it
    except OSError:
        pass  # a reset peer and the like: the fallback's write meets it and aiohttp handles it
    SendfileResponse.sent_direct += sent
    return sent
