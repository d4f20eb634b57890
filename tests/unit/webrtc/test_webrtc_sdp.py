"""The offer checks run before a peer connection is built: what a browser sends passes, the rest gets a reason."""

from __future__ import annotations

import pytest

from mediaserver.webrtc.sdp import (
    MAX_CANDIDATES, MAX_MEDIA_SECTIONS, SdpError, av1_profiles, h265_profiles, parse_offer, playback_problem, receivable_video,
)

CHROME_LIKE = "\r\n".join([
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102", "c=IN IP4 0.0.0.0", "a=ice-ufrag:abcd", "a=ice-pwd:0123456789abcdefghijkl",
    "a=fingerprint:sha-256 AA:BB", "a=setup:actpass", "a=mid:0", "a=recvonly",
    "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", "a=mid:1", "a=recvonly", "a=rtpmap:111 opus/48000/2",
    "",
])


def test_a_browser_like_offer_parses_into_its_sections_and_codecs():
    offer = parse_offer(CHROME_LIKE)
    assert [(s.kind, s.direction) for s in offer.sections] == [("video", "recvonly"), ("audio", "recvonly")]
    assert set(offer.sections[0].codecs) == {"vp8", "rtx", "h264"}
    assert "opus" in offer.sections[1].codecs
    assert playback_problem(offer, "h264", "aac") is None


