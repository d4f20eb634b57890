"""ffmpeg as a player: reads a live URL for a few seconds and keeps what it got in a file."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .media import ffmpeg_exe


async def ffmpeg_play(url: str, out: Path, *, seconds: float = 2, fmt: str = "flv", before_input: Sequence[str] = (),
                      timeout_s: float = 30) -> Path:
    """`seconds` of `url` copied into `out` (`fmt`: flv, mpegts); fails the test with ffmpeg's own words when it
    cannot play."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *before_input, "-i", url, "-t", f"{seconds:g}",
        "-c", "copy", "-f", fmt, str(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 0, err.decode(errors="replace")
    return out
