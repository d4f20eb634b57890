"""The VOD index of recorded files and its byte-range HLS playlist: parsed by m3u8, played by ffmpeg (PyAV),
and hostile files answered with a MediaError or the index of the whole fragments before the damage."""

from __future__ import annotations

import io
import random
import struct

import av
import m3u8
import pytest

from mediaserver.errors import MediaError
from mediaserver.media.frames import FrameKind
from mediaserver.record import vod

from support.codec_clips import codec_clip, media_frames
from test_recorder import FPS, decode, record


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    frames = codec_clip("h264", "aac", seconds=6.0, gop_frames=FPS)
    rec, _, _ = record(tmp_path_factory.mktemp("vod"), frames, fragment_s=1.0)
    return rec.files[0].path, frames


def _ranges(playlist: m3u8.M3U8) -> list[tuple[int, int]]:
    out = []
    for byterange in [playlist.segment_map[0].byterange] + [s.byterange for s in playlist.segments]:
        size, offset = byterange.split("@")
        out.append((int(offset), int(size)))
    return out


def test_the_playlist_parses_and_its_byte_ranges_cover_the_file_exactly(recording):
    path, _ = recording
    data = path.read_bytes()
    index = vod.index_file(path.open("rb"))
    assert index.tracks == {1: "vide", 2: "soun"} and index.timescale == 90_000
    assert index.total_bytes == len(data) and index.trailing_bytes == 0
    assert all(x.keyframe for x in index.fragments)
    assert abs(index.duration_s - 6.0) <= 1.0
    text = vod.hls_playlist(index, "rec.mp4")
    playlist = m3u8.loads(text)
    assert playlist.version == 7 and playlist.playlist_type == "vod" and playlist.is_endlist
    assert playlist.is_independent_segments
    assert playlist.target_duration >= max(s.duration for s in playlist.segments)
    assert all(s.uri == "rec.mp4" for s in playlist.segments)
    assert abs(sum(s.duration for s in playlist.segments) - index.duration_s) < 0.01
    position = 0
    for offset, size in _ranges(playlist):
        assert offset == position and size > 0
        position += size
    assert position == len(data)
    assert vod.index_file(data) == vod.index_file(io.BytesIO(data))


def test_ffmpeg_plays_the_playlist_frame_for_frame(recording, tmp_path):
    path, frames = recording
    (tmp_path / "rec.mp4").write_bytes(path.read_bytes())
    (tmp_path / "rec.m3u8").write_text(vod.hls_playlist(vod.index_file(path.read_bytes()), "rec.mp4"))
    counts = {"video": 0, "audio": 0}
    with av.open(str(tmp_path / "rec.m3u8"), options={"allowed_extensions": "ALL"}) as container:
        for packet in container.demux():
            for _ in packet.decode():
                counts[packet.stream.type] += 1
    assert counts["video"] == len(media_frames(frames, FrameKind.VIDEO))
    assert counts["audio"] >= len(media_frames(frames, FrameKind.AUDIO)) - 3


def test_a_dvr_playlist_lists_the_last_window_and_no_end(recording):
    path, _ = recording
    index = vod.index_file(path.read_bytes())
    n = len(index.fragments)
    sliding = m3u8.loads(vod.hls_playlist(index, "rec.mp4", window_s=2.5, live=True))
    assert not sliding.is_endlist and sliding.playlist_type is None
    # The newest fragment may still be getting its audio: left out; then what fits in 2.5 s.
    listed = index.fragments[sliding.media_sequence:n - 1]
    assert [s.byterange for s in sliding.segments] == [f"{x.size}@{x.offset}" for x in listed]
    assert 1 <= len(listed) and sum(index.fragment_seconds(x) for x in listed) <= 2.5
    assert sliding.media_sequence + len(listed) == n - 1
    event = m3u8.loads(vod.hls_playlist(index, "rec.mp4", live=True))
    assert event.playlist_type == "event" and not event.is_endlist and len(event.segments) == n - 1
    with pytest.raises(MediaError):
        vod.hls_playlist(index, "rec.mp4", window_s=0, live=True)


def test_a_dvr_playlist_starts_players_at_the_live_edge(recording):
    path, _ = recording
    index = vod.index_file(path.read_bytes())
    event = m3u8.loads(vod.hls_playlist(index, "rec.mp4", live=True))
    listed = sum(s.duration for s in event.segments)
    assert listed > 3 * event.target_duration  # (the clip is long enough for a live start)
    assert event.start is not None and event.start.time_offset == -3 * event.target_duration
    short = m3u8.loads(vod.hls_playlist(index, "rec.mp4", window_s=1.0, live=True))
    assert short.start is None  # too short to start three target durations back: from its beginning
    assert m3u8.loads(vod.hls_playlist(index, "rec.mp4")).start is None  # a recording plays from 0


