"""Live delay: a real-time RTMP publisher that notes when it sends each tag, and a viewer that notes
when each tag arrives.

The publisher plays the benchmark FLV file over RTMP at real-time pace (tag due at start + timestamp,
looping with growing timestamps, as `ffmpeg -re -stream_loop -1` does), driving the project's sans-IO
`mediaserver.rtmp.client.ClientSession` from a thin asyncio protocol. After writing each batch to the
socket it records time.monotonic() for every (tag type, timestamp) in the batch. A viewer in the same
process (so on the same clock) records when each tag has fully arrived over HTTP-FLV; the delay of a
tag is arrival - send. Tags the viewer got from the GOP cache (sent before it connected) are left out.

HLS listing delays are matched the same way: the listing probe gives, per segment, when it first
appeared in the playlist and its first video PTS; the segments' PTS differences place them on the
publisher's timeline (the first listed segment is taken to start at the first keyframe published,
which holds for a packager that runs from the start of the stream; the derived PTS offset is reported
so a reader can check it).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field

from _media import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvTag, is_keyframe_body, loop_duration_ms
from _report import summary


def client_session_available() -> str | None:
    """None when mediaserver.rtmp.client.ClientSession can be imported, else why not."""
    try:
        from mediaserver.rtmp.client import ClientSession  # noqa: F401
    except Exception as err:  # missing module or a broken import: either way, no publisher
        return f"{type(err).__name__}: {err}"
    return None


class PublishError(RuntimeError):
    """The server refused or broke off the publish."""


@dataclass(slots=True)
class SendLog:
    """What the publisher sent, and when."""

    sent_at: dict[tuple[int, int], float] = field(default_factory=dict)
    """(tag type, timestamp ms) -> monotonic time just after the write that carried it."""
    keyframes: list[tuple[int, int, float]] = field(default_factory=list)
    """(dts ms, pts ms, sent at) of every video keyframe."""
    video: list[tuple[int, float]] = field(default_factory=list)
    """(dts ms, sent at) of every video frame, in order."""
    first_media_at: float | None = None
    started_at: float = 0.0
    bytes: int = 0


def _cts_ms(body: bytes) -> int:
    """Composition time offset of an AVC video body (legacy FLV), 0 otherwise."""
    if len(body) >= 5 and not body[0] & 0x80 and (body[0] & 0x0F) == 7:
        v = (body[2] << 16) | (body[3] << 8) | body[4]
        return v - 0x1000000 if v & 0x800000 else v
    return 0


class _RtmpProtocol(asyncio.Protocol):
    def __init__(self, session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.events: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.session.receive_data(data)
        except Exception as err:  # the session's protocol errors: end the publish with the reason
            self.events.put_nowait(err)
            self.transport.close()
            return
        for ev in self.session.events():
            self.events.put_nowait(ev)
        self.flush()

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.events.put_nowait(ConnectionError(f"server closed the RTMP connection: {exc}"))


async def _wait_event(proto: _RtmpProtocol, names: tuple[str, ...], timeout_s: float = 10.0):
    """The next event whose class name is in `names`; fails on an error or a rejecting status."""
    async with asyncio.timeout(timeout_s):
        while True:
            ev = await proto.events.get()
            if isinstance(ev, Exception):
                raise PublishError(str(ev)) from ev
            kind = type(ev).__name__
            if kind == "StatusReceived" and ev.level == "error":
                raise PublishError(f"server answered {ev.code}: {ev.description}")
            if kind == "ConnectResult" and not ev.accepted:
                raise PublishError(f"connect refused: {ev.info}")
            if kind in names:
                return ev


async def publish_realtime(
    host: str, port: int, app: str, name: str, tags: list[FlvTag], stop: asyncio.Event, log: SendLog,
) -> None:
    """Publish `tags` to rtmp://host:port/app/name at real-time pace, looping, until `stop`."""
    from mediaserver.rtmp.client import ClientSession

    loop = asyncio.get_running_loop()
    session = ClientSession()
    async with asyncio.timeout(10):
        transport, proto = await loop.create_connection(lambda: _RtmpProtocol(session), host, port)
    try:
        session.connect(app, f"rtmp://{host}:{port}/{app}")
        session.publish(name)  # releaseStream, FCPublish, createStream, then publish on the new stream
        proto.flush()
        await _wait_event(proto, ("ConnectResult",))
        while True:
            ev = await _wait_event(proto, ("StatusReceived",))
            if ev.code == "NetStream.Publish.Start":
                break
        await _send_loop(session, proto, tags, stop, log)
    finally:
        transport.close()


