"""Publish a clip over RTMP with ffmpeg (`-re -i FILE -c copy -f flv rtmp://...`), as OBS would.

A Publisher is a handle on the ffmpeg process: wait for it, stop it gracefully (SIGTERM: ffmpeg
unpublishes and closes), or kill it (SIGKILL: the TCP connection just drops). Its stderr goes to a file.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .media import Clip, ffmpeg_exe


class Publisher:
    def __init__(self, args: list[str], log_path: Path, expect_failure: bool = False) -> None:
        self.args = args
        self.log_path = log_path
        self.expect_exit = expect_failure
        """Set when the test stops it or expects it to fail; otherwise a non-zero exit is a test failure."""
        self._log = open(log_path, "wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", errors="replace")

    def unexpected_exit(self) -> str | None:
        """A description of the failure if ffmpeg exited non-zero without the test asking for it."""
        code = self.proc.poll()
        if code is None or code == 0 or self.expect_exit:
            return None
        return f"the publisher `{' '.join(self.args[-3:])}` exited with code {code}:\n{self.log_text()[-2000:]}"

    def wait(self, timeout_s: float) -> int | None:
        """Block until ffmpeg exits; its exit code, or None if it is still running after timeout_s."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    async def wait_async(self, timeout_s: float) -> int | None:
        """wait() that lets the event loop run meanwhile (viewers keep reading)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        return self.proc.poll()

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM: ffmpeg finishes the stream (FCUnpublish, deleteStream) and exits."""
        self.expect_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout_s)
        if code is None:
            self.kill()
        return code

    def kill(self) -> None:
        """SIGKILL: the publisher vanishes without a goodbye, like a crashed encoder or a cut cable."""
        self.expect_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait(5.0)

    def close(self) -> None:
        self.kill()
        self._log.close()


def publish_args(url: str, clip: Clip | Path, *, realtime: bool = True, loop: bool = False,
                 extra_args: Sequence[str] = ()) -> list[str]:
    path = clip.path if isinstance(clip, Clip) else clip
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "warning"]
    if realtime:
        args.append("-re")
    if loop:
        args += ["-stream_loop", "-1"]
    args += ["-i", str(path), "-c", "copy", *extra_args, "-f", "flv", url]
    return args


def lavfi_publish_args(url: str, video: str, audio: str, *, size: str = "640x360", rate: int = 24,
                       keyframe_every: int = 12) -> list[str]:
    """ffmpeg encoding generated sources in real time (lavfi `video`, e.g. "testsrc", "color=c=black",
    "smptebars"; `audio`, e.g. "anullsrc=r=48000:cl=stereo") to H.264 + AAC and publishing them to `url`."""
    sized = f"{video}{':' if '=' in video else '='}size={size}:rate={rate}"
    return [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "warning", "-re",
        "-f", "lavfi", "-i", sized, "-f", "lavfi", "-i", audio,
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
        "-g", str(keyframe_every), "-c:a", "aac", "-b:a", "64k", "-ar", "48000", "-ac", "2", "-f", "flv", url,
    ]
