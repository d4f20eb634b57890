"""HTTP-FLV viewers for load tests: many in one process, each reading only FLV tag headers.

A viewer is an asyncio BufferedProtocol on a raw socket. Every read lands in one buffer shared by all
viewers of the process (reads are handled one at a time on the loop, and bodies are never kept), the
HTTP parser strips the response head and any chunked framing, and FlvTagScanner looks at the 11-byte
tag header plus the first two body bytes (to tell a keyframe from a sequence header) and skips the rest.
So a viewer costs a few microseconds per read and per tag, whatever the bitrate.

Run as a worker process (`python bench/_flv_viewers.py CONFIG_JSON`): it opens its viewers spread over
a ramp, samples every viewer's newest media timestamp at ticks shared with the other workers (all
processes read the same CLOCK_MONOTONIC), snapshots counters at the window's first and last tick, and
on "stop" (or end of stdin) prints one JSON result on stdout and exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _aio import ViewerEnd, install_fast_loop, raise_nofile_limit, watch_stdin_for_stop  # noqa: E402
from _http import HttpError, HttpResponseParser, request_bytes  # noqa: E402

READ_SIZE = 256 * 1024
_SHARED = bytearray(READ_SIZE)
_SHARED_VIEW = memoryview(_SHARED)

_FILE_HEADER, _TAG_HEADER = 0, 1


class FlvError(ValueError):
    """The FLV byte stream is malformed (or we lost track of tag boundaries)."""


class FlvTagScanner:
    """Counts the tags of an FLV byte stream while skipping their bodies.

    feed() takes any split of the stream. `on_tag(kind, ts_ms, keyframe)` (optional) is called when a
    tag's last byte (its PreviousTagSize) has arrived; counters move as soon as a header is read.
    """

    __slots__ = (
        "_state", "_skip", "_part", "_need", "_pending", "on_tag",
        "bytes", "tags", "video_tags", "audio_tags", "keyframes", "newest_ts", "first_ts",
    )

    def __init__(self, on_tag: Callable[[int, int, bool], None] | None = None) -> None:
        self._state = _FILE_HEADER
        self._skip = 0
        self._part = bytearray()
        self._need = 9
        self._pending: tuple[int, int, bool] | None = None
        self.on_tag = on_tag
        self.bytes = 0
        self.tags = 0
        self.video_tags = 0
        self.audio_tags = 0
        self.keyframes = 0
        self.newest_ts = -1
        self.first_ts = -1

    def feed(self, buf, pos: int, end: int) -> None:
        self.bytes += end - pos
        skip = self._skip
        while True:
            if skip:
                avail = end - pos
                if avail < skip:
                    self._skip = skip - avail
                    return
                pos += skip
                skip = 0
                if self._pending is not None:
                    kind, ts, kf = self._pending
                    self._pending = None
                    self.on_tag(kind, ts, kf)
            if pos >= end:
                self._skip = 0
                return
            part = self._part
            if part or end - pos < self._need:
                take = min(self._need - len(part), end - pos)
                part += buf[pos : pos + take]
                pos += take
                if len(part) < self._need:
                    self._skip = 0
                    return
                skip = self._header(part, 0) - len(part)
                part.clear()
            else:
                skip = self._header(buf, pos)

    def _header(self, b, p: int) -> int:
        """Parse the header at b[p:]; returns how many bytes from p the current item spans."""
        if self._state == _TAG_HEADER:
            kind = b[p] & 0x1F
            size = (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]
            ts = (b[p + 4] << 16) | (b[p + 5] << 8) | b[p + 6] | (b[p + 7] << 24)
            keyframe = False
            if kind == 9:
                self.video_tags += 1
                b0 = b[p + 11]
                if size >= 2:
                    if b0 & 0x80:  # Enhanced RTMP: frame type bits 4-6, packet type bits 0-3
                        keyframe = ((b0 >> 4) & 7) == 1 and (b0 & 0x0F) not in (0, 2, 4)
                    elif (b0 >> 4) == 1:
                        keyframe = (b0 & 0x0F) not in (7, 12) or b[p + 12] == 1
                if keyframe:
                    self.keyframes += 1
            elif kind == 8:
                self.audio_tags += 1
            elif kind != 18:
                raise FlvError(f"FLV tag type {kind} at stream byte ~{self.bytes} is not 8, 9 or 18: stream desynced")
            self.tags += 1
            if ts > self.newest_ts:
                self.newest_ts = ts
            if self.first_ts < 0 and kind != 18:
                self.first_ts = ts
            if self.on_tag is not None:
                self._pending = (kind, ts, keyframe)
            return 11 + size + 4
        # File header: 'FLV', version, flags, DataOffset (normally 9), then PreviousTagSize0.
        if b[p] != 0x46 or b[p + 1] != 0x4C or b[p + 2] != 0x56:
            raise FlvError(f"response body starts with {bytes(b[p:p + 3])!r}, not an FLV header")
        offset = (b[p + 5] << 24) | (b[p + 6] << 16) | (b[p + 7] << 8) | b[p + 8]
        if offset < 9 or offset > 1024:
            raise FlvError(f"FLV header DataOffset {offset} is invalid")
        self._state = _TAG_HEADER
        self._need = 13  # 11-byte tag header plus 2 body bytes (frame type, AVC packet type)
        return offset + 4


class FlvViewer(ViewerEnd, asyncio.BufferedProtocol):
    """One HTTP-FLV connection that counts what it receives."""

    def __init__(self, host: str, port: int, path: str, on_tag=None, on_close=None) -> None:
        self.request = request_bytes(host, port, path, keep_alive=True)
        self.scanner = FlvTagScanner(on_tag)
        self.http = HttpResponseParser(self._on_head, self.scanner.feed, self._on_end)
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.error: str | None = None
        self.requested_at = 0.0
        self.head_at = 0.0
        self.closed_at = 0.0
        self.ended = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.requested_at = time.monotonic()
        transport.write(self.request)

    def get_buffer(self, sizehint: int):
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self.http.feed(_SHARED, 0, nbytes)
        except (HttpError, FlvError) as err:
            self.fail(str(err))

    def _on_head(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.head_at = time.monotonic()
        if status != 200:
            self.fail(f"HTTP {status}")

    def _on_end(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.close()

    def eof_received(self):
        self.http.feed_eof()
        self.ended = True
        return False



async def open_viewer(host: str, port: int, path: str, **kw) -> FlvViewer:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: FlvViewer(host, port, path, **kw), host, port)
    return proto


async def first_keyframe_ms(host: str, port: int, path: str, timeout_s: float = 10.0) -> float | None:
    """Time from sending a GET for an HTTP-FLV stream to the first video keyframe tag fully received.

    None when no keyframe arrived within the timeout (or the server refused the stream)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    viewer: FlvViewer | None = None

    def on_tag(kind: int, ts: int, keyframe: bool) -> None:
        if keyframe and not done.done():
            done.set_result(time.monotonic())

    def on_close(v: FlvViewer) -> None:
        if not done.done():
            done.set_exception(ConnectionError(v.error or "stream ended before a keyframe"))

    try:
        async with asyncio.timeout(timeout_s):
            viewer = await open_viewer(host, port, path, on_tag=on_tag, on_close=on_close)
            t = await done
            return (t - viewer.requested_at) * 1000.0
    except (TimeoutError, ConnectionError, OSError):
        return None
    finally:
        if viewer is not None:
            viewer.close()


