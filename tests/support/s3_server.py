"""An S3 API server for the object-storage tests: moto in server mode (`python -m moto.server`), a process
of its own on a free 127.0.0.1 port, stopped and started again on the same port to play a bucket that goes
away (moto keeps its buckets in memory: a restart starts empty, so the test creates the bucket again).

Multipart parts may be as small as MIN_PART (S3 wants 5 MiB), so a test sends a few-hundred-kB clip in
several parts. Credentials are fake; `env()` gives what botocore reads from the environment.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from .server import free_port

MIN_PART = 16 * 1024
HOW_TO_GET = "no moto for the object-storage tests: pip install 'mediaserver[test]' (moto[server])"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def moto_available() -> bool:
    return importlib.util.find_spec("moto") is not None and importlib.util.find_spec("flask") is not None


def env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}


class S3Server:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> S3Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **env(), "S3_UPLOAD_PART_MIN_SIZE": str(MIN_PART)},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                _NO_PROXY.open(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto did not answer within {timeout_s} s: {self.log_path.read_text()[-2000:]}")

    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.endpoint}{path}", method=method)
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def create_bucket(self, name: str) -> None:
        status, body = self._request("PUT", f"/{name}")
        assert status == 200, (status, body[:300])

    def keys(self, bucket: str) -> list[str]:
        """The keys in a bucket (ListObjectsV2, first 1000)."""
        import xml.etree.ElementTree as ET

        status, body = self._request("GET", f"/{bucket}?list-type=2")
        assert status == 200, (status, body[:300])
        ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        return sorted(k.text or "" for k in ET.fromstring(body).findall("s3:Contents/s3:Key", ns))

    def get(self, bucket: str, key: str) -> bytes:
        status, body = self._request("GET", f"/{bucket}/{key}")
        assert status == 200, (status, body[:300])
        return body

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
