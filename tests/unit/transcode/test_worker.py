"""The transcoder worker process, driven as the server drives it: a job on the command line, FLV on stdin,
wire messages on stdout. Clips are made by ffmpeg at test time; every rendition is decoded with PyAV."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from support.media import ffmpeg_exe

from mediaserver.media.flv_body import video_frame
from mediaserver.media.frames import FrameKind
from mediaserver.remux.flv import FlvReader, flv_header
from mediaserver.transcode import wire
from mediaserver.transcode.interleave import Interleaver
from mediaserver.transcode.worker import RealTimeClock, estimate_fps

ROOT = Path(__file__).resolve().parents[3]
WORKER_TIMEOUT = 90


def make_clip(path: Path, size: str, seconds: float, video: list[str], audio: bool = True) -> bytes:
    """An FLV clip of a moving test pattern (and a tone)."""
    if not path.exists():
        cmd = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30"]
        if audio:
            cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
        cmd += ["-t", str(seconds), *video, "-pix_fmt", "yuv420p"]
        cmd += ["-c:a", "aac", "-b:a", "64k"] if audio else ["-an"]
        subprocess.run([*cmd, "-f", "flv", str(path)], check=True, timeout=120)
    return path.read_bytes()


# 720p H.264 with B-frames and an irregular GOP: keyframes at uneven times, scene cuts off.
H264_IRREGULAR = [
    "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-x264-params", "b-adapt=0:scenecut=0",
    "-g", "300", "-force_key_frames", "0,0.7,2.1,2.5,3.3", "-b:v", "1500k",
]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@dataclass
class Output:
    returncode: int
    tracks: dict[int, list[bytes]] = field(default_factory=dict)
    order: list[tuple[int, int]] = field(default_factory=list)
    """(track, timestamp) of every TAG message, in the order sent."""
    stats: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    stderr: str = ""


def rung(label: str, width: int, height: int, kbps: int, codec: str = "h264", preset: str = "") -> dict:
    presets = {"h264": "veryfast", "hevc": "ultrafast", "av1": "12", "vp9": "8"}
    return {"label": label, "width": width, "height": height, "video_kbps": kbps, "codec": codec,
            "preset": preset or presets[codec], "threads": 1}


def run_worker(job: dict, stdin: bytes, timeout: float = WORKER_TIMEOUT) -> Output:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "mediaserver.transcode.worker", "--job", json.dumps(job)],
        input=stdin, capture_output=True, timeout=timeout, env=env,
    )
    out = Output(returncode=proc.returncode, stderr=proc.stderr.decode(errors="replace"))
    for message in wire.MessageReader().feed(proc.stdout):  # raises WireError on anything but messages
        if message.kind == wire.TAG:
            out.tracks.setdefault(message.track, []).append(message.payload)
            tag = message.payload
            out.order.append((message.track, (tag[7] << 24) | (tag[4] << 16) | (tag[5] << 8) | tag[6]))
        elif message.kind == wire.STATS:
            out.stats.append(message.json())
        else:
            out.errors.append(message.json())
    return out


def job_for(*rungs: dict, watermark: dict | None = None) -> dict:
    return {"stream": "live/test", "rungs": list(rungs), "watermark": watermark, "max_keyframe_interval_ms": 10000,
            "stats_interval_s": 0.5, "max_backlog_ms": 3000}


def source_video(data: bytes) -> tuple[list[int], list[int]]:
    """The source's picture pts and keyframe pts (ms)."""
    pts, keys = [], []
    for tag in FlvReader().feed(data):
        if tag.kind == FrameKind.VIDEO:
            frame = video_frame(tag.body, tag.timestamp_ms)
            if frame is not None and not frame.is_config and not frame.is_end:
                pts.append(frame.pts_ms)
                if frame.keyframe:
                    keys.append(frame.pts_ms)
    return sorted(pts), keys


def source_audio_tags(data: bytes) -> list[bytes]:
    return [t.encode() for t in FlvReader().feed(data) if t.kind == FrameKind.AUDIO]


@dataclass
class Rendition:
    codec: str
    width: int
    height: int
    pts: list[int]
    keyframes: list[int]
    dts_equals_pts: bool
    video_bytes: int
    pictures: list[np.ndarray]


