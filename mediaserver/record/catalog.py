"""The recordings catalog: one row per recorded file, in SQL through one async layer.

SQLite (aiosqlite) by default, a file next to the recordings that needs nothing installed; PostgreSQL
(asyncpg) for a cluster, so that every node sees every recording. The schema is Alembic's: `Catalog.open`
upgrades the database to head before anything else, so a node never runs against a schema it does not know.
This is the only module of the project that speaks SQL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import dataclasses
import json
import logging
import secrets
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

try:  # SQLAlchemy 2.1 renamed await_only (2.0) to await_, deprecating the old name
    from sqlalchemy.util import await_
except ImportError:  # pragma: no cover - SQLAlchemy 2.0
    from sqlalchemy.util import await_only as await_

from ..errors import Unavailable
from ..log import event

log = logging.getLogger(__name__)

STATUSES = ("recording", "complete", "interrupted", "uploading", "failed")
MAX_PAGE = 1000
MAX_CURSOR = 512
"""Our cursors are under 150 characters; anything much longer is not one (and is not decoded)."""
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant shared by every node: the key of the PostgreSQL advisory lock that serialises migrations
# when several nodes of a cluster start at once.
_MIGRATION_LOCK = 0x4D535243  # "MSRC"
_READ_ONLY = "mediaserver_catalog_read"  # execution option: begin this transaction without the write lock
# Alembic's `context` and `op` are process-wide proxies: migrations of two catalogs interleaving on one loop
# (their database calls yield to it; no database lock orders them) ran each other's steps on the wrong
# connection. One at a time per loop; those of one database are also ordered by its lock, across nodes.
_MIGRATING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
WAL_SWITCH_S = 10.0


class CatalogUnavailable(Unavailable):
    """The catalog's database cannot be reached (or answered with a connection-level error)."""

    public_message = "the recordings catalog cannot be reached now"


def default_url(record_path: str | Path) -> str:
    """The SQLite catalog beside the recordings: `record_path/recordings.db`."""
    return f"sqlite+aiosqlite:///{Path(record_path).resolve() / 'recordings.db'}"


def redact(url: str) -> str:
    """The URL as safe to log or show: the password replaced by ***."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa_exc.ArgumentError:
        return "<unparsable database URL>"


def new_id() -> str:
    """A short opaque URL-safe id: 72 random bits, 12 characters."""
    return secrets.token_urlsafe(9)


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        raise ValueError(f"{name} {value.isoformat()} has no time zone; pass an aware datetime (e.g. UTC)")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(f"{name} {value.isoformat()} is outside the years 1-9999 in UTC") from None


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded file. Times are aware UTC datetimes; `ended_at` is None while recording."""

    id: str
    app: str
    stream: str
    node: str
    started_at: datetime
    location: str  # a local path or an s3:// URI
    status: str = "recording"
    ended_at: datetime | None = None
    duration_s: float = 0.0
    bytes: int = 0
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    created_at: datetime | None = None  # set by the catalog
    updated_at: datetime | None = None
    final_status: str | None = None
    """While "uploading": the status the row takes back once the file is in object storage."""

    def __post_init__(self) -> None:
        for status in (self.status, self.final_status or self.status):
            if status not in STATUSES:
                raise ValueError(f"recording status {status!r} is not one of {', '.join(STATUSES)}")
        for name in ("started_at", "ended_at", "created_at", "updated_at"):
            object.__setattr__(self, name, _utc(getattr(self, name), name))

    @classmethod
    def start(cls, app: str, stream: str, node: str, location: str, started_at: datetime | None = None,
              **fields: Any) -> Recording:
        """A new row for a file that starts now (or at `started_at`), with a fresh id."""
        return cls(id=new_id(), app=app, stream=stream, node=node, location=location,
                   started_at=started_at or datetime.now(timezone.utc), **fields)


# What `update` may change; id, app, stream, node, started_at and created_at are fixed at `add`.
MUTABLE = frozenset({"ended_at", "duration_s", "bytes", "video_codec", "audio_codec", "width", "height",
                     "location", "status", "final_status"})


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes on every backend: SQLite keeps naive text (stored as UTC, so it sorts), PostgreSQL
    a timestamptz; both come back aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        value = _utc(value, "timestamp")
        if value is not None and dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()

