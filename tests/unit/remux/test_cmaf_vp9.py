"""VP9 in CMAF: a vp09 sample entry with the vpcC record the FLV sequence start carries, the picture size
from the first keyframe, the codecs string vp09.PP.LL.DD; from an ffmpeg clip and from a transcoder rung."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
from support.codec_clips import codec_clip

from mediaserver.media.flv_body import video_frame
from mediaserver.media.frames import FrameKind
from mediaserver.remux.cmaf import VIDEO, CmafSegment, CmafSegmenter
from mediaserver.remux.flv import FlvReader
from mediaserver.transcode import wire

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_700_000_000.0


def video_segments(frames) -> list[CmafSegment]:
    segmenter = CmafSegmenter()
    items = []
    for frame in frames:
        items += segmenter.push(frame, NOW + frame.dts_ms / 1000)
    items += segmenter.finish()
    return [i for i in items if isinstance(i, CmafSegment) and i.track == VIDEO]


def decode_track(segments: list[CmafSegment]) -> tuple[str, int, int, list[bool], int]:
    data = segments[0].init.data + b"".join(s.data for s in segments)
    keyframes, decoded = [], 0
    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        name, width, height = stream.codec_context.name, stream.codec_context.width, stream.codec_context.height
        for packet in container.demux(stream):
            if packet.size:
                keyframes.append(packet.is_keyframe)
                decoded += len(packet.decode())
    return name, width, height, keyframes, decoded


def test_an_ffmpeg_vp9_clip_plays_from_cmaf() -> None:
    frames = codec_clip("vp9", "opus", gop_frames=25)
    sent = [f for f in frames if f.kind == FrameKind.VIDEO and not f.is_config]
    segments = video_segments(frames)
    init = segments[0].init
    assert init.codec == "vp9"
    assert init.codec_string == "vp09.00.20.08"  # profile 0, level 2 (320x240 is over level 1.1), 8 bits
    assert (init.width, init.height) == (320, 240)
    assert len(segments) >= 2 and all(s.independent for s in segments)  # cut at keyframes
    name, width, height, keyframes, decoded = decode_track(segments)
    assert name in ("vp9", "libvpx-vp9")
    assert (width, height) == (320, 240)
    assert decoded == len(sent)
    assert keyframes == [f.keyframe for f in sent]


def test_a_transcoded_vp9_rung_plays_from_cmaf() -> None:
    clip = codec_clip("h264", "aac", seconds=2.0, gop_frames=25)
    source = bytearray(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
    for frame in clip:
        source += frame.tag
    job = {"stream": "live/t", "rungs": [{"label": "120p", "width": 160, "height": 120, "video_kbps": 150,
                                          "codec": "vp9", "preset": "8", "threads": 1}], "watermark": None}
    proc = subprocess.run([sys.executable, "-m", "mediaserver.transcode.worker", "--job", json.dumps(job)],
                          input=bytes(source), capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr.decode()
    tags = [m.payload for m in wire.MessageReader().feed(proc.stdout) if m.kind == wire.TAG and m.track == 0]
    frames = [video_frame(t[11:-4], int.from_bytes(t[4:7], "big")) for t in tags]
    assert frames[0] is not None and frames[0].is_config and frames[0].codec == "vp9"
    segments = video_segments([f for f in frames if f is not None])
    assert segments[0].init.codec_string.startswith("vp09.00.")
    assert (segments[0].init.width, segments[0].init.height) == (160, 120)
    name, width, height, keyframes, decoded = decode_track(segments)
    assert (width, height) == (160, 120)
    source_keys = [f.keyframe for f in clip if f.kind == FrameKind.VIDEO and not f.is_config and not f.is_end]
    assert decoded == len(source_keys)
    assert keyframes == source_keys  # keyframes where the source had them


def test_flv_reader_round_trip_of_a_vp9_sequence_start() -> None:
    frames = codec_clip("vp9", None)
    config = next(f for f in frames if f.kind == FrameKind.VIDEO and f.is_config)
    assert bytes(config.payload)[:4] == b"\x01\x00\x00\x00"  # vpcC version 1, flags 0, as ffmpeg writes it
    assert FlvReader().feed(b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x00" + config.tag)[0].body == bytes(config.body)
