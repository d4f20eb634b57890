"""Recording on a live server: an operator starts and stops a stream's recording through the admin API, the
catalog lists it, and the file is served as VOD (/vod/ID.mp4 with HTTP Range, /vod/ID/index.m3u8 over byte
ranges), decoded with PyAV. A server killed with SIGKILL mid-recording leaves a playable file, and the next
start marks its row interrupted."""

from __future__ import annotations

import asyncio
import io
import os
from functools import partial
from pathlib import Path

import aiohttp
import av
import m3u8

from e2e.test_auth_webhooks import hook  # noqa: F401  (fixture)
from support.checks import wait_live
from support.decode import decode_media
from support.http import admin_api, get, ranged
from support.page_cache import evict

ADMIN = "admin-token-recording-0123456789"
api = partial(admin_api, token=ADMIN)


def _open_in(pid: int, path: str) -> bool:
    """Whether process `pid` holds a descriptor of file `path` (deleted or not)."""
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            pass  # closed meanwhile
    return any(t == path or t == f"{path} (deleted)" for t in targets)


async def test_a_recording_is_listed_and_served_as_vod_with_ranges(server_factory, publish, media, stream_name,
                                                                  monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec")})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/record")
        assert status == 200 and body["recording"], body
        await asyncio.sleep(20)
        status, body = await api(http, server, "GET", f"/streams/live/{stream_name}")  # what the console shows
        assert body["recording"]["active"] and body["recording"]["id"], body["recording"]
        status, body = await api(http, server, "DELETE", f"/streams/live/{stream_name}/record")
        assert status == 200 and body["id"], body
        status, streams = await api(http, server, "GET", "/streams")
        assert [s["recording"] for s in streams["streams"]] == [{"active": False, "id": None}], streams
        rec_id = body["id"]
        for _ in range(50):  # the row is completed by the catalog's writer, just after the file closes
            status, row = await api(http, server, "GET", f"/recordings/{rec_id}")
            if row.get("status") == "complete":
                break
            await asyncio.sleep(0.1)
        assert status == 200 and row["status"] == "complete" and row["app"] == "live", row
        assert 18.0 <= row["duration_s"] <= 23.0 and row["bytes"] > 10_000, row
        status, listing = await api(http, server, "GET", f"/recordings?stream={stream_name}&limit=10")
        assert [r["id"] for r in listing["recordings"]] == [rec_id] and listing["next"] is None

        base = server.http_base
        status, data, headers = await get(http, f"{base}/vod/{rec_id}.mp4")
        assert status == 200 and len(data) == row["bytes"], (status, len(data), row["bytes"])
        report = decode_media(data, "mp4")
        assert report.errors == [] and report.audio_frames > 50, report.summary()
        # the whole duration decodes: every frame of it, give or take a GOP (25 frames) at either end
        assert abs(report.video_frames - row["duration_s"] * 25) <= 50, (report.summary(), row["duration_s"])

        size = len(data)
        status, part, headers = await get(http, f"{base}/vod/{rec_id}.mp4", {"Range": "bytes=0-99"})
        assert status == 206 and part == data[:100] and headers["Content-Range"] == f"bytes 0-99/{size}"
        status, part, _ = await get(http, f"{base}/vod/{rec_id}.mp4", {"Range": "bytes=-100"})
        assert status == 206 and part == data[-100:]
        status, _, _ = await get(http, f"{base}/vod/{rec_id}.mp4", {"Range": f"bytes={size + 10}-"})
        assert status == 416

        url = f"{base}/vod/{rec_id}/index.m3u8"
        status, text, full_headers = await get(http, url)
        assert status == 200 and "Server" in full_headers  # the first: the full stack's
        playlist = m3u8.loads(text.decode(), uri=url)
        assert playlist.is_endlist and playlist.playlist_type == "vod" and playlist.segments
        covered = int(playlist.segment_map[0].byterange.split("@")[0])
        covered += sum(int(s.byterange.split("@")[0]) for s in playlist.segments)
        assert covered == size, (covered, size)
        assert abs(sum(s.duration for s in playlist.segments) - row["duration_s"]) < 1.0

        [rec_file] = [os.path.realpath(p) for p in (tmp_path / "rec").rglob("*.mp4")]
        evict(rec_file)  # on the disk only, as written (O_DIRECT): each range is read into the cache in a thread
        # A player's next session, on one kept-alive connection: the playlist, the init and segments back to
        # back, every answer the fast lane's (no Server header: edge/fastlane.py), the same as the full stack's.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as player:
            session = [await get(player, url)]
            for byterange in [playlist.segment_map[0].byterange] + [s.byterange for s in playlist.segments[:4]]:
                length, offset = map(int, byterange.split("@"))
                session.append(await get(player, f"{base}/vod/{rec_id}.mp4",
                                         {"Range": f"bytes={offset}-{offset + length - 1}"}))
                assert session[-1][0] == 206 and session[-1][1] == data[offset:offset + length]
        assert [headers.get("Server") for _, _, headers in session] == [None] * 6, "each answered by the lane"
        _, lane_text, lane_headers = session[0]
        assert lane_text == text
        for name in ("Content-Type", "Content-Length", "Cache-Control"):
            assert lane_headers[name] == full_headers[name], name

        assert (await get(http, f"{base}/vod/nosuchrecording.mp4"))[0] == 404
        assert (await api(http, server, "GET", "/recordings/nosuchrecording"))[0] == 404
        assert (await api(http, server, "GET", "/recordings?cursor=garbage"))[0] == 400
        assert _open_in(server.pid, rec_file)  # the fast lane keeps it open for the viewers' next ranges
        status, _ = await api(http, server, "DELETE", f"/recordings/{rec_id}")
        assert status == 200
        assert (await get(http, f"{base}/vod/{rec_id}.mp4"))[0] == 404
        assert (await get(http, f"{base}/vod/{rec_id}.mp4", {"Range": "bytes=0-99"}))[0] == 404
        assert (await get(http, url))[0] == 404
        assert not _open_in(server.pid, rec_file)  # a deleted recording's disk space is freed
        assert (await api(http, server, "POST", "/streams/live/notlive/record"))[0] == 404


