"""A file's pages out of the page cache, as a recording written with O_DIRECT (or read long ago) is left; and
which thread a function ran on."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any


def evict(path: Path, offset: int = 0, length: int = 0) -> None:
    """Bytes [offset, offset+length) of `path` (length 0: to the end) written back and dropped from the page
    cache, so the next read of them waits on the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def calls_off_the_loop(monkeypatch, module: Any, name: str) -> list[bool]:
    """`module.name` wrapped: each call appends whether it ran off the main thread (the event loop's), e.g.
    that a read from the disk went to a thread."""
    real = getattr(module, name)
    seen: list[bool] = []

    def spy(*args, **kwargs):
        seen.append(threading.current_thread() is not threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen
