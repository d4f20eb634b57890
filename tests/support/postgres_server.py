"""A real PostgreSQL server on a free loopback port in a temporary directory, for the catalog tests.

The binaries (initdb, postgres, pg_isready, createdb) come from $PG_BIN, else PATH, else the newest
/usr/lib/postgresql/*/bin (Debian's `postgresql` package). PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` user (or `nobody`) through runuser, in a directory that user owns.
Durability is off (fsync, synchronous_commit): the data lives only as long as the test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .server import free_port

HOW_TO_GET = ("no PostgreSQL server binaries (initdb, postgres) for the catalog tests: install them with "
              "`apt-get install postgresql`, or set $PG_BIN to the directory that holds them")


def postgres_bin_dir() -> Path | None:
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.parent.name.split(".") if x.isdigit())
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if all((d / tool).is_file() for tool in ("initdb", "postgres", "pg_isready", "createdb")):
            return d
    return None


def _run_as() -> str | None:
    """The user to run the server as when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a `postgres` nor a `nobody` user to run PostgreSQL as")


class PostgresServer:
    """initdb + postgres on 127.0.0.1:port with trust auth for the `postgres` superuser."""

    def __init__(self, bin_dir: Path, timeout_s: float = 30.0) -> None:
        self.bin_dir = bin_dir
        self.user = _run_as()
        # Not under pytest's tmp_path: that is private to root, and the server's user must reach its directory.
        self.workdir = Path(tempfile.mkdtemp(prefix="mediaserver-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._databases = 0
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
        try:
            self._initdb()
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _initdb(self) -> None:
        out = subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                       "-E", "UTF8", "--no-sync", "--no-instructions"),
                             capture_output=True, timeout=120, cwd=self.workdir)
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed ({out.returncode}): {(out.stdout + out.stderr).decode()[-2000:]}")

    def _start(self, timeout_s: float) -> None:
        log = open(self.workdir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            self._cmd("postgres", "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                      "-k", str(self.workdir), "-c", "fsync=off", "-c", "synchronous_commit=off",
                      "-c", "full_page_writes=off", "-c", "max_connections=50"),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'postgres.log').read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                                    str(self.port), "-U", "postgres"], timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout_s} s")

    def create_database(self) -> str:
        """A new empty database; its asyncpg URL (with a password, which trust auth ignores)."""
        self._databases += 1
        name = f"catalog_{self._databases}"
        out = subprocess.run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                              "-U", "postgres", name], capture_output=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {(out.stdout + out.stderr).decode()[-1000:]}")
        return f"postgresql+asyncpg://postgres:secret@127.0.0.1:{self.port}/{name}"

    def restart(self, timeout_s: float = 30.0) -> None:
        """Start again on the same port and data after `stop(keep_data=True)` (a database coming back)."""
        self._start(timeout_s)

    def stop(self, keep_data: bool = False) -> None:
        """Fast shutdown; the data is removed unless `keep_data` (then `restart` brings it back)."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT to the postmaster itself (not runuser): fast shutdown, clients disconnected.
            try:
                os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
            except (OSError, ValueError, IndexError):
                self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        if not keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A started server for a fixture, or the test fails (under CI=true) or skips saying what is missing."""
    import importlib.util

    import pytest

    bin_dir = postgres_bin_dir()
    problem = HOW_TO_GET if bin_dir is None else None
    if importlib.util.find_spec("asyncpg") is None:
        problem = "no asyncpg for the PostgreSQL catalog: pip install 'mediaserver[postgres]'"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return PostgresServer(bin_dir)
