"""Process plumbing shared by the benchmark's worker processes and its orchestrator."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time


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


class ViewerEnd:
    """How a viewer connection ends, shared by the raw-socket viewers: the first error wins, and the
    owner hears of the close through `on_close`. Subclasses set transport, error, closed_at, on_close."""

    def fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed_at = time.monotonic()
        if exc is not None and self.error is None:
            self.error = f"{type(exc).__name__}: {exc}"
        if self.on_close is not None:
            self.on_close(self)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` (> 0) or until `stop` is set; True when it was set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False


def report_to_orchestrator(result) -> int:
    """A worker's last act: its result as one JSON line on stdout; 1 when nobody is there to read it."""
    try:
        # The loop may have left stdout non-blocking: a report over a pipe's 64 KiB would then be cut short.
        os.set_blocking(sys.stdout.fileno(), True)
        sys.stdout.write(json.dumps(result, separators=(",", ":")))
        sys.stdout.flush()
    except BrokenPipeError:  # the orchestrator is gone: nobody to report to
        return 1
    return 0
