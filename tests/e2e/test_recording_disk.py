"""Recording against a disk running out of space and a catalog going away, on a live server.

A small tmpfs mounted by the test holds record.path (mounting needs root, as CI runs; elsewhere the test
skips saying why): a filler file eats the space, every recording stops with one error line, the disk-low
metric and the on_record_disk webhook, while an HTTP-FLV viewer keeps receiving frames; the filler removed,
the recording resumes in a new file with a new row. /readyz reports a PostgreSQL catalog that stops
(degraded, still ready) and comes back."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from e2e.test_auth_webhooks import hook  # noqa: F401  (fixture)
from mediaserver.record.disk import free_bytes
from support.checks import wait_live
from support.decode import decode_media
from support.postgres_server import start_postgres

ADMIN = "admin-token-recording-disk-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
MIN_FREE_GB = 0.02  # 20 MB of a 48 MiB tmpfs; recording resumes above 22 MB


def _unavailable(problem: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """A 48 MiB tmpfs, always unmounted at teardown (lazily if a file is still open in it)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        _unavailable("mounting a small tmpfs for the full-disk test needs root (CI runs as root)")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(where)], capture_output=True,
                         timeout=10)
    if out.returncode != 0:
        _unavailable(f"mount -t tmpfs failed ({out.returncode}): {out.stderr.decode().strip()}; the full-disk "
                     f"test needs CAP_SYS_ADMIN")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=10).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


async def metric(http: aiohttp.ClientSession, server, name: str, labels: str = "") -> float | None:
    async with http.get(f"{server.http_base}/metrics") as resp:
        text = await resp.text()
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


async def rows(http: aiohttp.ClientSession, server, stream: str) -> list[dict]:
    async with http.get(f"{server.http_base}/api/v1/recordings?stream={stream}", headers=AUTH) as resp:
        assert resp.status == 200
        return (await resp.json())["recordings"]


async def until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(0.2)


def _fill(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[:size % len(chunk)])


async def test_a_full_disk_stops_recording_not_viewers_and_space_returning_resumes_it(
        server_factory, publish, media, stream_name, monkeypatch, tmpfs, hook):  # noqa: F811
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmpfs), "record.mode": "all",
                               "record.min_free_gb": str(MIN_FREE_GB), "webhooks.on_record_disk": hook.url})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http, server.flv_viewer(stream_name) as viewer:
        first = await until(lambda: rows(http, server, stream_name), 10, "no recording row")
        assert await metric(http, server, "mediaserver_recordings_active") == 1
        assert await metric(http, server, "mediaserver_recording_disk_low") == 0

        filler = tmpfs / "filler"
        await asyncio.to_thread(_fill, filler, free_bytes(str(tmpfs)) - 12_000_000)  # 12 MB left: under 20
        low = await hook.wait_for("record_disk", "", timeout_s=10, where=lambda c: c["state"] == "low")
        assert low["streams"] == [f"live/{stream_name}"] and low["path"] == str(tmpfs), low
        assert low["free_bytes"] < low["min_free_bytes"] == int(MIN_FREE_GB * 1e9), low
        assert await metric(http, server, "mediaserver_recording_disk_low") == 1
        assert await metric(http, server, "mediaserver_recordings_active") == 0
        assert await metric(http, server, "mediaserver_recording_failures_total", 'reason="disk_low"') == 1
        done = await until(lambda: _status(http, server, stream_name, first[0]["id"], "complete"), 5,
                           "the stopped recording's row was not completed")
        assert done["bytes"] > 0
        async with http.post(f"{server.http_base}/api/v1/streams/live/{stream_name}/record", headers=AUTH) as resp:
            refusal = await resp.json()
            assert resp.status == 507 and "min_free_gb" in refusal["error"] and refusal["hint"], refusal

        frames = viewer.video_frame_count  # live viewers are not affected
        assert await viewer.wait_video_frames(frames + 25, timeout_s=5), "the viewer stopped receiving frames"
        assert not viewer.done

        filler.unlink()
        ok = await hook.wait_for("record_disk", "", timeout_s=10, where=lambda c: c["state"] == "ok")
        assert ok["streams"] == [f"live/{stream_name}"] and ok["free_bytes"] >= 22_000_000, ok
        listing = await until(lambda: _two(http, server, stream_name), 10, "no new recording row after space returned")
        assert listing[1]["id"] == first[0]["id"] and listing[0]["status"] == "recording", listing
        assert await metric(http, server, "mediaserver_recording_disk_low") == 0
        assert await metric(http, server, "mediaserver_recordings_active") == 1
        assert (await metric(http, server, "mediaserver_recording_disk_free_bytes") or 0) > 22_000_000
        assert not viewer.done
    log = server.log_text()
    assert log.count("recording_disk_low") == 1 and "recording_disk_ok" in log, log[-3000:]


