"""A pull against hostile sources in this process: each ends its connection with a reason and a retry (never
a stopped pull, never memory that grows with what the source sends), within a deadline to go live, and
redirects are not followed."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from mediaserver.config import PullRelay, RelayConfig
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey
from mediaserver.media.flv_body import build_tag
from mediaserver.media.frames import FrameKind
from mediaserver.rtmp.chunk import chunk_message
from mediaserver.rtmp.messages import MessageType, UserControlEvent, encode_command, encode_user_control
from mediaserver.relay.pull import PullRelays
from mediaserver.remux.flv import flv_header
from support.hostile_rtmp import BAD_AMF_COMMAND, Peer as Source
from support.http import serving

KEY = StreamKey("live", "cam")


def _relays(url: str, connect_timeout: float = 1.0, read_timeout: float = 2.0) -> PullRelays:
    settings = RelayConfig(pull=(PullRelay("live", "cam", url, "always"),), pull_retry_max=0.3)
    return PullRelays(StreamRegistry(), settings, {}, connect_timeout=connect_timeout, read_timeout=read_timeout)


async def _until(predicate, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def _against(source: Source, **timeouts) -> tuple[PullRelays, object]:
    port = await source.start()
    relays = _relays(f"rtmp://127.0.0.1:{port}/live/src", **timeouts)
    relays.start()
    return relays, relays.pulls[KEY]


async def test_a_command_whose_amf_cannot_be_read_ends_the_connection_and_the_pull_retries():
    async def bad_amf(reader, writer) -> None:
        writer.write(BAD_AMF_COMMAND)
        await reader.read(65536)

    source = Source(bad_amf)
    relays, pull = await _against(source)
    try:
        await _until(lambda: source.connections >= 2)
        assert pull.state in ("retrying", "connecting") and "Amf0Error" in pull.last_error, pull.describe()
    finally:
        await relays.close()
        await source.close()


async def test_a_stream_id_no_rtmp_message_can_carry_ends_the_connection_and_the_pull_retries():
    async def huge_stream_id(reader, writer) -> None:
        while data := await reader.read(65536):
            if b"createStream" in data:
                answer = encode_command("_result", 2.0, None, float(2 ** 40))
                writer.write(chunk_message(3, MessageType.COMMAND_AMF0, 0, 0, answer, 128))

    source = Source(huge_stream_id)
    relays, pull = await _against(source)
    try:
        await _until(lambda: source.connections >= 2)
        assert "stream id" in pull.last_error, pull.describe()
    finally:
        await relays.close()
        await source.close()


async def test_a_source_that_floods_pings_and_reads_nothing_is_dropped_not_given_memory():
    async def ping_flood(reader, writer) -> None:
        ping = chunk_message(2, MessageType.USER_CONTROL, 0, 0, encode_user_control(UserControlEvent.PING_REQUEST, 1), 128)
        burst = ping * 4096
        for _ in range(400):  # about 30 MB of pings, each owed a pong; the source never reads one
            writer.write(burst)
            await writer.drain()

    source = Source(ping_flood)
    relays, pull = await _against(source, read_timeout=5.0)
    try:
        await _until(lambda: "reads nothing" in pull.last_error, 20)
        assert pull.state in ("retrying", "connecting"), pull.describe()
    finally:
        await relays.close()
        await source.close()


async def test_a_source_that_trickles_its_handshake_meets_the_deadline_to_go_live():
    async def never_plays(reader, writer) -> None:
        await reader.read(65536)

    source = Source(never_plays, trickle=0.05)  # a byte every 50 ms: each read in time, the whole never
    relays, pull = await _against(source, connect_timeout=0.5, read_timeout=1.0)
    try:
        await _until(lambda: "no playable media within 1.5 s" in pull.last_error, 10)
    finally:
        await relays.close()
        await source.close()


async def test_an_http_flv_source_that_redirects_is_not_followed():
    asked: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        if request.path == "/live/src.flv":
            raise web.HTTPFound("/live/elsewhere.flv")
        return web.Response(body=b"FLV")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    async with serving(app) as port:
        relays = _relays(f"http://127.0.0.1:{port}/live/src.flv")
        pull = relays.pulls[KEY]
        relays.start()
        try:
            await _until(lambda: "redirects" in pull.last_error)
            assert "/live/elsewhere.flv" in pull.last_error and "/live/elsewhere.flv" not in asked
        finally:
            await relays.close()


async def test_a_source_that_plays_a_moment_and_drops_keeps_the_wait_growing():
    aac_config, aac_frame = b"\xaf\x00\x12\x10", b"\xaf\x01" + b"\x21" * 40
    connections: list[int] = []

    async def moment(request: web.Request) -> web.StreamResponse:
        connections.append(1)
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(flv_header(True, False) + build_tag(FrameKind.AUDIO, 0, aac_config)
                         + b"".join(build_tag(FrameKind.AUDIO, 23 * i, aac_frame) for i in range(20)))
        return resp  # half a second of media, then the source closes

    app = web.Application()
    app.router.add_get("/live/src.flv", moment)
    async with serving(app) as port:
        settings = RelayConfig(pull=(PullRelay("live", "cam", f"http://127.0.0.1:{port}/live/src.flv", "always"),),
                               pull_retry_max=1.0)
        relays = PullRelays(StreamRegistry(), settings, {}, connect_timeout=1.0)
        pull = relays.pulls[KEY]
        relays.start()
        try:
            await _until(lambda: len(connections) >= 3)
            assert pull.connects >= 2 and pull._backoff.failures >= 2  # not back to 0.5 s after every moment
        finally:
            await relays.close()


async def test_an_http_flv_body_that_is_not_flv_never_goes_live():
    # Claiming the stream at the first byte of any 200 made a garbage source "live" at every attempt: the
    # webhook told so and the pushes started, for a stream with no frame.
    async def garbage(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        if request.path == "/live/random.flv":
            await resp.write(bytes(range(256)) * 16)
        else:  # a good header, then a tag that never completes
            await resp.write(flv_header(True, True) + b"\x09\x00\xff\xff\x00\x00\x00\x00\x00\x00\x00")
            await asyncio.sleep(5)
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", garbage)
    async with serving(app) as port:
        for path, why in (("random.flv", "MediaError"), ("stalls.flv", "the source sent")):
            relays = _relays(f"http://127.0.0.1:{port}/live/{path}", connect_timeout=0.3, read_timeout=0.5)
            told: list[dict] = []
            relays.listeners.append(told.append)
            pull = relays.pulls[KEY]
            relays.start()
            try:
                await _until(lambda: why in pull.last_error and pull._backoff.failures >= 2)
                assert pull.connects == 0 and relays.registry.get(KEY) is None, pull.describe()
                assert "live" not in [t["state"] for t in told], told
            finally:
                await relays.close()


async def test_a_source_sending_different_garbage_each_time_is_reported_retrying_once():
    async def noise(reader, writer) -> None:
        writer.write(os.urandom(1537 + 1536))
        await reader.read(65536)

    source = Source(noise)
    relays, pull = await _against(source)
    told: list[dict] = []
    relays.listeners.append(told.append)
    try:
        await _until(lambda: source.connections >= 4)
        assert [t["state"] for t in told].count("retrying") == 1, told
    finally:
        await relays.close()
        await source.close()
