"""WebSocket-FLV (as mpegts.js reads it) and RTMP play (as ffplay or another server reads it) carry the same
stream as HTTP-FLV, from the GOP cache."""

from __future__ import annotations

import asyncio
import re
import subprocess

import aiohttp

from mediaserver.remux.flv import FlvReader
from support.checks import wait_live
from support.decode import decode_media
from support.player import ffmpeg_play


async def test_websocket_flv_viewer_gets_a_decodable_stream_starting_at_a_keyframe(server, publish, media, stream_name):
    publish(server, stream_name, media.av)
    await wait_live(server, stream_name)
    ws_url = server.flv_url(stream_name).replace("http://", "ws://")
    data = bytearray()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
            async with asyncio.timeout(20):
                while len(data) < 150_000:  # about 4 s of the clip
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    data += msg.data
    tags = FlvReader().feed(bytes(data))
    assert data[:3] == b"FLV" and tags[1].is_sequence_header and tags[2].is_sequence_header
    assert next(t for t in tags if t.kind == 9 and not t.is_sequence_header).is_video_keyframe
    report = decode_media(bytes(data), "flv")
    assert report.errors == [] and (report.video_codec, report.audio_codec) == ("h264", "aac"), report.summary()
    assert report.first_video_frame_key and report.video_frames > 25, report.summary()


async def test_rtmp_player_receives_the_stream(server, publish, media, stream_name, ffmpeg, tmp_path):
    publish(server, stream_name, media.av)
    await wait_live(server, stream_name)
    out = tmp_path / "played.flv"
    await ffmpeg_play(server.rtmp_url(stream_name), out, seconds=3)
    report = decode_media(out.read_bytes(), "flv")
    assert report.errors == [] and (report.video_codec, report.audio_codec) == ("h264", "aac"), report.summary()
    assert report.first_video_frame_key and report.video_frames >= 50, report.summary()
    for _ in range(50):  # the viewer's leave line, with what it was sent, follows its disconnect
        leave = re.search(r"event=viewer_leave .*format=rtmp .*bytes=(\d+)", server.log_text())
        if leave:
            break
        await asyncio.sleep(0.1)
    assert leave and int(leave.group(1)) >= out.stat().st_size // 2, server.log_tail()


async def test_rtmp_play_of_unknown_stream_is_refused(server, ffmpeg):
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-i", server.rtmp_url("nothing-here"), "-t", "1", "-f", "null", "-",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode != 0
