"""Thumbnails from real keyframes: ffmpeg-made H.264 and HEVC clips published into a hub, served by the
edge's route, and the JPEG decoded back with PyAV. Decodes are counted to hold the cache promises."""

from __future__ import annotations

import asyncio
import io
import subprocess
from collections.abc import AsyncIterator

import av
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mediaserver.config import Config, ThumbnailConfig
from mediaserver.edge.app import make_app
from mediaserver.edge.keys import THUMBNAILS
from mediaserver.edge.packagers import PackagerPool
from mediaserver.edge.thumbnails import parse_width
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.media.frames import Frame, FrameKind
from mediaserver.transcode.thumbnail import (
    Keyframe, UndecodableKeyframe, UnsupportedCodec, decode_keyframe, even_size, qscale_for, render_thumbnail,
)
from support.codec_clips import codec_clip, config_frame, media_frames, read_flv_frames
from support.media import ffmpeg_exe


class FakePublisher:
    peer = "127.0.0.1:5000"

    def close(self, reason: str) -> None:
        pass


def jpeg_size(data: bytes) -> tuple[int, int]:
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    with av.open(io.BytesIO(data), format="mjpeg") as container:
        picture = next(container.decode(video=0))
        return picture.width, picture.height


def newest_keyframe(frames: list[Frame]) -> Keyframe:
    key = [f for f in media_frames(frames, FrameKind.VIDEO) if f.keyframe][-1]
    return Keyframe.of(key, config_frame(frames, FrameKind.VIDEO))


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
def test_a_keyframe_decodes_into_a_jpeg_of_the_asked_width_with_the_aspect_kept(codec):
    frames = codec_clip(codec, None, width=640, height=360, seconds=2, gop_frames=25)
    picture = decode_keyframe(newest_keyframe(frames))
    assert (picture.width, picture.height) == (640, 360)
    for asked, expected in ((320, (320, 180)), (200, (200, 112)), (None, (640, 360)), (1000, (640, 360))):
        thumb = render_thumbnail(picture, asked, 1920, 80)
        assert (thumb.width, thumb.height) == expected
        assert jpeg_size(thumb.jpeg) == expected
    capped = render_thumbnail(picture, None, 256, 80)
    assert jpeg_size(capped.jpeg) == (256, 144)


def test_a_vp9_keyframe_decodes_too(tmp_path):
    path = tmp_path / "vp9.flv"  # ffmpeg writes VP9 as Enhanced FLV (vpcC sequence start)
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                    "-cpu-used", "8", "-g", "25", "-f", "flv", str(path)], check=True, timeout=60, capture_output=True)
    frames = read_flv_frames(path.read_bytes())
    keyframe = newest_keyframe(frames)
    assert keyframe.codec == "vp9"
    assert jpeg_size(render_thumbnail(decode_keyframe(keyframe), 160, 1920, 80).jpeg) == (160, 90)


def test_sizes_are_even_and_quality_maps_onto_qscale():
    assert even_size(640, 360, 201) == (200, 112)
    assert even_size(1920, 1080, 2) == (2, 2)
    assert qscale_for(100) == 2 and qscale_for(1) == 31 and qscale_for(80) < qscale_for(50)


def test_lower_quality_makes_smaller_jpegs():
    picture = decode_keyframe(newest_keyframe(codec_clip("h264", None, width=640, height=360, seconds=2)))
    assert len(render_thumbnail(picture, None, 1920, 30).jpeg) < len(render_thumbnail(picture, None, 1920, 95).jpeg)


def test_a_codec_without_a_decoder_and_a_damaged_keyframe_are_told_apart():
    with pytest.raises(UnsupportedCodec) as err:
        decode_keyframe(Keyframe("mpeg2", None, b"\x00\x00\x01\xb3", 0))
    assert err.value.status == 415 and "h264" in err.value.hint
    good = newest_keyframe(codec_clip("h264", None, width=320, height=240, seconds=2))
    with pytest.raises(UndecodableKeyframe) as err:
        decode_keyframe(Keyframe("h264", good.config, b"\x00\x00\x00\x05\x65garbage" * 3, 0))
    assert err.value.status == 422


