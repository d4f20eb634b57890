"""Object storage for recordings: the pure parts (keys, parts, ETags, the index sidecar), then the store and
the uploader against an S3 API server the test starts (moto in server mode, tests/support/s3_server.py):
multipart upload verified, the local file removed only after, a bucket that refuses retried and reported,
rows left on the disk resumed at start."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import urllib.request
from datetime import datetime, timezone

import pytest

from mediaserver.config import RecordConfig, S3Config
from mediaserver.errors import MediaError
from mediaserver.record import vod
from mediaserver.record.catalog import Catalog, Recording, default_url
from mediaserver.record.objectstore import (
    ObjectStore, StorageError, etag_matches, expected_etag, object_key, parse_uri, part_ranges,
)
from mediaserver.record.sidecar import dump_index, load_index, sidecar_key
from mediaserver.record.uploader import Uploader, UploadCollector

from support import s3_server
from support.codec_clips import codec_clip
from test_recorder import FPS, record

# ----- pure parts -----------------------------------------------------------------------------------


def test_keys_and_locations():
    assert object_key("", "live/cam/a.mp4") == "live/cam/a.mp4"
    assert object_key("recs/", "live/cam/a.mp4") == "recs/live/cam/a.mp4"
    assert object_key("recs", "/live/cam/a.mp4") == "recs/live/cam/a.mp4"
    assert parse_uri("s3://b/live/cam/a.mp4") == ("b", "live/cam/a.mp4")
    for bad in ("/rec/a.mp4", "s3://b", "s3:///k", "http://b/k"):
        with pytest.raises(ValueError):
            parse_uri(bad)


def test_parts_cover_the_file_and_stay_under_ten_thousand():
    assert part_ranges(0, 100) == [(0, 0)]
    assert part_ranges(100, 100) == [(0, 100)]
    assert part_ranges(250, 100) == [(0, 100), (100, 100), (200, 50)]
    big = part_ranges(10**9, 1000)
    assert len(big) <= 10_000 and sum(n for _, n in big) == 10**9 and big[-1][0] + big[-1][1] == 10**9


def test_the_etag_s3_gives_is_recognised():
    one = [hashlib.md5(b"abc").digest()]
    assert expected_etag(one) == hashlib.md5(b"abc").hexdigest()
    assert etag_matches(f'"{expected_etag(one)}"', one) is True
    two = [hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()]
    assert expected_etag(two) == hashlib.md5(two[0] + two[1]).hexdigest() + "-2"
    assert etag_matches(expected_etag(two).upper(), two) is True
    assert etag_matches('"' + "0" * 32 + '"', one) is False
    assert etag_matches('"kms-encrypted-object"', one) is None  # not an MD5: the size alone is checked


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real recording (3 s of H.264 + AAC through the Recorder), fragments of 1 s."""
    rec, _, _ = record(tmp_path_factory.mktemp("rec"), codec_clip("h264", "aac", seconds=3.0, gop_frames=FPS),
                       fragment_s=1.0)
    return rec.files[0].path


def test_the_index_sidecar_round_trips_and_refuses_what_is_not_one(recorded):
    index = vod.index_file(recorded.open("rb"))
    assert load_index(dump_index(index)) == index
    assert index.codecs and index.height
    assert sidecar_key("live/cam/a.mp4") == "live/cam/a.mp4.index.json"
    # a sidecar written before the codecs and picture size were kept loads without them
    older = json.loads(dump_index(index))
    for name in ("codecs", "width", "height"):
        del older[name]
    assert load_index(json.dumps(older).encode()) == dataclasses.replace(index, codecs=(), width=0, height=0)
    for bad in (b"", b"[]", b'{"version": 9}', b'{"version": 1, "init": [0]}',
                dump_index(index).replace(b'"codecs":[', b'"codecs":[7,'),
                dump_index(index).replace(b'"timescale":90000', b'"timescale":-1'), b"\xff\xfe"):
        with pytest.raises(MediaError):
            load_index(bad)


# ----- against moto ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    if not s3_server.moto_available():
        if os.environ.get("CI") == "true":
            pytest.fail(s3_server.HOW_TO_GET, pytrace=False)
        pytest.skip(s3_server.HOW_TO_GET)
    server = s3_server.S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch):
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)