def decode_rendition(tags: list[bytes], keep_pictures: bool = False) -> Rendition:
    """Decode one rung's FLV tags with PyAV (every tag is also checked to parse as the hub parses it)."""
    video_bytes = 0
    for tag in tags:
        frame = video_frame(tag[11:-4], 0)
        assert frame is not None
        if not frame.is_config:
            video_bytes += len(frame.payload)
    data = flv_header(False, True) + b"".join(tags)
    pts, keys, pictures = [], [], []
    dts_ok = True
    size = (0, 0)
    with av.open(io.BytesIO(data), format="flv") as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            ms = int(packet.pts * packet.time_base * 1000)
            pts.append(ms)
            dts_ok &= packet.dts == packet.pts
            if packet.is_keyframe:
                keys.append(ms)
            for picture in packet.decode():  # raises on a decode error
                size = (picture.width, picture.height)
                if keep_pictures:
                    pictures.append(picture.to_ndarray(format="yuv420p"))
    return Rendition(codec, size[0], size[1], pts, keys, dts_ok, video_bytes, pictures)


# -- H.264 ladder from an irregular 720p source -----------------------------------------------------------


@pytest.fixture(scope="module")
def h264_run(clips: Path) -> tuple[bytes, Output]:
    source = make_clip(clips / "src720.flv", "1280x720", 4, H264_IRREGULAR)
    job = job_for(rung("360p", 640, 360, 700), rung("240p", 426, 240, 400))
    return source, run_worker(job, source)


def test_h264_rungs_size_codec_and_keyframes_at_the_source_keyframes(h264_run) -> None:
    source, out = h264_run
    assert out.returncode == 0, out.stderr
    assert not out.errors
    src_pts, src_keys = source_video(source)
    assert len(src_keys) == 5  # the irregular GOP really is irregular
    for track, (width, height) in enumerate([(640, 360), (426, 240)]):
        r = decode_rendition(out.tracks[track])
        assert r.codec == "h264"
        assert (r.width, r.height) == (width, height)
        assert r.pts == src_pts  # every picture, at the source's own time
        assert r.keyframes == src_keys
        assert r.dts_equals_pts  # no B-frames


def test_h264_rungs_signal_the_source_frame_rate_not_the_millisecond_clock(h264_run) -> None:
    from mediaserver.media import flv_body, h264

    _, out = h264_run
    config = flv_body.video_frame(out.tracks[0][0][11:-4], 0)
    assert config is not None and config.is_config
    sps = h264.parse_sps(h264.parse_avc_config(bytes(config.payload)).sps[0])
    assert sps.frame_rate is not None and abs(sps.frame_rate - 30) < 0.5, sps


def test_audio_passes_through_unchanged_and_in_time_order_per_rung(h264_run) -> None:
    source, out = h264_run
    assert out.tracks[wire.AUDIO_TRACK] == source_audio_tags(source)
    for track in (0, 1):
        times = [ts for t, ts in out.order if t in (track, wire.AUDIO_TRACK)]
        assert times == sorted(times), f"rung {track} and audio are not in time order"


def test_stats_count_what_was_done(h264_run) -> None:
    source, out = h264_run
    src_pts, _ = source_video(source)
    last = out.stats[-1]
    assert last["frames_in"] == len(src_pts)
    assert last["frames_out"] == {"360p": len(src_pts), "240p": len(src_pts)}
    assert last["skipped"] == 0 and last["shed"] == []
    assert last["media_ms"] >= 3900 and last["cpu_s"] > 0
    assert set(last) >= {"speed", "backlog_ms"}


def test_each_rung_keeps_near_its_bit_rate(clips: Path) -> None:
    # Bit rate needs a few seconds to settle: a small, busy source, 6 s.
    source = make_clip(clips / "src240.flv", "320x240", 6, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "60",
                                                            "-b:v", "1500k", "-bf", "2"], audio=False)
    rungs = [rung("180p", 240, 180, 300), rung("120p", 160, 120, 150)]
    out = run_worker(job_for(*rungs), source)
    assert out.returncode == 0, out.stderr
    for track, spec in enumerate(rungs):
        r = decode_rendition(out.tracks[track])
        seconds = (r.pts[-1] - r.pts[0] + 33) / 1000
        kbps = r.video_bytes * 8 / seconds / 1000
        assert abs(kbps - spec["video_kbps"]) <= 0.2 * spec["video_kbps"], f"{spec['label']}: {kbps:.0f} kbit/s"


