"""An encoder's own ladder (Enhanced RTMP v2 multitrack, as OBS's multitrack video output sends): its extra
video tracks are served as renditions STREAM@LABEL, at no transcoding cost, and alignment is checked.

ffmpeg does not publish multitrack, so the publisher here is the project's RTMP client: it encodes the same
picture at two sizes with ffmpeg (the same frames and keyframes), and sends each instant's two pictures in
one ManyTracks message, with the first size's audio, in real time.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import m3u8

from mediaserver.media import multitrack
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import FlvReader, FlvTag
from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.events import StatusReceived
from support.decode import decode_media
from support.media import ffmpeg_exe


def _encode(path: Path, size: str, gop: int, seconds: float = 4.0) -> list[FlvTag]:
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size=640x360:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
            "-map", "0:v", "-map", "1:a", "-vf", f"scale={size}", "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
            "-c:a", "aac", "-b:a", "64k", "-f", "flv", str(path)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    reader = FlvReader()
    tags = reader.feed(path.read_bytes())
    reader.feed_eof()
    return tags


def _enhanced_data(tag: FlvTag) -> tuple[int, int, bytes]:
    """A legacy AVC tag as (frame type, Enhanced packet type, the data that follows the FourCC)."""
    body = tag.body
    frame_type = body[0] >> 4
    if body[1] == 0:
        return frame_type, 0, bytes(body[5:])  # SequenceStart: the avcC record
    return frame_type, 1, bytes(body[2:5]) + bytes(body[5:])  # CodedFrames: composition time, then NAL units


def multitrack_messages(main: list[FlvTag], extra: list[FlvTag], one_track: bool = False) -> list[tuple[int, int, bytes]]:
    """(kind, timestamp, body): each video instant's two pictures in one ManyTracks message (or, with
    `one_track`, in one OneTrack message each, as OBS sends them), and the main audio."""
    main_video = [t for t in main if t.kind == FrameKind.VIDEO]
    extra_video = [t for t in extra if t.kind == FrameKind.VIDEO]
    assert [t.timestamp_ms for t in main_video] == [t.timestamp_ms for t in extra_video]
    out: list[tuple[int, int, bytes]] = []
    for a, b in zip(main_video, extra_video):
        frame_type, packet_type, data_a = _enhanced_data(a)
        _, _, data_b = _enhanced_data(b)
        if one_track:
            out.append((FrameKind.VIDEO, a.timestamp_ms, multitrack.one_track_video(frame_type, packet_type, b"avc1", 0, data_a)))
            out.append((FrameKind.VIDEO, a.timestamp_ms,
                        multitrack.one_track_video(b.body[0] >> 4, packet_type, b"avc1", 1, data_b)))
            continue
        # One frame type for the message: the tracks' keyframes fall on the same instants.
        out.append((FrameKind.VIDEO, a.timestamp_ms,
                    multitrack.join_video(frame_type, packet_type, b"avc1", [(0, data_a), (1, data_b)])))
    out += [(FrameKind.AUDIO, t.timestamp_ms, bytes(t.body)) for t in main if t.kind == FrameKind.AUDIO]
    out.sort(key=lambda m: (m[1], m[0] != FrameKind.VIDEO))  # at one instant, the pictures first
    return out


async def publish_messages(port: int, name: str, messages: list[tuple[int, int, bytes]]) -> list[StatusReceived]:
    client = ClientSession()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    statuses: list[StatusReceived] = []
    started = asyncio.Event()

    async def read() -> None:
        while data := await reader.read(65536):
            client.receive_data(data)
            for e in client.events():
                if isinstance(e, StatusReceived):
                    statuses.append(e)
                    if e.code == "NetStream.Publish.Start":
                        started.set()
            writer.write(client.data_to_send())

    task = asyncio.create_task(read())
    try:
        client.connect("live", f"rtmp://127.0.0.1:{port}/live")
        client.publish(name)
        writer.write(client.data_to_send())
        await asyncio.wait_for(started.wait(), 10)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for kind, ts, body in messages:
            delay = start + ts / 1000 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            (client.send_video if kind == FrameKind.VIDEO else client.send_audio)(ts, body)
            writer.write(client.data_to_send())
        await asyncio.sleep(0.3)
    finally:
        task.cancel()
        writer.close()
    return statuses


async def test_multitrack_publisher_gives_renditions_by_name(server_factory, stream_name, tmp_path):
    server = server_factory()
    main = _encode(tmp_path / "main.flv", "640x360", 25)
    small = _encode(tmp_path / "small.flv", "320x180", 25)
    messages = multitrack_messages(main, small)
    publishing = asyncio.create_task(publish_messages(server.rtmp_port, stream_name, messages))
    try:
        await asyncio.sleep(1.2)
        async with server.flv_viewer(f"{stream_name}@180p") as rendition, server.flv_viewer(stream_name) as source:
            assert await rendition.wait_video_frames(30, 10), rendition.describe_start()
            assert await source.wait_video_frames(30, 10), source.describe_start()
            small_report = decode_media(rendition.complete_flv(), "flv")
            main_report = decode_media(source.complete_flv(), "flv")
        assert (small_report.width, small_report.height) == (320, 180), small_report.summary()
        assert (main_report.width, main_report.height) == (640, 360), main_report.summary()
        assert small_report.audio_codec == "aac" and small_report.audio_frames > 10, small_report.summary()
        assert not small_report.errors and not main_report.errors
        async with aiohttp.ClientSession() as http:  # listed as the stream's ladder, with nothing transcoded
            async with http.get(f"{server.http_base}/live/{stream_name}/master.m3u8") as resp:
                master = m3u8.loads(await resp.text())
        uris = [p.uri.split("?")[0] for p in master.playlists]
        assert uris == ["index.m3u8", f"../{stream_name}@180p/index.m3u8"], uris
        assert master.playlists[1].stream_info.resolution == (320, 180)
    finally:
        await publishing
    text = server.log_text()
    assert "multitrack_rendition" in text and "multitrack_misaligned" not in text, server.log_tail()
    assert "transcode_started" not in text, server.log_tail()


async def test_misaligned_tracks_are_logged(server_factory, stream_name, tmp_path):
    server = server_factory()
    main = _encode(tmp_path / "main.flv", "640x360", 25, seconds=3)
    odd = _encode(tmp_path / "odd.flv", "320x180", 20, seconds=3)  # keyframes every 0.8 s, not 1 s
    await publish_messages(server.rtmp_port, stream_name, multitrack_messages(main, odd, one_track=True))
    assert "multitrack_misaligned" in server.log_text(), server.log_tail()