async def test_a_write_that_meets_a_full_disk_fails_that_recording_cleanly_and_viewers_play_on(
        server_factory, publish, media, stream_name, monkeypatch, tmpfs, tmp_path):
    """With the free-space guard off (record.min_free_gb = 0), the recording runs into ENOSPC itself: its row
    says "failed", the failure is counted as disk_full, the file plays up to its last whole fragment, and the
    HTTP-FLV viewer beside it keeps receiving frames."""
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmpfs), "record.mode": "all", "record.min_free_gb": "0",
                               "record.database_url": f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http, server.flv_viewer(stream_name) as viewer:
        [row] = await until(lambda: rows(http, server, stream_name), 10, "no recording row")
        await asyncio.to_thread(_fill, tmpfs / "filler", free_bytes(str(tmpfs)) - 200_000)  # a few seconds left
        failed = await until(lambda: _status(http, server, stream_name, row["id"], "failed"), 30,
                             "the recording did not fail on the full disk")
        assert await metric(http, server, "mediaserver_recording_failures_total", 'reason="disk_full"') == 1
        assert await metric(http, server, "mediaserver_recordings_active") == 0
        frames = viewer.video_frame_count  # live viewers are not affected
        assert await viewer.wait_video_frames(frames + 25, timeout_s=5), "the viewer stopped receiving frames"
        assert not viewer.done
        [path] = tmpfs.rglob("*.mp4")
        assert failed["bytes"] == path.stat().st_size > 0  # cut back to its last whole piece
        async with http.get(f"{server.http_base}/vod/{row['id']}.mp4") as resp:
            data = await resp.read()
            assert resp.status == 200 and len(data) == failed["bytes"]
    report = decode_media(data, "mp4")
    assert report.errors == [] and report.video_frames > 0, report.summary()
    assert server.log_text().count("recording_failed") == 1


async def _status(http, server, stream: str, rec_id: str, status: str) -> dict | None:
    found = [r for r in await rows(http, server, stream) if r["id"] == rec_id]
    return found[0] if found and found[0]["status"] == status else None


async def _two(http, server, stream: str) -> list[dict] | None:
    listing = await rows(http, server, stream)
    return listing if len(listing) == 2 else None


@pytest.fixture
def postgres():
    server = start_postgres()
    yield server
    server.stop()


async def test_readyz_reports_a_catalog_that_goes_away_and_comes_back(server_factory, postgres, tmp_path):
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.database_url": postgres.create_database()})

    async def ready(http: aiohttp.ClientSession, want: bool) -> dict | None:
        async with http.get(f"{server.http_base}/readyz") as resp:
            body = await resp.json()
        # The catalog is advisory: reported (degraded), never a reason to take live streaming out of service.
        assert resp.status == 200 and body["ready"] and body["checks"]["catalog"]["advisory"], body
        return body if body["checks"]["catalog"]["ok"] is want else None

    async with aiohttp.ClientSession() as http:
        body = await until(lambda: ready(http, True), 5, "the catalog was not reported reachable")
        assert not body["degraded"] and body["checks"]["rtmp"]["ok"]
        postgres.stop(keep_data=True)
        started = time.monotonic()
        body = await until(lambda: ready(http, False), 10, "a stopped catalog was still reported ready")
        assert body["degraded"] and "unavailable" in body["checks"]["catalog"]["detail"], body
        assert "secret" not in body["checks"]["catalog"]["detail"]
        assert time.monotonic() - started < 5  # the answer is cached 2 s at most
        postgres.restart()
        body = await until(lambda: ready(http, True), 10, "the catalog back was not reported ready")
        assert not body["degraded"]


async def test_a_catalog_away_longer_than_any_backoff_loses_no_row_and_its_readers_get_503(
        server_factory, postgres, publish, media, stream_name, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIASERVER_ADMIN_TOKEN", ADMIN)
    server = server_factory(**{"record.path": str(tmp_path / "rec"), "record.mode": "all",
                               "record.database_url": postgres.create_database()})
    publish(server, stream_name, media.low, loop=True)
    await wait_live(server, stream_name)
    base = server.http_base
    async with aiohttp.ClientSession() as http:
        async def listed() -> list | None:
            async with http.get(f"{base}/api/v1/recordings?stream={stream_name}", headers=AUTH) as resp:
                rows = (await resp.json())["recordings"]
            return rows or None

        [row] = await until(listed, 10, "the recording's row was not listed")
        postgres.stop(keep_data=True)
        await asyncio.sleep(1)
        # Readers of the catalog are told to come back (503 + Retry-After), never a bare 500.
        async with http.get(f"{base}/api/v1/recordings", headers=AUTH) as resp:
            body = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"] and "unavailable" in body["error"], body
        async with http.get(f"{base}/vod/Zz{row['id'][2:]}.mp4") as resp:  # not a row the node has cached
            body = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"], body
            assert "postgres" not in body["error"] and "127.0.0.1" not in body["error"], body  # viewers see no hosts
        async with http.delete(f"{base}/api/v1/streams/live/{stream_name}/record", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()  # the file closes now; its row's end waits for the database
        await asyncio.sleep(21)  # longer than every retry together (18.5 s), after which a write used to be dropped
        postgres.restart()

        async def completed() -> dict | None:
            async with http.get(f"{base}/api/v1/recordings/{row['id']}", headers=AUTH) as resp:
                found = await resp.json() if resp.status == 200 else {}
            return found if found.get("status") == "complete" else None

        done = await until(completed, 20, "the row's end was not written once the catalog came back")
        path = next((tmp_path / "rec").rglob("*.mp4"))
        assert done["bytes"] == path.stat().st_size and done["duration_s"] > 0, done
