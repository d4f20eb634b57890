"""Retention: which recordings to delete, by age and by size, oldest first. Pure: rows, limits and a time in,
the rows to delete out; the RecordingManager reads the catalog, runs `plan` and deletes.

Limits come from [record] (`max_age_days`, `max_total_gb`; 0 is no limit) and per app from
`[[record.retention]]`: a rule's limit replaces [record]'s for its app; a limit a rule leaves out is
[record]'s. Sizes are budgets shared by "pools": an app whose rule sets `max_total_gb` is a pool of its own,
every other app shares [record]'s budget. A pool over its budget loses its oldest recordings until it fits;
the rows still being written ("recording") or uploaded ("uploading") count in the pool's size but are never
deleted. A recording is too old once its end (or its start, while it has none) is older than the app's
`max_age_days`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..config import RecordConfig
from .catalog import Recording

GB = 1_000_000_000
KEPT = frozenset({"recording", "uploading"})
"""Statuses retention never deletes: the file is still being written or copied."""
SHARED = ""
"""The pool of every app without a size budget of its own."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_age: timedelta | None = None
    max_bytes: int | None = None

    @property
    def any(self) -> bool:
        return self.max_age is not None or self.max_bytes is not None


def _age(days: float) -> timedelta | None:
    return timedelta(days=days) if days > 0 else None


def _bytes(gb: float) -> int | None:
    return int(gb * GB) if gb > 0 else None


@dataclass(frozen=True, slots=True)
class Policy:
    default: Limits = Limits()
    apps: Mapping[str, Limits] = field(default_factory=dict)
    """Apps with a rule: their limits, [record]'s filled in where the rule left one out."""
    own_budget: frozenset[str] = frozenset()
    """Apps whose rule sets max_total_gb: a size pool of their own."""

    @classmethod
    def from_config(cls, cfg: RecordConfig) -> Policy:
        default = Limits(_age(cfg.max_age_days), _bytes(cfg.max_total_gb))
        apps: dict[str, Limits] = {}
        own: set[str] = set()
        for rule in cfg.retention:
            age = default.max_age if rule.max_age_days < 0 else _age(rule.max_age_days)
            size = default.max_bytes
            if rule.max_total_gb >= 0:
                size = _bytes(rule.max_total_gb)
                own.add(rule.app)
            apps[rule.app] = Limits(age, size)
        return cls(default, apps, frozenset(own))

    @property
    def enabled(self) -> bool:
        return self.default.any or any(limits.any for limits in self.apps.values())

    def limits(self, app: str) -> Limits:
        return self.apps.get(app, self.default)

    def pool(self, app: str) -> str:
        return app if app in self.own_budget else SHARED

    def budget(self, pool: str) -> int | None:
        return self.apps[pool].max_bytes if pool != SHARED else self.default.max_bytes


@dataclass(frozen=True, slots=True)
class Deletion:
    row: Recording
    reason: str
    """"age" or "size"."""


def ended(row: Recording) -> datetime:
    return row.ended_at or row.started_at


def plan(candidates: Iterable[Recording], used: Mapping[str, int], policy: Policy, now: datetime) -> list[Deletion]:
    """The rows to delete, oldest first. `candidates` are the rows retention may consider (any order; the ones
    in KEPT are skipped); `used` is the bytes of every row in scope by app, KEPT ones included (they take
    space). Rows missing from `candidates` (a batch cut short) are left for the next run."""
    rows = sorted((r for r in candidates if r.status not in KEPT), key=lambda r: (r.started_at, r.id))
    pool_bytes: Counter[str] = Counter()
    for app, size in used.items():
        pool_bytes[policy.pool(app)] += size
    out: list[Deletion] = []
    for row in rows:
        max_age = policy.limits(row.app).max_age
        if max_age is not None and now - ended(row) > max_age:
            out.append(Deletion(row, "age"))
            pool_bytes[policy.pool(row.app)] -= row.bytes
    gone = {d.row.id for d in out}
    for row in rows:
        if row.id in gone:
            continue
        pool = policy.pool(row.app)
        budget = policy.budget(pool)
        if budget is not None and pool_bytes[pool] > budget:
            out.append(Deletion(row, "size"))
            pool_bytes[pool] -= row.bytes
    out.sort(key=lambda d: (d.row.started_at, d.row.id))
    return out


def usage(rows: Iterable[Recording]) -> dict[str, int]:
    """Bytes by app of `rows` (what the catalog's usage query answers)."""
    used: Counter[str] = Counter()
    for row in rows:
        used[row.app] += row.bytes
    return dict(used)


def summary(deletions: Sequence[Deletion]) -> tuple[int, int]:
    """(count, bytes) of a run's deletions, for its one log line."""
    return len(deletions), sum(d.row.bytes for d in deletions)