# An RTMP publisher sends the metadata as @setDataFrame("onMetaData", values); the FLV script tag
# holds "onMetaData" and the values, so the AMF0 string "@setDataFrame" goes in front.
_SET_DATA_FRAME = b"\x02\x00\x0d@setDataFrame"


async def _send_loop(session, proto: _RtmpProtocol, tags: list[FlvTag], stop: asyncio.Event, log: SendLog) -> None:
    loop_ms = loop_duration_ms(tags)
    headers = [t for t in tags if t.is_config]
    media = [t for t in tags if not t.is_config]
    send = {TAG_VIDEO: session.send_video, TAG_AUDIO: session.send_audio}
    for t in headers:
        if t.kind == TAG_SCRIPT:
            session.send_data(0, _SET_DATA_FRAME + t.body)
        else:
            send[t.kind](0, t.body)
    proto.flush()
    start = log.started_at = time.monotonic()
    i, n, loop_n = 0, len(media), 0
    batch: list[tuple[int, int, FlvTag]] = []
    while not stop.is_set():
        if proto.closed.done():
            raise PublishError("server closed the RTMP connection while publishing")
        now_ms = (time.monotonic() - start) * 1000
        while True:
            t = media[i]
            ts = t.ts_ms + loop_n * loop_ms
            if ts > now_ms:
                break
            send[t.kind](ts, t.body)
            batch.append((t.kind, ts, t))
            log.bytes += len(t.body)
            i += 1
            if i == n:
                i, loop_n = 0, loop_n + 1
        if batch:
            proto.flush()
            sent = time.monotonic()
            if log.first_media_at is None:
                log.first_media_at = sent
            for kind, ts, t in batch:
                log.sent_at.setdefault((kind, ts), sent)
                if kind == TAG_VIDEO:
                    log.video.append((ts, sent))
                    if is_keyframe_body(t.body):
                        log.keyframes.append((ts, ts + _cts_ms(t.body), sent))
            batch.clear()
        next_ms = media[i].ts_ms + loop_n * loop_ms
        delay = start + next_ms / 1000 - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass


def match_delays(sent: SendLog, arrivals: dict[tuple[int, int], float], since: float) -> dict[str, list[float]]:
    """Delay samples in ms (arrival - send) for tags sent after `since`, by kind."""
    out: dict[str, list[float]] = {"video": [], "audio": [], "unmatched": []}
    for key, t_sent in sent.sent_at.items():
        if t_sent < since:
            continue
        t_arr = arrivals.get(key)
        kind = "video" if key[0] == TAG_VIDEO else "audio"
        if t_arr is None:
            out["unmatched"].append(key[1])
        else:
            out[kind].append((t_arr - t_sent) * 1000.0)
    return out


def listing_delays(sent: SendLog, first_seen: dict[int, float], first_pts: dict[int, int | None],
                   durations: dict[int, float]) -> dict:
    """Per segment: first-listed time minus the send time of its last video frame.

    A segment's end on the publisher's timeline is its start (from its first PTS, relative to the
    first listed segment's, which is placed at the first keyframe published) plus its EXTINF."""
    msns = sorted(m for m in first_seen if first_pts.get(m) is not None)
    if not msns or not sent.keyframes:
        return {"delays_ms": [], "note": "no segment with a readable PTS, or nothing published"}
    first = msns[0]
    kf0_dts, kf0_pts, _ = sent.keyframes[0]
    pts0 = first_pts[first]
    offset_ms = pts0 / 90 - kf0_pts
    video = sent.video
    dts_list = [d for d, _ in video]
    delays = []
    for m in msns:
        start_ms = ((first_pts[m] - pts0) % (1 << 33)) / 90 + kf0_pts  # pts of its first keyframe
        # The closing keyframe (the next segment's first): the one whose pts is nearest start + EXTINF.
        end_pts = start_ms + durations[m] * 1000
        closing = min(sent.keyframes, key=lambda k: abs(k[1] - end_pts))
        if abs(closing[1] - end_pts) > 500:
            continue  # not published yet, or the segment does not end at a keyframe we know
        j = bisect.bisect_left(dts_list, closing[0]) - 1  # the last video frame before the closing keyframe
        if j < 0:
            continue
        delays.append(round((first_seen[m] - video[j][1]) * 1000.0, 2))
    return {"delays_ms": delays, "ts_offset_ms": round(offset_ms, 1), "segments": len(delays),
            "assumed_first_segment_start_dts_ms": kf0_dts}


# ---------------------------------------------------------------- matching media times to send times


