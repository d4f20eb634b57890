"""ABR on a live server with the real transcoder worker: ffmpeg publishes a 720p clip, and its renditions
are played by name (STREAM@LABEL) over HTTP-FLV, HLS and RTMP, decoded with PyAV at their exact sizes;
jobs stop when idle, the admin API starts and stops them, and the refusals (409, 503) say why."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from support.checks import is_media, timeline_problems, track_timestamps, wait_live
from support.decode import decode_media
from support.hls import parse_media_playlist
from support.media import ffmpeg_exe

ADMIN = "admin-token-abr-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
RENDITION_SIZES = {"480p": (854, 480), "360p": (640, 360), "240p": (426, 240)}
"""The default ladder below a 1280x720 source (widths keep 16:9, rounded to even)."""

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def abr_server(server_factory, monkeypatch):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)

    def start(**settings: str):
        return server_factory(**{"abr.mode": "on_demand", "abr.wait": "15", "hls.segment_duration": "1", **settings})

    return start


async def api(http: aiohttp.ClientSession, server, method: str, path: str) -> tuple[int, dict]:
    async with http.request(method, f"{server.http_base}/api/v1{path}", headers=AUTH) as resp:
        return resp.status, await resp.json()


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as resp:
        return resp.status, await resp.json(content_type=None)


def workers_of(pid: int) -> list[int]:
    """The transcoder worker processes whose parent is `pid` (zombies included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and (b"transcode.worker" in cmdline or " Z " in stat.rsplit(")", 1)[1][:3]):
            found.append(int(entry))
    return found


def cts_ms(body: bytes) -> int:
    """An AVC video tag's composition time offset (pts - dts), signed 24 bits."""
    value = int.from_bytes(body[2:5], "big")
    return value - (1 << 24) if value & 0x800000 else value


async def rtmp_pull(url: str, seconds: float, out: Path) -> bytes:
    """ffmpeg plays `url` over RTMP for `seconds` of media and writes it as FLV."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-rw_timeout", "15000000", "-i", url,
        "-t", str(seconds), "-c", "copy", "-f", "flv", "-y", str(out),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"ffmpeg did not finish playing {url}")
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.read_bytes()


async def test_renditions_play_by_name_over_flv_hls_and_rtmp_and_stop_with_the_server(
        abr_server, publish, media, stream_name, tmp_path):
    server = abr_server()
    publish(server, stream_name, media.hd, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        requested = time.monotonic()
        viewer = server.flv_viewer(f"{stream_name}@360p", live_timeout_s=20)
        async with viewer:
            assert await viewer.wait_video_frames(60, timeout_s=30), viewer.describe_start()
        first_picture_s = viewer.arrivals[viewer.first_keyframe_index()] - requested
        report = decode_media(bytes(viewer.raw), "flv")
        assert (report.width, report.height) == RENDITION_SIZES["360p"], report.summary()
        assert report.video_codec == "h264" and report.audio_codec == "aac" and not report.errors, report.summary()
        assert report.first_video_frame_key and report.video_frames >= 60, report.summary()

        playlist_url = f"{server.http_base}/live/{stream_name}@240p/index.m3u8"
        deadline = time.monotonic() + 20
        while True:
            async with http.get(playlist_url) as resp:
                text = await resp.text()
            pl = parse_media_playlist(text) if resp.status == 200 else None
            if pl is not None and pl.segments:
                break
            assert time.monotonic() < deadline, f"no HLS segment of the 240p rendition: {resp.status} {text[:300]}"
            await asyncio.sleep(0.5)
        async with http.get(f"{server.http_base}/live/{stream_name}@240p/{pl.segments[0].uri}") as resp:
            assert resp.status == 200
            segment = await resp.read()
        report = decode_media(segment, "mpegts")
        assert (report.width, report.height) == RENDITION_SIZES["240p"], report.summary()
        assert report.video_frames > 0 and not report.errors, report.summary()

        for file in ("manifest.mpd", "cmaf.m3u8"):
            deadline = time.monotonic() + 20
            while True:
                async with http.get(f"{server.http_base}/live/{stream_name}@480p/{file}") as resp:
                    text = await resp.text()
                if resp.status == 200:
                    break
                assert time.monotonic() < deadline, f"{file} of the 480p rendition: {resp.status} {text[:300]}"
                await asyncio.sleep(0.5)
            assert ("<MPD" if file.endswith(".mpd") else "#EXTM3U") in text
        async with http.ws_connect(f"{server.http_base}/live/{stream_name}@240p.flv") as ws:
            received = bytearray()
            async for message in ws:
                received += message.data
                if len(received) > 64 * 1024:
                    break
        assert received[:3] == b"FLV"

        played = await rtmp_pull(server.rtmp_url(f"{stream_name}@360p"), 2.0, tmp_path / "rtmp.flv")
        report = decode_media(played, "flv")
        assert (report.width, report.height) == RENDITION_SIZES["360p"], report.summary()
        assert report.video_frames >= 25 and not report.errors, report.summary()

        status, body = await api(http, server, "GET", f"/streams/live/{stream_name}/abr")
        assert status == 200 and body["running"] and body["state"] == "running", body
        assert [r["label"] for r in body["renditions"]] == ["480p", "360p", "240p"]
        assert body["pid"] in workers_of(server.pid)
        status, listing = await api(http, server, "GET", "/streams")
        source = next(s for s in listing["streams"] if s["name"] == stream_name)
        assert source["abr"]["running"] is True
        rendition = next(s for s in listing["streams"] if s["name"] == f"{stream_name}@360p")
        assert rendition["abr"] == {"rendition_of": f"live/{stream_name}", "label": "360p"}
        async with http.get(f"{server.http_base}/metrics") as resp:
            metrics = await resp.text()
        assert "mediaserver_abr_jobs 1.0" in metrics
        assert "mediaserver_abr_cpu_seconds_total" in metrics
    print(f"first picture of a 360p rendition {first_picture_s:.2f} s after the first request")

    pid = server.pid
    assert workers_of(pid)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(15) == 0
    server.stopped = True
    assert not workers_of(pid)


async def test_an_idle_job_stops_and_the_admin_api_starts_and_stops_one(abr_server, publish, media, stream_name):
    server = abr_server(**{"abr.idle_grace": "2"})
    publish(server, stream_name, media.hd, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        async with server.flv_viewer(f"{stream_name}@240p", live_timeout_s=20) as viewer:
            assert await viewer.wait_video_frames(10, timeout_s=30), viewer.describe_start()
        deadline = time.monotonic() + 15
        while (await api(http, server, "GET", f"/streams/live/{stream_name}/abr"))[1]["running"]:
            assert time.monotonic() < deadline, "the job did not stop after the idle grace"
            await asyncio.sleep(0.3)
        assert not workers_of(server.pid)
        status, body = await api(http, server, "GET", f"/streams/live/{stream_name}@240p")
        assert status == 404, body  # the rendition's stream ended with its job

        status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/abr")
        assert status == 200 and body["running"] and body["started"], body
        assert all(r["ready"] for r in body["renditions"]), body
        status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/abr")
        assert status == 200 and body["started"] is False
        status, body = await api(http, server, "DELETE", f"/streams/live/{stream_name}/abr")
        assert status == 200 and body["running"] is False, body
        assert not workers_of(server.pid)
        status, body = await api(http, server, "DELETE", f"/streams/live/{stream_name}/abr")
        assert status == 404

        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        for _ in range(3):  # starts and stops leave neither processes nor pipes behind
            assert (await api(http, server, "POST", f"/streams/live/{stream_name}/abr"))[0] == 200
            assert (await api(http, server, "DELETE", f"/streams/live/{stream_name}/abr"))[0] == 200
        assert not workers_of(server.pid)
        assert len(os.listdir(f"/proc/{server.pid}/fd")) <= fds + 2  # a leak would be 3 pipes a cycle


async def test_a_240p_source_gets_409_and_a_spent_budget_503(abr_server, publish, media, stream_name):
    server = abr_server(**{"abr.max_jobs": "1"})
    publish(server, "low", media.low, loop=True)
    publish(server, stream_name, media.hd, loop=True)
    publish(server, "second", media.hd, loop=True)
    for name in ("low", stream_name, "second"):
        await wait_live(server, name)
    async with aiohttp.ClientSession() as http:
        status, body = await get_json(http, f"{server.http_base}/live/low@240p.flv")
        assert status == 409, body
        assert body["error"] == "the source is 240p: no rung of the ladder is below it", body
        status, body = await api(http, server, "POST", "/streams/live/low/abr")
        assert status == 409 and body["reason"] == "ladder", body
        proc = await asyncio.create_subprocess_exec(
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", "-i", server.rtmp_url("low@240p"),
            "-t", "1", "-f", "null", "-", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode != 0
        assert "no rung of the ladder is below it" in err.decode(errors="replace"), err.decode(errors="replace")[-1500:]

        status, body = await api(http, server, "POST", f"/streams/live/{stream_name}/abr")
        assert status == 200, body
        async with http.get(f"{server.http_base}/live/second@360p.flv") as resp:
            assert resp.status == 503 and resp.headers.get("Retry-After")
            body = await resp.json()
        assert "abr.max_jobs" in body["hint"], body
        status, body = await api(http, server, "POST", "/streams/live/second/abr")
        assert status == 503 and body["reason"] == "budget", body
        async with http.get(f"{server.http_base}/live/second/index.m3u8") as resp:
            assert resp.status == 200, "the source itself still plays"
        async with http.get(f"{server.http_base}/metrics") as resp:
            metrics = await resp.text()
        assert 'mediaserver_abr_refused_total{reason="budget"} 2.0' in metrics, metrics
        assert 'mediaserver_abr_refused_total{reason="ladder"} 3.0' in metrics, metrics
    assert "abr_refused" in server.log_text()


async def test_a_killed_worker_is_restarted_and_its_viewers_go_on_at_the_sources_timestamps(
        abr_server, publish, media, stream_name):
    server = abr_server()
    publish(server, stream_name, media.hd, loop=True)
    await wait_live(server, stream_name)
    source = server.flv_viewer(stream_name)
    rendition = server.flv_viewer(f"{stream_name}@360p", live_timeout_s=20)
    async with aiohttp.ClientSession() as http, source, rendition:
        assert await rendition.wait_video_frames(30, timeout_s=30), rendition.describe_start()
        status, body = await api(http, server, "GET", f"/streams/live/{stream_name}/abr")
        first = body["pid"]
        os.kill(first, signal.SIGKILL)
        before = rendition.video_frame_count
        deadline = time.monotonic() + 30
        while True:
            status, body = await api(http, server, "GET", f"/streams/live/{stream_name}/abr")
            if body["restarts"] == 1 and body["state"] == "running" and rendition.video_frame_count > before + 50:
                break
            assert time.monotonic() < deadline, (body, rendition.video_frame_count, before)
            await asyncio.sleep(0.3)
        assert body["pid"] != first and first not in workers_of(server.pid)
        assert not rendition.ended, "the viewer of the rendition stays connected over the restart"
    assert not timeline_problems(rendition.tags), timeline_problems(rendition.tags)
    made = set(track_timestamps(rendition.tags, 9))  # no B-frames: a rendition's dts is its pts
    shown = {t.timestamp_ms + cts_ms(t.body) for t in source.tags if t.kind == 9 and is_media(t)}
    assert made <= shown, f"rendition timestamps the source never showed: {sorted(made - shown)[:10]}"
    report = decode_media(bytes(rendition.raw), "flv")
    assert (report.width, report.height) == RENDITION_SIZES["360p"], report.summary()
    assert "worker_restart" in server.log_text()
