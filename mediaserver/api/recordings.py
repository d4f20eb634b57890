"""What the admin API answers about recordings: start and stop a stream's recording, list, describe and
delete recordings. api/admin.py routes the requests here (one route table, one OpenAPI document) and turns
a RecordingsError into its error answer."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


from ..hub.stream import StreamKey
from ..record.catalog import Recording
from ..record.manager import ElsewhereError, NotRecordable, RecordingManager, summary
from ..record.objectstore import StorageError

MAX_LIMIT = 200


class RecordingsError(Exception):
    def __init__(self, status: int, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def describe(row: Recording) -> dict[str, Any]:
    return summary(row)


def _manager(manager: RecordingManager | None) -> RecordingManager:
    if manager is None:
        raise RecordingsError(404, "recording is off on this node", "set record.mode = \"api\" or \"all\"")
    return manager


def _time(query, name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)  # OverflowError: an offset that leaves the years 1-9999
    except (ValueError, OverflowError):
        raise RecordingsError(400, f"{name}={text[:40]!r} is not a time",
                              "give an ISO 8601 time, e.g. 2026-12-02T08:00:00Z") from None


def start(manager: RecordingManager | None, key: StreamKey) -> dict[str, Any]:
    try:
        _manager(manager).start(key)
    except NotRecordable as err:
        raise RecordingsError(err.status, str(err), err.hint) from None
    return {"stream": str(key), "recording": True}


def stop(manager: RecordingManager | None, key: StreamKey) -> dict[str, Any]:
    manager = _manager(manager)
    current = manager.current(key)
    if not manager.stop(key):
        raise RecordingsError(404, f"stream {key} is not being recorded", "POST to this URL starts its recording")
    return {"stream": str(key), "recording": False, "id": current}


async def listing(manager: RecordingManager | None, query) -> dict[str, Any]:
    manager = _manager(manager)
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise RecordingsError(400, "limit must be a whole number", f"1..{MAX_LIMIT}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise RecordingsError(400, f"limit {limit} is out of range", f"1..{MAX_LIMIT}")
    try:
        rows, cursor = await manager.catalog.list(
            app=query.get("app"), stream=query.get("stream"), since=_time(query, "since"),
            until=_time(query, "until"), limit=limit, cursor=query.get("cursor"))
    except ValueError as err:
        raise RecordingsError(400, str(err), "pass back the `next` cursor of the previous page as it was") from None
    return {"recordings": [describe(r) for r in rows], "next": cursor}


async def one(manager: RecordingManager | None, rec_id: str) -> dict[str, Any]:
    row = await _manager(manager).catalog.get(rec_id)
    if row is None:
        raise RecordingsError(404, "no such recording", "GET /api/v1/recordings lists them")
    return describe(row)


async def delete(manager: RecordingManager | None, rec_id: str) -> dict[str, Any]:
    try:
        deleted = await _manager(manager).delete(rec_id)
    except StorageError as err:
        raise RecordingsError(503, str(err), "the row is kept; retry when the bucket answers") from None
    except ElsewhereError as err:  # not forwarded: that node's admin API may have another token
        raise RecordingsError(409, str(err), f"delete it through node {err.node}'s admin API "
                              f"(DELETE /api/v1/recordings/{rec_id} there; GET /api/v1/nodes gives its URL)") from None
    if deleted is None:
        raise RecordingsError(409, "the recording is still being written",
                              "stop it first (DELETE /api/v1/streams/APP/NAME/record)")
    if not deleted:
        raise RecordingsError(404, "no such recording", "GET /api/v1/recordings lists them")
    return {"id": rec_id, "deleted": True}



