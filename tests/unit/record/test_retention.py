"""Retention policy (record/retention.py) on tables of rows, and the free-space guard's states (record/disk.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mediaserver.config import RecordConfig, RetentionRule, load_config
from mediaserver.record.catalog import Recording
from mediaserver.record.disk import LOW, OK, DiskGuard
from mediaserver.record.retention import GB, Policy, plan, usage

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def row(name: str, app: str = "live", days_ago: float = 1.0, gb: float = 1.0, status: str = "complete") -> Recording:
    start = NOW - timedelta(days=days_ago)
    ended = None if status == "recording" else start + timedelta(hours=1)
    return Recording(id=name, app=app, stream="cam", node="n1", started_at=start, location=f"/r/{name}.mp4",
                     status=status, ended_at=ended, bytes=int(gb * GB))


def policy(**record) -> Policy:
    rules = tuple(RetentionRule(**r) for r in record.pop("retention", ()))
    return Policy.from_config(RecordConfig(retention=rules, **record))


def deleted(rows: list[Recording], pol: Policy) -> list[tuple[str, str]]:
    return [(d.row.id, d.reason) for d in plan(rows, usage(rows), pol, NOW)]


def test_no_limits_deletes_nothing():
    rows = [row("a", days_ago=900, gb=5000)]
    assert not policy().enabled and deleted(rows, policy()) == []


@pytest.mark.parametrize("rows, limits, expected", [
    # by age: the end (start + 1 h) against max_age_days
    ([row("a", days_ago=10), row("b", days_ago=8), row("c", days_ago=2)], {"max_age_days": 7},
     [("a", "age"), ("b", "age")]),
    ([row("a", days_ago=7.02)], {"max_age_days": 7}, []),  # started 7 days ago, ended within the 7 days
    # by size: the oldest first until the total fits
    ([row("c", days_ago=1), row("a", days_ago=3), row("b", days_ago=2)], {"max_total_gb": 1.5},
     [("a", "size"), ("b", "size")]),
    ([row("a", days_ago=3), row("b", days_ago=2)], {"max_total_gb": 2}, []),  # exactly at the budget
    # both: age first, then what is still over the budget
    ([row("a", days_ago=30, gb=1), row("b", days_ago=3, gb=2), row("c", days_ago=2, gb=2), row("d", days_ago=1, gb=2)],
     {"max_age_days": 7, "max_total_gb": 4}, [("a", "age"), ("b", "size")]),
    # rows still written or uploaded count in the size but are never deleted, however old
    ([row("r", days_ago=40, gb=3, status="recording"), row("u", days_ago=39, gb=1, status="uploading"),
      row("a", days_ago=3), row("b", days_ago=2)], {"max_age_days": 7, "max_total_gb": 5}, [("a", "size")]),
    # interrupted and failed rows are recordings like the others
    ([row("i", days_ago=9, status="interrupted"), row("f", days_ago=8, status="failed")], {"max_age_days": 7},
     [("i", "age"), ("f", "age")]),
])
def test_limits_of_record(rows, limits, expected):
    assert deleted(rows, policy(**limits)) == expected


def test_an_app_rule_replaces_the_limits_of_its_app_and_its_size_is_its_own_budget():
    pol = policy(max_age_days=30, max_total_gb=3,
                 retention=[{"app": "news", "max_age_days": 2, "max_total_gb": 1},
                            {"app": "archive", "max_age_days": 0},  # kept forever, but in the shared budget
                            {"app": "sport", "max_total_gb": 0}])  # [record]'s age, no size limit
    rows = [row("n1", "news", days_ago=5, gb=0.1), row("n2", "news", days_ago=1.5, gb=0.6),
            row("n3", "news", days_ago=1, gb=0.6),
            row("a1", "archive", days_ago=400, gb=1), row("l1", "live", days_ago=40, gb=1),
            row("l2", "live", days_ago=3, gb=1), row("l3", "live", days_ago=1, gb=1.5),
            row("s1", "sport", days_ago=31, gb=1), row("s2", "sport", days_ago=2, gb=100)]
    # news: n1 too old, then n2 over its 1 GB; live+archive share 3 GB: l1 too old (30 d), then 3.5 GB -> the
    # archive's a1 is the oldest of the shared pool; sport: s1 by [record]'s age, s2 kept whatever its size.
    assert deleted(rows, pol) == [("a1", "size"), ("l1", "age"), ("s1", "age"), ("n1", "age"), ("n2", "size")]


def test_a_batch_cut_short_deletes_what_it_holds_against_the_whole_usage():
    rows = [row("a", days_ago=3), row("b", days_ago=2), row("c", days_ago=1)]
    found = plan(rows[:1], usage(rows), policy(max_total_gb=1), NOW)  # only the oldest came in this batch
    assert [(d.row.id, d.reason) for d in found] == [("a", "size")]  # b goes at the next run


def test_retention_tables_in_the_config(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[record]\nmax_age_days = 30\n[[record.retention]]\napp = "live"\nmax_total_gb = 50\n')
    pol = Policy.from_config(load_config(path).record)
    assert pol.limits("live").max_age == timedelta(days=30) and pol.limits("live").max_bytes == 50 * GB
    assert pol.pool("live") == "live" and pol.pool("other") == "" and pol.budget("") is None


@pytest.mark.parametrize("text, message", [
    ('[[record.retention]]\nmax_age_days = 1\n', "needs app"),
    ('[[record.retention]]\napp = "a"\n[[record.retention]]\napp = "a"\n', "names app a more than once"),
    ('[[record.retention]]\napp = "a"\nmax_total_gb = -2\n', "out of range"),
    ('[[record.retention]]\napp = "a"\nmax_age = 1\n', "did you mean max_age_days"),
    ('[[record.retention]]\napp = ""\n', "app is empty"),
    ('[record]\nmin_free_gb = -1\n', "out of range"),
])
def test_bad_retention_config_is_refused(tmp_path, text, message):
    from mediaserver.config import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_disk_guard_goes_low_under_the_limit_and_ok_only_above_the_margin():
    guard = DiskGuard(min_free_bytes=1000)
    states = []
    for free in (5000, 1200, 999, 500, 1000, 1099, 1100, 1050, 999, 2000):
        change = guard.observe(free)
        states.append(change.state if change else None)
        assert guard.free_bytes == free
    assert states == [None, None, LOW, None, None, None, OK, None, LOW, OK]
    assert not guard.low


def test_a_guard_without_a_limit_measures_but_never_goes_low():
    guard = DiskGuard(min_free_bytes=0)
    assert guard.observe(0) is None and not guard.low and guard.free_bytes == 0


def test_a_failed_file_is_counted_as_disk_full_or_disk_error():
    import errno

    from mediaserver.record.manager import failure_reason

    assert failure_reason(str(OSError(errno.ENOSPC, "No space left on device"))) == "disk_full"
    assert failure_reason(str(OSError(errno.EIO, "Input/output error"))) == "disk_error"
    assert failure_reason(None) == "disk_error"