def test_a_picture_larger_than_any_codec_level_is_refused_not_kept(tmp_path):
    # 8208x4352: 35.7 million pixels, a little over H.264 and HEVC level 6.2's largest picture.
    path = tmp_path / "huge.flv"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=8208x4352:rate=30",
                    "-t", "0.04", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "flv",
                    str(path)], check=True, timeout=60)
    huge = newest_keyframe(read_flv_frames(path.read_bytes()))
    with pytest.raises(UndecodableKeyframe) as err:
        decode_keyframe(huge)
    assert err.value.status == 422 and "8208x4352" in str(err.value) and "8K" in err.value.hint
    # Its SPS says so before any decoding: with a payload no decoder could read, the answer is the same.
    with pytest.raises(UndecodableKeyframe, match="8208x4352, larger than any codec level"):
        decode_keyframe(Keyframe("h264", huge.config, b"\x00\x00\x00\x05\x65garbage", huge.dts_ms))


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "15", "1e3", "99999999999", "", "１２８", "12 "])
def test_bad_widths_are_refused_with_what_is_accepted(raw):
    with pytest.raises(ValueError, match="whole number of pixels from 16"):
        parse_width(raw, 1920)


def test_good_widths_pass_and_wide_ones_are_left_to_the_cap():
    assert parse_width(None, 1920) is None
    assert parse_width("320", 1920) == 320
    assert parse_width("5000", 1920) == 5000  # served at most max_width wide


# ----- the route, on a hub fed with real frames -------------------------------------------------------


class Node:
    def __init__(self, thumbnails: ThumbnailConfig | None = None) -> None:
        self.config = Config(thumbnails=thumbnails or ThumbnailConfig())
        self.registry = StreamRegistry(call_later=lambda delay, fn: None)
        self.app = make_app(self.config, self.registry, PackagerPool(self.registry, self.config.hls))

    def publish(self, name: str = "cam") -> Stream:
        return self.registry.claim_publisher(StreamKey("live", name), FakePublisher())

    @property
    def service(self):
        return self.app[THUMBNAILS]


def feed(stream: Stream, frames: list[Frame], until_ms: int | None = None, start: int = 0) -> int:
    """Publish frames[start:] up to decode time `until_ms` (included); returns the index reached."""
    i = start
    while i < len(frames) and (until_ms is None or frames[i].dts_ms <= until_ms):
        f = frames[i]
        if f.kind == FrameKind.VIDEO:
            stream.publish_video(f.dts_ms, bytes(f.body), 0.0)
        elif f.kind == FrameKind.AUDIO:
            stream.publish_audio(f.dts_ms, bytes(f.body), 0.0)
        i += 1
    return i


@pytest.fixture
async def node() -> AsyncIterator[tuple[Node, TestClient]]:
    n = Node()
    async with TestClient(TestServer(n.app)) as client:
        yield n, client


async def test_the_route_serves_the_newest_keyframe_and_a_cache_hit_does_not_decode(node):
    n, client = node
    frames = codec_clip("h264", "aac", width=640, height=360, seconds=3, gop_frames=25)
    stream = n.publish()
    reached = feed(stream, frames, until_ms=1100)  # keyframes at 0 and 1000 ms
    resp = await client.get("/live/cam/thumbnail.jpg?width=320")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert jpeg_size(await resp.read()) == (320, 180)
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"] == "max-age=1"
    assert n.service.decodes == 1
    again = await client.get("/live/cam/thumbnail.jpg?width=320")
    assert again.headers["ETag"] == etag and n.service.decodes == 1 and n.service.renders == 1
    other = await client.get("/live/cam/thumbnail.jpg?width=160")
    assert jpeg_size(await other.read()) == (160, 90)
    assert n.service.decodes == 1 and n.service.renders == 2  # another size: scaled again, not decoded again
    unchanged = await client.get("/live/cam/thumbnail.jpg?width=320", headers={"If-None-Match": etag})
    assert unchanged.status == 304
    full = await client.get("/live/cam/thumbnail.jpg")
    assert jpeg_size(await full.read()) == (640, 360)

    feed(stream, frames, until_ms=2100, start=reached)  # the stream moves on one GOP
    newer = await client.get("/live/cam/thumbnail.jpg?width=320")
    assert newer.status == 200 and newer.headers["ETag"] != etag
    assert n.service.decodes == 2


async def test_concurrent_requests_share_one_decode(node):
    n, client = node
    frames = codec_clip("hevc", None, width=640, height=360, seconds=2, gop_frames=25)
    feed(n.publish(), frames)
    answers = await asyncio.gather(*(client.get("/live/cam/thumbnail.jpg?width=256") for _ in range(8)))
    assert {r.status for r in answers} == {200}
    assert len({r.headers["ETag"] for r in answers}) == 1
    assert n.service.decodes == 1 and n.service.renders == 1


