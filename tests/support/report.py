"""Figures that tests measure and the run prints at its end (e.g. the players' time to first frame).

Under pytest-xdist each worker hands its lines to the controller, which prints them all (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

_LINES: list[str] = []


def add_summary_lines(lines: Iterable[str]) -> None:
    _LINES.extend(lines)


def summary_line(config: pytest.Config, line: str) -> None:
    """Print `line` in the run's summary (from the test process, or from an xdist worker)."""
    _LINES.append(line)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its output reaches the controller when it finishes
        workeroutput["summary_lines"] = list(_LINES)


def summary_lines() -> list[str]:
    return list(_LINES)
