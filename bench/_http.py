"""A small incremental HTTP/1.1 response parser for the benchmark's raw-socket clients.

The load clients keep a thousand connections in one process, so they cannot afford a general HTTP
client: they read into one shared buffer and hand each read to this parser, which finds the response
head, then passes body bytes (Content-Length, chunked, or until close) to a callback as (buffer, start,
end) without copying them. The callback must not keep the buffer: it is reused by the next read.

Parses responses only, one at a time (no pipelining), so a keep-alive connection sends its next request
after `on_end`. Heads are bounded (64 KiB), and so are chunk-size and trailer lines; anything malformed
raises HttpError, which names what was wrong.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_HEAD = 64 * 1024
MAX_LINE = 4096

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_EOF, _DONE = range(8)


class HttpError(ValueError):
    """The server sent something that is not an HTTP/1.x response we can read."""


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (names lower-cased, last one wins) of a response head without its CRLFCRLF."""
    lines = head.split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise HttpError(f"bad HTTP status line {status_line[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpError(f"bad HTTP header line {line[:80]!r}")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return int(parts[1]), headers


class HttpResponseParser:
    """Feed it the bytes of a connection; it calls on_head(status, headers), on_body(buf, start, end)
    for each piece of the (de-chunked) body, and on_end() when the response is complete."""

    __slots__ = (
        "on_head", "on_body", "on_end", "_state", "_left", "_line", "status", "headers",
        "keep_alive", "no_body",
    )

    def __init__(
        self,
        on_head: Callable[[int, dict[str, str]], None] | None,
        on_body: Callable[[bytes | bytearray, int, int], None] | None,
        on_end: Callable[[], None] | None,
    ) -> None:
        self.on_head = on_head
        self.on_body = on_body
        self.on_end = on_end
        self._state = _HEAD
        self._left = 0
        self._line = bytearray()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.no_body = False
        """Set before a response arrives when the request was HEAD: the head is then all there is."""

    @property
    def in_response(self) -> bool:
        """Whether part of a response has arrived and its end has not."""
        return self._state != _HEAD or bool(self._line)

    def feed(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        """Parse buf[pos:end]. buf must support .find (bytes or bytearray, not memoryview)."""
        while pos < end:
            state = self._state
            if state == _LENGTH:
                n = end - pos
                left = self._left
                if n < left:
                    self._left = left - n
                    if self.on_body is not None:
                        self.on_body(buf, pos, end)
                    return
                if self.on_body is not None:
                    self.on_body(buf, pos, pos + left)
                pos += left
                self._finish()
            elif state == _CHUNK_DATA:
                n = end - pos
                left = self._left
                if n < left:
                    self._left = left - n
                    if self.on_body is not None:
                        self.on_body(buf, pos, end)
                    return
                if self.on_body is not None:
                    self.on_body(buf, pos, pos + left)
                pos += left
                self._left = 2
                self._state = _CHUNK_CRLF
            elif state == _HEAD:
                pos = self._feed_head(buf, pos, end)
            elif state == _CHUNK_SIZE or state == _TRAILER:
                line, pos = self._take_line(buf, pos, end)
                if line is None:
                    return
                if state == _CHUNK_SIZE:
                    self._chunk_size(line)
                elif not line:
                    self._finish()
            elif state == _CHUNK_CRLF:
                expect = b"\r\n"[2 - self._left]
                if buf[pos] != expect:
                    raise HttpError("chunk data is not followed by CRLF: the chunk size was wrong")
                pos += 1
                self._left -= 1
                if not self._left:
                    self._state = _CHUNK_SIZE
            elif state == _UNTIL_EOF:
                if self.on_body is not None:
                    self.on_body(buf, pos, end)
                return
            else:  # _DONE: a response ended and the server sent more than it announced
                raise HttpError(f"{end - pos} bytes arrived after the end of a response")

    def feed_eof(self) -> bool:
        """The connection closed. Returns True when that ended a response normally (body until close)."""
        if self._state == _UNTIL_EOF:
            self._finish()
            return True
        return False

    def _feed_head(self, buf, pos: int, end: int) -> int:
        line = self._line
        if not line:
            i = buf.find(b"\r\n\r\n", pos, end)
            if i < 0:
                if end - pos > MAX_HEAD:
                    raise HttpError(f"response head exceeds {MAX_HEAD} bytes")
                line += buf[pos:end]
                return end
            head = bytes(buf[pos:i])
            pos = i + 4
        else:
            old = len(line)
            take = min(end - pos, MAX_HEAD + 4 - old)
            line += buf[pos : pos + take]
            i = line.find(b"\r\n\r\n", max(0, old - 3))
            if i < 0:
                if len(line) > MAX_HEAD:
                    raise HttpError(f"response head exceeds {MAX_HEAD} bytes")
                return pos + take
            head = bytes(line[:i])
            pos += i + 4 - old
            line.clear()
        self._start_body(*parse_head(head))
        return pos

    def _start_body(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn
        if self.on_head is not None:
            self.on_head(status, headers)
        if self.no_body or status in (204, 304) or 100 <= status < 200:
            self._finish()
            return
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            cl = headers["content-length"]
            if not cl.isdigit():
                raise HttpError(f"bad Content-Length {cl!r}")
            self._left = int(cl)
            self._state = _LENGTH
            if self._left == 0:
                self._finish()
        else:
            self.keep_alive = False
            self._state = _UNTIL_EOF

    def _take_line(self, buf, pos: int, end: int) -> tuple[bytes | None, int]:
        line = self._line
        i = buf.find(b"\n", pos, end)
        if i < 0:
            line += buf[pos:end]
            if len(line) > MAX_LINE:
                raise HttpError(f"chunk-size or trailer line longer than {MAX_LINE} bytes")
            return None, end
        line += buf[pos:i]
        if len(line) > MAX_LINE:
            raise HttpError(f"chunk-size or trailer line longer than {MAX_LINE} bytes")
        out = bytes(line).rstrip(b"\r")
        line.clear()
        return out, i + 1

    def _chunk_size(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise HttpError(f"bad chunk size line {line[:40]!r}")
        if size == 0:
            self._state = _TRAILER
        else:
            self._left = size
            self._state = _CHUNK_DATA

    def _finish(self) -> None:
        self._state = _HEAD if self.keep_alive else _DONE
        self._left = 0
        self.no_body = False
        if self.on_end is not None:
            self.on_end()


def request_bytes(host: str, port: int, path: str, *, keep_alive: bool = True, method: str = "GET",
                  headers: dict[str, str] | None = None) -> bytes:
    """A minimal HTTP/1.1 request (`headers`: more header fields, e.g. Range)."""
    conn = "keep-alive" if keep_alive else "close"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: mediaserver-bench\r\n"
        f"Accept: */*\r\n{extra}Connection: {conn}\r\n\r\n"
    ).encode("latin-1")