async def test_keyframes_closer_than_a_second_reuse_the_decoded_picture(node):
    n, client = node
    frames = codec_clip("h264", None, width=320, height=240, seconds=3, gop_frames=5)  # a keyframe every 200 ms
    stream = n.publish()
    reached = feed(stream, frames, until_ms=400)
    first = await client.get("/live/cam/thumbnail.jpg")
    reached = feed(stream, frames, until_ms=1000, start=reached)  # three keyframes later, 600 ms newer
    second = await client.get("/live/cam/thumbnail.jpg")
    assert second.headers["ETag"] == first.headers["ETag"] and n.service.decodes == 1
    feed(stream, frames, until_ms=1600, start=reached)
    third = await client.get("/live/cam/thumbnail.jpg")
    assert third.headers["ETag"] != first.headers["ETag"] and n.service.decodes == 2


@pytest.mark.parametrize("query", ["width=0", "width=-1", "width=abc", "width=99999999999"])
async def test_a_bad_width_is_a_400_that_says_what_is_accepted(node, query):
    n, client = node
    feed(n.publish(), codec_clip("h264", None, width=320, height=240, seconds=2))
    resp = await client.get(f"/live/cam/thumbnail.jpg?{query}")
    assert resp.status == 400
    assert "whole number" in (await resp.json())["hint"]
    assert n.service.decodes == 0


async def test_a_huge_width_is_served_at_the_source_width_at_most(node):
    n, client = node
    feed(n.publish(), codec_clip("h264", None, width=320, height=240, seconds=2))
    resp = await client.get("/live/cam/thumbnail.jpg?width=5000")
    assert resp.status == 200 and jpeg_size(await resp.read()) == (320, 240)


async def test_widths_beyond_the_source_share_one_jpeg_not_one_encode_each(node):
    n, client = node
    feed(n.publish(), codec_clip("h264", None, width=320, height=240, seconds=2))
    queries = ["", "?width=320", *(f"?width={w}" for w in range(321, 521))]
    answers = [await client.get(f"/live/cam/thumbnail.jpg{q}") for q in queries]
    assert {r.status for r in answers} == {200} and len({r.headers["ETag"] for r in answers}) == 1
    assert n.service.decodes == 1 and n.service.renders == 1


async def test_no_stream_no_keyframe_and_audio_only_are_404s_with_a_hint(node):
    n, client = node
    missing = await client.get("/live/nobody/thumbnail.jpg")
    assert missing.status == 404 and (await missing.json())["hint"]
    n.publish("early")
    early = await client.get("/live/early/thumbnail.jpg")
    assert early.status == 404 and "keyframe" in (await early.json())["error"]
    feed(n.publish("radio"), codec_clip(None, "aac", seconds=2))
    radio = await client.get("/live/radio/thumbnail.jpg")
    body = await radio.json()
    assert radio.status == 404 and "no picture" in body["error"] and "audio only" in body["hint"]


async def test_disabled_thumbnails_answer_404_with_the_setting():
    n = Node(ThumbnailConfig(enabled=False))
    feed(n.publish(), codec_clip("h264", None, width=320, height=240, seconds=2))
    async with TestClient(TestServer(n.app)) as client:
        resp = await client.get("/live/cam/thumbnail.jpg")
        assert resp.status == 404 and "thumbnails.enabled" in (await resp.json())["hint"]


async def test_the_cache_of_a_stream_is_dropped_when_it_ends(node):
    n, client = node
    feed(n.publish(), codec_clip("h264", None, width=320, height=240, seconds=2))
    assert (await client.get("/live/cam/thumbnail.jpg")).status == 200
    assert len(n.service._streams) == 1
    n.registry.kick(StreamKey("live", "cam"))
    assert len(n.service._streams) == 0


async def test_a_damaged_keyframe_is_a_422_and_is_not_decoded_again_for_each_request(node):
    n, client = node
    frames = codec_clip("h264", None, width=320, height=240, seconds=3)
    stream = n.publish()
    config = config_frame(frames, FrameKind.VIDEO)
    stream.publish_video(0, bytes(config.body), 0.0)
    garbage = b"\x00\x00\x00\x09\x65\xff\x00\xff\x00\x13\x37\x00\x01"  # one IDR NAL unit of noise
    stream.publish_video(40, b"\x17\x01\x00\x00\x00" + garbage, 0.0)  # AVC keyframe, NALU, cts 0
    for _ in range(3):
        resp = await client.get("/live/cam/thumbnail.jpg")
        body = await resp.json()
        assert resp.status == 422 and "next keyframe" in body["hint"], body
    assert n.service.decodes == 1
    reached = feed(stream, frames[1:], until_ms=1100)  # good keyframes, the first less than a second later:
    assert (await client.get("/live/cam/thumbnail.jpg")).status == 422  # within the interval, no new decode
    feed(stream, frames[1:], until_ms=2100, start=reached)  # then one more than a second later
    resp = await client.get("/live/cam/thumbnail.jpg")
    assert resp.status == 200 and n.service.decodes == 2
