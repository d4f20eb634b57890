"""AAC helpers: AudioSpecificConfig and ADTS, checked against ffmpeg's AAC encoder and ADTS muxer."""

from __future__ import annotations

import io

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediaserver.errors import MediaError
from mediaserver.media.aac import (
    AacConfig,
    adts_header,
    build_audio_specific_config,
    parse_adts_header,
    parse_audio_specific_config,
)


def lc(rate: int, index: int, channels: int, config: int | None = None, samples: int = 1024) -> AacConfig:
    return AacConfig(2, rate, index, channels, channels if config is None else config, samples, output_sample_rate=rate)


# (name, AudioSpecificConfig hex, parsed config, whether build_audio_specific_config gives the same bytes)
ASC_TABLE = [
    ("LC 44.1 kHz stereo", "1210", lc(44100, 4, 2), True),
    ("LC 48 kHz mono", "1188", lc(48000, 3, 1), True),
    ("LC 22.05 kHz stereo", "1390", lc(22050, 7, 2), True),
    ("LC 48 kHz 7.1 (config 7 is 8 channels)", "11b8", lc(48000, 3, 8, config=7), True),
    ("LC 48 kHz, 960-sample frames", "1194", lc(48000, 3, 2, samples=960), True),
    ("LC explicit 12345 Hz", "1780181c90", lc(12345, 15, 2), True),
    ("ffmpeg LC with the implicit-SBR sync extension", "121056e500", lc(44100, 4, 2), False),
    (
        "HE-AAC explicit: 24 kHz core, 48 kHz out",
        "2b118800",
        AacConfig(2, 24000, 6, 2, 2, 1024, sbr=True, output_sample_rate=48000),
        False,
    ),
    (
        "HE-AACv2 explicit: mono core with PS",
        "eb098800",
        AacConfig(2, 24000, 6, 1, 1, 1024, sbr=True, ps=True, output_sample_rate=48000),
        False,
    ),
    ("escaped object type 42", "f94840", AacConfig(42, 44100, 4, 2, 2, 1024, output_sample_rate=44100), False),
    ("AAC-LD 48 kHz", "b990", AacConfig(23, 48000, 3, 2, 2, 512, output_sample_rate=48000), True),
]


@pytest.mark.parametrize("asc_hex, config, rebuilds", [c[1:] for c in ASC_TABLE], ids=[c[0] for c in ASC_TABLE])
def test_audio_specific_config_table(asc_hex: str, config: AacConfig, rebuilds: bool) -> None:
    assert parse_audio_specific_config(bytes.fromhex(asc_hex)) == config
    if rebuilds:
        assert build_audio_specific_config(config).hex() == asc_hex


def test_codec_strings_name_the_signalled_object_type() -> None:
    configs = {c[0]: parse_audio_specific_config(bytes.fromhex(c[1])) for c in ASC_TABLE}
    assert configs["LC 44.1 kHz stereo"].codec_string == "mp4a.40.2"
    assert configs["HE-AAC explicit: 24 kHz core, 48 kHz out"].codec_string == "mp4a.40.5"
    assert configs["HE-AACv2 explicit: mono core with PS"].codec_string == "mp4a.40.29"


@pytest.mark.parametrize(
    "asc_hex, message",
    [
        ("", "truncated"),
        ("12", "truncated"),
        ("0210", "object type 0"),
        ("16b0", "samplingFrequencyIndex 13 is reserved"),
        ("1240", "channelConfiguration 8 is reserved"),
        ("1780", "truncated: it ends while reading samplingFrequency"),
        ("178000000010", "0 Hz"),
        ("2b11", "truncated"),
    ],
    ids=["empty", "one byte", "null object", "reserved rate", "reserved channels", "cut explicit rate", "zero rate", "cut SBR"],
)
def test_malformed_audio_specific_config_raises_media_error(asc_hex: str, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_audio_specific_config(bytes.fromhex(asc_hex))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=16))
def test_random_bytes_as_audio_specific_config_give_a_config_or_media_error(data: bytes) -> None:
    try:
        config = parse_audio_specific_config(data)
    except MediaError:
        return
    assert config.sample_rate > 0 and config.frame_samples in (480, 512, 960, 1024)


