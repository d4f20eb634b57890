"""The supervisor: what `python -m mediaserver` runs when [server] workers is over 1.

It checks that the public ports are free (one clear error line otherwise), runs the stream book on a Unix
socket in a private runtime directory, and starts the workers: `sys.executable -m mediaserver` with the
same arguments, spawned before any event loop of theirs exists, each named in its environment. It waits
until every worker listens; a worker that exits before that stops the start (exit 2). Afterwards a
worker that exits is started again after a capped backoff; one that stops answering the book for
LIVENESS_TIMEOUT_S (hung), or a restarted one not listening within START_TIMEOUT_S, is killed first (the
book counts the restarts for the node's /metrics); SIGTERM/SIGINT stop all workers gracefully
(SIGKILL after STOP_TIMEOUT_S), SIGHUP is passed on (certificate reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time

from ..config import Config
from ..log import event
from . import SECRET_ENV, WORKER_ENV
from .service import BookService

log = logging.getLogger("mediaserver.workers")

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STEADY_S = 30.0
"""A worker that ran this long before it exited restarts after the shortest backoff again."""
LIVENESS_TIMEOUT_S = 10.0
"""A listening worker records itself in the book every second; one silent this long is hung (its event
loop blocked, or the process stopped) while the kernel still gives it connections: it is killed."""
LIVENESS_EVERY_S = 1.0


def hung(heard: dict[int, float], listening: set[int], now: float, timeout_s: float = LIVENESS_TIMEOUT_S
         ) -> dict[int, float]:
    """The listening workers not heard from for over `timeout_s`, with how long they have been silent.
    A worker that is starting (not yet listening) is left to START_TIMEOUT_S and its own errors."""
    silent = {i: now - heard.get(i, -float("inf")) for i in sorted(listening)}
    return {i: s for i, s in silent.items() if s > timeout_s}


async def kill_unless_ready(proc: asyncio.subprocess.Process, ready: asyncio.Event, timeout_s: float) -> bool:
    """SIGKILL `proc` unless `ready` is set within `timeout_s` (or it exits first); True when killed. A
    restarted worker hung before it listens is not in the liveness check (it never reported ready)."""
    waits = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(proc.wait())]
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if done or proc.returncode is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return True


def busy_port(config: Config) -> str | None:
    """The first public port another process listens on, as an error for the user; None when all are free.
    Bound without SO_REUSEPORT, so another server's reuse-port group is found too."""
    ports = [("rtmp", config.rtmp.bind, config.rtmp.port), ("http", config.http.bind, config.http.port)]
    if config.rtmps.enabled:
        ports.append(("rtmps", config.rtmp.bind, config.rtmps.port))
    for name, host, port in ports:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                return (f"cannot listen on {name} port {host}:{port}: {err.strerror or err}; is another server "
                        f"there? Choose another with --set {name}.port=N")
    return None


