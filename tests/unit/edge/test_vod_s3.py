"""The Range header of /vod/ID.mp4 for a recording in object storage: what is asked, what is refused (416);
and a bucket that fails in the middle of an answer."""

from __future__ import annotations

import asyncio
import types

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from mediaserver.config import Config
from mediaserver.edge.keys import CONFIG
from mediaserver.edge.vod_s3 import byte_range, serve_mp4
from mediaserver.record.objectstore import StorageError


@pytest.mark.parametrize("header, size, wanted", [
    (None, 1000, None),
    ("bytes=0-99", 1000, (0, 99)),
    ("bytes=0-0", 1000, (0, 0)),
    ("bytes=900-", 1000, (900, 999)),
    ("bytes=900-5000", 1000, (900, 999)),  # the last byte is clipped to the object
    ("bytes=-100", 1000, (900, 999)),  # a suffix
    ("bytes=-5000", 1000, (0, 999)),  # a suffix longer than the object: all of it
    (" bytes=1-2 ", 1000, (1, 2)),
    ("BYTES=0-99", 1000, (0, 99)),  # a range unit in any case, as a local file's
])
def test_ranges_that_select_bytes(header, size, wanted):
    assert byte_range(header, size) == wanted


@pytest.mark.parametrize("header, size", [
    ("bytes=1000-", 1000),  # beyond the end
    ("bytes=5000-6000", 1000),
    ("bytes=10-5", 1000),  # backwards
    ("bytes=-0", 1000),
    ("bytes=-", 1000),
    ("bytes=0-1,5-6", 1000),  # several ranges
    ("items=0-1", 1000),
    ("bytes=a-b", 1000),
    ("bytes=0-", 0),  # nothing to select in an empty object
    ("bytes=-1", 0),
    ("bytes=" + "9" * 5000 + "-", 1000),
])
def test_ranges_that_cannot_be_served_are_refused(header, size):
    with pytest.raises(ValueError):
        byte_range(header, size)


async def test_a_bucket_failing_in_the_middle_of_a_download_ends_the_answer_short_and_closes_it():
    """The viewer sees a body shorter than its Content-Length at once (and may resume with a Range), instead of
    waiting on a kept-alive connection for bytes that never come."""
    chunk = b"m" * 65536

    async def read_range(key, first, last):
        yield chunk
        raise StorageError("connection reset by the bucket", "Unreachable")

    store = types.SimpleNamespace(bucket="recs", cfg=types.SimpleNamespace(presign=False), read_range=read_range)
    manager = types.SimpleNamespace(uploader=types.SimpleNamespace(store=store))
    row = types.SimpleNamespace(id="rec1", location="s3://recs/live/cam/1.mp4", bytes=3 * len(chunk))

    async def handler(request):
        return await serve_mp4(request, manager, row)

    app = web.Application()
    app[CONFIG] = Config()
    app.router.add_get("/vod/rec1.mp4", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        async with asyncio.timeout(5):
            async with http.get(server.make_url("/vod/rec1.mp4")) as resp:
                assert resp.status == 200 and resp.headers["Content-Length"] == str(3 * len(chunk))
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