# -- ADTS ------------------------------------------------------------------------------------------


def encode_with_ffmpeg(rate: int, layout: str, frames: int = 6) -> tuple[bytes, list[bytes], bytes]:
    """(AudioSpecificConfig, raw AAC frames, ffmpeg's own ADTS file) for a short silent clip."""
    out_buf = io.BytesIO()
    with av.open(out_buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout=layout)
        silence = av.AudioFrame(format="fltp", layout=layout, samples=1024)
        silence.sample_rate = rate
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        raw = []
        for i in range(frames):
            silence.pts = i * 1024
            for packet in stream.encode(silence):
                raw.append(bytes(packet))
                out.mux(packet)
        for packet in stream.encode(None):
            raw.append(bytes(packet))
            out.mux(packet)
        asc = bytes(stream.codec_context.extradata)
    return asc, raw, out_buf.getvalue()


@pytest.mark.parametrize(
    "rate, layout", [(44100, "stereo"), (48000, "mono"), (22050, "stereo"), (8000, "mono"), (96000, "5.1")]
)
def test_adts_stream_matches_ffmpegs_adts_muxer_byte_for_byte(rate: int, layout: str) -> None:
    asc, raw_frames, ffmpeg_adts = encode_with_ffmpeg(rate, layout)
    config = parse_audio_specific_config(asc)
    ours = b"".join(adts_header(config, len(f)) + f for f in raw_frames)
    assert ours == ffmpeg_adts


def test_adts_stream_decodes_with_the_configured_rate_and_channels() -> None:
    asc, raw_frames, _ = encode_with_ffmpeg(48000, "stereo", frames=20)
    config = parse_audio_specific_config(asc)
    ours = b"".join(adts_header(config, len(f)) + f for f in raw_frames)
    decoded = 0
    with av.open(io.BytesIO(ours), format="aac") as container:
        stream = container.streams.audio[0]
        for packet in container.demux(stream):
            for frame in packet.decode():
                assert (frame.sample_rate, frame.layout.nb_channels) == (48000, 2)
                decoded += 1
    assert decoded == len(raw_frames)


@pytest.mark.parametrize("asc_hex", ["1210", "1188", "11b8", "2b118800", "eb098800"])
def test_adts_header_round_trips_through_the_adts_parser(asc_hex: str) -> None:
    config = parse_audio_specific_config(bytes.fromhex(asc_hex))
    header = parse_adts_header(adts_header(config, 371))
    assert header.frame_length == 378 and header.header_size == 7
    core = header.config
    assert (core.object_type, core.sample_rate, core.channel_config) == (
        config.object_type, config.sample_rate, config.channel_config,
    )


def test_he_aac_is_written_as_its_lc_core() -> None:
    config = parse_audio_specific_config(bytes.fromhex("2b118800"))
    header = adts_header(config, 100)
    assert header[2] >> 6 == 1  # profile = object type 2 - 1
    assert (header[2] >> 2) & 0x0F == 6  # 24 kHz, the core rate


@pytest.mark.parametrize(
    "asc_hex, raw_len, message",
    [
        ("b990", 100, "object type 23 cannot be carried in ADTS"),
        ("1180", 100, "program config element"),
        ("1780181c90", 100, "not in the table"),
        ("1210", 0, "does not fit ADTS"),
        ("1210", 8185, "does not fit ADTS"),
    ],
    ids=["AAC-LD", "PCE", "explicit rate", "empty frame", "frame too big"],
)
def test_adts_header_refuses_what_adts_cannot_say(asc_hex: str, raw_len: int, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        adts_header(parse_audio_specific_config(bytes.fromhex(asc_hex)), raw_len)


def test_largest_adts_frame_is_accepted() -> None:
    header = parse_adts_header(adts_header(parse_audio_specific_config(b"\x12\x10"), 8184))
    assert header.frame_length == 8191


@pytest.mark.parametrize(
    "data, message",
    [(b"\xff\xf1\x50", "truncated"), (b"\x00" * 7, "syncword"), (bytes.fromhex("fff17c8003dffc"), "index 15")],
)
def test_malformed_adts_header_raises_media_error(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        parse_adts_header(data)
