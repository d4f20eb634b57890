"""The media side of WHEP without a network: AAC -> Opus on the stream's timeline, and one set of RTP payloads
per frame shared by every viewer of a stream, cut as its codec's RTP payload format says."""

from __future__ import annotations

import av
import numpy as np

from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media import h264, hevc
from mediaserver.media.frames import FrameKind
from mediaserver.webrtc.feeds import StreamFeed
from mediaserver.webrtc.h265_rtp import NAL_AP, NAL_FU
from mediaserver.webrtc.opus_feed import OPUS_FRAME, OpusEncoder
from support.codec_clips import codec_clip, config_frame, media_frames


def aac_frames(seconds: float = 1.0, rate: int = 44100):
    """(AudioSpecificConfig, [raw AAC access units]) of a tone, encoded with PyAV."""
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = rate, "stereo", "fltp", 96000
    enc.open()
    units, t = [], 0
    total = int(seconds * rate)
    while t < total:
        n = enc.frame_size
        tone = np.sin(2 * np.pi * 440 * (np.arange(t, t + n) / rate)).astype(np.float32) * 0.3
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, t
        units += [bytes(p) for p in enc.encode(frame)]
        t += n
    units += [bytes(p) for p in enc.encode(None)]
    return bytes(enc.extradata), units


def test_aac_becomes_20_ms_opus_packets_on_the_streams_timeline_and_resyncs_after_a_jump():
    config, units = aac_frames(1.0)
    encoder = OpusEncoder()
    encoder.configure(config)
    pts: list[int] = []
    for i, unit in enumerate(units):
        pts += [p.pts for p in encoder.encode(unit, 5000 + round(i * 1024 / 44.1))]
    assert 40 <= len(pts) <= 52
    steps = {b - a for a, b in zip(pts, pts[1:])}
    assert steps == {OPUS_FRAME}
    assert abs(pts[0] - 5000 * 48) < 48 * 30, "the first packet sits at the first AAC frame's time"
    after = []
    for i, unit in enumerate(units[:20]):  # the publisher came back 60 s later
        after += [p.pts for p in encoder.encode(unit, 65000 + round(i * 1024 / 44.1))]
    assert after and abs(after[0] - 65000 * 48) < 48 * 50
    assert encoder.encode(b"\xff\x00garbage", 70000) == [] and encoder.errors >= 0
    assert encoder.cpu_s > 0


class Pub:
    peer = "test"

    def close(self, reason):
        pass


async def test_every_viewer_of_a_stream_gets_the_same_rtp_payloads_for_a_frame():
    registry = StreamRegistry()
    stream = registry.claim_publisher(StreamKey("live", "s"), Pub())
    sps = bytes([0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5, 0xC0, 0x44, 0x00])
    pps = bytes([0x68, 0xCE, 0x3C, 0x80])
    stream.publish_video(0, bytes([0x17, 0, 0, 0, 0]) + h264.build_avc_config([sps], [pps]), 0.0)
    idr = bytes([0x65, 0x88, 0x84])
    frame = stream.publish_video(40, bytes([0x17, 1, 0, 0, 0]) + len(idr).to_bytes(4, "big") + idr, 0.0)
    feed = StreamFeed(stream)
    first, second = feed.rtp_of(frame), feed.rtp_of(frame)
    assert first is second and first.time == 40 * 90 and first.keyframe
    stap = first.payloads[0]
    assert len(first.payloads) == 1 and stap[0] & 0x1F == 24, "SPS, PPS and the small IDR in one STAP-A"
    assert stap[3:3 + len(sps)] == sps, "the IDR carries the SPS and PPS in band"
    assert feed.rtp_of(stream.publish_video(80, bytes([0x27, 1, 0, 0, 0, 0, 0, 0, 9]) + b"\x41" * 4, 0.0)) is None


async def test_an_hevc_stream_is_sent_as_h265_rtp_payloads_with_its_parameter_sets_on_keyframes():
    frames = codec_clip("hevc", None, seconds=1.0, gop_frames=10)
    stream = StreamRegistry().claim_publisher(StreamKey("live", "h"), Pub())
    config = config_frame(frames, FrameKind.VIDEO)
    stream.publish_video(0, bytes(config.body), 0.0)
    feed = StreamFeed(stream)
    parsed = hevc.parse_hevc_config(config.payload)
    key, delta = media_frames(frames, FrameKind.VIDEO)[:2]
    sent = feed.rtp_of(stream.publish_video(key.dts_ms, bytes(key.body), 0.0))
    assert sent.keyframe and sent.time == key.pts_ms * 90
    ap = sent.payloads[0]
    assert ap[0] >> 1 & 0x3F == NAL_AP, "VPS, SPS and PPS aggregated in front of the IRAP picture"
    assert ap[4:4 + len(parsed.vps[0])] == parsed.vps[0]
    assert all(p[0] >> 1 & 0x3F == NAL_FU and len(p) <= 1300 for p in sent.payloads[1:])
    later = feed.rtp_of(stream.publish_video(delta.dts_ms, bytes(delta.body), 0.0))
    assert not later.keyframe and all(p[0] >> 1 & 0x3F != NAL_AP for p in later.payloads)
