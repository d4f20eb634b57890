"""The free-space guard of record.path: "low" under `record.min_free_gb`, "ok" again only above it plus a
margin (HYSTERESIS of the limit), so a disk hovering at the limit does not stop and start recordings at every
check. Pure: the RecordingManager feeds it what `free_bytes` (os.statvfs, run in a thread) measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

HYSTERESIS = 0.10
LOW = "low"
OK = "ok"


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on `path`'s file system (blocking: run it in a thread)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True, slots=True)
class DiskChange:
    state: str
    """LOW or OK."""
    free_bytes: int
    min_free_bytes: int


class DiskGuard:
    def __init__(self, min_free_bytes: int, hysteresis: float = HYSTERESIS) -> None:
        self.min_free_bytes = min_free_bytes
        self.resume_bytes = int(min_free_bytes * (1 + hysteresis))
        self.low = False
        self.free_bytes: int | None = None
        """The last measure (None before the first)."""

    @property
    def enabled(self) -> bool:
        return self.min_free_bytes > 0

    def observe(self, free: int) -> DiskChange | None:
        """A new measure; the change of state it makes, if any."""
        self.free_bytes = free
        if not self.enabled:
            return None
        if not self.low and free < self.min_free_bytes:
            self.low = True
            return DiskChange(LOW, free, self.min_free_bytes)
        if self.low and free >= self.resume_bytes:
            self.low = False
            return DiskChange(OK, free, self.min_free_bytes)
        return None