async def test_a_killed_server_leaves_a_playable_file_and_the_next_start_marks_it_interrupted(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path, hook):  # noqa: F811
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    settings = {"record.path": str(tmp_path / "rec"), "record.mode": "all"}
    server = server_factory(**settings)
    publisher = publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    await asyncio.sleep(5)
    publisher.expect_exit = True
    server.kill()  # SIGKILL: no file closed, no row completed
    [path] = (tmp_path / "rec").rglob("*.mp4")
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x10\x00moof" + b"\x00" * 100)  # what a write cut short by the kill leaves
    again = server_factory(**settings, **{"webhooks.on_record_done": hook.url})
    async with aiohttp.ClientSession() as http:
        status, listing = await api(http, again, "GET", f"/recordings?stream={stream_name}")
        assert status == 200 and len(listing["recordings"]) == 1, listing
        row = listing["recordings"][0]
        assert row["status"] == "interrupted" and row["duration_s"] >= 2.0, row
        status, data, _ = await get(http, f"{again.http_base}/vod/{row['id']}.mp4")
    assert status == 200
    assert len(data) == row["bytes"] == path.stat().st_size  # cut back to its last whole fragment
    with av.open(io.BytesIO(data), format="mp4") as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 50
    # Every frame up to the last whole fragment decodes: as many as the duration the row read from the file.
    assert frames >= round(row["duration_s"] * media.av.fps) - 2, (frames, row["duration_s"])
    assert "recording_interrupted" in again.log_text()
    call = await hook.wait_for("record_done", stream_name)  # a webhook consumer hears of it too
    assert call["id"] == row["id"] and call["status"] == "interrupted" and call["bytes"] == row["bytes"], call


async def test_dvr_lists_the_recorded_window_of_a_live_stream_over_byte_ranges(server_factory, publish, media,
                                                                              stream_name, tmp_path):
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all", "record.dvr_window": "60"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = f"{server.http_base}/live/{stream_name}/dvr.m3u8"
    async with aiohttp.ClientSession() as http:
        for _ in range(60):
            status, text, headers = await get(http, url)
            playlist = m3u8.loads(text.decode(), uri=url) if status == 200 else None
            if playlist is not None and len(playlist.segments) >= 2:
                break
            await asyncio.sleep(0.25)
        assert playlist is not None and len(playlist.segments) >= 2, (status, text[:300])
        assert not playlist.is_endlist and headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        init = playlist.segment_map[0]
        assert init.absolute_uri.startswith(f"{server.http_base}/vod/") and init.absolute_uri.endswith(".mp4")

        async def ranged(uri: str, byterange: str) -> bytes:
            size, offset = (int(x) for x in byterange.split("@"))
            status, data, _ = await get(http, uri, {"Range": f"bytes={offset}-{offset + size - 1}"})
            assert status == 206 and len(data) == size
            return data

        data = await ranged(init.absolute_uri, init.byterange)
        for segment in playlist.segments[:2]:
            data += await ranged(segment.absolute_uri, segment.byterange)
        report = decode_media(data, "mp4")
        assert report.errors == [] and report.video_frames >= 25, report.summary()
        assert (await get(http, f"{server.http_base}/live/notrecorded/dvr.m3u8"))[0] == 404


