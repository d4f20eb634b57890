"""The ABR outputs of a live stream with the real transcoder: every rendition's segment N starts at the
same instant as the source's (MPEG-TS and CMAF), and a watermark that must mark the source replaces it in
the multivariant playlists with a re-encoded top rung whose pictures carry the mark."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import av
import m3u8
import numpy as np

from support.checks import wait_live

LADDER = ('[{label = "240p", height = 240, video_kbps = 400, preset = "ultrafast", threads = 1}, '
          '{label = "180p", height = 180, video_kbps = 250, preset = "ultrafast", threads = 1}]')


async def text(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        assert resp.status == 200, (url, resp.status, (await resp.text())[:300])
        return await resp.text()


async def data(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
        assert resp.status == 200, (url, resp.status)
        return await resp.read()


def first_video_pts_ms(segment: bytes, fmt: str) -> float:
    with av.open(io.BytesIO(segment), format=fmt) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None]
        return float(min(pts) * stream.time_base * 1000)


async def segments_by_number(http, url: str, want: int, timeout_s: float = 30) -> dict[int, str]:
    """{sequence: absolute segment URL} of a media playlist once it lists `want` complete segments."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        pl = m3u8.loads(await text(http, url), uri=url)
        done = [s for s in pl.segments if s.uri]
        if len(done) >= want:
            return {pl.media_sequence + i: urljoin(url, s.uri) for i, s in enumerate(done)}
        assert asyncio.get_running_loop().time() < deadline, f"{url} listed {len(done)} segments"
        await asyncio.sleep(0.5)


async def abr_stream(server_factory, publish, media, stream_name):
    """A server with the two-rung LADDER on demand, 1 s segments, and `stream_name` live: (server, base URL)."""
    server = server_factory(**{"abr.mode": "on_demand", "abr.ladder": LADDER, "abr.wait": "15",
                               "hls.segment_duration": "1"})
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    return server, f"{server.http_base}/live/{stream_name}/"


async def test_segment_n_starts_at_the_same_instant_in_every_rendition(server_factory, publish, media, stream_name):
    server, base = await abr_stream(server_factory, publish, media, stream_name)
    async with aiohttp.ClientSession() as http:
        master = m3u8.loads(await text(http, base + "master.m3u8"), uri=base + "master.m3u8")
        variants = [urljoin(base, p.uri) for p in master.playlists]
        assert len(variants) == 3, variants
        listings = [await segments_by_number(http, v, 4) for v in variants]
        common = sorted(set.intersection(*(set(x) for x in listings)))[-3:]
        assert len(common) >= 2, [sorted(x) for x in listings]
        starts = {n: [first_video_pts_ms(await data(http, x[n]), "mpegts") for x in listings] for n in common}
        for n, pts in starts.items():
            assert max(pts) - min(pts) < 1.0, f"TS segment {n} starts at {pts} ms in source, 240p, 180p"

        cmaf = m3u8.loads(await text(http, base + "cmaf.m3u8"), uri=base + "cmaf.m3u8")
        video = [urljoin(base, p.uri) for p in cmaf.playlists]
        assert len(video) == 3, video
        listings = [await segments_by_number(http, v, 3) for v in video]
        inits = [m3u8.loads(await text(http, v), uri=v).segment_map[-1].absolute_uri for v in video]
        n = sorted(set.intersection(*(set(x) for x in listings)))[-1]
        pts = [first_video_pts_ms(await data(http, init) + await data(http, x[n]), "mp4")
               for init, x in zip(inits, listings)]
        assert max(pts) - min(pts) < 1.0, f"CMAF segment {n} starts at {pts} ms in source, 240p, 180p"


def write_png(path: Path, rgba: tuple[int, int, int, int], size: tuple[int, int] = (64, 32)) -> None:
    picture = np.zeros((size[1], size[0], 4), np.uint8)
    picture[...] = rgba
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "rgba"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(picture, format="rgba")), *stream.encode(None)]:
            container.mux(packet)