@pytest.mark.parametrize("codec", ["hevc", "av1", "vp9"])
def test_other_codecs_decode_with_keyframes_at_the_source_keyframes(clips: Path, codec: str) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    out = run_worker(job_for(rung("120p", 160, 120, 150, codec)), source)
    assert out.returncode == 0, out.stderr
    src_pts, src_keys = source_video(source)
    tags = out.tracks[0]
    first = video_frame(tags[0][11:-4], 0)
    assert first is not None and first.is_config and first.codec == codec
    r = decode_rendition(tags)
    assert (r.width, r.height) == (160, 120)
    assert r.pts == src_pts
    assert r.keyframes == src_keys
    assert r.dts_equals_pts


# -- watermark ------------------------------------------------------------------------------------------


def write_png(path: Path, rgba: np.ndarray) -> None:
    frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgba.shape[1], rgba.shape[0], "rgba"
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_watermark_is_burnt_into_its_corner(clips: Path, tmp_path: Path) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    red = np.zeros((40, 80, 4), np.uint8)
    red[..., 0], red[..., 3] = 255, 255  # opaque pure red
    png = tmp_path / "mark.png"
    write_png(png, red)
    spec = rung("240p", 320, 240, 600)
    plain = decode_rendition(run_worker(job_for(spec), source).tracks[0], keep_pictures=True)
    mark = {"file": str(png), "position": "top-left", "margin": 8, "opacity": 1.0, "scale": 0.25}
    out = run_worker(job_for(spec, watermark=mark), source)
    assert out.returncode == 0, out.stderr
    marked = decode_rendition(out.tracks[0], keep_pictures=True)
    # 80 px wide on a 320 px rendition at 8 px from the top-left corner: 80x40 at (8, 8).
    for before, after in zip(plain.pictures[5:], marked.pictures[5:]):
        inside_after = after[12:44, 12:84]  # Y plane, inside the mark (2 px in from its edge)
        inside_before = before[12:44, 12:84]
        assert abs(float(inside_after.mean()) - float(inside_before.mean())) > 10
        # BT.601 limited-range red: Y ~ 81, V (Cr) ~ 240.
        assert abs(float(inside_after.mean()) - 81) < 12
        v_rows = after[240 + 60 :, :]  # V plane follows U in yuv420p's stacked layout
        v = v_rows.reshape(-1)[: 160 * 120].reshape(120, 160)
        assert float(v[6:22, 6:42].mean()) > 200
        # Far from the mark the picture is the same encode of the same source.
        assert abs(float(after[150:230, 200:310].mean()) - float(before[150:230, 200:310].mean())) < 3


def test_missing_watermark_file_is_an_error_naming_it(clips: Path, tmp_path: Path) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    missing = tmp_path / "nowhere" / "logo.png"
    out = run_worker(job_for(rung("120p", 160, 120, 150), watermark={"file": str(missing)}), source[:4096])
    assert out.returncode == 3
    assert out.errors[0]["reason"] == "watermark"
    assert str(missing) in out.errors[0]["message"]


# -- bad input ------------------------------------------------------------------------------------------


def test_garbage_input_is_an_error_and_an_exit(clips: Path) -> None:
    out = run_worker(job_for(rung("120p", 160, 120, 150)), os.urandom(20000), timeout=30)
    assert out.returncode == 3
    assert out.errors and out.errors[0]["reason"] == "input"


