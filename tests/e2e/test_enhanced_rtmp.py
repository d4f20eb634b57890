"""Enhanced RTMP ingest (FourCC signalling, as OBS 30 and ffmpeg 6.1+ send it): HEVC and AV1 video, Opus
audio, carried to HTTP-FLV (as enhanced FLV), to fMP4 (LL-HLS, DASH) and, for HEVC, to MPEG-TS. A format
that cannot carry a codec is refused with a 415 that names the codec; the other formats carry on."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import av
import m3u8
import pytest

from support.checks import wait_live
from support.decode import decode_media
from support.media import ffmpeg_exe

ENCODERS = {
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=25:min-keyint=25:scenecut=0"],
    "av1": ["-c:v", "libsvtav1", "-preset", "12", "-g", "25", "-svtav1-params", "lp=2"],
    "aac": ["-c:a", "aac", "-b:a", "96k"],
    "opus": ["-c:a", "libopus", "-b:a", "64k", "-ar", "48000"],
}


@pytest.fixture(scope="session")
def enhanced_clips(tmp_path_factory) -> dict[str, Path]:
    out: dict[str, Path] = {}
    folder = tmp_path_factory.mktemp("enhanced")
    for video, audio in (("hevc", "aac"), ("av1", "opus")):
        path = folder / f"{video}-{audio}.flv"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", "12", "-pix_fmt", "yuv420p", *ENCODERS[video], *ENCODERS[audio], "-f", "flv", str(path)],
            check=True, timeout=180,
        )
        out[f"{video}+{audio}"] = path
    return out


DECODER_CODEC = {"libdav1d": "av1", "libaom-av1": "av1"}


def codec_of(decoder: str | None) -> str | None:
    """The codec a PyAV decoder name stands for (AV1 decodes with libdav1d)."""
    return DECODER_CODEC.get(decoder, decoder)


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=15)) as resp:
        return resp.status, await resp.read()


async def fmp4_video_codec(http: aiohttp.ClientSession, root: str) -> tuple[str, int]:
    url = root + "cmaf-video.m3u8"
    for _ in range(40):
        status, body = await get(http, url)
        pl = m3u8.loads(body.decode(), uri=url) if status == 200 else None
        if pl is not None and len([s for s in pl.segments if s.uri]) >= 2:
            break
        await __import__("asyncio").sleep(0.5)
    assert pl is not None, (status, body[:300])
    data = bytearray((await get(http, urljoin(url, pl.segment_map[0].uri)))[1])
    for seg in [s for s in pl.segments if s.uri][:2]:
        data += (await get(http, urljoin(url, seg.uri)))[1]
    with av.open(io.BytesIO(bytes(data)), format="mp4") as c:
        frames = sum(1 for _ in c.decode(video=0))
        return c.streams.video[0].codec_context.name, frames


@pytest.mark.parametrize("pair", ["hevc+aac", "av1+opus"])
async def test_enhanced_rtmp_publish_reaches_flv_and_fmp4_viewers(server, publish, enhanced_clips, stream_name, pair):
    video, audio = pair.split("+")
    publish(server, stream_name, enhanced_clips[pair], loop=True,
            extra_args=["-rtmp_enhanced_codecs", "hvc1,av01,Opus,mp4a"])
    await wait_live(server, stream_name)
    async with server.flv_viewer(stream_name) as viewer:
        assert await viewer.wait_video_frames(50, timeout_s=20), viewer.describe_start()
    report = decode_media(viewer.complete_flv(), "flv")
    assert (codec_of(report.video_codec), report.audio_codec) == (video, audio), report.summary()
    assert report.errors == [] and report.first_video_frame_key, report.summary()

    root = server.hls_url(stream_name).rsplit("/", 1)[0] + "/"
    async with aiohttp.ClientSession() as http:
        codec, frames = await fmp4_video_codec(http, root)
        assert codec_of(codec) == video and frames >= 25, (codec, frames)
        status, body = await get(http, root + "index.m3u8")
        if video == "hevc":
            assert status == 200, body[:300]
        else:
            assert status == 415, (status, body[:300])
            assert b"av1" in body and b"cmaf.m3u8" in body, body


async def test_hevc_goes_into_mpegts_hls(server, publish, enhanced_clips, stream_name):
    publish(server, stream_name, enhanced_clips["hevc+aac"], loop=True, extra_args=["-rtmp_enhanced_codecs", "hvc1,mp4a"])
    await wait_live(server, stream_name)
    async with aiohttp.ClientSession() as http:
        poller = server.hls_poller(stream_name, http)
        pl = await poller.poll_until(lambda p: len(p.segments) >= 2, timeout_s=25)
        seg = poller.segments[pl.segments[-1].sequence]
    report = decode_media(seg.data, "mpegts")
    assert (report.video_codec, report.audio_codec) == ("hevc", "aac"), report.summary()
    assert report.first_video_frame_key and report.errors == [], report.summary()