# Keep in step with migrations/versions: tests compare this table with the migrated schema.
recordings = sa.Table(
    "recordings", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("app", sa.String(255), nullable=False),
    sa.Column("stream", sa.String(255), nullable=False),
    sa.Column("node", sa.String(255), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("duration_s", sa.Float(), nullable=False),
    sa.Column("bytes", sa.BigInteger(), nullable=False),
    sa.Column("video_codec", sa.String(64), nullable=True),
    sa.Column("audio_codec", sa.String(64), nullable=True),
    sa.Column("width", sa.Integer(), nullable=True),
    sa.Column("height", sa.Integer(), nullable=True),
    sa.Column("location", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("final_status", sa.String(16), nullable=True),  # revision 0002
    # list() newest first, overall / per app / per stream; oldest() and total_bytes() per app
    sa.Index("ix_recordings_started", "started_at", "id"),
    sa.Index("ix_recordings_app_started", "app", "started_at", "id"),
    sa.Index("ix_recordings_app_stream_started", "app", "stream", "started_at", "id"),
    # interrupted(node) at start
    sa.Index("ix_recordings_node_status", "node", "status"),
)

_COLUMNS = tuple(f.name for f in dataclasses.fields(Recording))


def _row(row: sa.Row) -> Recording:
    m = row._mapping
    return Recording(**{name: m[name] for name in _COLUMNS})


def encode_cursor(started_at: datetime, rec_id: str) -> str:
    raw = json.dumps([started_at.astimezone(timezone.utc).isoformat(), rec_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(started_at, id) of the last row of the previous page; ValueError when it is not one of ours."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started, rec_id = json.loads(raw)
        when = datetime.fromisoformat(started)
        if not isinstance(rec_id, str) or when.tzinfo is None:
            raise ValueError
        when = when.astimezone(timezone.utc)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError, RecursionError):
        shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
        raise ValueError(f"cursor {shown!r} is malformed; pass the next_cursor of a previous page, "
                         f"or none for the first page") from None
    return when, rec_id


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Catalog:
    """The recordings table behind an AsyncEngine. Open with `await Catalog.open(url)`; close when done."""

    def __init__(self, engine: AsyncEngine, url: str) -> None:
        self._engine = engine
        self.url = redact(url)

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = 10.0) -> Catalog:
        """Connect and upgrade the schema to head. Raises CatalogUnavailable when the database cannot be
        reached, naming the URL without its password."""
        try:
            parsed = sa.engine.make_url(url)
        except sa_exc.ArgumentError as e:
            raise CatalogUnavailable(f"catalog URL {redact(url)!r} is not a database URL ({e}); use e.g. "
                                     f"sqlite+aiosqlite:///PATH/recordings.db or "
                                     f"postgresql+asyncpg://USER:PASSWORD@HOST/DB") from None
        backend = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                try:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise CatalogUnavailable(f"catalog {redact(url)}: cannot make its directory: {e}") from None
            kwargs["connect_args"] = {"timeout": connect_timeout_s}
        elif backend == "postgresql":
            kwargs["connect_args"] = {"timeout": connect_timeout_s}
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_async_engine(url, **kwargs)
        except (sa_exc.ArgumentError, ImportError) as e:
            raise CatalogUnavailable(f"catalog {redact(url)}: {e}; for PostgreSQL install the 'postgres' extra "
                                     f"(pip install 'mediaserver[postgres]')") from None
        if backend == "sqlite":
            sa_event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            sa_event.listen(engine.sync_engine, "begin", _sqlite_begin)
        catalog = cls(engine, url)
        try:
            await catalog._migrate()
        except sa_exc.DatabaseError as e:  # reached, but not a database we can use (not SQLite, no rights)
            await engine.dispose()
            raise CatalogUnavailable(f"catalog database {catalog.url} cannot be migrated: "
                                     f"{getattr(e, 'orig', None) or e}") from e
        except BaseException:
            await engine.dispose()
            raise
        event(log, "catalog_open", url=catalog.url)
        return catalog

    async def close(self) -> None:
        await self._engine.dispose()

    async def _migrate(self) -> None:
        lock = _MIGRATING.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock, self._connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            before, after = await conn.run_sync(_upgrade_to_head)
        if before != after:
            event(log, "catalog_migrated", url=self.url, revision=after, previous=before or "none")

    @asynccontextmanager
    async def _connect(self, *, read: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction; connection-level failures become CatalogUnavailable. A `read` transaction never
        takes SQLite's write lock, so lookups (every VOD viewer's first request) run beside each other and
        beside a writer instead of queueing behind one lock."""
        try:
            async with self._engine.connect() as conn:
                if read:
                    await conn.execution_options(**{_READ_ONLY: True})
                async with conn.begin():
                    yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, asyncio.TimeoutError) as e:
            reason = getattr(e, "orig", None) or e
            raise CatalogUnavailable(f"catalog database {self.url} is unavailable: "
                                     f"{type(reason).__name__}: {reason}".rstrip(": ")) from e

    async def add(self, rec: Recording) -> Recording:
        """Insert a new row; returns it with created/updated set. A duplicate id is a ValueError."""
        now = _now()
        rec = dataclasses.replace(rec, created_at=now, updated_at=now)
        try:
            async with self._connect() as conn:
                await conn.execute(recordings.insert().values(**dataclasses.asdict(rec)))
        except sa_exc.IntegrityError:
            raise ValueError(f"a recording with id {rec.id!r} is already in the catalog") from None
        return rec

    async def update(self, rec_id: str, **fields: Any) -> Recording | None:
        """Change some fields of a row (progress: bytes, duration_s; location after an upload; status).
        Returns the updated row, or None for an unknown id."""
        unknown = set(fields) - MUTABLE
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}; updatable: {', '.join(sorted(MUTABLE))}")
        for name in ("status", "final_status"):
            if fields.get(name) is not None and fields[name] not in STATUSES:
                raise ValueError(f"recording {name} {fields[name]!r} is not one of {', '.join(STATUSES)}")
        async with self._connect() as conn:
            result = await conn.execute(
                recordings.update().where(recordings.c.id == rec_id).values(**fields, updated_at=_now()))
            if result.rowcount == 0:
                return None
            row = (await conn.execute(recordings.select().where(recordings.c.id == rec_id))).one()
        return _row(row)

    async def progress(self, figures: dict[str, tuple[int, float]]) -> None:
        """Many growing files' (bytes, duration_s), by row id, in one transaction and one statement run for
        them all: a row no longer there is passed over. Every recording of a node reports this way at once
        (RecordingManager), instead of a transaction (and a round trip to PostgreSQL) per row."""
        if not figures:
            return
        now = _now()
        statement = recordings.update().where(recordings.c.id == sa.bindparam("row_id")).values(
            bytes=sa.bindparam("row_bytes"), duration_s=sa.bindparam("row_duration"), updated_at=now)
        async with self._connect() as conn:
            await conn.execute(statement, [{"row_id": rec_id, "row_bytes": size, "row_duration": duration}
                                           for rec_id, (size, duration) in figures.items()])

    async def finish(self, rec_id: str, ended_at: datetime, duration_s: float, bytes: int,
                     status: str = "complete") -> Recording | None:
        """Close a row: its end, final duration and size, and status (complete, or interrupted after a crash)."""
        return await self.update(rec_id, ended_at=ended_at, duration_s=duration_s, bytes=bytes, status=status)

    async def get(self, rec_id: str) -> Recording | None:
        async with self._connect(read=True) as conn:
            row = (await conn.execute(recordings.select().where(recordings.c.id == rec_id))).first()
        return _row(row) if row is not None else None

    async def delete(self, rec_id: str) -> bool:
        """Remove a row (the caller removes the file); False for an unknown id."""
        async with self._connect() as conn:
            result = await conn.execute(recordings.delete().where(recordings.c.id == rec_id))
        return result.rowcount > 0

    async def list(self, app: str | None = None, stream: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, limit: int = 50,
                   cursor: str | None = None) -> tuple[builtins.list[Recording], str | None]:
        """One page of rows newest first, and the cursor of the next page (None on the last).

        `since`/`until` select the recordings that overlap [since, until): started before `until` and not
        ended before `since` (a recording still running overlaps every later time). The cursor is the
        (started_at, id) of the page's last row, so rows added meanwhile never shift or repeat a page."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit {limit} is out of range; must be 1..{MAX_PAGE}")
        c = recordings.c
        query = recordings.select()
        if app is not None:
            query = query.where(c.app == app)
        if stream is not None:
            query = query.where(c.stream == stream)
        if until is not None:
            query = query.where(c.started_at < _utc(until, "until"))
        if since is not None:
            query = query.where(sa.or_(c.ended_at.is_(None), c.ended_at > _utc(since, "since")))
        if cursor is not None:
            after_started, after_id = decode_cursor(cursor)
            query = query.where(sa.or_(c.started_at < after_started,
                                       sa.and_(c.started_at == after_started, c.id < after_id)))
        query = query.order_by(c.started_at.desc(), c.id.desc()).limit(limit + 1)
        async with self._connect(read=True) as conn:
            rows = [_row(r) for r in await conn.execute(query)]
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].started_at, rows[-1].id)

    async def interrupted(self, node: str) -> builtins.list[Recording]:
        """Rows of `node` still marked recording: at start, files a crash left open. The caller reads each
        file's size and duration and calls finish(..., status="interrupted")."""
        c = recordings.c
        query = (recordings.select().where(c.node == node, c.status == "recording")
                 .order_by(c.started_at, c.id))
        async with self._connect(read=True) as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def unuploaded(self, node: str, uploading_only: bool = False) -> builtins.list[Recording]:
        """Rows of `node` whose file is still on its disk although finished: "uploading" (a restart cut the
        upload short) or, unless `uploading_only`, closed with a local location (recorded before
        record.storage was "s3")."""
        c = recordings.c
        status = c.status == "uploading" if uploading_only else c.status != "recording"
        query = (recordings.select()
                 .where(c.node == node, status, sa.not_(c.location.startswith("s3://")))
                 .order_by(c.started_at, c.id))
        async with self._connect(read=True) as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def oldest(self, app: str | None = None, limit: int = 100) -> builtins.list[Recording]:
        """Retention candidates, oldest first: every row but those still recording."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit {limit} is out of range; must be 1..{MAX_PAGE}")
        c = recordings.c
        query = recordings.select().where(c.status != "recording")
        if app is not None:
            query = query.where(c.app == app)
        query = query.order_by(c.started_at, c.id).limit(limit)
        async with self._connect(read=True) as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def total_bytes(self, app: str | None = None) -> int:
        """Bytes of every row (the ones still recording too: they use the disk)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(recordings.c.bytes), 0))
        if app is not None:
            query = query.where(recordings.c.app == app)
        async with self._connect(read=True) as conn:
            return int((await conn.execute(query)).scalar_one())

    # ----- retention ----------------------------------------------------------------------------
    # A node deletes the files it can reach: its own rows, and rows in object storage (any node's; deleting
    # one twice is harmless). `usage` and `deletable` answer for that scope.

    @staticmethod
    def _scope(node: str) -> Any:
        c = recordings.c
        return sa.or_(c.node == node, c.location.like("s3://%"))

    async def usage(self, node: str) -> dict[str, int]:
        """Bytes by app of the rows in `node`'s retention scope, the ones still being written included."""
        c = recordings.c
        query = (sa.select(c.app, sa.func.coalesce(sa.func.sum(c.bytes), 0))
                 .where(self._scope(node)).group_by(c.app))
        async with self._connect(read=True) as conn:
            return {app: int(size) for app, size in await conn.execute(query)}

    async def deletable(self, node: str, apps: Sequence[str] | None = None, exclude_apps: Sequence[str] = (),
                        limit: int = 500) -> builtins.list[Recording]:
        """Retention candidates of `node`'s scope, oldest first: neither recording nor uploading; only `apps`
        when given, never `exclude_apps`."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit {limit} is out of range; must be 1..{MAX_PAGE}")
        c = recordings.c
        query = recordings.select().where(self._scope(node), c.status.not_in(("recording", "uploading")))
        if apps is not None:
            query = query.where(c.app.in_(list(apps)))
        if exclude_apps:
            query = query.where(c.app.not_in(list(exclude_apps)))
        query = query.order_by(c.started_at, c.id).limit(limit)
        async with self._connect(read=True) as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def ping(self) -> None:
        """One `SELECT 1`: raises CatalogUnavailable when the database cannot be reached (/readyz)."""
        async with self._connect(read=True) as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (head after open)."""
        async with self._connect(read=True) as conn:
            return await conn.run_sync(_current_revision)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling leaves DDL outside any transaction (a migration cut short would
    # stay half done); turn it off and begin every transaction ourselves (_sqlite_begin).
    dbapi_conn.isolation_level = None
    # WAL lets readers run beside the one writer; busy_timeout makes concurrent writers wait, not fail.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    _into_wal(cur, pause=_await_sleep)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _into_wal(cur: Any, *, pause: Callable[[float], object]) -> None:
    """Switch the file to WAL (a no-op once it is). Making a new file WAL needs it alone, and SQLite answers
    "locked" at once, without its busy handler, while another connection (a node, a worker) switches the same
    new file: retry for WAL_SWITCH_S."""
    deadline = time.monotonic() + WAL_SWITCH_S
    wait = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() + wait > deadline:
                raise
        pause(wait)
        wait = min(wait * 2, 0.1)


def _await_sleep(seconds: float) -> None:
    # The engine runs connect events in its greenlet on the event loop: await the pause, never block the loop.
    await_(asyncio.sleep(seconds))


def _sqlite_begin(conn: sa.Connection) -> None:
    # A writing transaction takes the write lock up front (IMMEDIATE): one that reads and then writes (a
    # migration checking its version) cannot fail half way with SQLITE_BUSY; other writers wait busy_timeout.
    # A read-only one begins DEFERRED: under WAL it sees a snapshot and never waits for the writer.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def _alembic_config(conn: sa.Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def _upgrade_to_head(conn: sa.Connection) -> tuple[str | None, str | None]:
    """(revision before, revision after). Alembic's own INFO lines (its plugins, each step) are held back: the
    server logs one catalog_migrated line instead."""
    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        from alembic import command  # its first import sets up plugins, saying so at INFO

        before = _current_revision(conn)
        command.upgrade(_alembic_config(conn), "head")
        return before, _current_revision(conn)
    finally:
        quiet.setLevel(level)


def _current_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped in migrations/versions."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


__all__: Sequence[str] = ("Catalog", "CatalogUnavailable", "Recording", "STATUSES", "default_url", "new_id", "redact")
