"""The ABR outputs at the edge, in-process: a source and a rendition published into the registry (the same
test pattern at two sizes, keyframes and timestamps shared, as the transcoder makes them), a test AbrService
over them, and the HTTP routes: master.m3u8, segment N of both index.m3u8 and cmaf-video.m3u8 decoded
with PyAV (same first PTS, same duration, same date), manifest.mpd with a Representation per rendition
opened by ffmpeg's DASH demuxer, and the source-only answers when ABR is off or refused."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator

import av
import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer
from mpegdash.parser import MPEGDASHParser
from support.abr import LadderPublisher, LadderService, Rung, encode_ladder
from support.media import ffmpeg_exe

from mediaserver.auth.admission import Admission
from mediaserver.auth.policy import AccessPolicy
from mediaserver.auth.tokens import Action, mint
from mediaserver.config import load_config
from mediaserver.edge.app import make_app
from mediaserver.edge.keys import ABR
from mediaserver.edge.packagers import PackagerPool
from mediaserver.gate import Gate
from mediaserver.hub.registry import StreamRegistry
from mediaserver.transcode.service import AbrRefusal

SECRET = b"abr-outputs-token-secret-0123456789"
SOURCE = Rung("source", 320, 240, 600)
RUNG = Rung("120p", 160, 120, 150)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory):
    return encode_ladder(tmp_path_factory.mktemp("ladder"), SOURCE, [RUNG], seconds=6.0)


class Edge:
    def __init__(self, ladder, *, abr: bool = True) -> None:
        self.config = load_config(None, ["hls.segment_duration=1", "hls.playlist_length=10"])
        self.registry = StreamRegistry(call_later=lambda delay, fn: None)
        self.pool = PackagerPool(self.registry, self.config.hls)
        self.app = make_app(self.config, self.registry, self.pool)
        self.publisher = LadderPublisher(self.registry, ladder)
        self.service = LadderService(self.publisher)
        if abr:
            self.app[ABR] = self.service


@pytest.fixture
async def edge(ladder) -> AsyncIterator[tuple[Edge, TestClient]]:
    e = Edge(ladder)
    async with TestClient(TestServer(e.app)) as client:
        yield e, client


def publish(e: Edge) -> None:
    """Publish the whole clip, the packagers of both streams running from the start (the hub keeps only
    the last GOPs, so packagers started afterwards would see little), the rendition's asked for first."""
    e.publisher.start()
    for label in ("120p", None):
        e.pool.hls(e.publisher.key(label))
        e.pool.cmaf(e.publisher.key(label))
    e.publisher.publish_all()


async def text(client: TestClient, path: str, status: int = 200) -> str:
    resp = await client.get(path)
    body = await resp.text()
    assert resp.status == status, f"{path}: {resp.status} {body[:300]}"
    return body


def first_pts_s(data: bytes, fmt: str) -> float:
    """The first video presentation time (seconds) PyAV decodes from a segment (with its init for mp4)."""
    with av.open(io.BytesIO(data), format=fmt) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            for picture in packet.decode():
                return float(picture.pts * stream.time_base)
    raise AssertionError("no picture decoded")


# -- master.m3u8 -----------------------------------------------------------------------------------


async def test_master_lists_the_source_then_the_rendition(edge) -> None:
    e, client = edge
    publish(e)
    playlist = m3u8.loads(await text(client, "/live/demo/master.m3u8"))
    assert [p.uri for p in playlist.playlists] == ["index.m3u8", "../demo@120p/index.m3u8"]
    source, rendition = (p.stream_info for p in playlist.playlists)
    assert source.resolution == (320, 240) and rendition.resolution == (160, 120)
    assert source.codecs.startswith("avc1.") and source.codecs.endswith(",mp4a.40.2")
    assert rendition.codecs.startswith("avc1.") and rendition.codecs.endswith(",mp4a.40.2")
    assert rendition.bandwidth >= (150 + 64) * 1000 and source.bandwidth > rendition.bandwidth
    assert round(source.frame_rate) == 25 and round(rendition.frame_rate) == 25
    assert e.service.calls == [(e.publisher.key(), True)]


async def test_segment_n_of_every_rendition_starts_at_the_same_instant(edge) -> None:
    e, client = edge
    publish(e)
    # The rendition asked for first: its source's packager starts with it and leads.
    small = m3u8.loads(await text(client, "/live/demo@120p/index.m3u8"))
    big = m3u8.loads(await text(client, "/live/demo/index.m3u8"))
    assert len(big.segments) >= 4
    assert small.media_sequence == big.media_sequence
    pairs = list(zip(big.segments, small.segments))
    assert len(pairs) >= len(big.segments) - 1  # the rendition lags: its last segment may not be closed yet
    for n, (a, b) in enumerate(pairs):
        assert (a.duration, a.program_date_time) == (b.duration, b.program_date_time), f"segment {n}"
        data_a = await (await client.get(f"/live/demo/{a.uri}")).read()
        data_b = await (await client.get(f"/live/demo@120p/{b.uri}")).read()
        assert first_pts_s(data_a, "mpegts") == pytest.approx(first_pts_s(data_b, "mpegts"), abs=0.001), f"segment {n}"


