"""What a WHEP or WHIP offer must hold before a peer connection is built for it: checked on the text, so a
client that sent something else gets a 400 that says what was wrong instead of an aiortc exception.

Pure. Not a full SDP parser (aiortc parses it afterwards): only the lines that decide whether this server
can answer at all. An SDP body is bounded by the caller (signaling.read_offer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINES = 2_000
"""Browsers' offers are 50-150 lines; more is not an offer anybody's client sends."""
MAX_MEDIA_SECTIONS = 16
"""Browsers offer 2-3 m= sections (audio, video, data); aiortc builds a transceiver for each, and without a
BUNDLE group an ICE transport and a UDP socket each, and answers each: hundreds would be sockets and an
answer many times the offer's size."""
MAX_CANDIDATES = 64
"""Browsers offer a few ICE candidates per address family and interface (2-20); aiortc adds each with a scan
of those before it, so a 64 KiB offer of a thousand costs the event loop 0.2 s and sends thousands of checks
to whatever addresses it lists."""

_MEDIA = re.compile(r"m=(audio|video|application) (\d+) (\S+)(?: (.*))?")
_RTPMAP = re.compile(r"a=rtpmap:(\d+) ([A-Za-z0-9_.-]+)/(\d+)(?:/\d+)?")
_FMTP = re.compile(r"a=fmtp:(\d+) (.*)")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    """The body is not an offer this server can answer; the message says why, for the 400."""


@dataclass(slots=True)
class MediaSection:
    """One m= section of an offer: its kind, direction (from the offerer's side) and codecs by name."""

    kind: str
    direction: str = "sendrecv"
    codecs: dict[str, list[str]] = field(default_factory=dict)
    """Lower-case codec name ("h264", "opus", ...) -> the fmtp lines of its payload types (may be "")."""

    def offers(self, codec: str) -> bool:
        return codec in self.codecs


@dataclass(slots=True)
class Offer:
    sections: list[MediaSection]

    def of_kind(self, kind: str) -> list[MediaSection]:
        return [s for s in self.sections if s.kind == kind]


def offer_lines(text: str) -> list[str]:
    """The offer's non-empty lines, stripped; SdpError when the text is not one a client sends (NUL bytes,
    too many lines, ICE candidates or media sections). WHEP's parse_offer and WHIP's offer check both start here."""
    if "\x00" in text:
        raise SdpError("the body has NUL bytes; an SDP offer is text")
    lines = text.replace("\r\n", "\n").split("\n")
    if len(lines) > MAX_LINES:
        raise SdpError(f"the offer has {len(lines)} lines; at most {MAX_LINES} are read")
    lines = [line.strip() for line in lines if line.strip()]
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    if candidates > MAX_CANDIDATES:
        raise SdpError(f"the offer has {candidates} ICE candidates; at most {MAX_CANDIDATES} are taken")
    sections = sum(1 for line in lines if line.startswith("m="))
    if sections > MAX_MEDIA_SECTIONS:
        raise SdpError(f"the offer has {sections} media sections; at most {MAX_MEDIA_SECTIONS} are answered")
    return lines


def parse_offer(text: str) -> Offer:
    """The media sections of an SDP offer; SdpError when it is not one."""
    lines = offer_lines(text)
    if not lines or lines[0] != "v=0":
        raise SdpError("an SDP offer starts with the line v=0")
    if not any(line.startswith("o=") for line in lines):
        raise SdpError("the offer has no o= line")
    sections: list[MediaSection] = []
    session_direction = "sendrecv"
    payload_names: dict[str, str] = {}
    current: MediaSection | None = None
    for line in lines:
        if line.startswith("m="):
            match = _MEDIA.fullmatch(line)
            if match is None:
                raise SdpError(f"malformed media line {line[:80]!r}")
            current = MediaSection(match.group(1), session_direction)
            sections.append(current)
            payload_names = {}
            continue
        if line[2:] in _DIRECTIONS and line.startswith("a="):
            if current is None:
                session_direction = line[2:]
            else:
                current.direction = line[2:]
            continue
        if current is None:
            continue
        match = _RTPMAP.fullmatch(line)
        if match is not None:
            name = match.group(2).lower()
            payload_names[match.group(1)] = name
            current.codecs.setdefault(name, [])
            continue
        match = _FMTP.fullmatch(line)
        if match is not None and match.group(1) in payload_names:
            current.codecs[payload_names[match.group(1)]].append(match.group(2))
    if not sections:
        raise SdpError("the offer has no media section (m=audio or m=video)")
    if not any(s.kind in ("audio", "video") for s in sections):
        raise SdpError("the offer has no audio or video section")
    if not any("a=fingerprint:" in line for line in lines):
        raise SdpError("the offer has no a=fingerprint line (DTLS is required)")
    if not any(line.startswith("a=ice-ufrag:") for line in lines):
        raise SdpError("the offer has no a=ice-ufrag line (ICE is required)")
    return Offer(sections)


