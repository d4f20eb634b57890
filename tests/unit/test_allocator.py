"""The allocator thresholds are applied on glibc, and an operator's environment setting wins."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mediaserver.allocator import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES, tune_allocator


def _glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's")
def test_thresholds_are_set_on_glibc() -> None:
    # In a child, so the test process keeps its own allocator settings.
    code = "from mediaserver.allocator import tune_allocator; print(sorted(tune_allocator({}).items()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted({"mmap_threshold": MMAP_THRESHOLD_BYTES,
                                      "trim_threshold": TRIM_THRESHOLD_BYTES}.items()))


def test_an_operators_environment_wins() -> None:
    assert tune_allocator({"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}) == {}
