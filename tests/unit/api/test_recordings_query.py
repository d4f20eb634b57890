"""GET /api/v1/recordings' query: a time that is not one, or that leaves the years 1-9999 once in UTC,
is a 400 that says what to give, never a 500."""

from __future__ import annotations

import pytest

from mediaserver.api.recordings import RecordingsError, listing


class _Catalog:
    def __init__(self) -> None:
        self.asked: list[dict] = []

    async def list(self, **kwargs):
        self.asked.append(kwargs)
        return [], None


class _Manager:
    def __init__(self) -> None:
        self.catalog = _Catalog()


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "yesterday", "",
                                  "2026-13-01T00:00:00Z"])
async def test_a_time_that_is_none_is_a_400_with_a_hint(name, text):
    manager = _Manager()
    with pytest.raises(RecordingsError) as caught:
        await listing(manager, {name: text})
    assert caught.value.status == 400 and "is not a time" in str(caught.value) and "ISO 8601" in caught.value.hint
    assert manager.catalog.asked == []


async def test_times_in_any_zone_reach_the_catalog_in_utc():
    manager = _Manager()
    await listing(manager, {"since": "0001-01-01T00:00:00-01:00", "until": "2026-12-04T10:00:00+02:00"})
    asked = manager.catalog.asked[0]
    assert asked["since"].isoformat() == "0001-01-01T01:00:00+00:00"
    assert asked["until"].isoformat() == "2026-12-04T08:00:00+00:00"