def h264_packetization_mode_1(section: MediaSection) -> bool:
    """Whether the section offers H.264 with packetization-mode=1 (what the packetizer sends: FU-A, STAP-A)."""
    return any("packetization-mode=1" in fmtp.replace(" ", "") for fmtp in section.codecs.get("h264", []))


def fmtp_parameters(fmtp: str) -> dict[str, str]:
    """ "profile=0;level-idx=5" -> {"profile": "0", "level-idx": "5"} (names lower-case)."""
    out = {}
    for item in fmtp.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def av1_profiles(section: MediaSection) -> set[int]:
    """The AV1 profiles the section receives (its AV1 payload types' `profile`, 0 when absent: the AV1 RTP
    spec's default)."""
    if not section.offers("av1"):
        return set()
    fmtps = section.codecs["av1"] or [""]
    profiles = set()
    for fmtp in fmtps:
        value = fmtp_parameters(fmtp).get("profile", "0")
        if value.isdigit():
            profiles.add(int(value))
    return profiles


def h265_receivable(parameters: dict[str, str], profile: int) -> bool:
    """Whether an H265 payload type with these fmtp parameters takes what the server sends: HEVC of this
    general_profile_idc (`profile-id`, 1 when absent: RFC 7798's default) as a single RTP stream without
    decoding order numbers (no `sprop-max-don-diff` above 0, `tx-mode` SRST when given)."""
    profile_id = parameters.get("profile-id", "1")
    don_diff = parameters.get("sprop-max-don-diff", "0")
    return (profile_id.isdigit() and int(profile_id) == profile and don_diff.isdigit() and int(don_diff) == 0
            and parameters.get("tx-mode", "SRST").upper() == "SRST")


def h265_profiles(section: MediaSection) -> set[int]:
    """The HEVC profiles (profile-id) the section receives as the server sends them (h265_receivable)."""
    if not section.offers("h265"):
        return set()
    profiles = set()
    for fmtp in section.codecs["h265"] or [""]:
        parameters = fmtp_parameters(fmtp)
        profile_id = parameters.get("profile-id", "1")
        if profile_id.isdigit() and h265_receivable(parameters, int(profile_id)):
            profiles.add(int(profile_id))
    return profiles


def receives_video(section: MediaSection, codec: str, av1_profile: int = 0, hevc_profile: int = 1) -> bool:
    """Whether the section receives this stream's video as the server sends it (HEVC is "H265" in SDP)."""
    if codec == "h264":
        return h264_packetization_mode_1(section)
    if codec == "av1":
        return av1_profile in av1_profiles(section)
    if codec == "hevc":
        return hevc_profile in h265_profiles(section)
    return False


def receivable_video(offer: Offer, av1_profile: int = 0, hevc_profile: int = 1) -> frozenset[str]:
    """The video codecs (of those passed through) that the offer's receiving video sections take."""
    sections = [s for s in offer.of_kind("video") if s.direction in ("recvonly", "sendrecv")]
    return frozenset(c for c in ("h264", "av1", "hevc")
                     if any(receives_video(s, c, av1_profile, hevc_profile) for s in sections))


def playback_problem(offer: Offer, video_codec: str | None, audio_codec: str | None, av1_profile: int = 0,
                     hevc_profile: int = 1) -> str | None:
    """Why this WHEP offer cannot receive a stream with these codecs (video passed through: H.264, AV1 of
    `av1_profile`, or HEVC of `hevc_profile`; audio sent as Opus), or None. Only the tracks the stream has are
    asked for."""
    receiving = [s for s in offer.sections if s.kind in ("audio", "video") and s.direction in ("recvonly", "sendrecv")]
    if not receiving:
        return "the offer receives nothing: a WHEP offer has recvonly (or sendrecv) audio or video sections"
    if video_codec is not None:
        videos = [s for s in receiving if s.kind == "video"]
        if videos and not any(receives_video(s, video_codec, av1_profile, hevc_profile) for s in videos):
            if video_codec == "av1":
                return f"the offer's video section has no AV1 of profile {av1_profile}, which this stream is sent as"
            if video_codec == "hevc":
                return (f"the offer's video section has no H265 (HEVC) of profile-id {hevc_profile} in tx-mode SRST "
                        "without sprop-max-don-diff, which this stream is sent as")
            return "the offer's video section has no H.264 with packetization-mode=1, which this stream is sent as"
    if audio_codec is not None:
        audios = [s for s in receiving if s.kind == "audio"]
        if audios and not any(s.offers("opus") for s in audios):
            return "the offer's audio section has no Opus, which this stream's audio is sent as"
    kinds = {s.kind for s in receiving}
    if ("video" not in kinds or video_codec is None) and ("audio" not in kinds or audio_codec is None):
        has = " and ".join(k for k, c in (("video", video_codec), ("audio", audio_codec)) if c) or "nothing yet"
        return f"the offer asks for no track this stream has (it has {has})"
    return None
