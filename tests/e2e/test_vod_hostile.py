"""VOD routes under hostile requests: malformed and unsatisfiable Range headers get 416, path tricks and
oversized ids get 404 (never a file outside the recordings), and a viewer that never reads a VOD download
holds neither the server nor other viewers."""

from __future__ import annotations

import asyncio

import aiohttp

from support.checks import wait_live
from support.page_cache import evict
from support.raw_net import raw_http_get, received_until_closed, stalled_viewer

ADMIN = "admin-token-vod-hostile-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def _recording_with_data(http: aiohttp.ClientSession, server, stream: str) -> tuple[str, int]:
    """The id of `stream`'s recording once its file has a few fragments, and the file's size then."""
    for _ in range(80):
        async with http.get(f"{server.http_base}/api/v1/recordings?stream={stream}", headers=AUTH) as resp:
            rows = (await resp.json())["recordings"]
        if rows:
            async with http.get(f"{server.http_base}/vod/{rows[0]['id']}.mp4") as resp:
                size = len(await resp.read())
            if size > 200_000:
                return rows[0]["id"], size
        await asyncio.sleep(0.25)
    raise AssertionError(f"no recording of {stream} with data after 20 s")


async def test_vod_requests_that_attack_ranges_and_paths_get_clean_4xx(server_factory, publish, media, stream_name,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    (tmp_path / "secret.mp4").write_bytes(b"not a recording")
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        rec_id, size = await _recording_with_data(http, server, stream_name)
        url = f"{server.http_base}/vod/{rec_id}.mp4"
        for bad in ("bytes=abc", "bytes=5-2", "bytes=-0", "bytes=", "items=0-10", f"bytes={10**30}-",
                    "bytes=0-1,5-6" + ",7-8" * 2000):
            async with http.get(url, headers={"Range": bad}) as resp:
                await resp.read()
                assert resp.status == 416, (bad[:40], resp.status)
        async with http.get(url, headers={"Range": f"bytes=100-{10**30}"}) as resp:
            body = await resp.read()
            # clipped to the file as it was then (a recording grows while it is written)
            assert resp.status == 206 and resp.headers["Content-Range"].startswith("bytes 100-"), resp.headers
            assert len(body) >= size - 100

        port = server.http_port
        for target in (b"/vod/..%2f..%2fsecret.mp4", b"/vod/../secret.mp4", b"/vod/%2e%2e/secret.mp4",
                       b"/vod/" + b"a" * 5000 + b".mp4", b"/vod/" + rec_id.encode() + b"%00.mp4",
                       b"/vod/" + rec_id.encode() + b"/..%2f..%2f..%2fsecret.mp4/index.m3u8",
                       b"/vod/%ff%fe.mp4"):
            answer = await raw_http_get(port, target)
            assert 400 <= answer.status < 500 and b"not a recording" not in answer.body, (target[:60], answer)
        junk_query = await raw_http_get(port, b"/vod/" + rec_id.encode() + b"/index.m3u8?x=" + b"%" * 3000)
        assert junk_query.status in (200, 400), junk_query  # a query the route does not read is no error

        # A viewer that never reads a download: the server keeps serving everyone else at once.
        stalled = [stalled_viewer(port, f"/vod/{rec_id}.mp4") for _ in range(4)]
        try:
            await asyncio.sleep(1.0)
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 200 and len(await resp.read()) >= size
            async with http.get(f"{server.http_base}/vod/{rec_id}/index.m3u8",
                                timeout=aiohttp.ClientTimeout(total=10)) as resp:
                assert resp.status == 200 and "#EXT-X-BYTERANGE" in await resp.text()
        finally:
            for s in stalled:
                s.close()
    await wait_live(server, stream_name)
    server.assert_alive()


async def test_vod_readers_that_stop_reading_hold_a_chunk_each_and_are_dropped_after_the_write_timeout(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path):
    """Ranges of a recording answered by the fast lane (after the full stack served the file once) and by
    the full stack itself, from the disk (not in the page cache): a reader with a tiny window that takes
    nothing holds at most a chunk and the transport's high-water mark of the server's memory, not the range,
    and is disconnected once `http.write_timeout` passes without progress."""
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all",
                               "http.write_timeout": 1.0})
    publish(server, stream_name, media.heavy, loop=True)  # ~6 Mbit/s: megabytes within seconds
    await wait_live(server, stream_name)
    want = 6 << 20  # more than a loopback socket's send buffer takes (4 MiB with its overhead)
    async with aiohttp.ClientSession() as http:
        rec_id = None
        for _ in range(120):
            async with http.get(f"{server.http_base}/api/v1/recordings?stream={stream_name}", headers=AUTH) as resp:
                rows = (await resp.json())["recordings"]
            if rows:
                rec_id = rows[0]["id"]
                async with http.get(f"{server.http_base}/vod/{rec_id}.mp4", headers={"Range": "bytes=0-99"}) as resp:
                    await resp.read()  # the full stack serves it once: the lane may take its next ranges
                    total = int(resp.headers.get("Content-Range", "bytes 0-0/0").rpartition("/")[2])
                if total > want:
                    break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError(f"no recording of {stream_name} over {want} bytes; log:\n{server.log_tail()}")
    for path in (tmp_path / "rec").rglob("*.mp4"):
        evict(path)  # on the disk only, as written: each answer reads it into the cache in a thread first
    before = server.rss_bytes()
    port = server.http_port
    asked = f"Range: bytes=0-{want - 1}\r\n"
    lane = [stalled_viewer(port, f"/vod/{rec_id}.mp4", headers=asked) for _ in range(4)]
    # the lane leaves a request with Connection: close to the full stack
    full = [stalled_viewer(port, f"/vod/{rec_id}.mp4", headers=asked + "Connection: close\r\n") for _ in range(2)]
    try:
        await asyncio.sleep(0.6)  # within the write timeout: everything asked is as far as it gets
        grown = server.rss_bytes() - before
        # 6 readers x 2-3 MiB beyond their socket buffers would be 15 MiB; a chunk and the high-water mark each, 2
        assert grown < 8 << 20, f"the server grew by {grown >> 20} MiB for 6 readers that take nothing"
        await asyncio.sleep(2.5)
        # Read now: what the kernel had taken before the server let go (its socket buffer, up to 4 MiB), then
        # the end, before the whole range
        got = [received_until_closed(s, 5.0, limit=want + 65536) for s in lane + full]
        assert all(0 <= n < want for n in got), \
            f"bytes read by each reader before the server closed (-1: still open; lane x4, full x2): {got}"
    finally:
        for s in lane + full:
            s.close()
    async with aiohttp.ClientSession() as http:  # and the file is still served whole to a reader that reads
        async with http.get(f"{server.http_base}/vod/{rec_id}.mp4", headers={"Range": f"bytes=0-{want - 1}"},
                            timeout=aiohttp.ClientTimeout(total=20)) as resp:
            assert resp.status == 206 and len(await resp.read()) == want
    server.assert_alive()

