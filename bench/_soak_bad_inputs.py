"""The soak's bad inputs: issue 9's hostile clients, each bounded in time, and what the server made of
them (closed the connection within N s, left it open, answered with a status) noted in the Tally.

Frames and configs that break a stream are injected into a live publisher's stream, so they arrive
mid-stream as they would from a broken encoder; the others open connections of their own.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from _hls_viewers import HttpClient
from _latency import _SET_DATA_FRAME, PublishError, _RtmpProtocol, _wait_event
from _media import TAG_SCRIPT, TAG_VIDEO, FlvTag
from _outputs import OP_CLOSE, open_ws_viewer, ws_client_frame
from _soak_clients import NET_ERRORS, LivePublisher, Tally, Target, publish_session

# ----- crafted media ---------------------------------------------------------------------------------

# An inter frame whose first NALU length prefix (0xFFFFFF00) claims far more than the frame holds.
BAD_NALU_FRAME = bytes([0x27, 0x01, 0, 0, 0]) + b"\xff\xff\xff\x00" + b"\x41\x9a" + bytes(62)
# An AVCDecoderConfigurationRecord whose one SPS claims 0 bytes (then a normal PPS).
ZERO_SPS_CONFIG = bytes([0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x00,
                         0x01, 0x00, 0x04, 0x68, 0xEB, 0xE3, 0xCB])
METADATA = (_SET_DATA_FRAME + b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x02"
            b"\x00\x05width\x00" + struct.pack(">d", 320.0) + b"\x00\x06height\x00" + struct.pack(">d", 240.0)
            + b"\x00\x00\x09")


def huge_command(size: int) -> bytes:
    """An AMF0 FCPublish command whose object holds ~size bytes of numbered keys (as the issue's 15 MB one)."""
    entry = 2 + 7 + 9
    keys = max(1, size // entry)
    body = bytearray(b"\x02\x00\x09FCPublish" + b"\x00" + struct.pack(">d", 9.0) + b"\x03")
    number = b"\x00" + struct.pack(">d", 1.0)
    for i in range(keys):
        body += b"\x00\x07k" + b"%06d" % (i % 1_000_000) + number
    body += b"\x00\x00\x09"
    return bytes(body)


# ----- bad inputs ------------------------------------------------------------------------------------


def tcp_state(s: socket.socket) -> int | None:
    """The kernel's TCP state of a socket (1 established, 7 closed, 8 close-wait: the peer closed)."""
    try:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    except OSError:
        return None


async def held_until_closed(check, hold_s: float, step: float = 0.5) -> float | None:
    """Poll `check()` (True once the server closed) for at most hold_s; seconds it took, or None."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < hold_s:
        if check():
            return loop.time() - start
        await asyncio.sleep(step)
    return None


def closed_note(after: float | None, hold_s: float) -> str:
    return f"still open at {hold_s:.0f} s (we closed)" if after is None else f"closed by server within {_bucket(after)}"


def _bucket(s: float) -> str:
    for limit in (1, 2, 5, 10, 20, 30, 60, 90, 120):
        if s <= limit:
            return f"{limit} s"
    return "more than 120 s"


async def _raw_conn(host: str, port: int, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window scale
    try:
        async with asyncio.timeout(5):
            await asyncio.get_running_loop().sock_connect(s, (host, port))
    except BaseException:
        s.close()
        raise
    return s


def _peer_closed(s: socket.socket) -> bool:
    return tcp_state(s) in (7, 8, None)


class BadInputs:
    """The bad inputs of issue 9, each bounded by `hold_s`; run by name, one at a time or a few at once."""

    KINDS = ("corrupt_nalu", "zero_sps_config", "midstream_metadata", "huge_command", "garbage_midstream",
             "trickled_connect", "http_silent", "http_trickled_head", "ws_close", "flv_never_reads",
             "post_healthz")

    def __init__(self, t: Target, live: dict[str, LivePublisher], tags: list[FlvTag], tally: Tally,
                 rng: random.Random, hold_s: float, huge_command_bytes: int) -> None:
        self.t, self.live, self.tags, self.tally, self.rng = t, live, tags, tally, rng
        self.hold_s = hold_s
        self._huge: bytes | None = None
        self.huge_command_bytes = huge_command_bytes
        self._junk = 0

    async def run(self, kind: str) -> None:
        who = f"bad:{kind}"
        try:
            outcome = await getattr(self, kind)()
            self.tally.note(who, outcome)
        except NET_ERRORS as err:
            self.tally.note(who, "client error", f"{type(err).__name__}: {err}")

    def _victim(self) -> LivePublisher | None:
        return self.live[self.rng.choice(sorted(self.live))] if self.live else None

    async def _status(self, path: str) -> str:
        client = HttpClient(self.t.host, self.t.http_port)
        try:
            status, _, _, _ = await client.get(path, keep_body=False, timeout_s=5)
            return str(status)
        except NET_ERRORS as err:
            return type(err).__name__
        finally:
            client.close()

    async def _inject(self, kind: int, body: bytes, before: str | None, after_s: float = 3.0) -> str:
        victim = self._victim()
        if victim is None:
            return "no live stream"
        paths = [self.t.path("hls", victim.name), f"/{self.t.app}/{victim.name}/cmaf.m3u8"]
        if before:  # packagers running before the bad input arrives
            for p in paths:
                await self._status(p)
        victim.inject.put_nowait((kind, body))
        await asyncio.sleep(after_s)
        return "playlists " + "/".join([await self._status(p) for p in paths])

    async def corrupt_nalu(self) -> str:
        return await self._inject(TAG_VIDEO, BAD_NALU_FRAME, before="packagers")

    async def zero_sps_config(self) -> str:
        return await self._inject(TAG_VIDEO, ZERO_SPS_CONFIG, before=None)

    async def midstream_metadata(self) -> str:
        victim = self._victim()
        if victim is None:
            return "no live stream"
        for _ in range(3):  # three reconnects' worth of fresh metadata
            victim.inject.put_nowait((TAG_SCRIPT, METADATA))
            await asyncio.sleep(0.5)
        return "sent"

    async def huge_command(self) -> str:
        from mediaserver.rtmp.chunk import ChunkEncoder
        from mediaserver.rtmp.client import ClientSession

        if self._huge is None:
            self._huge = huge_command(self.huge_command_bytes)
        loop = asyncio.get_running_loop()
        session = ClientSession()
        async with asyncio.timeout(10):
            transport, proto = await loop.create_connection(lambda: _RtmpProtocol(session), self.t.host,
                                                            self.t.rtmp_port)
        try:
            session.connect(self.t.app, f"rtmp://{self.t.host}:{self.t.rtmp_port}/{self.t.app}")
            proto.flush()
            await _wait_event(proto, ("ConnectResult",))
            # On a chunk stream of its own, so the session's header compression is not disturbed.
            transport.write(ChunkEncoder(session.out_chunk_size).encode(9, 20, 0, 0, self._huge))
            session.create_stream()
            proto.flush()
            try:
                await _wait_event(proto, ("StreamCreated",), timeout_s=self.hold_s)
                return "answered after it"
            except PublishError:
                return "closed by server"
            except TimeoutError:
                return f"no answer within {self.hold_s:.0f} s"
        finally:
            transport.close()

    async def garbage_midstream(self) -> str:
        self._junk += 1
        return await publish_session(self.t, f"soak-junk-{self._junk}", self.tags, min(3.0, self.hold_s), "garbage",
                                     {})

    async def trickled_connect(self) -> str:
        from mediaserver.rtmp.client import ClientSession

        loop = asyncio.get_running_loop()
        s = await _raw_conn(self.t.host, self.t.rtmp_port)
        try:
            session = ClientSession()
            session.connect(self.t.app, f"rtmp://{self.t.host}:{self.t.rtmp_port}/{self.t.app}")
            await loop.sock_sendall(s, session.data_to_send())  # C0 C1
            got = b""
            async with asyncio.timeout(5):
                while len(got) < 1 + 1536 + 1536:
                    chunk = await loop.sock_recv(s, 4096)
                    if not chunk:
                        return "closed during handshake"
                    got += chunk
            session.receive_data(got)
            rest = session.data_to_send()  # C2, then Set Chunk Size and connect
            await loop.sock_sendall(s, rest[:1536])
            start = loop.time()
            for b in rest[1536:]:
                if loop.time() - start > self.hold_s:
                    break
                try:
                    await loop.sock_sendall(s, bytes([b]))
                except OSError:
                    return closed_note(loop.time() - start, self.hold_s)
                if await held_until_closed(lambda: _peer_closed(s), 1.0, 0.25) is not None:
                    return closed_note(loop.time() - start, self.hold_s)
            return closed_note(None, self.hold_s)
        finally:
            s.close()

    async def http_silent(self, count: int = 5) -> str:
        socks = []
        try:
            for _ in range(count):
                socks.append(await _raw_conn(self.t.host, self.t.http_port))
            after = await held_until_closed(lambda: all(_peer_closed(s) for s in socks), self.hold_s)
            return closed_note(after, self.hold_s)
        finally:
            for s in socks:
                s.close()

    async def http_trickled_head(self) -> str:
        loop = asyncio.get_running_loop()
        s = await _raw_conn(self.t.host, self.t.http_port)
        try:
            head = f"GET /{self.t.app}/soak-none.flv HTTP/1.1\r\nHost: {self.t.host}\r\nX-Slow: ".encode()
            start = loop.time()
            for b in head + b"x" * 1000:
                if loop.time() - start > self.hold_s:
                    break
                try:
                    await loop.sock_sendall(s, bytes([b]))
                except OSError:
                    break
                if await held_until_closed(lambda: _peer_closed(s), 1.0, 0.25) is not None:
                    break
            elapsed = loop.time() - start
            return closed_note(elapsed if _peer_closed(s) else None, self.hold_s)
        finally:
            s.close()

    async def ws_close(self) -> str:
        victim = self._victim()
        if victim is None:
            return "no live stream"
        closed = asyncio.get_running_loop().create_future()

        def on_close(v) -> None:
            if not closed.done():
                closed.set_result(None)

        async with asyncio.timeout(5):
            v = await open_ws_viewer(self.t.host, self.t.http_port, self.t.path("ws-flv", victim.name),
                                     on_close=on_close)
        try:
            await asyncio.sleep(min(2.0, self.hold_s))
            if v.transport is None or v.transport.is_closing():
                return "closed before our Close"
            v.transport.write(ws_client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
            try:
                await asyncio.wait_for(asyncio.shield(closed), min(5.0, self.hold_s))
                return "close answered" if v.ended else "connection closed without a Close"
            except TimeoutError:
                return "Close ignored (we closed after 5 s)"
        finally:
            if v.transport is not None:
                v.transport.close()

    async def flv_never_reads(self, count: int = 3) -> str:
        victim = self._victim()
        if victim is None:
            return "no live stream"
        loop = asyncio.get_running_loop()
        socks = []
        try:
            for _ in range(count):
                s = await _raw_conn(self.t.host, self.t.http_port, rcvbuf=4096)
                socks.append(s)
                req = f"GET {self.t.path('flv', victim.name)} HTTP/1.1\r\nHost: {self.t.host}\r\n\r\n"
                await loop.sock_sendall(s, req.encode())
            after = await held_until_closed(lambda: all(_peer_closed(s) for s in socks), self.hold_s)
            return closed_note(after, self.hold_s)
        finally:
            for s in socks:
                s.close()

    async def post_healthz(self) -> str:
        loop = asyncio.get_running_loop()
        s = await _raw_conn(self.t.host, self.t.http_port)
        try:
            await loop.sock_sendall(s, f"POST /healthz HTTP/1.1\r\nHost: {self.t.host}\r\nContent-Length: 0\r\n"
                                       f"Connection: close\r\n\r\n".encode())
            data = b""
            async with asyncio.timeout(5):
                while b"\r\n" not in data:
                    chunk = await loop.sock_recv(s, 4096)
                    if not chunk:
                        break
                    data += chunk
            parts = data.split(b" ", 2)
            return f"HTTP {parts[1].decode(errors='replace')}" if len(parts) > 1 else "no answer"
        finally:
            s.close()