class Supervisor:
    def __init__(self, config: Config, argv: list[str], workers: int) -> None:
        self.config = config
        self.argv = argv
        self.count = workers
        self.secret = secrets.token_urlsafe(24)
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self.start_timeout_s = START_TIMEOUT_S
        self._deadlines: dict[int, asyncio.Task[None]] = {}
        """Worker index -> the start deadline of its restart (kill_unless_ready)."""
        self._start_failed: set[int] = set()
        self._ready: dict[int, asyncio.Event] = {i: asyncio.Event() for i in range(workers)}
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        problem = busy_port(self.config)
        if problem is not None:
            print(f"mediaserver: {problem}", file=sys.stderr)
            return 2
        runtime = tempfile.mkdtemp(prefix="mediaserver-")  # 0700: only this user reaches the book
        self.socket_path = os.path.join(runtime, "book.sock")
        book = BookService(self.socket_path, on_ready=lambda i: self._ready[i].set() if i in self._ready else None)
        book.book.restarts = {i: 0 for i in range(self.count)}
        self.book = book
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        if self.config.rtmps.enabled or self.config.http.cert_file:  # workers reload their certificates
            loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        else:  # nothing to reload: a stray HUP must not end the workers (it is not theirs to handle)
            loop.add_signal_handler(signal.SIGHUP, lambda: event(log, "sighup_ignored", hint="no TLS certificates"))
        try:
            await book.start()
            # The first worker alone, so that what it prepares once (the recordings catalog's migrations) is
            # done before the others open it; then the rest at once.
            for batch in ([0], list(range(1, self.count))):
                for index in batch:
                    await self._spawn(index)
                code = await self._started(batch)
                if code or self._stopping.is_set():
                    return code
            event(log, "workers_ready", workers=self.count, pids=",".join(str(p.pid) for p in self.procs.values()))
            watchers = [loop.create_task(self._watch(i)) for i in range(self.count)]
            watchers.append(loop.create_task(self._check_liveness()))
            await self._stopping.wait()
            for task in [*watchers, *self._deadlines.values()]:
                task.cancel()
            return 0
        finally:
            await self._stop_all()
            await book.close()
            shutil.rmtree(runtime, ignore_errors=True)
            event(log, "workers_stopped", restarts=self.restarts)

    async def _spawn(self, index: int) -> None:
        env = {**os.environ, WORKER_ENV: f"{index}:{self.socket_path}", SECRET_ENV: self.secret}
        self.procs[index] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mediaserver", *self.argv, env=env, stdin=asyncio.subprocess.DEVNULL)

    async def _started(self, batch: list[int]) -> int:
        """0 once the workers of `batch` listen; 2 when one exited first (its own error line is above) or
        took too long."""
        waits = {asyncio.ensure_future(self._ready[i].wait()): i for i in batch}
        exits = {asyncio.ensure_future(p.wait()): i for i, p in self.procs.items()}
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while waits:
                done, _ = await asyncio.wait([*waits, *exits, stop], timeout=max(0.0, deadline - time.monotonic()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    print(f"mediaserver: workers {sorted(waits.values())} were not listening after "
                          f"{START_TIMEOUT_S:g} s; stopping", file=sys.stderr)
                    return 2
                if stop in done:
                    return 0
                for task in done:
                    if task in exits:
                        print(f"mediaserver: worker {exits[task]} exited with code {task.result()} before it was "
                              "listening; stopping", file=sys.stderr)
                        return 2
                    waits.pop(task, None)
            return 0
        finally:
            for task in [*waits, *exits, stop]:
                task.cancel()

    async def _watch(self, index: int) -> None:
        attempt = 0
        while not self._stopping.is_set():
            proc = self.procs[index]
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            steady = ran >= STEADY_S and index not in self._start_failed  # a start that timed out is no run
            self._start_failed.discard(index)
            attempt = 0 if steady else attempt
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            event(log, "worker_exited", logging.ERROR, worker=index, pid=proc.pid, code=code, ran_s=round(ran, 1),
                  restart_in_s=delay)
            attempt += 1
            await asyncio.sleep(delay)
            if self._stopping.is_set():
                return
            self._ready[index] = asyncio.Event()
            await self._spawn(index)
            self.restarts += 1
            self.book.book.restarts[index] = self.book.book.restarts.get(index, 0) + 1
            event(log, "worker_restarted", worker=index, pid=self.procs[index].pid)
            self._deadlines[index] = asyncio.get_running_loop().create_task(self._start_deadline(index))

    async def _start_deadline(self, index: int) -> None:
        """A restarted worker not listening within start_timeout_s is killed: _watch starts it again."""
        proc, ready = self.procs[index], self._ready[index]
        if await kill_unless_ready(proc, ready, self.start_timeout_s):
            self._start_failed.add(index)
            event(log, "worker_start_timeout", logging.ERROR, worker=index, pid=proc.pid,
                  timeout_s=self.start_timeout_s, hint="killed (SIGKILL) and started again")

    async def _check_liveness(self) -> None:
        """Kill (SIGKILL) a listening worker the book has not heard from within LIVENESS_TIMEOUT_S: alive
        but hung, it would hold its share of the public ports' connections for ever. _watch restarts it."""
        while not self._stopping.is_set():
            await asyncio.sleep(LIVENESS_EVERY_S)
            listening = {i for i, proc in self.procs.items() if proc.returncode is None and self._ready[i].is_set()}
            for index, silent_s in hung(self.book.heard, listening, self.book.clock()).items():
                proc = self.procs[index]
                event(log, "worker_hung", logging.ERROR, worker=index, pid=proc.pid, silent_s=round(silent_s, 1),
                      hint="killed (SIGKILL) and started again")
                self._ready[index].clear()  # not checked again until its successor listens
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _forward(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def _stop_all(self) -> None:
        self._forward(signal.SIGTERM)
        for index, proc in self.procs.items():
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                event(log, "worker_stop_timeout", logging.WARNING, worker=index, pid=proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def supervise(config: Config, argv: list[str], workers: int) -> int:
    """Run the supervisor until SIGTERM/SIGINT; its exit code."""
    return asyncio.run(Supervisor(config, argv, workers).run())
