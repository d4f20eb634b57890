"""Recording in a cluster: an origin and an edge share a real redis-server and a real PostgreSQL catalog.
The origin records the stream it owns (record.mode = "all" on both: the edge's pull of it is not recorded
again); the edge's admin API lists the recording, and the edge serves its VOD and DVR by fetching the bytes
from the origin's disk (Range passed through, decoded with PyAV); with the origin stopped the edge answers
503 with a hint at once."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import aiohttp
import m3u8
import pytest

from e2e.test_cluster import ADMIN, cluster, redis, wait_owner  # noqa: F401  (fixtures)
from support.decode import decode_media
from support.http import admin_api, get, ranged
from support.postgres_server import start_postgres

api = partial(admin_api, token=ADMIN)


@pytest.fixture
def database_url():
    server = start_postgres()
    yield server.create_database()
    server.stop()


async def test_an_edge_lists_and_serves_a_recording_made_on_the_origin(cluster, redis, database_url,  # noqa: F811
                                                                       publish, media, stream_name, tmp_path):
    record = {"record.mode": "all", "record.database_url": database_url}
    origin = cluster("origin", "origin-1", **record, **{"record.path": str(tmp_path / "rec-origin")})
    edge = cluster("edge", "edge-1", **record, **{"record.path": str(tmp_path / "rec-edge")})
    publish(origin, stream_name, media.low, loop=True)
    await wait_owner(redis, stream_name)
    async with aiohttp.ClientSession() as http:
        # DVR on the edge: its viewer is admitted there (the stream is pulled), the playlist comes from the origin.
        dvr = f"{edge.http_base}/live/{stream_name}/dvr.m3u8"
        playlist = None
        for _ in range(60):
            status, text, headers = await get(http, dvr)
            playlist = m3u8.loads(text.decode(), uri=dvr) if status == 200 else None
            if playlist is not None and len(playlist.segments) >= 2:
                break
            await asyncio.sleep(0.25)
        assert playlist is not None and len(playlist.segments) >= 2, (status, text[:300])
        assert not playlist.is_endlist and headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        init = playlist.segment_map[0]
        assert init.absolute_uri.startswith(f"{edge.http_base}/vod/")  # the edge again: fetched from the origin
        data = await ranged(http, init.absolute_uri, init.byterange)
        data += await ranged(http, playlist.segments[0].absolute_uri, playlist.segments[0].byterange)
        report = decode_media(data, "mp4")
        assert report.errors == [] and report.video_frames >= 10, report.summary()

        status, body = await api(http, origin, "DELETE", f"/streams/live/{stream_name}/record")
        assert status == 200 and body["id"], body
        rec_id = body["id"]
        for _ in range(50):  # the origin's catalog writer completes the row just after the file closes
            status, row = await api(http, edge, "GET", f"/recordings/{rec_id}")
            if row.get("status") == "complete":
                break
            await asyncio.sleep(0.1)
        assert status == 200 and row["status"] == "complete" and row["node"] == "origin-1", row
        # The edge pulled the stream (mode "all" there too) but only its origin recorded it.
        status, listing = await api(http, edge, "GET", f"/recordings?stream={stream_name}")
        assert status == 200 and [r["id"] for r in listing["recordings"]] == [rec_id], listing
        assert "recording_started" not in edge.log_text()
        assert "pull_start" in edge.log_text()

        mp4 = f"{edge.http_base}/vod/{rec_id}.mp4"
        status, data, headers = await get(http, mp4)
        assert status == 200 and len(data) == row["bytes"] == int(headers["Content-Length"]), (status, len(data), row)
        report = decode_media(data, "mp4")
        assert report.errors == [] and report.video_frames >= 30 and report.audio_frames > 20, report.summary()
        size = len(data)
        status, part, headers = await get(http, mp4, {"Range": "bytes=0-99"})
        assert status == 206 and part == data[:100] and headers["Content-Range"] == f"bytes 0-99/{size}", headers
        status, part, headers = await get(http, mp4, {"Range": "bytes=-100"})
        assert status == 206 and part == data[-100:] and headers["Content-Range"] == f"bytes {size - 100}-{size - 1}/{size}"
        status, _, headers = await get(http, mp4, {"Range": f"bytes={size + 10}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{size}", headers

        index = f"{edge.http_base}/vod/{rec_id}/index.m3u8"
        status, text, _ = await get(http, index)
        assert status == 200, text[:300]
        playlist = m3u8.loads(text.decode(), uri=index)
        assert playlist.is_endlist and len(playlist.segments) >= 2
        data = await ranged(http, playlist.segment_map[0].absolute_uri, playlist.segment_map[0].byterange)
        for segment in playlist.segments:
            data += await ranged(http, segment.absolute_uri, segment.byterange)
        assert data == (await get(http, mp4))[1]  # the ranges cover the file, in order
        assert decode_media(data, "mp4").errors == []

        # Deleting is for the node whose disk holds the file: the edge says which.
        status, body = await api(http, edge, "DELETE", f"/recordings/{rec_id}")
        assert status == 409 and "origin-1" in body["error"] + body.get("hint", ""), body

        # The origin stops: the edge still lists the recording and answers its files at once with why.
        assert origin.terminate() == 0
        started = time.monotonic()
        status, body, headers = await get(http, mp4, {"Range": "bytes=0-99"})
        assert status == 503 and b"origin-1" in body and headers.get("Retry-After"), (status, body[:300])
        assert time.monotonic() - started < 5.0
        assert (await api(http, edge, "GET", f"/recordings/{rec_id}"))[0] == 200
        assert (await get(http, f"{edge.http_base}/vod/nosuchrecording.mp4"))[0] == 404
