"""The edge's HLS packager: a playlist with a viewer's play token is the shared template filled in, byte for
byte what rendering it for that viewer gives; packagers started late replay the kept history."""

from __future__ import annotations

import asyncio

from mediaserver.config import HlsConfig
from mediaserver.edge.packagers import HlsPackager
from mediaserver.hub.gop import GopLimits
from mediaserver.hub.registry import StreamRegistry
from mediaserver.hub.stream import StreamKey


class Publisher:
    peer = "test"

    def close(self, reason: str) -> None:
        pass


def test_token_playlist_is_the_template_filled_in(av_clip):
    async def scenario() -> None:
        registry = StreamRegistry(limits=GopLimits(history_ms=8000))
        stream = registry.claim_publisher(StreamKey("live", "t"), Publisher())
        for frame in av_clip:
            if frame.kind == 9:
                stream.publish_video(frame.dts_ms, bytes(frame.body), 0.0)
            elif frame.kind == 8:
                stream.publish_audio(frame.dts_ms, bytes(frame.body), 0.0)
        packager = HlsPackager(stream, HlsConfig(segment_duration=1.0))
        packager.replay(stream.history(), stream.gop.newest_dts)
        assert len(packager.window) >= 3, "a late packager lists the kept history at once"
        query = "token=1700000000.a.abc-_DEF"
        filled = packager.playlist(query)
        assert filled == packager._render(query)
        assert filled.count(b"?" + query.encode()) == len(packager.window.listed)
        assert packager.playlist() == packager._render("") and b"?" not in packager.playlist()

    asyncio.run(scenario())