def corner_rgb(flv: bytes) -> np.ndarray:
    """The mean colour of a decoded picture's top-right 24x12 pixels, 24 px in from the edges."""
    with av.open(io.BytesIO(flv), format="flv") as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            return rgb[24:36, -48:-24].reshape(-1, 3).mean(axis=0)
    raise AssertionError("no picture decoded")


async def test_a_watermark_on_the_source_replaces_it_with_a_marked_top_rung(server_factory, publish, media, stream_name,
                                                                           tmp_path):
    logo = tmp_path / "logo.png"
    write_png(logo, (255, 0, 0, 255))
    server = server_factory(**{
        "abr.mode": "on_demand", "abr.ladder": LADDER, "abr.wait": "15", "watermark.file": str(logo), "watermark.source": "true",
        "watermark.scale": "0.25", "watermark.margin": "16", "watermark.opacity": "1.0",
    })
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    base = f"{server.http_base}/live/{stream_name}/"
    async with aiohttp.ClientSession() as http:
        master = m3u8.loads(await text(http, base + "master.m3u8"))
        uris = [p.uri.split("?")[0] for p in master.playlists]
        assert uris == [f"../{stream_name}@source/index.m3u8", f"../{stream_name}@240p/index.m3u8",
                        f"../{stream_name}@180p/index.m3u8"], uris
        assert master.playlists[0].stream_info.resolution == (640, 360)
        mpd = await text(http, base + "manifest.mpd")
        assert 'id="video-source"' in mpd and '<Representation id="video" ' not in mpd, mpd
    async with server.flv_viewer(f"{stream_name}@source") as marked, server.flv_viewer(stream_name) as plain:
        assert await marked.wait_video_frames(5, 20) and await plain.wait_video_frames(5, 20)
        marked_rgb, plain_rgb = corner_rgb(marked.complete_flv()), corner_rgb(plain.complete_flv())
    assert marked_rgb[0] > 180 and marked_rgb[1] < 80 and marked_rgb[2] < 80, marked_rgb
    assert not (plain_rgb[0] > 180 and plain_rgb[1] < 80 and plain_rgb[2] < 80), plain_rgb


async def test_a_renditions_playlists_and_segments_are_answered_by_the_fast_lane_once_its_transcoder_runs(
        server_factory, publish, media, stream_name):
    """The first request of a rendition goes through the full stack (it may start the transcode); once the
    rendition is published here and packaged, its players are answered as the source's are: by the fast lane,
    without aiohttp (no Server header)."""
    server, base = await abr_stream(server_factory, publish, media, stream_name)
    async with aiohttp.ClientSession() as http:
        master = m3u8.loads(await text(http, base + "master.m3u8"), uri=base + "master.m3u8")
        rendition = next(urljoin(base, p.uri) for p in master.playlists if "@240p/" in p.uri)
        listed = await segments_by_number(http, rendition, 2)
        cmaf = m3u8.loads(await text(http, base + "cmaf.m3u8"), uri=base + "cmaf.m3u8")
        cmaf_rendition = next(urljoin(base, p.uri) for p in cmaf.playlists if "@240p/" in p.uri)
        await segments_by_number(http, cmaf_rendition, 2)
    async with aiohttp.ClientSession() as player:  # one kept-alive connection, as a player's
        answers = []
        for url in (rendition, listed[max(listed)], cmaf_rendition):
            async with player.get(url) as resp:
                assert resp.status == 200, (url, resp.status)
                answers.append((url, resp.headers.get("Server"), await resp.read()))
    assert [server_header for _, server_header, _ in answers] == [None, None, None], answers
    with av.open(io.BytesIO(answers[1][2]), format="mpegts") as container:
        heights = {frame.height for frame in container.decode(video=0)}
    assert heights == {240}, heights
    assert b"#EXT-X-MAP" in answers[2][2]
