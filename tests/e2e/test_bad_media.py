"""Bad media from a publisher, seen from outside (issue 9, defects 1 and 2).

The publisher here is the project's RTMP client session driven over a socket: it plays the tags of an
ffmpeg-encoded FLV clip in real time, as an encoder would, and slips crafted tags in between: a frame
whose first NAL unit length prefix claims 0xFFFFFF00 bytes, an AVC sequence header whose SPS claims 0
bytes, malformed HEVC, AV1, AAC and Opus sequence headers, and onMetaData mid-stream.

What must hold: the HLS playlist and the CMAF (LL-HLS, DASH) manifests keep growing after the bad tags,
their segments decode with PyAV, a packager started after them answers 200 (never 500), and metadata
sent mid-stream never makes a healthy FLV viewer a slow consumer.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
import m3u8

from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import FlvReader, FlvTag
from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.events import StatusReceived
from support.checks import wait_live
from support.decode import decode_media

# A non-key and a key H.264 frame whose first NAL unit length prefix is far larger than the frame.
CORRUPT_FRAME = bytes((0x27, 1, 0, 0, 0)) + (0xFFFFFF00).to_bytes(4, "big") + b"\x41\x9a" * 60
CORRUPT_KEYFRAME = bytes((0x17, 1, 0, 0, 0)) + (0xFFFFFF00).to_bytes(4, "big") + b"\x65\x88" * 60
# An AVCDecoderConfigurationRecord whose one SPS claims 0 bytes (then one 1-byte PPS).
BAD_AVC_CONFIG = bytes((0x17, 0, 0, 0, 0, 1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x00, 0x01, 0x00, 0x01, 0x68))
# (tag type, body): every bad tag the publisher slips in, video and audio, frames and sequence headers.
BAD_TAGS = [
    (FrameKind.VIDEO, CORRUPT_FRAME),
    (FrameKind.VIDEO, BAD_AVC_CONFIG),
    (FrameKind.VIDEO, CORRUPT_KEYFRAME),
    (FrameKind.VIDEO, bytes((0x1C, 0, 0, 0, 0)) + b"\x01\x01"),  # HEVC (legacy id 12): truncated hvcC
    (FrameKind.VIDEO, bytes((0x90,)) + b"av01" + b"\x00\x00\x00\x00"),  # AV1 sequence start: bad av1C marker
    (FrameKind.AUDIO, bytes((0xAF, 0, 0x00, 0x00))),  # AAC: audio object type 0
    (FrameKind.AUDIO, bytes((0x90,)) + b"Opus" + b"NotAnOpusHeadAtAll!"),  # Opus sequence start: no OpusHead
    (FrameKind.VIDEO, CORRUPT_FRAME),
]


class TagPublisher:
    """Publishes an FLV file's tags over RTMP in real time (looping, timestamps running on) and sends
    crafted tags on request, with the timestamps of the tags around them."""

    def __init__(self, port: int, name: str, clip: Path, start_ms: int = 0) -> None:
        self.port = port
        self.name = name
        self.tags = _read_tags(clip.read_bytes())
        self.start_ms = start_ms
        """Added to the clip's timestamps (as an encoder's clock that kept running)."""
        self._sending = asyncio.Lock()
        self.client = ClientSession()
        self.statuses: list[StatusReceived] = []
        self.sent_ms = {FrameKind.VIDEO: 0, FrameKind.AUDIO: 0}
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = asyncio.Event()

    async def __aenter__(self) -> TagPublisher:
        reader, self._writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
        self.client.connect("live", f"rtmp://127.0.0.1:{self.port}/live")
        self.client.publish(self.name)
        self._flush()
        self._tasks.append(asyncio.create_task(self._read(reader)))
        await asyncio.wait_for(self._started.wait(), 10)
        self._tasks.append(asyncio.create_task(self._play()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()

    def _flush(self) -> None:
        out = self.client.data_to_send()
        if out and self._writer is not None:
            self._writer.write(out)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            self.client.receive_data(data)
            for e in self.client.events():
                if isinstance(e, StatusReceived):
                    self.statuses.append(e)
                    if e.code == "NetStream.Publish.Start":
                        self._started.set()
            self._flush()
        raise ConnectionError(f"the server closed the publisher's connection; statuses {self.statuses}")

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        span = max(t.timestamp_ms for t in self.tags) + 40
        for lap in range(100):
            for tag in self.tags:
                if lap and (tag.kind == FrameKind.DATA or tag.is_sequence_header):
                    continue  # an encoder sends its metadata and configs once
                ts = tag.timestamp_ms + lap * span
                delay = start + ts / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with self._sending:
                    self._send(tag.kind, self.start_ms + ts, tag.body)

    def _send(self, kind: int, ts: int, body: bytes) -> None:
        if kind == FrameKind.VIDEO:
            self.client.send_video(ts, body)
        elif kind == FrameKind.AUDIO:
            self.client.send_audio(ts, body)
        else:
            self.client.send_data(ts, body)
        if kind in self.sent_ms:
            self.sent_ms[kind] = ts
        self._flush()

    def send_bad_tags(self) -> None:
        """Every crafted tag of BAD_TAGS, now, each with the time of the last tag of its track."""
        for kind, body in BAD_TAGS:
            self._send(kind, self.sent_ms[kind], body)

    async def send_metadata_alone(self, values: dict, quiet_s: float = 0.25) -> None:
        """onMetaData with quiet before and after it (the media held meanwhile, then sent at once), so
        the server reads it on its own and a viewer in sync has it as the first frame it has not read:
        what a reconnecting encoder's first message is."""
        async with self._sending:
            await asyncio.sleep(quiet_s)
            self.client.send_metadata(values, self.sent_ms[FrameKind.VIDEO])
            self._flush()
            await asyncio.sleep(quiet_s)


