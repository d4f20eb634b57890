"""glibc malloc settings for a process that allocates and frees media-sized buffers all day.

Frames (a few KiB to a few hundred KiB), FLV tags and segments are bytes objects larger than pymalloc's
512-byte limit, so they come from glibc's malloc. By default glibc raises its mmap threshold each time a
large mmapped block is freed, after which blocks of that size come from the heap instead; long-lived small
objects allocated between them then pin the heap's pages, and RSS creeps up although nothing leaks. A soak
(bench/soak.py, 4 publishers coming and going, viewers of every format) grew 0.75 MiB a minute that way and
stayed flat with a fixed threshold. A fixed threshold (which also turns the dynamic one off) keeps blocks of
16 KiB and more in their own mappings, returned to the kernel on free, and a lower trim threshold gives back
the heap's free top sooner. The cost is one mmap/munmap pair per such block: a few µs per video frame.

An operator's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ environment variables win over these.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 16 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024


def tune_allocator(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Apply the thresholds on Linux with glibc; returns what was set ({} elsewhere, or when the
    environment already chose)."""
    environ = dict(os.environ) if environ is None else environ
    if not sys.platform.startswith("linux"):
        return {}
    name = ctypes.util.find_library("c")
    if name is None:
        return {}
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied: dict[str, int] = {}
    if "MALLOC_MMAP_THRESHOLD_" not in environ and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1:
        applied["mmap_threshold"] = MMAP_THRESHOLD_BYTES
    if "MALLOC_TRIM_THRESHOLD_" not in environ and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1:
        applied["trim_threshold"] = TRIM_THRESHOLD_BYTES
    return applied