async def test_cmaf_segments_of_every_rendition_start_at_the_same_instant(edge) -> None:
    e, client = edge
    publish(e)
    # HLS players get muxed variants: the source's and each rendition's own (video and the source's audio in
    # each part), so a player follows one playlist, not a video one and the audio group.
    multivariant = m3u8.loads(await text(client, "/live/demo/cmaf.m3u8"))
    assert [p.uri for p in multivariant.playlists] == ["cmaf-muxed.m3u8", "../demo@120p/cmaf-muxed.m3u8"]
    assert [p.stream_info.audio for p in multivariant.playlists] == [None, None] and not multivariant.media
    assert all(p.stream_info.codecs.endswith(",mp4a.40.2") for p in multivariant.playlists)
    assert [p.stream_info.resolution for p in multivariant.playlists] == [(320, 240), (160, 120)]
    for track in ("muxed", "video"):  # the split video stays aligned too (DASH lists it)
        big = m3u8.loads(await text(client, f"/live/demo/cmaf-{track}.m3u8"))
        small = m3u8.loads(await text(client, f"/live/demo@120p/cmaf-{track}.m3u8"))
        assert small.media_sequence == big.media_sequence, track
        init_a = await (await client.get(f"/live/demo/{big.segment_map[0].uri}")).read()
        init_b = await (await client.get(f"/live/demo@120p/{small.segment_map[0].uri}")).read()
        # (the m3u8 package lists the parts of the segment in progress as a segment without a URI)
        pairs = [(a, b) for a, b in zip(big.segments, small.segments) if a.uri and b.uri]
        assert len(pairs) >= 3, track
        for n, (a, b) in enumerate(pairs):
            assert (a.duration, a.program_date_time) == (b.duration, b.program_date_time), f"{track} segment {n}"
            assert len(a.parts) == len(b.parts), f"{track} segment {n}"
            data_a = init_a + await (await client.get(f"/live/demo/{a.uri}")).read()
            data_b = init_b + await (await client.get(f"/live/demo@120p/{b.uri}")).read()
            assert first_pts_s(data_a, "mp4") == pytest.approx(first_pts_s(data_b, "mp4"), abs=0.001), \
                f"{track} segment {n}"
            if track == "muxed":
                with av.open(io.BytesIO(data_b), format="mp4") as container:
                    assert container.streams.audio and container.streams.video, "a muxed rendition part has both"


async def test_the_mpd_lists_a_representation_per_rendition_and_ffmpeg_plays_both(edge) -> None:
    e, client = edge
    publish(e)
    body = await text(client, "/live/demo/manifest.mpd")
    mpd = MPEGDASHParser.parse(body)
    (video,) = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "video"]
    assert [(r.id, r.width, r.height) for r in video.representations] == [("video", 320, 240), ("video-120p", 160, 120)]
    source_timeline = video.segment_templates[0].segment_timelines[0].Ss
    (template,) = video.representations[1].segment_templates
    assert template.media.startswith("../demo@120p/") and template.timescale == 90000
    assert template.start_number == video.segment_templates[0].start_number
    assert [(s.t, s.d, s.r) for s in template.segment_timelines[0].Ss][:2] == [(s.t, s.d, s.r) for s in source_timeline][:2]

    # ffmpeg's DASH demuxer (PyAV's libraries have none) reads the MPD over HTTP, opens every
    # Representation and decodes two seconds of each.
    url = str(client.make_url("/live/demo/manifest.mpd"))
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-rw_timeout", "5000000", "-i", url, "-map", "0", "-t", "2",
        "-f", "null", "-", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    log = err.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert re.search(r"Video: h264.*320x240", log) and re.search(r"Video: h264.*160x120", log), log[-2000:]
    assert "Audio: aac" in log and "demo@120p/" in log
    frames = re.findall(r"frame=\s*(\d+)", log)
    assert frames and int(frames[-1]) >= 40, log[-2000:]  # 2 s of 25 fps, both video streams counted


# -- the source alone ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 409, 415, 404])
async def test_a_refused_ladder_leaves_the_source_alone_in_every_multivariant(edge, status: int) -> None:
    e, client = edge
    publish(e)
    e.service.refusal = AbrRefusal(status, "refused", "no renditions now", "wait")
    master = m3u8.loads(await text(client, "/live/demo/master.m3u8"))
    assert [p.uri for p in master.playlists] == ["index.m3u8"]
    cmaf = m3u8.loads(await text(client, "/live/demo/cmaf.m3u8"))
    assert [p.uri for p in cmaf.playlists] == ["cmaf-muxed.m3u8"]  # alone, video and audio in one rendition
    assert not cmaf.media
    mpd = MPEGDASHParser.parse(await text(client, "/live/demo/manifest.mpd"))
    (video,) = [a for a in mpd.periods[0].adaptation_sets if a.content_type == "video"]
    assert [r.id for r in video.representations] == ["video"]