def _read_tags(data: bytes) -> list[FlvTag]:
    reader = FlvReader()
    tags = reader.feed(data)
    reader.feed_eof()
    return tags


def root_url(server, name: str) -> str:
    return server.hls_url(name).rsplit("/", 1)[0] + "/"


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
        return resp.status, await resp.read()


async def cmaf_playlist(http: aiohttp.ClientSession, url: str, min_last: int, timeout_s: float) -> m3u8.M3U8:
    """The LL-HLS media playlist once its newest complete segment is numbered `min_last` or more."""
    deadline = time.monotonic() + timeout_s
    while True:
        status, body = await fetch(http, url)
        assert status == 200, f"GET {url} answered {status}: {body[:300]!r}"
        pl = m3u8.loads(body.decode(), uri=url)
        done = [s for s in pl.segments if s.uri]
        assert "#EXT-X-ENDLIST" not in body.decode(), f"{url} ended:\n{body.decode()}"
        if done and pl.media_sequence + len(done) - 1 >= min_last:
            return pl
        assert time.monotonic() < deadline, f"{url} stopped at {pl.media_sequence + len(done) - 1}:\n{body.decode()}"
        await asyncio.sleep(0.5)


def last_number(pl: m3u8.M3U8) -> int:
    return pl.media_sequence + len([s for s in pl.segments if s.uri]) - 1


async def decode_cmaf_tail(http: aiohttp.ClientSession, url: str, pl: m3u8.M3U8, count: int):
    """Decode the init segment and the playlist's last `count` complete segments with PyAV."""
    status, data = await fetch(http, urljoin(url, pl.segment_map[-1].uri))
    assert status == 200
    data = bytearray(data)
    for seg in [s for s in pl.segments if s.uri][-count:]:
        status, body = await fetch(http, urljoin(url, seg.uri))
        assert status == 200, seg.uri
        data += body
    return decode_media(data, "mp4")


def assert_clean_log(server) -> None:
    text = server.log_text()
    assert "packager_frame_skipped" in text, "the skipped frames were not logged"
    assert "sink failed" not in text and "Traceback" not in text, server.log_tail()


async def test_hls_and_cmaf_outputs_keep_growing_after_corrupt_frames_and_configs(server_factory, media, stream_name):
    server = server_factory(**{"hls.segment_duration": "1"})
    root = root_url(server, stream_name)
    async with TagPublisher(server.rtmp_port, stream_name, media.av.path) as publisher, aiohttp.ClientSession() as http:
        hls = server.hls_poller(stream_name, http)
        before = await hls.poll_until(lambda pl: len(pl.segments) >= 2, timeout_s=15, fetch_segments=False)
        video_url = root + "cmaf-video.m3u8"
        cmaf_before = last_number(await cmaf_playlist(http, video_url, 1, timeout_s=15))
        assert (await fetch(http, root + "manifest.mpd"))[0] == 200

        publisher.send_bad_tags()

        last = before.last_sequence
        after = await hls.poll_until(lambda pl: pl.last_sequence >= last + 4, timeout_s=20)
        assert not after.ended, "the playlist ended after a bad frame"
        for sequence in range(last + 2, after.last_sequence + 1):
            report = decode_media(hls.segments[sequence].data, "mpegts")
            assert report.video_frames > 0 and report.audio_frames > 0 and not report.errors, report.summary()
        cmaf_after = await cmaf_playlist(http, video_url, cmaf_before + 4, timeout_s=20)
        report = await decode_cmaf_tail(http, video_url, cmaf_after, 3)
        assert report.video_codec == "h264" and report.video_frames >= 50 and not report.errors, report.summary()
        status, mpd = await fetch(http, root + "manifest.mpd")
        assert status == 200 and b'type="dynamic"' in mpd, mpd[:300]
        status, metrics = await fetch(http, f"{server.http_base}/metrics")
        counted = {(s.name, s.labels.get("format")): s.value
                   for f in text_string_to_metric_families(metrics.decode()) for s in f.samples}
        assert counted[("mediaserver_frames_skipped_total", "hls")] >= 1, "skipped frames are not in /metrics"
        assert counted[("mediaserver_frames_skipped_total", "cmaf")] >= 1, "skipped frames are not in /metrics"
        assert counted[("mediaserver_bad_sequence_headers_total", None)] >= 1
    assert_clean_log(server)


