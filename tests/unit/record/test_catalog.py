"""The recordings catalog against real databases: a SQLite file, and a PostgreSQL server the test starts
(tests/support/postgres_server.py). Every case runs on both."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from mediaserver.record import catalog as catalog_module
from mediaserver.record.catalog import (
    MAX_PAGE, Catalog, CatalogUnavailable, Recording, _into_wal, default_url, encode_cursor, head_revision, metadata,
    redact,
)
from support.postgres_server import PostgresServer, start_postgres
from support.server import free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def rec(app: str = "live", stream: str = "cam", node: str = "n1", minute: float = 0, **fields) -> Recording:
    return Recording.start(app, stream, node, f"/rec/{app}/{stream}/{minute}.mp4", started_at=at(minute), **fields)


@pytest.fixture(scope="module")
def pg():
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return default_url(tmp_path / "recordings")  # the directory does not exist yet: open makes it
    return request.getfixturevalue("pg").create_database()


@pytest.fixture
async def catalog(db_url):
    cat = await Catalog.open(db_url)
    yield cat
    await cat.close()


async def _schema_differences(url: str) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await engine.dispose()


async def test_an_empty_database_is_migrated_to_head(db_url):
    cat = await Catalog.open(db_url)
    try:
        assert head_revision() == "0002"
        assert await cat.schema_revision() == head_revision()
        assert await cat.list() == ([], None)
        assert await cat.total_bytes() == 0
    finally:
        await cat.close()
    # The migrated schema is the one the catalog queries (columns, types, nullability, indexes).
    assert await _schema_differences(db_url) == []


async def test_opening_a_migrated_database_again_keeps_rows_and_head(db_url):
    cat = await Catalog.open(db_url)
    kept = await cat.add(rec(bytes=10))
    await cat.close()
    cat = await Catalog.open(db_url)
    try:
        assert await cat.get(kept.id) == kept
        assert await cat.schema_revision() == head_revision()
    finally:
        await cat.close()
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await engine.dispose()
    assert versions == [head_revision()]


async def test_a_database_at_the_previous_revision_is_migrated_with_its_rows(db_url):
    from alembic import command

    from mediaserver.record.catalog import _alembic_config

    def to_0001_with_a_row(conn: sa.Connection) -> None:
        command.upgrade(_alembic_config(conn), "0001")
        conn.execute(sa.text(
            "INSERT INTO recordings (id, app, stream, node, started_at, duration_s, bytes, location, status, "
            "created_at, updated_at) VALUES ('old1', 'live', 'cam', 'n1', :t, 6.5, 1234, '/rec/old.mp4', "
            "'complete', :t, :t)"), {"t": T0.replace(tzinfo=None) if db_url.startswith("sqlite") else T0})

    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True)
    engine = create_async_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(to_0001_with_a_row)
    finally:
        await engine.dispose()
    cat = await Catalog.open(db_url)
    try:
        assert await cat.schema_revision() == "0002"
        old = await cat.get("old1")
        assert old is not None and (old.status, old.bytes, old.duration_s, old.started_at) == ("complete", 1234, 6.5, T0)
        assert old.final_status is None
        assert [r.id for r in await cat.unuploaded("n1")] == ["old1"]
        moved = await cat.update("old1", status="uploading", final_status="interrupted")
        assert moved is not None and moved.final_status == "interrupted"
    finally:
        await cat.close()
    assert await _schema_differences(db_url) == []


async def test_nodes_opening_a_fresh_database_at_once_migrate_it_once(db_url):
    cats = await asyncio.wait_for(asyncio.gather(*(Catalog.open(db_url) for _ in range(6))), 60)
    try:
        assert [await c.schema_revision() for c in cats] == [head_revision()] * 6
        added = await cats[0].add(rec())
        assert await cats[5].get(added.id) == added
    finally:
        for c in cats:
            await c.close()


async def test_catalogs_of_different_databases_opened_at_once_in_one_process_each_migrate_their_own(tmp_path):
    # No database lock orders these migrations, and Alembic's context is process-wide: interleaved on the loop,
    # one ran its steps on another's connection ("table recordings already exists").
    urls = [default_url(tmp_path / str(n)) for n in range(4)]
    cats = await asyncio.wait_for(asyncio.gather(*(Catalog.open(u) for u in urls)), 60)
    try:
        assert [await c.schema_revision() for c in cats] == [head_revision()] * 4
        assert await _schema_differences(urls[3]) == []
    finally:
        for c in cats:
            await c.close()


async def test_the_pause_before_another_try_at_wal_leaves_the_event_loop_running(tmp_path, monkeypatch):
    real = catalog_module._into_wal

    def refused_once(cur, *, pause) -> None:
        pause(0.5)  # as after a refusal, inside the engine's greenlet on the loop
        real(cur, pause=pause)

    monkeypatch.setattr(catalog_module, "_into_wal", refused_once)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    try:
        cat = await Catalog.open(default_url(tmp_path / "recordings"))
    finally:
        ticker.cancel()
    await cat.close()
    assert ticks >= 20  # a blocking sleep stops the ticker for the 0.5 s of each pause (it got 6 then)


def test_connections_switching_a_new_sqlite_file_to_wal_at_once_all_succeed(tmp_path):
    # SQLite refuses the switch at once ("database is locked", no busy handler) to all but one of several
    # connections switching a new file together, as the workers or nodes opening one catalog do.
    for round_ in range(40):
        path = tmp_path / f"{round_}.db"
        start = threading.Barrier(6)
        failures: list[Exception] = []

        def switch() -> None:
            conn = sqlite3.connect(path, isolation_level=None, timeout=10)
            try:
                start.wait(5)
                _into_wal(conn.cursor(), pause=time.sleep)
                assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            except Exception as e:  # noqa: BLE001 - collected for the assertion below
                failures.append(e)
            finally:
                conn.close()

        threads = [threading.Thread(target=switch) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert failures == [], f"round {round_}"


async def test_a_failed_transaction_leaves_nothing_behind(catalog):
    first = await catalog.add(rec())
    with pytest.raises(ValueError, match="already in the catalog"):
        await catalog.add(Recording(**_same_id(first)))
    assert await catalog.list() == ([first], None)


async def test_add_update_finish_get_delete(catalog):
    added = await catalog.add(rec(video_codec="h264", audio_codec="aac", width=1280, height=720))
    assert len(added.id) == 12 and added.id.replace("-", "").replace("_", "").isalnum()
    assert added.status == "recording" and added.ended_at is None
    assert added.created_at is not None and added.created_at == added.updated_at
    got = await catalog.get(added.id)
    assert got == added
    assert got.started_at == T0 and got.started_at.tzinfo is not None

    progressed = await catalog.update(added.id, bytes=1_000_000, duration_s=12.5)
    assert (progressed.bytes, progressed.duration_s) == (1_000_000, 12.5)
    assert progressed.updated_at >= added.updated_at and progressed.created_at == added.created_at
    assert progressed.width == 1280 and progressed.video_codec == "h264"

    # a time given in another zone is the same instant, returned in UTC
    ended = (T0 + timedelta(minutes=60)).astimezone(timezone(timedelta(hours=2)))
    done = await catalog.finish(added.id, ended_at=ended, duration_s=3600.0, bytes=5 * 2**32)
    assert done.status == "complete" and done.ended_at == at(60) and done.ended_at.utcoffset() == timedelta(0)
    assert done.bytes == 5 * 2**32  # past 32 bits: a long recording
    assert await catalog.get(added.id) == done

    moved = await catalog.update(added.id, location="s3://bucket/live/cam/0.mp4", status="uploading")
    assert moved.location.startswith("s3://") and moved.status == "uploading"

    assert await catalog.delete(added.id) is True
    assert await catalog.get(added.id) is None
    assert await catalog.delete(added.id) is False


async def test_many_rows_progress_in_one_call_and_an_unknown_id_is_passed_over(catalog):
    rows = [await catalog.add(rec(stream=f"cam{i}")) for i in range(3)]
    await catalog.progress({})  # nothing to write: no transaction, no error
    await catalog.progress({rows[0].id: (1_000, 2.0), rows[2].id: (5 * 2**32, 3600.5), "nosuchrow123": (1, 1.0)})
    first, second, third = [await catalog.get(row.id) for row in rows]
    assert (first.bytes, first.duration_s) == (1_000, 2.0) and first.updated_at >= rows[0].updated_at
    assert (second.bytes, second.duration_s) == (rows[1].bytes, rows[1].duration_s)  # not named: untouched
    assert (third.bytes, third.duration_s) == (5 * 2**32, 3600.5)
    assert (first.status, third.status, third.video_codec) == ("recording", "recording", rows[2].video_codec)
    assert await catalog.get("nosuchrow123") is None


async def test_unknown_ids_and_bad_values(catalog):
    assert await catalog.get("nope") is None
    assert await catalog.update("nope", bytes=1) is None
    assert await catalog.finish("nope", ended_at=T0, duration_s=1, bytes=1) is None
    first = await catalog.add(rec())
    with pytest.raises(ValueError, match="already in the catalog"):
        await catalog.add(Recording(**_same_id(first)))
    with pytest.raises(ValueError, match="cannot update app"):
        await catalog.update(first.id, app="other")
    with pytest.raises(ValueError, match="status 'done'"):
        await catalog.update(first.id, status="done")
    with pytest.raises(ValueError, match="status 'done'"):
        rec(status="done")
    with pytest.raises(ValueError, match="no time zone"):
        Recording.start("live", "cam", "n1", "/x.mp4", started_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        await catalog.list(since=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="outside the years 1-9999 in UTC"):
        await catalog.list(until=datetime.fromisoformat("9999-12-31T23:59:59-14:00"))
    assert await catalog.get(first.id) == first  # nothing above changed it


def _same_id(r: Recording) -> dict:
    return dict(id=r.id, app="other", stream="x", node="n2", started_at=at(9), location="/y.mp4")


async def test_list_filters(catalog):
    # live/cam: 0-60, 60-120; live/door: 30-90; news/cam: 45-... still recording
    a = await catalog.add(rec("live", "cam", minute=0))
    await catalog.finish(a.id, ended_at=at(60), duration_s=3600, bytes=100)
    b = await catalog.add(rec("live", "cam", minute=60))
    await catalog.finish(b.id, ended_at=at(120), duration_s=3600, bytes=100)
    c = await catalog.add(rec("live", "door", minute=30))
    await catalog.finish(c.id, ended_at=at(90), duration_s=3600, bytes=100)
    d = await catalog.add(rec("news", "cam", minute=45))

    async def ids(**kw) -> list[str]:
        rows, nxt = await catalog.list(**kw)
        assert nxt is None
        return [r.id for r in rows]

    assert await ids() == [b.id, d.id, c.id, a.id]  # newest first
    assert await ids(app="live") == [b.id, c.id, a.id]
    assert await ids(app="live", stream="cam") == [b.id, a.id]
    assert await ids(stream="cam") == [b.id, d.id, a.id]
    assert await ids(app="nobody") == []
    # the recordings overlapping [since, until)
    assert await ids(until=at(30)) == [a.id]  # c starts at 30: not before 30
    assert await ids(since=at(95)) == [b.id, d.id]  # d is still recording
    assert await ids(since=at(60)) == [b.id, d.id, c.id]  # a ended at 60: not after it
    assert await ids(since=at(70), until=at(100)) == [b.id, d.id, c.id]
    assert await ids(app="live", since=at(91), until=at(200)) == [b.id]
    rows, _ = await catalog.list(app="news")
    assert rows[0].status == "recording" and rows[0].ended_at is None


async def test_cursor_paging_is_stable_under_inserts(catalog):
    # 120 rows, two per start time so the id breaks ties
    originals = [await catalog.add(rec(stream=f"s{i % 7}", minute=i // 2)) for i in range(120)]
    expected = sorted(originals, key=lambda r: (r.started_at, r.id), reverse=True)
    seen: list[Recording] = []
    cursor = None
    for page in range(20):
        rows, cursor = await catalog.list(limit=25, cursor=cursor)
        seen += rows
        # between pages: newer rows, and a row at the same start time as the page's last one
        await catalog.add(rec(minute=1000 + page))
        if rows:
            await catalog.add(Recording.start("live", "cam", "n1", "/late.mp4", started_at=rows[-1].started_at))
        if cursor is None:
            break
    originals_seen = [r for r in seen if r.location != "/late.mp4" and r.started_at < at(1000)]
    assert [r.id for r in originals_seen] == [r.id for r in expected]  # every row once, in order
    assert len({r.id for r in seen}) == len(seen)  # no duplicates at all
    assert cursor is None and page == 4  # 120 rows and at most 4 late ones behind a cursor: 5 pages of 25

    # the cursor of a filtered listing pages that listing
    rows, cursor = await catalog.list(stream="s3", limit=5)
    rest, _ = await catalog.list(stream="s3", limit=MAX_PAGE, cursor=cursor)
    everything, _ = await catalog.list(stream="s3", limit=MAX_PAGE)
    assert [r.id for r in rows + rest] == [r.id for r in everything] and len(everything) > 5


BAD_CURSORS = [
    "not a cursor!",
    "x",
    base64.urlsafe_b64encode(b"{}").decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00", "abc"]').decode(),  # no time zone
    base64.urlsafe_b64encode(b'["yesterday", "abc"]').decode(),
    base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", 5]').decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    "A" * 500,
    base64.urlsafe_b64encode(b"[" * 100_000).decode(),  # nested past the parser's recursion limit
    base64.urlsafe_b64encode(b"[" * 300).decode(),  # nested, within the length bound
    base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+14:00", "abc"]').decode(),  # before year 1 in UTC
    base64.urlsafe_b64encode(b'["9999-12-31T23:59:59-14:00", "abc"]').decode(),  # after year 9999 in UTC
]


async def test_a_malformed_cursor_is_a_value_error(catalog):
    await catalog.add(rec())
    for cursor in BAD_CURSORS:
        with pytest.raises(ValueError, match="cursor .* is malformed; pass the next_cursor"):
            await catalog.list(cursor=cursor)


async def test_limits_out_of_range(catalog):
    for limit in (0, -1, MAX_PAGE + 1):
        with pytest.raises(ValueError, match="limit"):
            await catalog.list(limit=limit)
        with pytest.raises(ValueError, match="limit"):
            await catalog.oldest(limit=limit)
    # a well-formed cursor past every row is an empty page, not an error
    await catalog.add(rec())
    assert await catalog.list(cursor=encode_cursor(at(-10), "")) == ([], None)


async def test_interrupted_rows_per_node(catalog):
    a1 = await catalog.add(rec(node="a", minute=1))
    a2 = await catalog.add(rec(node="a", stream="door", minute=2))
    a3 = await catalog.add(rec(node="a", minute=3))
    await catalog.finish(a3.id, ended_at=at(4), duration_s=60, bytes=1)
    b1 = await catalog.add(rec(node="b", minute=1))
    assert [r.id for r in await catalog.interrupted("a")] == [a1.id, a2.id]
    assert [r.id for r in await catalog.interrupted("b")] == [b1.id]
    assert await catalog.interrupted("c") == []
    # crash recovery: the caller reads the file and closes the row as interrupted
    for r in await catalog.interrupted("a"):
        await catalog.finish(r.id, ended_at=at(10), duration_s=42.0, bytes=4242, status="interrupted")
    assert await catalog.interrupted("a") == []
    assert (await catalog.get(a1.id)).status == "interrupted"
    assert [r.id for r in await catalog.interrupted("b")] == [b1.id]


async def test_oldest_and_total_bytes_for_retention(catalog):
    rows = []
    for i, app in enumerate(["live", "news", "live", "live", "news"]):
        r = await catalog.add(rec(app, minute=i * 10))
        rows.append(await catalog.finish(r.id, ended_at=at(i * 10 + 9), duration_s=540, bytes=1000 * (i + 1)))
    running = await catalog.add(rec("live", minute=-100, bytes=7))  # the oldest start, but still recording
    assert await catalog.total_bytes() == 15000 + 7
    assert await catalog.total_bytes("live") == 1000 + 3000 + 4000 + 7
    assert await catalog.total_bytes("nobody") == 0
    assert [r.id for r in await catalog.oldest(limit=3)] == [rows[0].id, rows[1].id, rows[2].id]
    assert [r.id for r in await catalog.oldest("news")] == [rows[1].id, rows[4].id]
    assert running.id not in {r.id for r in await catalog.oldest(limit=MAX_PAGE)}
    await catalog.delete(rows[0].id)
    assert (await catalog.oldest("live", limit=1))[0].id == rows[2].id
    assert await catalog.total_bytes("live") == 3000 + 4000 + 7


async def test_concurrent_adds_from_many_tasks(catalog):
    async def writer(n: int) -> list[str]:
        out = []
        for i in range(5):
            r = await catalog.add(rec(stream=f"w{n}", minute=i))
            await catalog.update(r.id, bytes=i + 1)
            out.append(r.id)
        return out

    written = await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(8))), 30)
    ids = {i for ids in written for i in ids}
    assert len(ids) == 40
    rows, _ = await catalog.list(limit=MAX_PAGE)
    assert {r.id for r in rows} == ids
    assert await catalog.total_bytes() == 8 * (1 + 2 + 3 + 4 + 5)


async def test_an_unreachable_postgres_names_the_url_without_its_password():
    url = f"postgresql+asyncpg://media:hunter2@127.0.0.1:{free_port()}/catalog"
    with pytest.raises(CatalogUnavailable) as err:
        await asyncio.wait_for(Catalog.open(url, connect_timeout_s=3), 20)
    message = str(err.value)
    assert "hunter2" not in message
    assert "postgresql+asyncpg://media:***@127.0.0.1" in message and "unavailable" in message


async def test_an_unusable_sqlite_path_is_unavailable(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CatalogUnavailable, match="file/recordings"):
        await Catalog.open(default_url(tmp_path / "file" / "recordings"))
    # a file that is not a database
    (tmp_path / "garbage.db").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(CatalogUnavailable, match="garbage.db"):
        await Catalog.open(f"sqlite+aiosqlite:///{tmp_path / 'garbage.db'}")


async def test_a_bad_url_is_unavailable_with_the_password_hidden():
    with pytest.raises(CatalogUnavailable, match="not a database URL"):
        await Catalog.open("recordings.db")
    with pytest.raises(CatalogUnavailable) as err:
        await Catalog.open("nosuchdb+driver://u:topsecret@host/db")
    assert "topsecret" not in str(err.value)
    assert redact("postgresql+asyncpg://u:pw@h/db") == "postgresql+asyncpg://u:***@h/db"


async def test_a_postgres_that_goes_away_makes_each_call_unavailable(pg):
    server = PostgresServer(pg.bin_dir)  # its own server, to stop
    try:
        url = server.create_database()
        cat = await Catalog.open(url)
        added = await cat.add(rec())
        server.stop()
        for call in (cat.get(added.id), cat.list(), cat.add(rec(minute=1)), cat.total_bytes()):
            with pytest.raises(CatalogUnavailable) as err:
                await asyncio.wait_for(call, 20)
            assert "secret" not in str(err.value) and "postgres:***@127.0.0.1" in str(err.value)
        await cat.close()
    finally:
        server.stop()


async def test_lookups_never_wait_for_a_writer_on_sqlite(tmp_path):
    # Every VOD viewer's first request reads a row: a read must not queue behind SQLite's one write lock.
    import sqlite3

    url = default_url(tmp_path)
    cat = await Catalog.open(url)
    writer = sqlite3.connect(str(tmp_path / "recordings.db"), isolation_level=None)
    try:
        added = await cat.add(rec(minute=1))
        writer.execute("BEGIN IMMEDIATE")  # another node's (or task's) write in progress
        writer.execute("UPDATE recordings SET bytes = 5")
        found = await asyncio.wait_for(asyncio.gather(*(cat.get(added.id) for _ in range(20))), 3)
        assert {row.bytes for row in found} == {0}  # the snapshot before the uncommitted write
        assert len((await asyncio.wait_for(cat.list(), 3))[0]) == 1
        writer.execute("COMMIT")
        assert (await cat.get(added.id)).bytes == 5
    finally:
        writer.close()
        await cat.close()
