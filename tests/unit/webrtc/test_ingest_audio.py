"""Opus to AAC once per stream: AAC frames on the Opus RTP clock, gaps filled, steps back counted again,
the worker thread handing frames to the event loop."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction

import av
import numpy as np

from mediaserver.media import flv_body
from mediaserver.media.aac import parse_audio_specific_config
from mediaserver.webrtc.ingest_audio import (
    AAC_FRAME, AacEncoderChain, OpusToAac, aac_audio_body, aac_sequence_header_body,
)


def opus_packets(seconds: float) -> list[tuple[int, bytes]]:
    """(pts at 48 kHz, packet) of a 440 Hz tone encoded by libopus in 20 ms packets."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format, enc.bit_rate = 48000, "stereo", "s16", 64000
    enc.time_base = Fraction(1, 48000)
    enc.open()
    total = int(48000 * seconds)
    t = np.arange(total) / 48000
    pcm = np.repeat((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 2).reshape(1, -1)
    out = []
    for i in range(0, total, 960):
        frame = av.AudioFrame.from_ndarray(pcm[:, i * 2:(i + 960) * 2].copy(), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, i
        out.extend((p.pts, bytes(p)) for p in enc.encode(frame))
    return out


def test_opus_becomes_aac_frames_on_the_rtp_clock_across_its_wrap():
    chain = AacEncoderChain()
    config = parse_audio_specific_config(chain.asc)
    assert (config.object_type, config.sample_rate, config.channels) == (2, 48000, 2)
    base = 0xFFFF_FFFF - 48000  # unwrapped positions carry on past 2^32
    out = []
    for pts, packet in opus_packets(2.0):
        out += chain.push(base + pts, packet)
    positions = [a.position for a in out]
    assert len(out) >= 85 and all(b - a == AAC_FRAME for a, b in zip(positions, positions[1:]))
    assert positions[-1] > 0xFFFF_FFFF and chain.silence_samples == 0
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = chain.asc
    decoded = sum(f.samples for a in out for f in decoder.decode(av.Packet(a.raw)))
    assert decoded >= 84 * AAC_FRAME


def test_a_gap_is_filled_with_silence_and_a_step_back_counts_again():
    chain = AacEncoderChain()
    packets = opus_packets(1.0)
    out = []
    for pts, packet in packets[:25]:
        out += chain.push(pts, packet)
    for pts, packet in packets[25:]:
        out += chain.push(pts + 9600, packet)  # 200 ms lost (or DTX)
    assert chain.silence_samples == 9600 and chain.restarts == 0
    assert out[-1].position >= 48000 + 9600 - 4 * AAC_FRAME  # without the silence: 9600 earlier
    step_back = chain.push(0, packets[0][1])
    assert chain.restarts == 1 and all(a.position < 3 * AAC_FRAME for a in step_back)


def test_the_flv_bodies_are_aac_sequence_header_and_raw_frames():
    config = flv_body.audio_frame(aac_sequence_header_body(b"\x11\x90"), 0)
    frame = flv_body.audio_frame(aac_audio_body(b"\x21\x00"), 23)
    assert config.is_config and config.codec == "aac" and bytes(config.payload) == b"\x11\x90"
    assert not frame.is_config and bytes(frame.payload) == b"\x21\x00"


async def test_the_worker_thread_delivers_on_the_event_loop_and_a_full_queue_drops():
    loop = asyncio.get_running_loop()
    got: list = []
    done = asyncio.Event()

    def on_output(frames):
        assert asyncio.get_running_loop() is loop
        got.extend(frames)
        if len(got) >= 40:
            done.set()

    worker = OpusToAac(loop, on_output)
    try:
        for pts, packet in opus_packets(1.0):
            worker.push(pts, packet)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        worker.close()
    worker.push(0, b"\xfc")  # after close: ignored
    assert worker.dropped == 0


async def test_a_session_that_never_sends_audio_costs_no_thread():
    loop = asyncio.get_running_loop()

    def running(prefix: str) -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))

    idle = [OpusToAac(loop, lambda frames: None, name=f"idle-{i}") for i in range(20)]  # ICE never connects
    assert running("idle-") == 0
    for worker in idle:
        worker.close()
    worker = OpusToAac(loop, lambda frames: None, name="first-packet")
    try:
        worker.push(0, next(iter(opus_packets(0.1)))[1])
        assert running("first-packet") == 1  # the first packet starts it
    finally:
        worker.close()