async def test_outputs_started_after_bad_frames_and_configs_answer_200_not_500(server_factory, media, stream_name):
    server = server_factory(**{"hls.segment_duration": "1"})
    root = root_url(server, stream_name)
    async with TagPublisher(server.rtmp_port, stream_name, media.av.path) as publisher, aiohttp.ClientSession() as http:
        await wait_live(server, stream_name)
        while publisher.sent_ms[FrameKind.VIDEO] < 2500:  # a few GOPs kept for a packager to replay
            await asyncio.sleep(0.1)
        publisher.send_bad_tags()
        await asyncio.sleep(0.3)  # the bad tags are in the history the packagers start from

        statuses = {}
        for name in ("index.m3u8", "cmaf.m3u8", "manifest.mpd", "cmaf-video.m3u8", "cmaf-audio.m3u8"):
            statuses[name], body = await fetch(http, root + name)
        assert statuses == dict.fromkeys(statuses, 200), statuses

        hls = server.hls_poller(stream_name, http)
        first = await hls.poll_until(lambda pl: len(pl.segments) >= 1, timeout_s=10)
        after = await hls.poll_until(lambda pl: pl.last_sequence >= first.last_sequence + 3, timeout_s=20)
        for sequence in range(first.last_sequence + 1, after.last_sequence + 1):
            report = decode_media(hls.segments[sequence].data, "mpegts")
            assert report.video_frames > 0 and not report.errors, report.summary()
        video_url = root + "cmaf-video.m3u8"
        pl = await cmaf_playlist(http, video_url, 3, timeout_s=20)
        report = await decode_cmaf_tail(http, video_url, pl, 3)
        assert report.video_frames >= 50 and not report.errors, report.summary()
    assert_clean_log(server)


async def test_metadata_sent_mid_stream_three_times_does_not_disconnect_a_healthy_flv_viewer(server, media, stream_name):
    async with TagPublisher(server.rtmp_port, stream_name, media.av.path) as publisher:
        async with server.flv_viewer(stream_name) as viewer:
            # Past the viewer queue's 3 s of media, so metadata stamped 0 would look 3 s behind.
            assert await viewer.wait_video_frames(110, timeout_s=15)
            for n in range(3):  # what three publisher reconnects within a minute send
                await publisher.send_metadata_alone({"width": 640.0, "height": 360.0, "reconnect": float(n)})
                await asyncio.sleep(0.5)
            before = viewer.video_frame_count
            assert await viewer.wait_video_frames(before + 40, timeout_s=5), "the viewer stopped receiving"
            assert not viewer.done, f"the viewer was disconnected: {viewer.error!r}"
            metadata = [t for t in viewer.tags if t.kind == FrameKind.DATA]
            assert len(metadata) == 4, "the viewer got the first metadata and the three sent mid-stream"
        report = decode_media(viewer.complete_flv(), "flv")
        assert not report.errors and report.non_monotonic() == [], report.summary()
    text = server.log_text()
    assert "slow_consumer" not in text and "slow_viewers_dropped" not in text, server.log_tail()


async def test_three_publisher_reconnects_within_the_grace_do_not_disconnect_a_healthy_flv_viewer(
    server, media, stream_name
):
    viewer = server.flv_viewer(stream_name)
    try:
        start_ms = 0
        for session in range(4):  # the encoder drops its connection and comes back within the grace
            async with TagPublisher(server.rtmp_port, stream_name, media.av.path, start_ms=start_ms) as publisher:
                # Metadata first, then the configs and media, its clock running on. The first session
                # runs past the viewer queue's 3 s, so metadata stamped 0 would look 3 s behind.
                if session == 0:
                    await viewer.start()
                more = 110 if session == 0 else 30
                assert await viewer.wait_video_frames(viewer.video_frame_count + more, timeout_s=15)
                start_ms = publisher.sent_ms[FrameKind.VIDEO] + 300
            await asyncio.sleep(0.3)
        assert not viewer.done, f"the viewer was disconnected: {viewer.error!r}"
        assert len([t for t in viewer.tags if t.kind == FrameKind.DATA]) == 4
    finally:
        await viewer.close()
    report = decode_media(viewer.complete_flv(), "flv")
    assert not report.errors, report.summary()
    text = server.log_text()
    assert "slow_consumer" not in text and "slow_viewers_dropped" not in text, server.log_tail()