class SentIndex:
    """The publisher's send times looked up by media time (ms) per tag kind, nearest within a tolerance.

    fMP4 outputs give decode times in a track timescale: video at 90 kHz is the publisher's ms x 90
    exactly, audio at 48 kHz a running sample count that may sit up to half a frame (~11 ms) off the
    tag's millisecond timestamp, hence a tolerance."""

    def __init__(self, sent: SendLog) -> None:
        self._ts: dict[int, list[int]] = {}
        self._at: dict[int, list[float]] = {}
        for kind in (TAG_VIDEO, TAG_AUDIO):
            rows = sorted((ts, t) for (k, ts), t in sent.sent_at.items() if k == kind)
            self._ts[kind] = [ts for ts, _ in rows]
            self._at[kind] = [t for _, t in rows]

    def sent(self, kind: int, ms: float, tolerance_ms: float) -> float | None:
        ts = self._ts.get(kind, [])
        i = bisect.bisect_left(ts, ms)
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(ts) and abs(ts[j] - ms) <= tolerance_ms and (best is None or abs(ts[j] - ms) < abs(ts[best] - ms)):
                best = j
        return self._at[kind][best] if best is not None else None

    def sent_at_time(self, kind: int, ms: float, tolerance_ms: float) -> float | None:
        """When media time `ms` was due at the publisher: the nearest tag's send time, shifted by the
        difference (the publisher sends in real time), for instants between tags such as a segment's end."""
        t = self.sent(kind, ms, tolerance_ms)
        if t is None:
            return None
        ts = self._ts[kind]
        i = bisect.bisect_left(ts, ms)
        j = min((k for k in (i - 1, i) if 0 <= k < len(ts)), key=lambda k: abs(ts[k] - ms))
        return t + (ms - ts[j]) / 1000.0


TOLERANCE_MS = {TAG_VIDEO: 2.0, TAG_AUDIO: 12.0}


def media_delays(index: SentIndex, items: list[tuple[int, float, float]]) -> tuple[list[float], int]:
    """(delays in ms, unmatched count) for items (tag kind, media time ms, event time): event - sent."""
    out: list[float] = []
    unmatched = 0
    for kind, ms, t in items:
        s = index.sent(kind, ms, TOLERANCE_MS[kind])
        if s is None:
            unmatched += 1
        else:
            out.append(round((t - s) * 1000.0, 2))
    return out, unmatched


def segment_edges(sent: SendLog, first_pts: dict[int, int | None], durations: dict[int, float]) -> dict[int, tuple[float, float]]:
    """Per TS segment MSN: (send time of its last video frame, send time of the keyframe that closes it).

    Segments are placed as listing_delays places them: by first PTS relative to the first listed
    segment, which is taken to start at the first keyframe published."""
    msns = sorted(m for m in first_pts if first_pts.get(m) is not None and m in durations)
    if not msns or not sent.keyframes:
        return {}
    pts0 = first_pts[msns[0]]
    kf0_pts = sent.keyframes[0][1]
    dts_list = [d for d, _ in sent.video]
    out = {}
    for m in msns:
        start_ms = ((first_pts[m] - pts0) % (1 << 33)) / 90 + kf0_pts
        end_pts = start_ms + durations[m] * 1000
        closing = min(sent.keyframes, key=lambda k: abs(k[1] - end_pts))
        if abs(closing[1] - end_pts) > 500:
            continue
        j = bisect.bisect_left(dts_list, closing[0]) - 1
        if j < 0:
            continue
        out[m] = (sent.video[j][1], closing[2])
    return out


# ---------------------------------------------------------------- per-output delay analysis


def starting_gop_ms(sent: SendLog, arrivals: dict[tuple[int, int], float], since: float,
                    first_keyframe_ts: int | None) -> float | None:
    """How much media a joining viewer got from the GOP cache: from the first keyframe it received to
    the newest cached tag, where cached means sent before `since`. (The keyframe is passed in: the
    sequence header arrives first under the same (kind, timestamp) key as a keyframe at 0.)"""
    if first_keyframe_ts is None:
        return None
    cached = [ts for key, ts in ((k, k[1]) for k in arrivals) if key in sent.sent_at and sent.sent_at[key] < since]
    if not cached:
        return None
    return float(max(cached) - first_keyframe_ts)


def _by_kind(records: list[dict], track: str, kind: int, field: str, media: str = "last_ms") -> list[tuple[int, float, float]]:
    return [(kind, r[media], r[field]) for r in records if r["track"] == track and not r["backlog"]
            and r.get(field) is not None]


