"""An HTTP-FLV viewer for tests: reads /APP/NAME.flv in the background and parses it with FlvReader.

It records every tag with the monotonic time its bytes arrived, keeps the raw bytes (for PyAV), and
says whether the server ended the response. Usage:

    async with FlvViewer(url) as viewer:          # retries 404 until the stream is live
        await viewer.wait_video_frames(50, timeout_s=10)
    decode_flv(viewer.raw)
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import aiohttp
from multidict import CIMultiDict

from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import FlvReader, FlvTag


class FlvViewer:
    def __init__(self, url: str, *, live_timeout_s: float = 10.0, expect_status: int = 200,
                 watch: Callable[[], None] | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = url
        self.ssl_context = ssl_context
        """For https:// URLs: the context that trusts the server's certificate."""
        self.watch = watch
        """Called while waiting; raises to end the wait early (the server or the publisher died)."""
        self.live_timeout_s = live_timeout_s
        self.expect_status = expect_status
        self.status: int | None = None
        self.headers: CIMultiDict[str] = CIMultiDict()
        self.raw = bytearray()
        self.tags: list[FlvTag] = []
        self.arrivals: list[float] = []
        """time.monotonic() at which the bytes completing each tag arrived."""
        self.requested_at: float | None = None
        """time.monotonic() when the (last, successful) request was sent."""
        self.ended = False
        """The server ended the response cleanly (EOF)."""
        self.ended_at: float | None = None
        """time.monotonic() when the response ended, cleanly or not."""
        self.error: BaseException | None = None
        """What broke the read, other than a clean end: a parse error, a reset, ..."""
        self.reader = FlvReader()
        self._session: aiohttp.ClientSession | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> FlvViewer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; while the answer is 404 (stream not live yet) retry until live_timeout_s.

        Raises AssertionError if the final answer is not `expect_status`.
        """
        expect_status = self.expect_status
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        deadline = time.monotonic() + self.live_timeout_s
        while True:
            self.requested_at = time.monotonic()
            resp = await asyncio.wait_for(self._session.get(self.url, ssl=self.ssl_context or True), timeout=10)
            self.status = resp.status
            self.headers = CIMultiDict(resp.headers)
            if resp.status == 404 and expect_status != 404 and time.monotonic() < deadline:
                resp.release()
                if self.watch is not None:
                    self.watch()
                await asyncio.sleep(0.1)
                continue
            break
        self._response = resp
        if resp.status != expect_status:
            body = await asyncio.wait_for(resp.read(), timeout=5)
            raise AssertionError(f"GET {self.url} answered {resp.status}, expected {expect_status}: {body[:500]!r}")
        if resp.status == 200:
            self._task = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        assert self._response is not None
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                now = time.monotonic()
                if not chunk:
                    self.reader.feed_eof()
                    self.ended = True
                    break
                self.raw += chunk
                tags = self.reader.feed(chunk)
                if tags:
                    self.tags.extend(tags)
                    self.arrivals.extend([now] * len(tags))
                self._changed.set()
        except (aiohttp.ClientError, MediaError, ConnectionError) as err:
            self.error = err
        finally:
            if self.ended or self.error is not None:
                self.ended_at = time.monotonic()
            self._changed.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._response is not None:
            self._response.close()
        if self._session is not None:
            await self._session.close()

    # -- waiting -------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.ended or self.error is not None

    async def wait_until(self, predicate: Callable[[FlvViewer], bool], timeout_s: float) -> bool:
        """Wait until predicate(self) holds (True), the response is over, or timeout_s passes (False)."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self):
            if self.done:
                return predicate(self)
            if self.watch is not None:
                self.watch()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))
            except asyncio.TimeoutError:
                pass
        return True

    async def wait_video_frames(self, count: int, timeout_s: float) -> bool:
        return await self.wait_until(lambda v: v.video_frame_count >= count, timeout_s)

    async def wait_end(self, timeout_s: float) -> bool:
        return await self.wait_until(lambda v: v.done, timeout_s)

    # -- what arrived --------------------------------------------------------------------------------------
    @property
    def media_tags(self) -> list[FlvTag]:
        return [t for t in self.tags if t.kind != FrameKind.DATA and not t.is_sequence_header]

    @property
    def video_frame_count(self) -> int:
        return sum(1 for t in self.tags if t.kind == FrameKind.VIDEO and not t.is_sequence_header)

    @property
    def audio_frame_count(self) -> int:
        return sum(1 for t in self.tags if t.kind == FrameKind.AUDIO and not t.is_sequence_header)

    def first_keyframe_index(self) -> int | None:
        for i, t in enumerate(self.tags):
            if t.is_video_keyframe:
                return i
        return None

    def complete_flv(self) -> bytes:
        """The FLV header and every complete tag received: what a demuxer can read without a cut tag."""
        return bytes(self.raw[:13]) + b"".join(t.encode() for t in self.tags)

    def describe_start(self, n: int = 8) -> str:
        """The first tags, for failure messages."""
        return ", ".join(describe_tag(t) for t in self.tags[:n])


def describe_tag(tag: FlvTag) -> str:
    kind = {8: "audio", 9: "video", 18: "data"}.get(tag.kind, str(tag.kind))
    extra = " seqhdr" if tag.is_sequence_header else " key" if tag.is_video_keyframe else ""
    return f"{kind}@{tag.timestamp_ms}{extra}({len(tag.body)}B)"
