"""A real nginx-rtmp (Debian's `nginx` + `libnginx-mod-rtmp`) started by a test on a free 127.0.0.1 port,
with its own configuration in a temporary directory: a target for our pushes.

Missing nginx or its RTMP module fails the test on CI (CI=true; scripts/test installs both as root) and
skips it elsewhere, saying how to install them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .server import free_port

MODULE_PATHS = ("/usr/lib/nginx/modules/ngx_rtmp_module.so", "/usr/lib64/nginx/modules/ngx_rtmp_module.so")
INSTALL_HINT = "install them with: sudo apt-get install nginx libnginx-mod-rtmp (or set NGINX=/path/to/nginx)"


def nginx_rtmp_paths() -> tuple[str, str]:
    """(the nginx binary, the RTMP module); fails on CI, skips elsewhere, when either is missing."""
    exe = os.environ.get("NGINX") or shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    module = next((p for p in MODULE_PATHS if os.path.exists(p)), None)
    if exe and module:
        return exe, module
    message = f"no nginx with the RTMP module (nginx: {exe or 'missing'}, module: {module or 'missing'}); {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class NginxRtmp:
    """nginx in the foreground, serving `application live { live on; }` on `port`."""

    def __init__(self, workdir: Path) -> None:
        exe, module = nginx_rtmp_paths()
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "error.log"
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
load_module {module};
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {self.log_path} info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application live {{ live on; }}
    }}
}}
""")
        self.proc = subprocess.Popen([exe, "-p", str(workdir), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(workdir / "stderr.log", "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}: {self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nginx did not listen on {self.port} within 10 s: {self.log_text()}")

    def url(self, name: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{name}"

    def log_text(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