def part_delays(index: SentIndex, records: list[dict], part_hold_back_s: float | None) -> dict:
    """LL-HLS: per track, last sample sent -> part listed (blocking reload answered) and -> part received;
    and the delay of an hls.js low-latency player, which plays PART-HOLD-BACK behind the edge it
    estimates as the end of the newest listed part plus the time since that playlist arrived:
    listed - sent(the part's end) + PART-HOLD-BACK.

    `records`: dicts with track ("video"/"audio"), last_ms, end_ms (media times), listed, arrived
    (monotonic), backlog (already listed when the client first looked: left out)."""
    out: dict = {}
    for track, kind in (("video", TAG_VIDEO), ("audio", TAG_AUDIO)):
        received, unmatched = media_delays(index, _by_kind(records, track, kind, "arrived"))
        listed, _ = media_delays(index, _by_kind(records, track, kind, "listed"))
        edge = []
        for r in records:
            if r["track"] != track or r["backlog"] or r.get("listed") is None:
                continue
            s = index.sent_at_time(kind, r["end_ms"], TOLERANCE_MS[kind])
            if s is not None:
                edge.append(round((r["listed"] - s) * 1000.0, 2))
        out[track] = {
            "part_last_sample_to_listed_ms": summary(listed),
            "part_last_sample_to_received_ms": summary(received),
            "player_delay_at_part_hold_back_ms": summary([e + (part_hold_back_s or 0) * 1000 for e in edge])
            if part_hold_back_s is not None else {"not_measured": "no PART-HOLD-BACK in the playlist"},
            "parts": len(received), "unmatched": unmatched,
        }
    return out


def dash_delays(index: SentIndex, records: list[dict], suggested_delay_s: float | None) -> dict:
    """DASH: per track, last sample sent -> segment listed in the MPD and -> fetched; when the MPD says
    the segment became available vs when it was listed (negative: announced before it could be
    fetched, so a player on the MPD's clock meets 404s); the MPD clock's lag behind the publisher
    (advertised availability - sent(the segment's end)); and the delay of a dash.js player, which
    plays suggestedPresentationDelay behind the MPD's clock: that lag + the delay.

    `records`: dicts with track, last_ms, end_ms, listed, fetched, advertised (monotonic; None when the
    MPD had no availabilityStartTime), backlog."""
    out: dict = {}
    for track, kind in (("video", TAG_VIDEO), ("audio", TAG_AUDIO)):
        listed, unmatched = media_delays(index, _by_kind(records, track, kind, "listed"))
        fetched, _ = media_delays(index, _by_kind(records, track, kind, "fetched"))
        early, lag = [], []
        for r in records:
            if r["track"] != track or r["backlog"] or r.get("advertised") is None:
                continue
            early.append(round((r["listed"] - r["advertised"]) * 1000.0, 2))
            s = index.sent_at_time(kind, r["end_ms"], TOLERANCE_MS[kind])
            if s is not None:
                lag.append(round((r["advertised"] - s) * 1000.0, 2))
        entry = {
            "segment_last_sample_to_listed_ms": summary(listed),
            "segment_last_sample_to_fetched_ms": summary(fetched),
            "listed_minus_advertised_availability_ms": summary(early),
            "mpd_clock_lag_behind_publisher_ms": summary(lag),
            "segments": len(listed), "unmatched": unmatched,
        }
        if suggested_delay_s is not None:
            entry["player_delay_at_suggested_presentation_delay_ms"] = summary([x + suggested_delay_s * 1000 for x in lag])
        out[track] = entry
    return out


def hls_delays(sent: SendLog, first_pts: dict[int, int | None], durations: dict[int, float],
               times: dict[str, dict[int, float]], player_seen: dict[int, float], hold_back_s: float | None) -> dict:
    """MPEG-TS HLS: per segment, last video frame sent -> each of `times` (e.g. listed, fetched); and the
    delay of an hls.js player, which starts `hold_back_s` (three target durations) behind the edge it
    estimates as the end of the last listed segment plus the time since the playlist showed it:
    seen - sent(the keyframe that closes the segment) + hold back, with `player_seen` from a player
    that reloads as hls.js does."""
    edges = segment_edges(sent, first_pts, durations)
    out: dict = {}
    for name, ts in times.items():
        out[f"segment_last_frame_to_{name}_ms"] = summary(
            [round((ts[m] - last) * 1000.0, 2) for m, (last, _) in sorted(edges.items()) if m in ts])
    if hold_back_s is not None:
        out["player_delay_at_hlsjs_start_ms"] = summary(
            [round((player_seen[m] - closing) * 1000.0 + hold_back_s * 1000, 2)
             for m, (_, closing) in sorted(edges.items()) if m in player_seen])
        out["player_hold_back_s"] = hold_back_s
    out["segments_placed"] = len(edges)
    return out
