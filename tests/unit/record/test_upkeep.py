"""Retention and the catalog's readiness through a RecordingManager on a real SQLite catalog and real files: rows
with old start times written to the catalog directly, then one retention run deletes the oldest first."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mediaserver.config import RecordConfig, RetentionRule
from mediaserver.hub.registry import StreamRegistry
from mediaserver.record.catalog import Recording
from mediaserver.record.manager import RecordingManager
from mediaserver.record.retention import GB

NOW = datetime.now(timezone.utc)


async def open_manager(root: Path, **cfg) -> RecordingManager:
    config = RecordConfig(path=str(root), min_free_gb=0, **cfg)
    return await RecordingManager.open(StreamRegistry(), config, node="n1")


async def add(manager: RecordingManager, name: str, days_ago: float, size: int, app: str = "live",
              node: str = "n1", status: str = "complete", local: bool = True) -> Recording:
    root = Path(manager.cfg.path)
    if local:
        path = root / app / "cam" / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * size)
        location = str(path)
    else:
        location = f"s3://bucket/{app}/cam/{name}.mp4"
    start = NOW - timedelta(days=days_ago)
    row = Recording(id=name, app=app, stream="cam", node=node, started_at=start, location=location, status=status,
                    ended_at=None if status == "recording" else start + timedelta(minutes=10), bytes=size)
    return await manager.catalog.add(row)


async def ids(manager: RecordingManager) -> set[str]:
    rows, _ = await manager.catalog.list(limit=100)
    return {r.id for r in rows}


async def test_retention_deletes_the_oldest_files_and_rows_of_its_node_by_age_then_size(tmp_path):
    root = tmp_path / "rec"
    manager = await open_manager(root, max_age_days=7, max_total_gb=3500 / GB)
    try:
        await add(manager, "old", days_ago=20, size=1000)
        await add(manager, "a", days_ago=5, size=1000)
        await add(manager, "b", days_ago=4, size=1000)
        await add(manager, "c", days_ago=3, size=1000)
        await add(manager, "now", days_ago=0, size=1000, status="recording")
        await add(manager, "other", days_ago=30, size=1000, node="n2")  # another node's disk: not ours to touch
        # Object storage is anyone's to trim, but this node has no [record.s3] to delete the object with: the
        # row stays until a node that has deletes it (tests/unit/record/test_objectstore.py).
        await add(manager, "bucket", days_ago=30, size=10, node="n2", local=False)
        await manager.upkeep.retention_once()  # (the run at start may have begun it: the totals tell)
        assert await ids(manager) == {"b", "c", "now", "other", "bucket"}
        left = sorted(p.name for p in root.rglob("*.mp4"))
        assert left == ["b.mp4", "c.mp4", "now.mp4", "other.mp4"]
        assert manager.stats.retention_deleted == {"age": 1, "size": 1} and manager.stats.retention_bytes == 2000
        assert await manager.upkeep.retention_once() == []  # within the limits now
    finally:
        await manager.close()


async def test_an_app_with_its_own_budget_is_trimmed_apart_and_empty_directories_go(tmp_path):
    root = tmp_path / "rec"
    manager = await open_manager(root, max_total_gb=1500 / GB,
                                 retention=(RetentionRule(app="news", max_total_gb=1000 / GB),))
    try:
        for i in range(3):
            await add(manager, f"n{i}", days_ago=10 - i, size=600, app="news")
            await add(manager, f"l{i}", days_ago=10 - i, size=600, app="live")
        await manager.upkeep.retention_once()
        assert await ids(manager) == {"l1", "l2", "n2"}
        assert manager.stats.retention_deleted == {"size": 3}
        await manager.delete("n2")
        assert not (root / "news").exists() and (root / "live" / "cam").is_dir()
    finally:
        await manager.close()


async def test_the_catalog_check_is_cached(tmp_path):
    manager = await open_manager(tmp_path / "rec")
    try:
        ok, detail = await manager.upkeep.catalog_ready()
        assert ok and "reachable" in detail
        calls = []
        real = manager.catalog.ping

        async def counted():
            calls.append(1)
            await real()

        manager.catalog.ping = counted  # type: ignore[method-assign]
        for _ in range(5):
            assert (await manager.upkeep.catalog_ready())[0]
        assert calls == []  # answered from the last check, within CATALOG_CHECK_S
    finally:
        await manager.close()


def test_defaults_keep_every_recording():
    assert RecordConfig().max_age_days == 0 and RecordConfig().max_total_gb == 0
    assert dataclasses.replace(RecordConfig(), retention=()).retention == ()


class FakePublisher:
    peer = "127.0.0.1:5000"

    def close(self, reason: str) -> None:
        pass


async def test_the_guard_stops_every_recording_refuses_new_ones_and_resumes_the_live_ones(tmp_path, monkeypatch):
    from mediaserver.hub.registry import RegistryPolicy
    from mediaserver.hub.stream import StreamKey
    from mediaserver.record import upkeep
    from mediaserver.record.manager import NotRecordable

    free = {"bytes": 10 * GB}
    monkeypatch.setattr(upkeep, "free_bytes", lambda path: free["bytes"])
    registry = StreamRegistry(policy=RegistryPolicy(reconnect_grace=0))
    manager = await RecordingManager.open(registry, RecordConfig(path=str(tmp_path / "rec"), mode="all",
                                                                 min_free_gb=1.0), node="n1")
    told = []
    manager.upkeep.disk_listeners.append(lambda change, path, streams: told.append((change.state, streams)))
    a, b, c = (StreamKey("live", n) for n in "abc")
    try:
        streams = {key: registry.claim_publisher(key, FakePublisher()) for key in (a, b)}
        assert set(manager.active) == {a, b}

        free["bytes"] = GB - 1
        assert (await manager.upkeep.check_disk()).state == "low"
        assert manager.active == {} and manager.paused == {a, b}
        assert told == [("low", ["live/a", "live/b"])] and manager.stats.failures["disk_low"] == 2
        with pytest.raises(NotRecordable) as refused:
            manager.start(a)
        assert refused.value.status == 507 and "min_free_gb" in str(refused.value) and refused.value.hint
        registry.claim_publisher(c, FakePublisher())  # mode "all": recorded when space returns
        assert manager.paused == {a, b, c} and c not in manager.active
        assert manager.stop(b)  # the operator's stop cancels its resume
        registry.release_publisher(streams[a], streams[a].publisher)  # a ends while paused
        assert manager.paused == {c}

        free["bytes"] = int(1.05 * GB)  # above the limit, not above the margin: still low
        assert await manager.upkeep.check_disk() is None and manager.disk.low
        free["bytes"] = int(1.1 * GB)
        assert (await manager.upkeep.check_disk()).state == "ok"
        assert set(manager.active) == {c} and manager.paused == set()
        assert told[-1] == ("ok", ["live/c"])
    finally:
        await manager.close()


async def test_a_disk_already_low_at_start_is_told_to_a_listener_added_after(tmp_path, monkeypatch):
    from mediaserver.record import upkeep

    monkeypatch.setattr(upkeep, "free_bytes", lambda path: GB // 2)
    manager = await RecordingManager.open(StreamRegistry(), RecordConfig(path=str(tmp_path / "rec"), min_free_gb=1.0),
                                          node="n1")
    try:
        assert manager.disk.low  # measured while opening, before the webhook listens
        told = []
        manager.upkeep.add_disk_listener(lambda change, path, streams: told.append((change.state, change.free_bytes)))
        assert told == [("low", GB // 2)]
        assert await manager.upkeep.check_disk() is None and len(told) == 1  # told once, not at every measure
    finally:
        await manager.close()


def count_reads(manager: RecordingManager) -> list[str]:
    """The ids the catalog is asked for from now on."""
    reads: list[str] = []
    original = manager.catalog.get

    async def counted(rec_id):
        reads.append(rec_id)
        return await original(rec_id)

    manager.catalog.get = counted
    return reads


async def test_a_recording_looked_up_for_vod_is_kept_a_moment_but_never_past_its_deletion(tmp_path):
    manager = await open_manager(tmp_path / "rec")
    try:
        await add(manager, "old", days_ago=1, size=10)
        row, path = await manager.file_of("old")
        reads = count_reads(manager)
        assert await manager.file_of("old") == (row, path) and reads == []  # every range request asks
        assert await manager.delete("old") is True
        assert await manager.file_of("old") is None and not path.exists()
    finally:
        await manager.close()


async def test_viewers_arriving_together_share_one_catalog_read(tmp_path):
    manager = await open_manager(tmp_path / "rec")
    try:
        added = await add(manager, "popular", days_ago=1, size=10)
        reads = []
        original = manager.catalog.get

        async def counted(rec_id):
            reads.append(rec_id)
            await asyncio.sleep(0.05)
            return await original(rec_id)

        manager.catalog.get = counted
        waiters = [asyncio.ensure_future(manager.file_of("popular")) for _ in range(50)]
        await asyncio.sleep(0.01)
        waiters[0].cancel()  # one viewer leaving does not cancel the read the others wait for
        found = await asyncio.gather(*waiters[1:])
        assert reads == ["popular"] and {row.id for row, _ in found} == {added.id}
        assert await manager.file_of("missing") is None and reads[-1] == "missing"
    finally:
        await manager.close()


async def test_a_recording_in_the_bucket_or_on_another_node_is_kept_a_moment_too(tmp_path):
    # Every range request of a viewer of such a recording used to read its row two or three times.
    manager = await open_manager(tmp_path / "rec")
    try:
        bucket = await add(manager, "bucket", days_ago=1, size=10, local=False)
        theirs = Recording(id="theirs", app="live", stream="cam", node="n2", started_at=NOW,
                           location="/srv/n2/rec/live/cam/theirs.mp4", status="complete", bytes=10)
        await manager.catalog.add(theirs)
        mine_gone = await add(manager, "gone", days_ago=1, size=10)
        Path(mine_gone.location).unlink()
        reads = count_reads(manager)
        for _ in range(5):
            assert (await manager.row_of("bucket"))[0].id == bucket.id and await manager.file_of("bucket") is None
            row, path = await manager.row_of("theirs")
            assert row.id == theirs.id and path is None  # fetched from node n2
            assert await manager.row_of("gone") is None  # this node's row without its file: not served
        assert reads.count("bucket") == 1 and reads.count("theirs") == 1
    finally:
        await manager.close()
