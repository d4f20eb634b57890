"""The seed corpus of bench/fuzz.py: small valid inputs per target, cut from what ffmpeg really writes.

Run once (`python -m bench.fuzz --make-corpus`); the files are kept in tests/fuzz/corpus/<target>/ and
replayed by tests/fuzz/test_fuzz_corpus.py. Regression inputs for fixed crashes live there too, named
`regress-*`, and are never overwritten.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

MAX_SEED = 1500
"""Bytes per seed file: enough for headers and a frame's start, small enough to keep the corpus a few KB."""


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _encode(video: list[str], audio: list[str], out: Path) -> bytes:
    cmd = [_ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", "testsrc2=size=64x64:rate=10"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", "0.3", *video, *audio, "-f", "flv", str(out)]
    if not video:
        cmd[cmd.index("-t"):cmd.index("-t")] = ["-vn"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    return out.read_bytes()


def _publish_sequence(video_tags: list, audio_tags: list, play: bool = False) -> bytes:
    """What an OBS-like client sends after its handshake: connect, publish (or play), metadata, media."""
    from mediaserver.rtmp.client import ClientSession
    from mediaserver.rtmp.events import PublishRequested, PlayRequested
    from mediaserver.rtmp.session import ServerSession

    server = ServerSession(random_bytes=lambda n: bytes(n))
    client = ClientSession(random_bytes=lambda n: bytes(n))
    sent = bytearray()

    def transfer() -> None:
        for _ in range(20):
            a, b = client.data_to_send(), server.data_to_send()
            if not a and not b:
                return
            if a:
                sent.extend(a)
                server.receive_data(a)
            if b:
                client.receive_data(b)
            for event in server.events():
                if isinstance(event, PublishRequested):
                    server.accept_publish(event.request_id)
                elif isinstance(event, PlayRequested):
                    server.accept_play(event.request_id)

    client.connect("live", "rtmp://127.0.0.1/live")
    if play:
        client.play("cam")
        transfer()
    else:
        client.publish("cam?token=abc")
        transfer()
        client.send_metadata({"width": 64.0, "height": 64.0, "videocodecid": 7.0, "encoder": "Lavf"})
        for tag in video_tags[:2] + audio_tags[:2]:
            (client.send_video if tag.kind == 9 else client.send_audio)(tag.timestamp_ms, tag.body[:400])
        client.unpublish()
        transfer()
    return bytes(sent[1 + 1536 + 1536 :])  # after C0 C1 C2


def make_corpus(corpus: Path) -> None:
    from mediaserver.media import aac, hevc
    from mediaserver.media.amf0 import encode
    from mediaserver.remux.cmaf import init_name, part_name, segment_name
    from mediaserver.remux.flv import FlvReader

    work = Path(tempfile.mkdtemp(prefix="fuzz-corpus-"))
    try:
        clips = {
            "h264_aac": _encode(["-c:v", "libx264", "-preset", "veryfast", "-g", "3"], ["-c:a", "aac"], work / "a.flv"),
            "hevc_opus": _encode(["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error"],
                                 ["-c:a", "libopus"], work / "b.flv"),
            "av1": _encode(["-c:v", "libsvtav1", "-preset", "12"], [], work / "c.flv"),
        }
        seeds: dict[str, dict[str, bytes]] = {}

        def add(target: str, name: str, data: bytes, limit: int = MAX_SEED) -> None:
            seeds.setdefault(target, {})[name] = data[:limit]

        for clip, flv in clips.items():
            reader = FlvReader()
            tags = reader.feed(flv)
            video = [t for t in tags if t.kind == 9]
            audio = [t for t in tags if t.kind == 8]
            add("flv_reader", f"{clip}.flv", flv[:MAX_SEED])
            for i, tag in enumerate(tags[:4]):
                selector = {9: 0, 8: 1, 18: 2}[tag.kind]
                add("flv_body", f"{clip}-{i}", bytes([selector]) + tag.body)
            for tag in tags:
                if tag.kind == 18:
                    add("amf0", f"{clip}-metadata", tag.body)
            config = video[0].body if video else b""
            if clip == "h264_aac":
                record = config[5:]
                add("h264", "avcC", record)
                sps_len = int.from_bytes(record[6:8], "big")
                add("h264", "sps", record[8 : 8 + sps_len])
                add("h264", "keyframe-avcc", video[1].body[5:])
                add("aac", "asc", audio[0].body[2:])
                asc = aac.parse_audio_specific_config(audio[0].body[2:])
                add("aac", "adts", aac.adts_header(asc, 100) + b"\x00" * 8)
                add("session", "publish-h264-aac", _publish_sequence(video, audio))
                add("session", "play", _publish_sequence([], [], play=True))
                add("chunk", "publish-h264-aac", bytes([127]) + _publish_sequence(video, audio))
            elif clip == "hevc_opus":
                record = config[5:]  # Enhanced RTMP: 1 byte + FourCC, then hvcC
                add("hevc", "hvcC", record, limit=8192)  # x265 puts a long info SEI in it
                add("hevc", "sps", hevc.parse_hevc_config(record).sps[0])
                add("opus", "opushead", audio[0].body[5:] if audio[0].body[0] >> 4 == 9 else audio[0].body[1:])
                media = [t for t in audio[1:] if t.body[0] >> 4 == 9 and t.body[0] & 0x0F == 1]
                if media:
                    add("opus", "packet", media[0].body[5:])
                add("session", "publish-hevc-opus", _publish_sequence(video, audio))
            else:
                add("av1", "av1C", config[5:])
                add("av1", "frame-obus", video[1].body[5:] if len(video) > 1 else b"")
        add("amf0", "connect", encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "fpad": False,
                                                      "capabilities": 15.0, "audioCodecs": 3191.0}))
        add("amf0", "onstatus", encode("onStatus", 0.0, None, {"level": "status", "code": "NetStream.Play.Start"}))
        add("llhls_query", "msn-part", b"_HLS_msn=12&_HLS_part=3\n" + part_name("video", 12, 3).encode())
        add("llhls_query", "msn", b"_HLS_msn=5&token=abc\n" + segment_name("audio", 5).encode())
        add("llhls_query", "init", b"\n" + init_name("video", 2).encode())
        add("http_head", "blocking-reload", b"GET /live/cam/cmaf-muxed.m3u8?_HLS_msn=12&_HLS_part=3 HTTP/1.1\r\n"
            b"Host: 127.0.0.1:8080\r\nConnection: keep-alive\r\n\r\n")
        add("http_head", "browser", b"GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: media.example.com\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\nOrigin: https://p.example\r\n"
            b"If-None-Match: \"ab-3\"\r\nSec-Fetch-Mode: cors\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n")
        add("http_head", "vod-range", b"GET /vod/Ab3_x.mp4 HTTP/1.1\r\nRange: bytes=0-99\r\nIf-Range: \"1-2\"\r\n\r\n")

        for target, files in seeds.items():
            directory = corpus / target
            directory.mkdir(parents=True, exist_ok=True)
            for old in directory.glob("seed-*"):
                old.unlink()
            for name, data in files.items():
                (directory / f"seed-{name}").write_bytes(data)
            print(f"{target:12} {len(files)} seeds, {sum(map(len, files.values()))} bytes")
    finally:
        shutil.rmtree(work, ignore_errors=True)