def test_truncated_input_ends_cleanly_with_what_was_whole(clips: Path) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    cut = source[: len(source) // 2 + 7]  # ends inside a tag
    out = run_worker(job_for(rung("120p", 160, 120, 150)), cut, timeout=30)
    assert out.returncode == 0, out.stderr
    assert not out.errors
    r = decode_rendition(out.tracks[0])
    assert 10 < len(r.pts) < len(source_video(source)[0])


def test_empty_input_ends_cleanly(clips: Path) -> None:
    out = run_worker(job_for(rung("120p", 160, 120, 150)), b"", timeout=30)
    assert out.returncode == 0 and not out.errors and not out.tracks


def test_undecodable_codec_is_an_error(clips: Path) -> None:
    # Sorenson H.263 (FLV codec id 2): a codec the workers do not take.
    source = make_clip(clips / "h263.flv", "320x240", 1, ["-c:v", "flv1"], audio=False)
    out = run_worker(job_for(rung("120p", 160, 120, 150)), source, timeout=30)
    assert out.returncode == 3
    assert out.errors[0]["reason"] == "codec"
    assert "h263" in out.errors[0]["message"]


def test_malformed_frames_are_skipped_and_counted(clips: Path) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    tags = FlvReader().feed(source)
    broken = bytearray(flv_header(True, True))
    damaged = 0
    for index, tag in enumerate(tags):
        body = tag.body
        if tag.kind == FrameKind.VIDEO and index % 9 == 5 and not tag.is_sequence_header:
            body = body[:5] + b"\x00\x00\x00\x05" + b"\xff" * 5  # an AVCC NAL unit of garbage
            damaged += 1
        broken += type(tag)(tag.kind, tag.timestamp_ms, bytes(body)).encode()
    out = run_worker(job_for(rung("120p", 160, 120, 150)), bytes(broken), timeout=60)
    assert out.returncode == 0, out.stderr
    assert damaged > 3
    decode_rendition(out.tracks[0])  # what came out is valid
    stats = out.stats[-1]
    # Refused by the decoder and counted (with frame threads one may surface as a concealed picture instead).
    assert damaged // 2 < stats["skipped"] <= damaged
    assert stats["frames_out"]["120p"] == stats["frames_in"] - stats["skipped"]


@pytest.mark.parametrize(("job", "says"), [
    ('{"rungs": []}', b"rungs"),
    ("not json", b"JSON"),
    (json.dumps(job_for(rung("x", 160, 120, 150) | {"codec": "h263"})), b"h263"),
    (json.dumps(job_for(rung("x", 161, 120, 150))), b"even"),
])
def test_bad_job_is_refused_with_exit_2(job: str, says: bytes) -> None:
    proc = subprocess.run([sys.executable, "-m", "mediaserver.transcode.worker", "--job", job],
                          capture_output=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert says in proc.stderr and proc.stdout == b""


# -- pure parts -----------------------------------------------------------------------------------------


def test_frame_rate_estimate_snaps_to_common_rates() -> None:
    assert estimate_fps([0, 33, 67, 100, 133, 167, 200, 233]) == 30
    assert estimate_fps([0, 40, 80, 120]) == 25
    assert estimate_fps([0, 100, 200]) == 10
    assert estimate_fps([5]) == 30


def test_interleaver_holds_audio_for_the_slowest_rung_and_fast_rungs_for_the_audio() -> None:
    mix = Interleaver(2)
    mix.source_time(0, video=True)
    for ms in (0, 21, 42):
        mix.source_time(ms, video=False)
        mix.audio(ms, f"a{ms}".encode())
    assert mix.release() == []  # no rung has produced anything yet
    mix.video(0, 0, b"v0@0")
    mix.video(0, 33, b"v0@33")
    assert mix.release() == [b"v0@0"]  # rung 1 is still behind the first audio; rung 0 waits before 21
    mix.video(1, 0, b"v1@0")
    assert mix.release() == [b"v1@0", b"a0"]
    mix.video(1, 33, b"v1@33")
    assert mix.release() == [b"a21", b"v0@33", b"v1@33"]
    mix.drop(1)  # shed: nothing waits for rung 1 any more
    mix.audio(50, b"a50")
    mix.video(0, 66, b"v0@66")
    assert mix.release() == [b"a42", b"a50"]  # and the picture at 66 waits for the sound up to its time
    mix.audio(70, b"a70")
    assert mix.release() == [b"v0@66"]


def test_interleaver_lets_audio_pass_a_rung_a_second_behind_and_releases_all_at_the_end() -> None:
    mix = Interleaver(1)
    mix.source_time(0, video=True)
    mix.video(0, 0, b"v@0")
    mix.audio(500, b"a500")
    mix.audio(1200, b"a1200")
    assert mix.release() == [b"v@0"]
    mix.video(0, 100, b"v@100")  # 1200 is over a second ahead of the rung: it goes
    assert mix.release() == [b"v@100"]
    mix.video(0, 150, b"v@150")
    assert mix.release(final=True) == [b"v@150", b"a500", b"a1200"]


def test_interleaver_without_audio_or_video_holds_nothing() -> None:
    video_only = Interleaver(1)
    video_only.source_time(0, video=True)
    video_only.video(0, 0, b"v")
    assert video_only.release() == [b"v"]
    audio_only = Interleaver(1)
    audio_only.source_time(0, video=False)
    audio_only.audio(0, b"a")
    assert audio_only.release() == [b"a"]


def test_real_time_clock_ignores_a_burst_and_measures_falling_behind() -> None:
    clock = RealTimeClock()
    # 10 s of history processed in 1 s: ahead of real time all along.
    assert all(clock.late_ms(ms, now=ms / 10000) == 0 for ms in range(0, 10001, 500))
    # Then 1 s of source per 2 s of wall time: late by the difference.
    assert clock.late_ms(11000, now=1.0 + 2.0) == 1000
    assert clock.late_ms(12000, now=1.0 + 4.0) == 2000
    # A queue run dry is on time: a source that stalled (or reconnected) then does not count as lateness.
    clock.caught_up(12000, now=30.0)
    assert clock.late_ms(12500, now=30.5) == 0
    assert clock.late_ms(13000, now=31.5) == 500


# -- load and source changes ------------------------------------------------------------------------------


def feed_in_real_time(job: dict, source: bytes, stop=lambda stats: False) -> list[dict]:
    """Run a worker fed the source's tags at their timestamps, as a live source arrives; its STATS."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mediaserver.transcode.worker", "--job", json.dumps(job)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    stats: list[dict] = []

    def read() -> None:
        reader = wire.MessageReader()
        while chunk := proc.stdout.read1(1 << 16):  # type: ignore[union-attr]
            stats.extend(m.json() for m in reader.feed(chunk) if m.kind == wire.STATS)

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    try:
        proc.stdin.write(source[:13])  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        # The clock starts when the worker is up (its first STATS, sent with no input yet): on a loaded machine
        # its start alone can take longer than the clip, which would then arrive all at once.
        ready_by = time.monotonic() + WORKER_TIMEOUT
        while not stats and time.monotonic() < ready_by and proc.poll() is None:
            time.sleep(0.02)
        start = time.monotonic()
        for tag in FlvReader().feed(source):
            delay = tag.timestamp_ms / 1000 - (time.monotonic() - start)
            if delay > 0:
                time.sleep(delay)
            if stop(stats):
                return stats  # seen enough: the worker is killed, not left to finish its backlog
            proc.stdin.write(tag.encode())  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=WORKER_TIMEOUT)
    finally:
        proc.kill()
        proc.wait(timeout=10)
        reading.join(timeout=10)
    return stats


def test_a_worker_falling_behind_real_time_sheds_its_lowest_rung(clips: Path) -> None:
    source = make_clip(clips / "src_10s.flv", "320x240", 10, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "60"])
    # HEVC at its slowest preset cannot keep up with 30 fps in real time on one thread.
    slow = [rung("240p", 320, 240, 300, "hevc", "placebo"), rung("120p", 160, 120, 100, "hevc", "placebo")]
    job = {**job_for(*slow), "max_backlog_ms": 500, "stats_interval_s": 0.25}
    stats = feed_in_real_time(job, source, stop=lambda stats: any(s["shed"] for s in stats))
    shed = [s for s in stats if s["shed"]]
    assert shed, f"never shed; last stats {stats[-1:]}"
    assert shed[0]["shed"] == ["120p"]  # the lowest rung first
    assert shed[0]["late_ms"] > 500 and shed[0]["backlog_ms"] > 500
    assert shed[0]["speed"] < 1
    early = [s for s in stats if s["media_ms"] < 1000]
    assert all(not s["shed"] for s in early)


def test_a_worker_keeping_up_with_a_live_source_shows_its_headroom(clips: Path) -> None:
    source = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    stats = feed_in_real_time(job_for(rung("120p", 160, 120, 150)), source)
    steady = [s for s in stats[:-1] if s["media_ms"] > 300]
    assert steady
    assert all(s["speed"] is not None and s["speed"] > 1 for s in steady), steady
    assert all(s["late_ms"] < 500 and not s["shed"] for s in steady)


def test_a_new_source_resolution_mid_stream_rebuilds_the_decoder(clips: Path) -> None:
    first = make_clip(clips / "src_small.flv", "320x240", 2, H264_IRREGULAR[:-6] + ["-force_key_frames", "0,0.7,1.3"])
    second = make_clip(clips / "src_wide.flv", "480x270", 1, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "15"])
    tags = FlvReader().feed(first)
    offset = max(t.timestamp_ms for t in tags) + 40
    joined = bytearray(flv_header(True, True))
    for tag in tags:
        joined += tag.encode()
    for tag in FlvReader().feed(second):
        if tag.kind != FrameKind.DATA:
            joined += type(tag)(tag.kind, tag.timestamp_ms + offset, tag.body).encode()
    out = run_worker(job_for(rung("120p", 160, 120, 150)), bytes(joined))
    assert out.returncode == 0, out.stderr
    r = decode_rendition(out.tracks[0])
    first_pts, first_keys = source_video(first)
    second_pts, second_keys = source_video(second)
    assert (r.width, r.height) == (160, 120)  # the rung keeps its size
    assert r.pts == first_pts + [p + offset for p in second_pts]
    assert r.keyframes == first_keys + [k + offset for k in second_keys]
    assert out.stats[-1]["skipped"] == 0


@pytest.mark.parametrize(("codec", "encoder"), [
    ("hevc", ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=30:scenecut=0"]),
    ("av1", ["-c:v", "libsvtav1", "-preset", "12", "-g", "30", "-svtav1-params", "lp=1"]),
    ("vp9", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30"]),
])
def test_enhanced_flv_sources_are_decoded(clips: Path, codec: str, encoder: list[str]) -> None:
    source = make_clip(clips / f"src_{codec}.flv", "320x240", 2, encoder)
    src_pts, src_keys = source_video(source)
    first = next(video_frame(t.body, t.timestamp_ms) for t in FlvReader().feed(source) if t.kind == FrameKind.VIDEO)
    assert first is not None and first.codec == codec
    out = run_worker(job_for(rung("120p", 160, 120, 150)), source)
    assert out.returncode == 0, out.stderr
    r = decode_rendition(out.tracks[0])
    assert (r.codec, r.width, r.height) == ("h264", 160, 120)
    assert r.pts == src_pts
    assert r.keyframes == src_keys


def test_a_source_that_never_gives_a_picture_is_an_error(clips: Path) -> None:
    source = make_clip(clips / "src_10s.flv", "320x240", 10, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "60"])
    garbled = bytearray(flv_header(True, True))
    for tag in FlvReader().feed(source):
        body = tag.body
        if tag.kind == FrameKind.VIDEO and not tag.is_sequence_header:
            body = body[:5] + b"\x00\x00\x00\x08" + b"\xff" * 8  # every picture is an invalid NAL unit
        garbled += type(tag)(tag.kind, tag.timestamp_ms, bytes(body)).encode()
    out = run_worker(job_for(rung("120p", 160, 120, 150)), bytes(garbled), timeout=60)
    assert out.returncode == 3
    assert out.errors[0]["reason"] == "undecodable"
    assert 0 not in out.tracks


def test_a_source_larger_than_any_codec_level_is_refused_before_its_frames_pile_up(clips: Path) -> None:
    # 8208x4352: 35.7 million pixels, a little over H.264 and HEVC level 6.2's largest picture.
    source = make_clip(clips / "huge.flv", "8208x4352", 0.1, ["-c:v", "libx264", "-preset", "ultrafast"],
                       audio=False)
    out = run_worker(job_for(rung("120p", 160, 120, 150)), source, timeout=60)
    assert out.returncode == 3
    assert out.errors[0]["reason"] == "undecodable"
    assert "8208x4352" in out.errors[0]["message"] and "larger than any codec level" in out.errors[0]["message"]