@pytest.mark.parametrize("text, reason", [
    ("", "v=0"),
    ("hello", "v=0"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "no media section"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "fingerprint"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video nine\r\n", "malformed media line"),
    ("v=0\r\n" + "a=x\r\n" * 3000, "lines"),
    ("v=0\x00", "NUL"),
])
def test_what_is_not_an_offer_is_refused_with_a_reason(text, reason):
    with pytest.raises(SdpError, match=reason):
        parse_offer(text)


def with_candidates(text: str, n: int) -> str:
    """The offer with n host candidates in its first section (a browser's offer has 2-20)."""
    lines = "".join(f"a=candidate:{i} 1 udp 2122260223 10.0.{i // 250}.{i % 250 + 1} {50000 + i} typ host\r\n"
                    for i in range(n))
    return text.replace("a=mid:0\r\n", "a=mid:0\r\n" + lines, 1)


def test_an_offer_with_more_ice_candidates_than_any_client_sends_is_refused_before_aiortc_adds_them():
    assert parse_offer(with_candidates(CHROME_LIKE, MAX_CANDIDATES)).of_kind("video")
    with pytest.raises(SdpError, match=f"{MAX_CANDIDATES + 1} ICE candidates"):
        parse_offer(with_candidates(CHROME_LIKE, MAX_CANDIDATES + 1))


def test_an_offer_with_hundreds_of_media_sections_is_refused_before_aiortc_builds_their_transports():
    audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
    assert len(parse_offer(CHROME_LIKE + audio * (MAX_MEDIA_SECTIONS - 2)).sections) == MAX_MEDIA_SECTIONS
    with pytest.raises(SdpError, match=f"{MAX_MEDIA_SECTIONS + 1} media sections"):
        parse_offer(CHROME_LIKE + audio * (MAX_MEDIA_SECTIONS - 1))


def test_an_offer_without_h264_mode_1_cannot_receive_an_h264_stream():
    offer = parse_offer(CHROME_LIKE.replace("packetization-mode=1", "packetization-mode=0"))
    assert "H.264" in playback_problem(offer, "h264", None)


def test_an_offer_without_opus_cannot_receive_the_audio_but_a_video_only_stream_is_fine():
    offer = parse_offer(CHROME_LIKE.replace("opus/48000/2", "PCMU/8000"))
    assert "Opus" in playback_problem(offer, "h264", "aac")
    assert playback_problem(offer, "h264", None) is None


def test_a_sendonly_offer_receives_nothing():
    offer = parse_offer(CHROME_LIKE.replace("a=recvonly", "a=sendonly"))
    assert "receives nothing" in playback_problem(offer, "h264", "aac")


def test_an_audio_only_offer_for_a_video_only_stream_asks_for_no_track_it_has():
    audio_only = CHROME_LIKE.split("m=video")[0] + "m=audio" + CHROME_LIKE.split("m=audio")[1]
    audio_only = audio_only.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1") + \
        "a=ice-ufrag:abcd\r\na=fingerprint:sha-256 AA\r\n"
    offer = parse_offer(audio_only)
    assert "no track this stream has" in playback_problem(offer, "h264", None)


def test_an_av1_stream_needs_an_offer_that_receives_av1_of_its_profile():
    offer = parse_offer(CHROME_LIKE)
    assert receivable_video(offer) == {"h264"}
    assert "AV1 of profile 0" in playback_problem(offer, "av1", "opus")
    with_av1 = CHROME_LIKE.replace("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102", "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 45 46") \
        .replace("a=rtpmap:102 H264/90000", "a=rtpmap:45 AV1/90000\r\na=rtpmap:46 AV1/90000\r\n"
                 "a=fmtp:46 level-idx=5; profile=1 ;tier=0\r\na=rtpmap:102 H264/90000")
    offer = parse_offer(with_av1)
    assert av1_profiles(offer.sections[0]) == {1}
    assert receivable_video(offer, av1_profile=1) == {"h264", "av1"}
    assert receivable_video(offer, av1_profile=0) == {"h264"}
    assert playback_problem(offer, "av1", "opus", av1_profile=1) is None
    no_fmtp = parse_offer(with_av1.replace("a=fmtp:46 level-idx=5; profile=1 ;tier=0\r\n", ""))
    assert av1_profiles(no_fmtp.sections[0]) == {0}, "no fmtp: the Main profile, the AV1 RTP spec's default"
    hostile = parse_offer(with_av1.replace("profile=1", "profile=x1"))
    assert av1_profiles(hostile.sections[0]) == set() and receivable_video(hostile, 1) == {"h264"}


def with_h265(fmtps: dict[int, str | None]) -> str:
    """CHROME_LIKE with H265 payload types (Safari's shape) and their fmtp lines (None: no fmtp line)."""
    lines = "".join(f"a=rtpmap:{pt} H265/90000\r\n" + (f"a=fmtp:{pt} {fmtp}\r\n" if fmtp is not None else "")
                    for pt, fmtp in fmtps.items())
    return CHROME_LIKE.replace("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102",
                               "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 " + " ".join(map(str, fmtps))) \
        .replace("a=rtpmap:102 H264/90000", lines + "a=rtpmap:102 H264/90000")


def test_an_hevc_stream_needs_an_offer_that_receives_h265_of_its_profile_id():
    offer = parse_offer(CHROME_LIKE)
    assert "hevc" not in receivable_video(offer)
    assert "H265 (HEVC) of profile-id 1" in playback_problem(offer, "hevc", "aac")
    safari = parse_offer(with_h265({104: "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST",
                                    106: "level-id=93; profile-id=2 ;tier-flag=0;tx-mode=srst"}))
    assert h265_profiles(safari.sections[0]) == {1, 2}
    assert receivable_video(safari) == {"h264", "hevc"}, "Main (profile-id 1) when the stream says nothing"
    assert receivable_video(safari, hevc_profile=2) == {"h264", "hevc"}
    assert receivable_video(safari, hevc_profile=3) == {"h264"}
    assert playback_problem(safari, "hevc", "aac", hevc_profile=2) is None
    assert "profile-id 4" in playback_problem(safari, "hevc", "aac", hevc_profile=4)


def test_h265_without_a_profile_id_is_the_main_profile():
    for fmtps in ({104: None}, {104: "level-id=93;tx-mode=SRST"}):
        section = parse_offer(with_h265(fmtps)).sections[0]
        assert h265_profiles(section) == {1}, fmtps
    assert "hevc" not in receivable_video(parse_offer(with_h265({104: None})), hevc_profile=2)


@pytest.mark.parametrize("fmtp", [
    "profile-id=1;sprop-max-don-diff=2",  # decoding order numbers (DONL), which the server never sends
    "profile-id=1;tx-mode=MRST",  # several RTP streams
    "profile-id=1;tx-mode=",
    "profile-id=one", "profile-id=-1", "profile-id=1x", "profile-id=", "profile-id=1;sprop-max-don-diff=x",
])
def test_h265_the_server_cannot_send_as_asked_or_hostile_is_not_received(fmtp):
    offer = parse_offer(with_h265({104: fmtp}))
    assert h265_profiles(offer.sections[0]) == set()
    assert receivable_video(offer) == {"h264"}
    assert "H265 (HEVC)" in playback_problem(offer, "hevc", "opus")
    good = parse_offer(with_h265({104: fmtp, 106: "profile-id=1;sprop-max-don-diff=0;tx-mode=SRST"}))
    assert h265_profiles(good.sections[0]) == {1}, "another payload type that fits is answered"
