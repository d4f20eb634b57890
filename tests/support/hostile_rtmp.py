"""A hostile RTMP server on loopback for the relays' tests: the handshake, then whatever a test makes it do."""

from __future__ import annotations

import asyncio
import os

from mediaserver.rtmp.chunk import chunk_message
from mediaserver.rtmp.messages import MessageType
from support.rtmp_target import LoopbackServer

BAD_AMF_COMMAND = chunk_message(3, MessageType.COMMAND_AMF0, 0, 0, b"\x02\x00\x07_result\x00\x3f\xf0", 128)
"""A command whose AMF cannot be read: "_result", then 2 of a number's 8 bytes."""


class Peer(LoopbackServer):
    """The server side of RTMP on loopback, as a hostile source or target: the handshake (at once, or
    `trickle` s per byte), then `behave(reader, writer)`."""

    def __init__(self, behave, trickle: float = 0.0) -> None:
        super().__init__()
        self.behave = behave
        self.trickle = trickle

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            c0c1 = await reader.readexactly(1537)
            answer = b"\x03" + bytes(8) + os.urandom(1528) + c0c1[1:]
            if self.trickle:
                for i in range(len(answer)):
                    writer.write(answer[i:i + 1])
                    await asyncio.sleep(self.trickle)
            else:
                writer.write(answer)
            await reader.readexactly(1536)
            await self.behave(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