def s3_config(server, bucket: str, **kw) -> S3Config:
    return S3Config(endpoint=server.endpoint, bucket=bucket, part_size_mb=s3_server.MIN_PART * 2 / 2**20, **kw)


async def test_a_large_file_goes_in_parts_is_verified_and_read_back_by_ranges(s3, aws_env, tmp_path):
    s3.create_bucket("parts")
    data = os.urandom(150_000)  # 5 parts of 32 KiB
    path = tmp_path / "a.mp4"
    path.write_bytes(data)
    store = await ObjectStore.open(s3_config(s3, "parts"))
    try:
        await store.check()
        stored = await store.upload(path, "live/cam/a.mp4")
        assert stored.size == len(data) and stored.etag.strip('"').endswith("-5"), stored
        assert s3.get("parts", "live/cam/a.mp4") == data
        got = b"".join([c async for c in store.read_range("live/cam/a.mp4", 1000, 99_999)])
        assert got == data[1000:100_000]
        url = await store.presign("live/cam/a.mp4", 60)
        req = urllib.request.Request(url, headers={"Range": "bytes=0-9"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            assert resp.status == 206 and resp.read() == data[:10]
        await store.delete("live/cam/a.mp4")
        assert s3.keys("parts") == []
        with pytest.raises(StorageError) as caught:
            await store.get_bytes("live/cam/a.mp4")
        assert caught.value.code == "NoSuchKey"
    finally:
        await store.close()


async def _catalog_with(tmp_path, path, status: str, **fields) -> tuple[Catalog, Recording]:
    catalog = await Catalog.open(default_url(tmp_path))
    row = await catalog.add(Recording.start("live", "cam", "n1", str(path), datetime.now(timezone.utc),
                                            status=status, bytes=path.stat().st_size, **fields))
    return catalog, row


async def _until(check, timeout_s: float = 20.0):
    for _ in range(int(timeout_s / 0.05)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_a_finished_file_is_uploaded_then_removed_and_its_row_points_at_the_bucket(
        s3, aws_env, tmp_path, recorded):
    s3.create_bucket("flow")
    root = tmp_path / "rec"
    (root / "live/cam").mkdir(parents=True)
    path = root / "live/cam/a.mp4"
    data = recorded.read_bytes()
    path.write_bytes(data)
    catalog, row = await _catalog_with(tmp_path, path, "uploading", final_status="interrupted")
    cfg = RecordConfig(path=str(root), storage="s3", s3=s3_config(s3, "flow", prefix="recs/"))
    told: list[Recording] = []
    uploader = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n1", told.append)
    try:
        await uploader.start()  # a row left "uploading" (the node restarted mid-upload) resumes
        done = await _until(lambda: _located(catalog, row.id))
        assert done.location == "s3://flow/recs/live/cam/a.mp4" and done.status == "interrupted", done
        assert done.final_status is None and done.bytes == len(data)
        assert [r.id for r in told] == [row.id] and told[0].location == done.location  # on_record_done now
        assert not path.exists()
        assert s3.keys("flow") == ["recs/live/cam/a.mp4", "recs/live/cam/a.mp4.index.json"]
        assert s3.get("flow", "recs/live/cam/a.mp4") == data
        sidecar = await uploader.store.get_bytes("recs/live/cam/a.mp4.index.json")
        assert load_index(sidecar) == vod.index_file(data)
        assert uploader.ready()[0] and uploader.results["uploaded"] == 1 and uploader.pending == 0
        names = {m.name: m for m in UploadCollector(uploader).collect()}
        assert names["mediaserver_recording_upload_bytes"].samples[0].value == len(data)
        await uploader.delete(done.location)
        assert s3.keys("flow") == []
    finally:
        await uploader.close()
        await catalog.close()


async def test_a_file_is_read_for_its_upload_only_once_its_writes_are_on_the_disk(s3, aws_env, tmp_path, recorded):
    s3.create_bucket("late")
    path = tmp_path / "c.mp4"
    data = recorded.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # told closed; its last pieces still queued on the writer's thread
    catalog, row = await _catalog_with(tmp_path, path, "uploading", final_status="complete")
    cfg = RecordConfig(path=str(tmp_path), storage="s3", s3=s3_config(s3, "late"))
    on_disk = asyncio.Event()

    async def written() -> None:
        await on_disk.wait()

    uploader = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n1", lambda r: None, written=written)
    try:
        await uploader.start()
        await asyncio.sleep(0.3)
        assert s3.keys("late") == [] and path.exists()  # nothing read yet
        path.write_bytes(data)  # the writer's thread is done
        on_disk.set()
        done = await _until(lambda: _located(catalog, row.id))
        assert done.bytes == len(data) and s3.get("late", "c.mp4") == data
    finally:
        await uploader.close()
        await catalog.close()


async def _located(catalog: Catalog, rec_id: str) -> Recording | None:
    row = await catalog.get(rec_id)
    return row if row is not None and row.location.startswith("s3://") else None


async def test_a_bucket_that_refuses_is_retried_reported_and_logged_once(s3, aws_env, tmp_path, caplog,
                                                                         monkeypatch, recorded):
    monkeypatch.setattr("mediaserver.record.uploader.RETRY_S", (0.05, 0.1))
    path = tmp_path / "b.mp4"
    path.write_bytes(recorded.read_bytes())
    catalog, row = await _catalog_with(tmp_path, path, "complete")  # recorded before storage was "s3"
    cfg = RecordConfig(path=str(tmp_path), storage="s3", s3=s3_config(s3, "not-yet"))
    told: list[Recording] = []
    uploader = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n1", told.append)
    caplog.set_level(logging.INFO, "mediaserver.record.uploader")
    try:
        await uploader.start()
        await _until(lambda: _async(uploader.results["failed"] >= 3))
        ok, detail = uploader.ready()
        assert not ok and "NoSuchBucket" in detail and "1 file(s) kept locally" in detail, detail
        failures = [r for r in caplog.records if "recording_upload_failed" in r.getMessage()]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        line = str(failures[0].fields)
        assert "bucket 'not-yet'" in line and "create the bucket, or fix record.s3.bucket" in line, line
        assert path.exists() and (await catalog.get(row.id)).status == "complete"  # kept while it waits
        s3.create_bucket("not-yet")
        done = await _until(lambda: _located(catalog, row.id))
        assert done.status == "complete" and not path.exists() and uploader.ready()[0]
        assert told == []  # its on_record_done was told when it closed, before storage was "s3"
        assert any("recording_storage_back" in r.getMessage() for r in caplog.records)
    finally:
        await uploader.close()
        await catalog.close()


async def _async(value):
    return value


async def test_storage_s3_without_aiobotocore_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_boto(name, *args, **kwargs):
        if name.startswith("aiobotocore"):
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_boto)
    from mediaserver.record.objectstore import StorageNotInstalled

    with pytest.raises(StorageNotInstalled, match=r"pip install 'mediaserver\[s3\]'"):
        await ObjectStore.open(S3Config(bucket="b"))


async def test_any_node_sharing_the_catalog_serves_a_stored_recording_and_presign_redirects(
        s3, aws_env, tmp_path, recorded):
    """A row another node ("n1") uploaded, served by this one ("n2") from the bucket: ranges, 416, the
    playlist from the sidecar; with presign a 302 to a URL the bucket answers; without [record.s3] a 404."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from mediaserver.config import Config
    from mediaserver.edge.keys import CONFIG, RECORDINGS
    from mediaserver.edge.vod import add_vod_routes
    from mediaserver.hub.registry import StreamRegistry
    from mediaserver.record.manager import RecordingManager

    s3.create_bucket("shared")
    data = recorded.read_bytes()
    path = tmp_path / "rec" / "live/cam/a.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    catalog, row = await _catalog_with(tmp_path, path, "complete")
    sent = RecordConfig(path=str(tmp_path / "rec"), storage="s3", s3=s3_config(s3, "shared"))
    uploader = Uploader(catalog, await ObjectStore.open(sent.s3), sent, "n1", lambda r: None)
    await uploader.start()
    await _until(lambda: _located(catalog, row.id))
    await uploader.close()

    async def client_of(cfg: RecordConfig) -> TestClient:
        manager = RecordingManager(StreamRegistry(), cfg, catalog, "n2")
        if cfg.storage == "s3":
            manager.uploader = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n2", lambda r: None)
        app = web.Application()
        app[CONFIG] = Config()
        app[RECORDINGS] = manager
        add_vod_routes(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        return client

    node2 = RecordConfig(path=str(tmp_path / "other"), storage="s3", s3=s3_config(s3, "shared"))
    clients = [await client_of(node2), await client_of(dataclasses.replace(
        node2, s3=dataclasses.replace(node2.s3, presign=True))), await client_of(RecordConfig())]
    try:
        streamed, presigned, local_only = clients
        resp = await streamed.get(f"/vod/{row.id}.mp4", headers={"Range": "bytes=100-199"})
        assert resp.status == 206 and await resp.read() == data[100:200]
        assert resp.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        resp = await streamed.get(f"/vod/{row.id}.mp4", headers={"Range": "bytes=0-1,4-5"})
        assert resp.status == 416
        resp = await streamed.get(f"/vod/{row.id}/index.m3u8")
        text = await resp.text()
        assert resp.status == 200 and text == vod.hls_playlist(vod.index_file(data), f"../{row.id}.mp4")
        resp = await presigned.get(f"/vod/{row.id}.mp4", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"].startswith(s3.endpoint + "/shared/")
        req = urllib.request.Request(resp.headers["Location"], headers={"Range": "bytes=0-9"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as answer:
            assert answer.status == 206 and answer.read() == data[:10]
        resp = await local_only.get(f"/vod/{row.id}.mp4")
        assert resp.status == 404 and "record.storage" in (await resp.json())["hint"]
    finally:
        for client in clients:
            manager = client.server.app[RECORDINGS]
            await client.close()
            if manager.uploader is not None:
                await manager.uploader.close()
        await catalog.close()


async def test_retention_deletes_an_old_recording_from_the_bucket(s3, aws_env, tmp_path):
    from datetime import timedelta

    from mediaserver.hub.registry import StreamRegistry
    from mediaserver.record.manager import RecordingManager

    s3.create_bucket("trim")
    cfg = RecordConfig(path=str(tmp_path / "rec"), storage="s3", s3=s3_config(s3, "trim"), max_age_days=7,
                       min_free_gb=0)
    manager = await RecordingManager.open(StreamRegistry(), cfg, node="n1")
    try:
        await manager.uploader.store.put_bytes("live/cam/old.mp4", b"x" * 100, "video/mp4")
        await manager.uploader.store.put_bytes("live/cam/old.mp4.index.json", b"{}")
        start = datetime.now(timezone.utc) - timedelta(days=30)
        await manager.catalog.add(Recording(id="old", app="live", stream="cam", node="n2", started_at=start,
                                            location="s3://trim/live/cam/old.mp4", status="complete",
                                            ended_at=start + timedelta(minutes=5), bytes=100))
        await manager.upkeep.retention_once()
        assert await manager.catalog.get("old") is None and s3.keys("trim") == []
    finally:
        await manager.close()


async def test_a_file_gone_before_its_upload_keeps_its_row_local_with_its_final_status(s3, aws_env, tmp_path,
                                                                                      caplog):
    s3.create_bucket("gone")
    path = tmp_path / "gone.mp4"
    path.write_bytes(b"\0" * 100)
    catalog, row = await _catalog_with(tmp_path, path, "uploading", final_status="failed")
    path.unlink()
    cfg = RecordConfig(path=str(tmp_path), storage="s3", s3=s3_config(s3, "gone"))
    told: list[Recording] = []
    uploader = Uploader(catalog, await ObjectStore.open(cfg.s3), cfg, "n1", told.append)
    try:
        await uploader.start()
        await _until(lambda: _async(bool(told)))
        kept = await catalog.get(row.id)
        assert (kept.status, kept.final_status, kept.location) == ("failed", None, str(path)), kept
        assert told == [kept] and uploader.ready()[0] and s3.keys("gone") == []
        assert [r.fields["id"] for r in caplog.records if r.getMessage() == "recording_upload_unreadable"] == [row.id]
    finally:
        await uploader.close()
        await catalog.close()
