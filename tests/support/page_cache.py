"""A file's pages out of the page cache, as a recording written with O_DIRECT (or read long ago) is left."""

from __future__ import annotations

import os
from pathlib import Path


def evict(path: Path, offset: int = 0, length: int = 0) -> None:
    """Bytes [offset, offset+length) of `path` (length 0: to the end) written back and dropped from the page
    cache, so the next read of them waits on the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are not dropped
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