def test_an_audio_only_recording_is_indexed_on_its_audio(tmp_path):
    frames = codec_clip(None, "aac", seconds=4.0)
    rec, _, _ = record(tmp_path, frames, fragment_s=1.0)
    data = rec.files[0].path.read_bytes()
    index = vod.index_file(data)
    assert index.tracks == {2: "soun"} and index.timescale == 48_000
    assert index.total_bytes == len(data) and len(index.fragments) >= 3
    assert abs(index.duration_s - 4.0) <= 1.0


# -- hostile files ---------------------------------------------------------------------------------


def _box(kind: bytes, payload: bytes = b"", size: int | None = None) -> bytes:
    return struct.pack(">I4s", 8 + len(payload) if size is None else size, kind) + payload


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x00\x00",
    b"garbage! " * 100,
    bytes(64),  # a box of size 0 that is all zeros: no ftyp, no moov
    _box(b"ftyp", b"isom", size=2),  # smaller than its header
    _box(b"ftyp", b"isom" + bytes(8), size=1),  # largesize 0
    _box(b"ftyp", b"iso6\x00\x00\x02\x00"),  # an ftyp and nothing else
    _box(b"ftyp", b"iso6\x00\x00\x02\x00") + _box(b"moov", _box(b"mvhd", bytes(100))),  # no trak
    _box(b"ftyp", b"iso6\x00\x00\x02\x00") + _box(b"moof", bytes(16)) + _box(b"mdat"),  # no moov
    _box(b"ftyp", b"iso6\x00\x00\x02\x00") + _box(b"moov", bytes(10), size=0xFFFFFFFF),  # moov cut short
])
def test_what_is_no_recording_gets_a_media_error(data):
    with pytest.raises(MediaError):
        vod.index_file(data)


def test_damage_after_whole_fragments_keeps_them(recording):
    path, _ = recording
    data = path.read_bytes()
    whole = vod.index_file(data)
    second = whole.fragments[1].offset
    for tail in (
        b"\x00\x00\x00",  # a header cut short
        _box(b"moof", size=0xFFFFFFFF),  # a huge size past the end
        struct.pack(">I4sQ", 1, b"moof", 1 << 62),  # a huge 64-bit size
        _box(b"mdat", b"x" * 10),  # an mdat with no moof
        bytes(4096),  # zeros: what a crash may leave where the data never reached the disk
        b"\xff" * 100,  # garbage
    ):
        index = vod.index_file(data[:second] + tail)
        assert list(index.fragments) == [whole.fragments[0]]
        assert index.trailing_bytes == len(tail)


def test_a_free_box_between_fragments_joins_the_one_before_and_a_last_one_trails(recording):
    path, _ = recording
    data = path.read_bytes()
    whole = vod.index_file(data)
    second = whole.fragments[1].offset
    padding = _box(b"free", bytes(100))
    # Between fragments: the ranges stay contiguous (the first fragment's takes it), nothing trails.
    index = vod.index_file(data[:second] + padding + data[second:])
    assert index.fragments[0].size == whole.fragments[0].size + len(padding)
    assert index.fragments[1].offset == second + len(padding) and index.trailing_bytes == 0
    # Last (a direct write's padding, or a crash's leftover): it trails, so the catalog cuts it off and a
    # DVR reader counts the fragments as whole by their own bytes.
    index = vod.index_file(data + padding)
    assert index.fragments == whole.fragments and index.trailing_bytes == len(padding)
    assert index.total_bytes == len(data)


