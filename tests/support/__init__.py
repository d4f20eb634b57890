"""Test support: ffmpeg and generated media, a server subprocess, publishers, FLV/HLS clients, PyAV checks.

The fixtures that wire these together live in tests/conftest.py.
"""

from .decode import DecodeReport, decode_media
from .flv_viewer import FlvViewer, describe_tag
from .hls import (
    HlsPoller,
    MediaPlaylist,
    check_playlist_rules,
    check_sliding_window,
    parse_media_playlist,
)
from .media import Clip, MediaLibrary, ffmpeg_exe, generate_clip
from .publisher import Publisher, publish_args
from .server import ServerProcess, start_server

__all__ = [
    "Clip", "DecodeReport", "FlvViewer", "HlsPoller", "MediaLibrary", "MediaPlaylist", "Publisher",
    "ServerProcess", "check_playlist_rules", "check_sliding_window", "decode_media", "describe_tag",
    "ffmpeg_exe", "generate_clip", "parse_media_playlist", "publish_args", "start_server",
]