async def test_on_record_done_is_told_the_finished_row(server_factory, publish, media, stream_name, monkeypatch,
                                                       tmp_path, hook):  # noqa: F811
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "webhooks.on_record_done": hook.url})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        assert (await api(http, server, "POST", f"/streams/live/{stream_name}/record"))[0] == 200
        await asyncio.sleep(3)
        status, body = await api(http, server, "DELETE", f"/streams/live/{stream_name}/record")
        assert status == 200
    call = await hook.wait_for("record_done", stream_name)
    assert call["app"] == "live" and call["id"] == body["id"] and call["status"] == "complete", call
    assert call["duration_s"] > 1.0 and call["bytes"] > 0 and call["vod"]["mp4"] == f"/vod/{body['id']}.mp4"
    assert "location" not in call and call["storage"] == "local"


async def test_a_publisher_reconnecting_within_grace_continues_the_same_recording(server_factory, publish, media,
                                                                                   stream_name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all",
                               "hub.reconnect_grace": "4"})
    first = publish(server, stream_name, media.low)  # 3 s, then ffmpeg ends: the stream waits for its return
    assert await first.wait_async(20) == 0
    second = publish(server, stream_name, media.low)
    assert await second.wait_async(20) == 0
    async with aiohttp.ClientSession() as http:
        rows: list = []
        for _ in range(100):  # the stream ends 4 s after the second publisher, and the recording with it
            status, listing = await api(http, server, "GET", f"/recordings?stream={stream_name}")
            rows = listing["recordings"]
            if rows and all(r["status"] == "complete" for r in rows):
                break
            await asyncio.sleep(0.1)
        assert len(rows) == 1 and rows[0]["status"] == "complete", rows
        assert 5.0 <= rows[0]["duration_s"] <= 7.5, rows[0]
        status, data, _ = await get(http, f"{server.http_base}/vod/{rows[0]['id']}.mp4")
    report = decode_media(data, "mp4")
    assert report.errors == [] and report.video_frames >= 2 * 75 - 10, report.summary()  # both sessions' frames


async def test_rotated_files_each_get_a_row_and_dvr_plays_across_them_with_steady_numbers(
        server_factory, publish, media, stream_name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all",
                               "record.segment_minutes": "0.05", "record.dvr_window": "60"})  # 3 s files
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = f"{server.http_base}/live/{stream_name}/dvr.m3u8"
    numbers: dict[tuple[str, str], int] = {}
    files: set[str] = set()
    async with aiohttp.ClientSession() as http:
        for _ in range(60):  # 12 s: three files (3 s, cut at a keyframe, so about 4 s each)
            status, text, _ = await get(http, url)
            if status == 200:
                playlist = m3u8.loads(text.decode(), uri=url)
                for n, segment in enumerate(playlist.segments, playlist.media_sequence):
                    place = (segment.uri, segment.byterange)
                    assert numbers.setdefault(place, n) == n, f"{place} was numbered {numbers[place]}, now {n}"
                    files.add(segment.uri)
            await asyncio.sleep(0.2)
        assert len(files) >= 2, files  # the window spans the files the recording rotated through
        assert sorted(numbers.values()) == list(range(len(numbers))), "numbers run on across the files"
        # the last listing, played across a rotation: each file's segments decode after its own init
        inits = {s.uri: s.init_section for s in playlist.segments}
        for uri in list(inits)[-2:]:
            init = inits[uri]
            data = await ranged(http, init.absolute_uri, init.byterange)
            for segment in [s for s in playlist.segments if s.uri == uri][:2]:
                data += await ranged(http, segment.absolute_uri, segment.byterange)
            report = decode_media(data, "mp4")
            assert report.errors == [] and report.video_frames >= 25, report.summary()

        status, listing = await api(http, server, "GET", f"/recordings?stream={stream_name}")
        rows = sorted(listing["recordings"], key=lambda r: r["started_at"])
        assert len(rows) >= 3 and rows[-1]["status"] == "recording", rows
        for row in rows[:-1]:  # rotated: complete, about segment_minutes long, each its own playable file
            assert row["status"] == "complete" and 2.5 <= row["duration_s"] <= 5.0, row
        status, data, _ = await get(http, f"{server.http_base}/vod/{rows[0]['id']}.mp4")
        assert status == 200 and decode_media(data, "mp4").errors == []
