"""fMP4/CMAF outputs: LL-HLS (cmaf.m3u8) and MPEG-DASH (manifest.mpd) over the same segments, read by
independent parsers (m3u8, mpegdash) and decoded with PyAV; blocking playlist reload held, answered and
timed out; bad requests answered 4xx at once."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin

import aiohttp
import av
import m3u8
import mpegdash.parser

from support.checks import wait_live


def base(server, name: str) -> str:
    return server.hls_url(name).rsplit("/", 1)[0] + "/"


async def fetch(http: aiohttp.ClientSession, url: str, timeout_s: float = 10.0) -> tuple[int, bytes, dict]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def wait_segments(http, url: str, count: int, timeout_s: float = 20.0) -> m3u8.M3U8:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body, _ = await fetch(http, url)
        if status == 200:
            pl = m3u8.loads(body.decode(), uri=url)
            if len(complete(pl)) >= count:
                return pl
        assert time.monotonic() < deadline, f"{url} never listed {count} segments: {status} {body[:300]!r}"
        await asyncio.sleep(0.5)


def complete(pl: m3u8.M3U8) -> list:
    """The playlist's complete segments (the parser lists the parts of the one in progress as a
    segment without a URI)."""
    return [s for s in pl.segments if s.uri]


def decode_track(data: bytes) -> tuple[str, int, bool]:
    """(codec, frames decoded, first frame is a keyframe) of an init segment followed by media segments."""
    import io

    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams[0]
        frames = 0
        first_key = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if first_key is None:
                first_key = packet.is_keyframe
            for _ in packet.decode():
                frames += 1
        return stream.codec_context.name, frames, bool(first_key)


async def test_llhls_playlists_list_parts_and_segments_that_decode(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    root = base(server, stream_name)
    async with aiohttp.ClientSession() as http:
        status, body, headers = await fetch(http, root + "cmaf.m3u8")
        assert status == 200 and headers["Content-Type"] == "application/vnd.apple.mpegurl", (status, body[:200])
        master = m3u8.loads(body.decode(), uri=root + "cmaf.m3u8")
        assert master.is_variant and master.playlists, body.decode()
        assert "avc1" in master.playlists[0].stream_info.codecs and "mp4a" in master.playlists[0].stream_info.codecs
        for track, codec in (("video", "h264"), ("audio", "aac")):
            url = root + f"cmaf-{track}.m3u8"
            pl = await wait_segments(http, url, 3)
            text = pl.dumps()
            assert "#EXT-X-PART-INF:PART-TARGET=" in text and "CAN-BLOCK-RELOAD=YES" in text, text
            assert "#EXT-X-PRELOAD-HINT:TYPE=PART" in text and "#EXT-X-MAP:URI=" in text, text
            init_uri = pl.segment_map[0].uri
            status, init, _ = await fetch(http, urljoin(url, init_uri))
            assert status == 200
            data = bytearray(init)
            for seg in complete(pl)[:3]:
                status, seg_body, seg_headers = await fetch(http, urljoin(url, seg.uri))
                assert status == 200 and seg_headers["Content-Type"] == "video/iso.segment"
                data += seg_body
            got_codec, frames, first_key = decode_track(bytes(data))
            assert got_codec == codec and first_key and frames > 0, (track, got_codec, frames)


def packet_times(data: bytes) -> dict[str, list[int]]:
    """The pts of every packet of each stream of an init segment followed by media segments, in the
    stream's own timescale, and how many frames each stream decodes."""
    import io

    times: dict[str, list[int]] = {"video": [], "audio": [], "decoded": [0]}
    with av.open(io.BytesIO(data), format="mp4") as container:
        for packet in container.demux():
            if packet.size:
                times[packet.stream.type].append(packet.pts)
                times["decoded"][0] += len(packet.decode())
    return times


