"""A viewer's play token in LL-HLS playlists and the DASH MPD (edge/cmaf.py): rendered once per change of
the window with a placeholder, the token filled in per viewer; byte for byte what a rendering with the
token gives, and a token that could smuggle lines, tags or attributes refused."""

from __future__ import annotations

import pytest

from mediaserver.config import HlsConfig
from mediaserver.edge import cmaf as cmaf_module
from mediaserver.edge.cmaf import SPLIT_PLAYLISTS, CmafPackager
from mediaserver.errors import UsageError
from mediaserver.hub.gop import GopLimits
from mediaserver.hub.stream import Stream, StreamKey
from mediaserver.hub.subscriber import SlowPolicy
from mediaserver.media.frames import FrameKind
from mediaserver.remux import dash, llhls

from support.codec_clips import codec_clip


class Publisher:
    peer = "127.0.0.1:1"

    def close(self, reason: str) -> None:
        pass


@pytest.fixture(scope="module")
def packager() -> CmafPackager:
    stream = Stream(StreamKey("live", "cam"), GopLimits(), SlowPolicy(), 0.0)
    stream.begin_session(Publisher(), 0.0)
    packager = CmafPackager(stream, HlsConfig())
    stream.add_sink(packager)
    for frame in codec_clip("h264", "aac", seconds=6.0, gop_frames=25):
        if frame.kind == FrameKind.VIDEO:
            stream.publish_video(frame.dts_ms, bytes(frame.body), 0.0)
        elif frame.kind == FrameKind.AUDIO:
            stream.publish_audio(frame.dts_ms, bytes(frame.body), 0.0)
        stream.flush_sinks()
    return packager


TOKENS = ["token=eyJhcHAiOiJsaXZlIn0.c2lnbmF0dXJl", "token=a%26b%3Dc%22d", "token=$x&y<z"]


@pytest.mark.parametrize("query", TOKENS)
def test_a_tokened_playlist_or_mpd_is_what_rendering_with_the_token_gives(packager, query):
    window = packager.window
    for track in ("video", "audio"):
        others = {uri: t for uri, t in SPLIT_PLAYLISTS.items() if t != track}
        direct = llhls.render_media_playlist(window, track, prefix=packager.prefix, query=query,
                                             rendition_reports=others)
        assert packager.media_playlist(track, query) == direct.encode()
    direct = llhls.render_multivariant_playlist(window, video_uri="cmaf-video.m3u8", audio_uri="cmaf-audio.m3u8",
                                                query=query, muxed_uri="cmaf-muxed.m3u8")
    assert packager.multivariant(query) == direct.encode()
    assert packager.mpd(query) == dash.render_mpd(window, now=packager._changed_at, prefix=packager.prefix,
                                                  query=query).encode()


def test_many_viewers_tokens_cost_one_rendering_per_change(packager, monkeypatch):
    renders = []
    real = llhls.render_media_playlist
    monkeypatch.setattr(cmaf_module.llhls, "render_media_playlist",
                        lambda *a, **k: renders.append(k["query"]) or real(*a, **k))
    packager._cache.clear()
    bodies = {packager.media_playlist("video", f"token=viewer{n}") for n in range(50)}
    assert len(bodies) == 50 and len(renders) == 1
    packager.media_playlist("video", "")
    assert len(renders) == 2  # the shared one (no token), once too


@pytest.mark.parametrize("query", ["token=a\nb", 'token=a"b', "token=a#EXT-X-ENDLIST", "token=\ue000"])
def test_a_token_that_could_smuggle_tags_or_attributes_is_refused(packager, query):
    with pytest.raises(UsageError):
        packager.media_playlist("video", query)
