"""Process plumbing shared by the benchmark's worker processes and its orchestrator."""

from __future__ import annotations

import asyncio
import os
import resource
import sys


def install_fast_loop() -> str:
    """Use uvloop when it is installed; returns the loop's name for the report."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return f"uvloop {uvloop.__version__}"
    except ImportError:
        return "asyncio"


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one (each viewer is a socket); returns the new limit.

    Children started afterwards (the server, the workers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def watch_stdin_for_stop(stop: asyncio.Event) -> None:
    """Set `stop` when a line with "stop" arrives on stdin, or stdin closes (the orchestrator died)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data or b"stop" in data:
            loop.remove_reader(fd)
            stop.set()

    loop.add_reader(fd, on_readable)
