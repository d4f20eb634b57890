"""A publisher's reads pause while nobody waits for its frames (hub/pacing.py, RtmpConnection.data_received):
for the wide unwatched window with no consumer at all or only a recorder, and a first viewer resumes reading at
once; a viewer or a packager that serves frames as they come keeps reads prompt on an idle loop. Driven through
the server's own connection object with a transport that records pause_reading/resume_reading."""

from __future__ import annotations

import asyncio

from mediaserver.cli import build_registry
from mediaserver.config import Config, RtmpConfig
from mediaserver.edge.cmaf import CmafPackager
from mediaserver.record.recorder import Recorder
from mediaserver.rtmp import server as server_module
from mediaserver.rtmp.server import RtmpConnection, RtmpServer
from support.codec_clips import codec_clip
from support.rtmp_bytes import StubTransport, published, publishing_client


class WaitingSink:
    """A sink that serves frames as they come (as a transcoder's input does)."""

    def on_frame(self, frame) -> None:
        pass

    def on_discontinuity(self) -> None:
        pass

    def on_end(self) -> None:
        pass


class IdleGauge:
    def busy(self) -> float:
        return 0.0


def publisher_reads() -> tuple[list[bytes], list[bytes]]:
    """(handshake and publish command reads, one read per media message) of a short H.264 + AAC clip."""
    client, setup = publishing_client("live", "pause")
    reads = []
    for frame in codec_clip("h264", "aac", seconds=1.0, gop_frames=10):
        if frame.kind.name == "VIDEO":
            client.send_video(frame.dts_ms, bytes(frame.body))
        elif frame.kind.name == "AUDIO":
            client.send_audio(frame.dts_ms, bytes(frame.body))
        else:
            continue
        reads.append(client.data_to_send())
    return setup, reads


async def publishing(config: Config) -> tuple[RtmpConnection, StubTransport, list[bytes]]:
    setup, reads = publisher_reads()
    server = RtmpServer(config.rtmp, build_registry(config))
    conn = RtmpConnection(server, 1)
    transport = StubTransport()
    await published(conn, transport, setup)
    return conn, transport, reads


def feed_until_paused(conn: RtmpConnection, transport: StubTransport, reads: list[bytes]) -> int:
    for n, data in enumerate(reads):
        if transport.paused:
            return n
        conn.data_received(data)
    return len(reads)


async def test_an_unwatched_publisher_pauses_and_a_first_viewer_resumes_it_at_once():
    conn, transport, reads = await publishing(Config())
    assert feed_until_paused(conn, transport, reads) < len(reads) and transport.paused
    stream = conn.stream
    assert stream is not None
    stream.subscribe("flv", "viewer", 0.0)
    assert not transport.paused and transport.resumes == 1, "a first viewer reads the publisher at once"
    conn.close("test")


async def test_a_stream_only_recorded_pauses_like_an_unwatched_one(tmp_path):
    conn, transport, reads = await publishing(Config())
    stream = conn.stream
    assert stream is not None
    stream.add_sink(Recorder(stream.key, tmp_path))
    assert feed_until_paused(conn, transport, reads) < len(reads) and transport.paused
    conn.close("test")


async def publishing_on_an_idle_loop(monkeypatch, config: Config):
    # The load gauge is this process's CPU share, which the test's own clip encoding drives up: an idle loop.
    monkeypatch.setattr(server_module, "GAUGE", IdleGauge())
    conn, transport, reads = await publishing(config)
    assert conn.stream is not None
    return conn, transport, reads, conn.stream


async def test_a_packager_serving_frames_as_they_come_keeps_reads_prompt_on_an_idle_loop(monkeypatch):
    conn, transport, reads, stream = await publishing_on_an_idle_loop(monkeypatch, Config())
    stream.add_sink(WaitingSink())
    assert feed_until_paused(conn, transport, reads) == len(reads) and not transport.paused
    conn.close("test")


async def test_the_cmaf_packager_pauses_reads_until_just_before_its_next_part_ends(monkeypatch):
    config = Config()
    conn, transport, reads, stream = await publishing_on_an_idle_loop(monkeypatch, config)
    packager = CmafPackager(stream, config.hls)
    stream.add_sink(packager)
    loop = asyncio.get_running_loop()
    pauses = 0
    for data in reads:
        conn.data_received(data)
        if transport.paused:
            pauses += 1
            due_s = (stream.output_due_ms() - stream.gop.newest_dts) / 1000
            wait_s = conn._resume_tick - loop.time()
            assert 0 < wait_s <= due_s, "reading resumes before the frame that ends the part can arrive"
            conn._resume_reading()
    assert pauses >= 3, "between part ends, reads merge"
    assert packager.window.tracks, "parts came out"
    conn.close("test")


async def test_fixed_merging_pauses_even_a_watched_publisher():
    config = Config(rtmp=RtmpConfig(merge_mode="fixed"))
    conn, transport, reads = await publishing(config)
    stream = conn.stream
    assert stream is not None
    stream.subscribe("flv", "viewer", 0.0)
    assert feed_until_paused(conn, transport, reads) < len(reads) and transport.paused
    conn.close("test")


class HeldTransport(StubTransport):
    """A paused publisher's socket: what its peer sent meanwhile arrives only once reading resumes."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[bytes] = []
        self.conn: RtmpConnection | None = None

    def resume_reading(self) -> None:
        super().resume_reading()
        pending, self.pending = self.pending, []
        for data in pending:
            asyncio.get_running_loop().call_soon(self.conn.data_received, data)


async def test_a_publisher_restarting_at_once_is_not_refused_for_its_paused_old_session():
    # OBS's stop then start: the old session's unpublish sits unread while its reads are paused.
    _, reads = publisher_reads()
    config = Config()
    server = RtmpServer(config.rtmp, build_registry(config))
    old = RtmpConnection(server, 1)
    held = HeldTransport()
    held.conn = old
    client, setup = publishing_client("live", "pause")
    await published(old, held, setup)
    assert feed_until_paused(old, held, reads) < len(reads) and held.paused
    client.unpublish()
    held.pending.append(client.data_to_send())  # FCUnpublish, deleteStream: not read yet

    new = RtmpConnection(server, 2)
    new.connection_made(StubTransport())
    _, setup2 = publishing_client("live", "pause")
    for data in setup2:
        new.data_received(data)  # not published(): its answer waits for the old session to be heard out
    for _ in range(50):
        await asyncio.sleep(0.002)
        if new.stream is not None or new._closing:
            break
    assert new.stream is not None and not new._closing, "the new session takes the name its old one left"
    assert old.stream is None
    new.close("test")
    old.close("test")