async def test_without_abr_master_lists_the_source_alone(ladder) -> None:
    e = Edge(ladder, abr=False)
    async with TestClient(TestServer(e.app)) as client:
        publish(e)
        master = m3u8.loads(await text(client, "/live/demo/master.m3u8"))
        assert [p.uri for p in master.playlists] == ["index.m3u8"]
        assert master.playlists[0].stream_info.resolution == (320, 240)


async def test_a_play_token_for_the_source_reaches_every_variant_and_opens_its_renditions(ladder) -> None:
    e = Edge(ladder)
    admission = Admission(policy=AccessPolicy(play_open=(), secrets=(SECRET,)), failure_delay_s=0.0)
    e.app = make_app(e.config, e.registry, e.pool, gate=Gate(admission, e.registry))
    e.app[ABR] = e.service
    token = mint(SECRET, Action.PLAY, "live", "demo", 4_000_000_000)
    async with TestClient(TestServer(e.app)) as client:
        publish(e)
        await text(client, "/live/demo/master.m3u8", 401)
        master = m3u8.loads(await text(client, f"/live/demo/master.m3u8?token={token}"))
        assert [p.uri for p in master.playlists] == [f"index.m3u8?token={token}",
                                                      f"../demo@120p/index.m3u8?token={token}"]
        media = m3u8.loads(await text(client, f"/live/demo@120p/index.m3u8?token={token}"))
        assert media.segments and all(s.uri.endswith(f"?token={token}") for s in media.segments)
        cmaf = m3u8.loads(await text(client, f"/live/demo/cmaf.m3u8?token={token}"))
        assert cmaf.playlists[1].uri == f"../demo@120p/cmaf-muxed.m3u8?token={token}"
        other = mint(SECRET, Action.PLAY, "live", "other", 4_000_000_000)
        await text(client, f"/live/demo@120p/index.m3u8?token={other}", 403)


async def test_abr_off_for_the_app_lists_the_source_alone(edge) -> None:
    e, client = edge
    publish(e)
    e.service.enabled = False
    master = m3u8.loads(await text(client, "/live/demo/master.m3u8"))
    assert [p.uri for p in master.playlists] == ["index.m3u8"] and e.service.calls == []


async def test_master_of_a_stream_that_is_not_live_is_404(edge) -> None:
    _, client = edge
    await text(client, "/live/nobody/master.m3u8", 404)
    await text(client, "/live/bad%20name/master.m3u8", 400)


async def test_a_rendition_keeps_its_source_packager_alive(edge) -> None:
    e, client = edge
    publish(e)
    await text(client, "/live/demo@120p/index.m3u8")
    source = e.pool.hls(e.publisher.key())
    assert source is not None
    source.last_request = -1e9
    await text(client, "/live/demo@120p/index.m3u8")
    assert source.last_request > 0  # asked for with the rendition: the sweep keeps it


async def test_late_rendition_joins_with_the_sources_numbers(edge) -> None:
    e, client = edge
    e.publisher.start([None])
    e.pool.hls(e.publisher.key())
    e.publisher.publish_all()
    big = m3u8.loads(await text(client, "/live/demo/index.m3u8"))
    # The rendition appears later (its job just started); its first segment is one of the source's.
    e.publisher.start(["120p"])
    e.pool.hls(e.publisher.key("120p"))
    rendition_frames = e.publisher.ladder.streams["120p"]
    stream = e.publisher.streams["120p"]
    for frame in rendition_frames:
        if frame.is_config or frame.dts_ms >= 2500:
            e.publisher.publish("120p", frame, 0, 0.0)
    small = m3u8.loads(await text(client, "/live/demo@120p/index.m3u8"))
    numbers = {s.uri.split("-")[-1]: s for s in big.segments}
    assert small.media_sequence > big.media_sequence
    for segment in small.segments:
        twin = numbers[segment.uri.split("-")[-1]]
        assert (segment.duration, segment.program_date_time) == (twin.duration, twin.program_date_time)
    assert stream.info.height == 120


async def test_the_player_status_says_whether_a_ladder_is_offered(edge) -> None:
    e, client = edge
    publish(e)
    status = json.loads(await text(client, "/play/live/demo/status.json"))
    assert status["abr"] is True
    rendition = json.loads(await text(client, "/play/live/demo@120p/status.json"))
    assert rendition["abr"] is False and rendition["state"] == "live"  # a rendition has no ladder of its own
    e.service.enabled = False
    assert json.loads(await text(client, "/play/live/demo/status.json"))["abr"] is False
    assert json.loads(await text(client, "/play/live/nobody/status.json"))["abr"] is False
