"""Run `python -m mediaserver` as a subprocess on free loopback ports, as a user would.

The server's stderr (its log) goes to a file, never to a pipe that nobody drains, so a chatty server
cannot block on a full pipe; `log_text()` reads it for assertions and failure messages.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .flv_viewer import FlvViewer
from .hls import HlsPoller
from .publisher import Publisher

# Short timeouts so lifecycle tests take seconds, not the production defaults.
TEST_SETTINGS: dict[str, str] = {
    "hub.reconnect_grace": "2",
    "hub.stale_publisher_timeout": "3",
    "log.level": "info",
    # Tests of other features never start a transcode (the player page asks for the ladder when ABR is on):
    # the ABR tests set abr.mode = "on_demand", the default of a real server, themselves.
    "abr.mode": "off",
    # The recording tests' clips are short (seconds, GOPs of 1-2 s): fragments of 2 s (not 6) give them several.
    "record.fragment_duration": "2",
}

CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository these tests belong to: its mediaserver package is the one the server subprocesses run."""

# Loopback only: never route test requests through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _opener(scheme: str) -> urllib.request.OpenerDirector:
    if scheme == "http":
        return _NO_PROXY
    unverified = ssl.create_default_context()  # liveness only: the TLS tests check the certificate themselves
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One running server: its ports, URLs, process and log."""

    def __init__(self, workdir: Path, settings: dict[str, str], ready_timeout_s: float = 20.0,
                 ports: tuple[int, int] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        if ports is not None:  # (rtmp, http) of a server that stopped: the same server started again
            self.rtmp_port, self.http_port = ports
        else:
            self.rtmp_port = free_port()
            self.http_port = free_port()
            while self.http_port == self.rtmp_port:
                self.http_port = free_port()
        self.settings = {
            **TEST_SETTINGS,
            **settings,
            "rtmp.bind": "127.0.0.1",
            "rtmp.port": str(self.rtmp_port),
            "http.bind": "127.0.0.1",
            "http.port": str(self.http_port),
        }
        self.rtmps_port = 0
        if self.settings.get("rtmps.cert_file"):
            self.rtmps_port = int(settings.get("rtmps.port") or free_port())  # given: a restart on the same port
            self.settings["rtmps.port"] = str(self.rtmps_port)
        self.scheme = "https" if self.settings.get("http.cert_file") else "http"
        self.log_path = workdir / "server.log"
        self.args = [sys.executable, "-m", "mediaserver"]
        for key, value in self.settings.items():
            self.args += ["--set", f"{key}={value}"]
        self._log_file = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
        # The server runs in its workdir, where `-m mediaserver` would import whatever copy is installed (an
        # editable install may point at another checkout): the checkout under test comes first.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CHECKOUT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=env, cwd=workdir,
        )
        self.stopped = False
        self.publishers: list[Publisher] = []
        """Publishers aimed at this server, watched by check()."""
        self._wait_ready(ready_timeout_s)

    # -- addresses -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    def rtmp_url(self, name: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}/{app}/{name}"

    def flv_url(self, name: str, app: str = "live") -> str:
        return f"{self.http_base}/{app}/{name}.flv"

    def hls_url(self, name: str, app: str = "live") -> str:
        return f"{self.http_base}/{app}/{name}/index.m3u8"

    # -- state -----------------------------------------------------------------------------------------
    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_bytes().decode("utf-8", errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_text()
        return text if len(text) <= chars else "...\n" + text[-chars:]

    def rss_bytes(self) -> int:
        """Resident set size of the server process (VmRSS from /proc; Linux only)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with _opener(self.scheme).open(f"{self.http_base}/healthz", timeout=timeout_s) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def assert_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"the server exited with code {code}; its log:\n{self.log_tail()}")

    def check(self) -> None:
        """Fail at once if the server died or a publisher failed, rather than time out waiting for media."""
        if self.stopped:
            return  # the test stopped it: publishers losing their connection is expected
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"the server exited with code {code}; its log:\n{self.log_tail()}")
        for p in self.publishers:
            failure = p.unexpected_exit()
            if failure:
                raise AssertionError(failure)

    def flv_viewer(self, name: str, app: str = "live", **kwargs: Any) -> FlvViewer:
        """An HTTP-FLV viewer of this server's stream that fails fast when check() fails."""
        return FlvViewer(self.flv_url(name, app), watch=self.check, **kwargs)

    def hls_poller(self, name: str, http: aiohttp.ClientSession, app: str = "live") -> HlsPoller:
        """An HLS poller of this server's stream that fails fast when check() fails."""
        return HlsPoller(self.hls_url(name, app), http, watch=self.check)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self._log_file.close()
                raise ServerDied(code, self.args, self.log_tail())
            # Our own "ready" line first: with tests on several workers, another process may hold the port we
            # picked and answer /healthz for us, while ours fails to bind (then retried on fresh ports).
            if self._logged_ready() and self.healthy(timeout_s=1.0):
                return
            time.sleep(0.05)
        self.kill()
        raise ServerDied(None, self.args, self.log_tail(), f"/healthz did not answer 200 within {timeout_s} s")

    def _logged_ready(self) -> bool:
        if self.settings.get("log.level") in ("warning", "error"):
            return True  # the ready line is not logged at these levels
        text = self.log_text()
        return "event=ready" in text or '"event": "ready"' in text

    # -- stopping --------------------------------------------------------------------------------------
    def terminate(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then wait; returns the exit code, or None if it did not exit in time (then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        self.stopped = True
        self._log_file.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = True


class ServerDied(Exception):
    """The server exited or never became ready; carries its log."""

    def __init__(self, code: int | None, args: list[str], log: str, why: str | None = None) -> None:
        self.code = code
        self.log = log
        reason = why or f"exited with code {code} before /healthz answered 200"
        super().__init__(f"`{' '.join(args)}` {reason}; its log:\n{log}")

    @property
    def address_in_use(self) -> bool:
        return "address already in use" in self.log.lower() or "errno 98" in self.log.lower()


def start_server(workdir: Path, settings: dict[str, str] | None = None, ready_timeout_s: float = 20.0,
                 ports: tuple[int, int] | None = None) -> ServerProcess:
    """Start a server; retry with fresh ports if another process took one in the meantime (with `ports`,
    the same ports again)."""
    failure = None
    for attempt in range(3):
        try:
            return ServerProcess(workdir / f"try{attempt}", settings or {}, ready_timeout_s, ports)
        except ServerDied as died:
            failure = died
            if not died.address_in_use:
                break
    pytest.fail(str(failure), pytrace=False)