# ---------------------------------------------------------------- worker process


class _Worker:
    """Runs cfg["count"] viewers and samples them at shared ticks. `opener(host, port, path)` opens one
    viewer: HTTP-FLV by default; _outputs.py passes its WebSocket-FLV and RTMP openers, whose viewers
    have the same counters."""

    def __init__(self, cfg: dict, opener=None) -> None:
        self.cfg = cfg
        self.opener = opener or open_viewer
        self.viewers: list[FlvViewer | None] = []
        self.streams: list[int] = []
        self.connect_errors: dict[int, str] = {}
        self.ticks: list[list[int]] = []
        self.tick_times: list[float] = []
        self.tick_late_ms: list[float] = []
        self.snap: dict[str, list[list[int]]] = {}
        self.stop = asyncio.Event()

    async def _connect(self, i: int, path: str, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            async with asyncio.timeout(10):
                self.viewers[i] = await self.opener(self.cfg["host"], self.cfg["port"], path)
        except (OSError, TimeoutError) as err:
            self.connect_errors[i] = f"connect: {type(err).__name__}: {err}"

    def _snapshot(self, name: str) -> None:
        self.snap[name] = [
            [v.scanner.bytes, v.scanner.tags, v.scanner.video_tags, v.scanner.keyframes] if v else [0, 0, 0, 0]
            for v in self.viewers
        ]

    async def run(self) -> dict:
        cfg = self.cfg
        n = cfg["count"]
        t0, tick_s, ramp_s = cfg["t0"], cfg["tick_s"], cfg["ramp_s"]
        ws_tick, we_tick, max_ticks = cfg["ws_tick"], cfg["we_tick"], cfg["max_ticks"]
        self.viewers = [None] * n
        first, total_streams = cfg["first_index"], cfg["stream_count"]
        connects = []
        for i in range(n):
            g = first + i
            s = g % total_streams
            self.streams.append(s)
            at = t0 + ramp_s * (g / max(1, cfg["total_viewers"]))
            connects.append(asyncio.ensure_future(self._connect(i, cfg["paths"][s], at)))
        watch_stdin_for_stop(self.stop)
        k = 0
        while k < max_ticks and not self.stop.is_set():
            due = t0 + k * tick_s
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            now = time.monotonic()
            self.tick_times.append(now)
            self.tick_late_ms.append(round((now - due) * 1000, 2))
            self.ticks.append([v.scanner.newest_ts if v else -1 for v in self.viewers])
            if k == ws_tick:
                self._snapshot("ws")
            if k == we_tick:
                self._snapshot("we")
            k += 1
        for c in connects:
            c.cancel()
        out_viewers = []
        for i, v in enumerate(self.viewers):
            if v is None:
                out_viewers.append({"stream": self.streams[i], "error": self.connect_errors.get(i, "never connected")})
                continue
            out_viewers.append({
                "stream": self.streams[i],
                "status": v.status,
                "error": v.error,
                "ended": v.ended,
                "closed_at": v.closed_at or None,
                "head_ms": round((v.head_at - v.requested_at) * 1000, 2) if v.head_at else None,
                "bytes": v.scanner.bytes,
                "tags": v.scanner.tags,
                "keyframes": v.scanner.keyframes,
            })
            v.close()
        await asyncio.sleep(0)
        return {
            "pid": os.getpid(),
            "first_index": first,
            "viewers": out_viewers,
            "ticks": self.ticks,
            "tick_times": self.tick_times,
            "tick_late_ms": self.tick_late_ms,
            "snap": self.snap,
        }


def worker_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    install_fast_loop()
    raise_nofile_limit()
    result = asyncio.run(_Worker(cfg).run())
    try:
        sys.stdout.write(json.dumps(result, separators=(",", ":")))
        sys.stdout.flush()
    except BrokenPipeError:  # the orchestrator is gone: nobody to report to
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv))