def test_a_box_bigger_than_the_index_reads_is_refused_without_reading_it(recording, tmp_path):
    """A sparse file: the init, then a moof whose (whole) box claims a gigabyte."""
    path, _ = recording
    whole = vod.index_file(path.read_bytes())
    init = path.read_bytes()[: whole.init_size]
    big = tmp_path / "sparse.mp4"
    with big.open("wb") as f:
        f.write(init + _box(b"moof", size=1 << 30))
        f.truncate(len(init) + (1 << 30))

    class Counting(io.FileIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.read_bytes += len(data)
            return data

    with Counting(str(big), "rb") as f:
        index = vod.index_file(f)
    assert index.fragments == () and index.trailing_bytes == 1 << 30
    assert Counting.read_bytes < 1 << 20
    # A huge mdat is skipped, not read.
    data = path.read_bytes()
    first = whole.fragments[0]
    moof_size = int.from_bytes(data[first.offset:first.offset + 4], "big")
    with big.open("r+b") as f:
        f.seek(0)
        f.write(data[: first.offset + moof_size] + struct.pack(">I4s", (1 << 30) - moof_size, b"mdat"))
    Counting.read_bytes = 0
    with Counting(str(big), "rb") as f:
        index = vod.index_file(f)
    assert len(index.fragments) == 1 and index.fragments[0].size == 1 << 30
    assert Counting.read_bytes < 1 << 20


def test_random_damage_gives_an_index_or_a_media_error(recording):
    path, _ = recording
    data = path.read_bytes()
    whole = vod.index_file(data)
    meta = [(0, whole.init_size)] + [(x.offset, min(x.size, 400)) for x in whole.fragments]
    rng = random.Random(11)
    for _ in range(2000):
        damaged = bytearray(data)
        start, size = rng.choice(meta)
        for _ in range(rng.randint(1, 4)):
            damaged[start + rng.randrange(size)] = rng.randrange(256)
        try:
            index = vod.index_file(bytes(damaged))
        except MediaError:
            continue
        assert index.total_bytes <= len(damaged)
        for x in index.fragments:
            assert x.size > 0 and x.duration >= 0


def test_a_decoded_recording_matches_its_index(recording):
    path, _ = recording
    index = vod.index_file(path.read_bytes())
    decoded = decode(path)
    first, last = index.fragments[0], index.fragments[-1]
    assert min(decoded["video"]) == pytest.approx(first.start / index.timescale, abs=0.1)
    assert max(decoded["video"]) <= (last.start + last.duration) / index.timescale + 0.1


def test_a_moov_too_big_to_read_is_a_media_error(tmp_path):
    big = tmp_path / "big-moov.mp4"
    with big.open("wb") as f:
        f.write(_box(b"ftyp", b"iso6\x00\x00\x02\x00") + _box(b"moov", size=1 << 30))
        f.truncate(16 + (1 << 30))
    with big.open("rb") as f, pytest.raises(MediaError, match="more than"):
        vod.index_file(f)


async def test_a_player_fetching_the_byte_ranges_over_http_gets_every_frame(recording, tmp_path):
    """As a browser player (hls.js into MSE) does: the playlist, then the init and each segment by a Range
    request, appended in order. (ffmpeg's hls demuxer over HTTP stops after the first byte range of a
    single-file fMP4 playlist, its own `-hls_flags single_file` output alike, so it is not the player here;
    from a file URL it plays the playlist whole: test_ffmpeg_plays_the_playlist_frame_for_frame.)"""
    from aiohttp import ClientSession, web

    path, frames = recording
    (tmp_path / "rec.mp4").write_bytes(path.read_bytes())
    (tmp_path / "rec.m3u8").write_text(vod.hls_playlist(vod.index_file(path.read_bytes()), "rec.mp4"))
    app = web.Application()
    app.router.add_static("/", tmp_path)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"
    pieces = []
    try:
        async with ClientSession() as http:
            async with http.get(base + "rec.m3u8") as response:
                playlist = m3u8.loads(await response.text())
            for offset, size in _ranges(playlist):
                headers = {"Range": f"bytes={offset}-{offset + size - 1}"}
                async with http.get(base + "rec.mp4", headers=headers) as response:
                    assert response.status == 206
                    pieces.append(await response.read())
                    assert len(pieces[-1]) == size
    finally:
        await runner.cleanup()
    assert b"".join(pieces) == path.read_bytes()
    played = tmp_path / "played.mp4"
    played.write_bytes(b"".join(pieces))
    decoded = decode(played)
    assert len(decoded["video"]) == len(media_frames(frames, FrameKind.VIDEO))
    assert decoded["audio"]


def test_the_index_of_a_file_is_kept_until_the_file_changes(recording, tmp_path):
    path, _ = recording
    copy = tmp_path / "copy.mp4"
    data = path.read_bytes()
    second = vod.index_file(data).fragments[1]
    copy.write_bytes(data[:second.offset])  # one whole fragment, as a recording being written
    first = vod.index_path(copy)
    assert len(first.fragments) == 1 and vod.index_path(copy) is first
    with open(copy, "ab") as f:
        f.write(data[second.offset:])  # it grows: read again
    grown = vod.index_path(copy)
    assert grown is not first and grown == vod.index_file(data)


def test_a_growing_file_indexed_from_its_last_segment_on_matches_a_whole_reading(recording, tmp_path):
    path, _ = recording
    data = path.read_bytes()
    rng = random.Random(7)
    cuts = sorted({rng.randrange(len(data) // 10, len(data) + 1) for _ in range(40)} | {len(data)})
    before = vod.index_file(data[:cuts[0]])
    for cut in cuts[1:]:
        grown = vod.index_file(data[:cut], grown_from=before)
        assert grown == vod.index_file(data[:cut]), cut
        before = grown
    # index_path does so for a file that grows in place, and reads it whole when it is another file
    live = tmp_path / "live.mp4"
    live.write_bytes(data[:len(data) // 3])
    first = vod.index_path(live)
    with open(live, "ab") as f:
        f.write(data[len(data) // 3:])
    assert vod.index_path(live) == vod.index_file(data) != first
    live.unlink()
    live.write_bytes(data[:len(data) // 2])  # a new file of the same name: not taken for a grown one
    assert vod.index_path(live) == vod.index_file(data[:len(data) // 2])