async def test_the_muxed_llhls_rendition_carries_both_tracks_in_sync(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    root = base(server, stream_name)
    async with aiohttp.ClientSession() as http:
        await wait_segments(http, root + "cmaf-video.m3u8", 3)
        _, body, _ = await fetch(http, root + "cmaf.m3u8")
        master = m3u8.loads(body.decode(), uri=root + "cmaf.m3u8")
        # One variant, both codecs, no audio group: an HLS player follows one playlist.
        assert [p.uri for p in master.playlists] == ["cmaf-muxed.m3u8"] and not master.media, body.decode()
        codecs = master.playlists[0].stream_info.codecs
        assert "avc1" in codecs and "mp4a" in codecs
        url = root + "cmaf-muxed.m3u8"
        muxed = await wait_segments(http, url, 3)
        text = muxed.dumps()
        assert "#EXT-X-PART-INF:PART-TARGET=" in text and "#EXT-X-PRELOAD-HINT:TYPE=PART" in text, text
        assert "INDEPENDENT=YES" in text and "#EXT-X-RENDITION-REPORT" not in text
        sequence = muxed.media_sequence + len(complete(muxed)) - 1  # the newest complete segment
        # A blocking reload for the next part is held, then answered with it listed.
        status, body, _ = await fetch(http, url + f"?_HLS_msn={sequence + 1}&_HLS_part=0")
        assert status == 200 and f"muxed-{sequence + 1}.0.m4s" in body.decode()
        files = {}
        for track in ("muxed", "video", "audio"):
            track_url = root + f"cmaf-{track}.m3u8"
            pl = m3u8.loads((await fetch(http, track_url))[1].decode(), uri=track_url)
            (seg,) = [s for s in complete(pl) if s.uri.endswith(f"-{sequence}.m4s")]
            init = (await fetch(http, urljoin(track_url, pl.segment_map[-1].uri)))[1]
            files[track] = init + (await fetch(http, urljoin(track_url, seg.uri)))[1]
    muxed_times = packet_times(files["muxed"])
    # The very same samples at the very same times as the split tracks (so as in sync as the source).
    assert muxed_times["video"] == packet_times(files["video"])["video"] and len(muxed_times["video"]) > 10
    assert muxed_times["audio"] == packet_times(files["audio"])["audio"] and len(muxed_times["audio"]) > 10
    assert muxed_times["decoded"][0] >= len(muxed_times["video"]) + len(muxed_times["audio"]) - 2


async def test_blocking_reload_holds_until_the_next_part_exists(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = base(server, stream_name) + "cmaf-video.m3u8"
    async with aiohttp.ClientSession() as http:
        pl = await wait_segments(http, url, 1)
        hint = next(line for line in pl.dumps().splitlines() if line.startswith("#EXT-X-PRELOAD-HINT"))
        last_msn = pl.media_sequence + len(complete(pl))  # the segment in progress
        # Ask for the segment after the one in progress: it does not exist yet, so the request is held.
        started = time.monotonic()
        status, body, _ = await fetch(http, f"{url}?_HLS_msn={last_msn + 1}&_HLS_part=0", timeout_s=15)
        held = time.monotonic() - started
        assert status == 200, body[:300]
        fresh = m3u8.loads(body.decode(), uri=url)
        assert fresh.media_sequence + len(complete(fresh)) >= last_msn + 1, fresh.dumps()
        assert held > 0.1, f"answered after {held:.3f} s: the part could not have existed yet ({hint})"


async def test_bad_delivery_directives_get_400_at_once(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = base(server, stream_name) + "cmaf-video.m3u8"
    async with aiohttp.ClientSession() as http:
        pl = await wait_segments(http, url, 1)
        far = pl.media_sequence + len(complete(pl)) + 50
        for query in (f"_HLS_msn={far}", "_HLS_msn=-1", "_HLS_msn=1&_HLS_part=-2", "_HLS_msn=abc", "_HLS_part=1"):
            started = time.monotonic()
            status, body, headers = await fetch(http, f"{url}?{query}", timeout_s=5)
            assert status == 400, (query, status, body[:200])
            assert time.monotonic() - started < 1.0, query
            assert b'"hint"' in body
        status, _, _ = await fetch(http, base(server, stream_name) + "zz-video-999999.m4s")
        assert status == 404


async def test_blocking_reload_times_out_cleanly_when_the_publisher_stops(server_factory, publish, media, stream_name):
    server = server_factory(**{"hub.reconnect_grace": "30"})
    publisher = publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    url = base(server, stream_name) + "cmaf-video.m3u8"
    async with aiohttp.ClientSession() as http:
        pl = await wait_segments(http, url, 1)
        publisher.kill()
        await asyncio.sleep(0.5)
        status, body, _ = await fetch(http, url)
        current = m3u8.loads(body.decode(), uri=url)
        next_msn = current.media_sequence + len(complete(current)) + 1
        started = time.monotonic()
        status, body, headers = await fetch(http, f"{url}?_HLS_msn={next_msn}", timeout_s=20)
        waited = time.monotonic() - started
        assert status == 503 and "Retry-After" in headers, (status, body[:200])
        assert 2.0 < waited < 10.0, waited


async def test_dash_manifest_lists_the_same_segments_and_they_decode(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    root = base(server, stream_name)
    async with aiohttp.ClientSession() as http:
        await wait_segments(http, root + "cmaf-video.m3u8", 3)
        status, body, headers = await fetch(http, root + "manifest.mpd")
        assert status == 200 and headers["Content-Type"] == "application/dash+xml"
        mpd = mpegdash.parser.MPEGDASHParser.parse(body.decode())
        assert mpd.type == "dynamic" and mpd.availability_start_time and mpd.utc_timings
        status, now_text, _ = await fetch(http, urljoin(root, mpd.utc_timings[0].value))
        assert status == 200 and now_text.endswith(b"Z"), now_text
        video = next(a for a in mpd.periods[-1].adaptation_sets if (a.content_type or a.mime_type or "").startswith("video"))
        template = video.segment_templates[0] if video.segment_templates else video.representations[0].segment_templates[0]
        rep = video.representations[0]
        timeline = template.segment_timelines[0].Ss
        number = template.start_number if template.start_number is not None else 1
        init_url = urljoin(root, template.initialization.replace("$RepresentationID$", str(rep.id)))
        status, data, _ = await fetch(http, init_url)
        assert status == 200, init_url
        data = bytearray(data)
        count = sum(1 + (s.r or 0) for s in timeline)
        for n in range(number, number + min(count, 3)):
            seg_url = urljoin(root, template.media.replace("$Number$", str(n)).replace("$RepresentationID$", str(rep.id)))
            status, seg, _ = await fetch(http, seg_url)
            assert status == 200, seg_url
            data += seg
        codec, frames, first_key = decode_track(bytes(data))
        assert codec == "h264" and first_key and frames >= 25

        # Asked again on the kept-alive connection: the fast lane answers with the same bytes.
        answers = []
        for _ in range(4):
            await asyncio.sleep(0.2)  # (the lane takes a request once aiohttp's side of the connection is idle)
            answers.append(await fetch(http, seg_url))
        assert all(a[0] == 200 and a[1] == seg for a in answers), "the same segment, the same bytes"
        lane = [headers for _, _, headers in answers if "Server" not in headers]
        assert lane, "no answer came from the fast lane"
        assert all(int(h["Content-Length"]) == len(seg) and "immutable" in h["Cache-Control"] for h in lane), lane


async def test_ffmpeg_plays_the_cmaf_playlist(server, publish, media, stream_name):
    publish(server, stream_name, media.av, loop=True)
    await wait_live(server, stream_name)
    root = base(server, stream_name)
    async with aiohttp.ClientSession() as http:
        await wait_segments(http, root + "cmaf-video.m3u8", 3)

    def read() -> tuple[int, int]:
        with av.open(root + "cmaf.m3u8", options={"live_start_index": "0"}, timeout=10) as c:
            video = audio = 0
            for packet in c.demux():
                if packet.size == 0:
                    continue
                if packet.stream.type == "video":
                    video += 1
                else:
                    audio += 1
                if video >= 60:
                    break
            return video, audio

    video, audio = await asyncio.wait_for(asyncio.to_thread(read), 40)
    assert video >= 60 and audio > 50, (video, audio)  # (from the muxed rendition, cmaf.m3u8's one variant)
