"""The soak's clients, all in one asyncio process: RTMP publishers that come and go (and take a bad
frame, config or metadata into the middle of a good stream when a bad input asks), and viewers of
HTTP-FLV, WebSocket-FLV, HLS and LL-HLS that join and leave. The bad inputs are in _soak_bad_inputs.

Every client here is bounded: it ends on its own after its hold time (or when the server closes it)
and closes its socket in a `finally`, so cancelling the soak leaves nothing open. Outcomes go into a
`Tally` (counters only), which the report prints: how the server answered each bad input is part of
what a soak run tells.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from _flv_viewers import open_viewer
from _hls_viewers import HlsPlayer, PlayerStats
from _latency import _SET_DATA_FRAME, PublishError, _RtmpProtocol, _wait_event
from _media import TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO, FlvTag, loop_duration_ms
from _outputs import LlhlsPlayer, PullStats, open_ws_viewer

NET_ERRORS = (OSError, TimeoutError, ConnectionError, PublishError, asyncio.IncompleteReadError)


@dataclass
class Tally:
    """What happened, counted: (who, outcome) -> times, and a few error texts per who."""

    counts: Counter = field(default_factory=Counter)
    errors: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def note(self, who: str, outcome: str, error: str | None = None) -> None:
        self.counts[(who, outcome)] += 1
        if error:
            self.errors[who][error[:160]] += 1

    def as_dict(self) -> dict:
        by_who: dict[str, dict[str, int]] = defaultdict(dict)
        for (who, outcome), n in sorted(self.counts.items()):
            by_who[who][outcome] = n
        return {"outcomes": dict(by_who),
                "errors": {who: dict(c.most_common(5)) for who, c in sorted(self.errors.items())}}


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    rtmp_port: int
    http_port: int
    app: str

    def path(self, kind: str, name: str) -> str:
        return {"flv": f"/{self.app}/{name}.flv", "ws-flv": f"/{self.app}/{name}.flv",
                "hls": f"/{self.app}/{name}/index.m3u8", "llhls": f"/{self.app}/{name}/cmaf.m3u8"}[kind]


async def sleep_unless(stop: asyncio.Event, delay: float) -> bool:
    """Sleep `delay` s or until `stop`; True when stopped."""
    if delay > 0 and not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            pass
    return stop.is_set()


# ----- publishers ------------------------------------------------------------------------------------


@dataclass
class LivePublisher:
    """A publish session in progress: what can be injected into it."""

    name: str
    inject: asyncio.Queue = field(default_factory=asyncio.Queue)


async def publish_session(t: Target, name: str, tags: list[FlvTag], hold_s: float, end: str,
                          live: dict[str, LivePublisher], stop: asyncio.Event | None = None) -> str:
    """Publish `tags` at real-time pace (looping) for `hold_s`, then end the way `end` says:
    "unpublish" (FCUnpublish + deleteStream, as OBS stops), "drop" (the TCP connection just closes) or
    "garbage" (random bytes mid-stream; the server must close). `stop` ends it early, unpublishing.
    Returns how it went."""
    from mediaserver.rtmp.client import ClientSession

    loop = asyncio.get_running_loop()
    session = ClientSession()
    async with asyncio.timeout(10):
        transport, proto = await loop.create_connection(lambda: _RtmpProtocol(session), t.host, t.rtmp_port)
    me = LivePublisher(name)
    try:
        session.connect(t.app, f"rtmp://{t.host}:{t.rtmp_port}/{t.app}")
        session.publish(name)
        proto.flush()
        await _wait_event(proto, ("ConnectResult",))
        while (await _wait_event(proto, ("StatusReceived",))).code != "NetStream.Publish.Start":
            pass
        live[name] = me
        await _send_media(session, proto, tags, loop.time() + hold_s, me.inject, stop or asyncio.Event())
        live.pop(name, None)
        if stop is not None and stop.is_set():
            end = "unpublish"
        if end == "unpublish":
            session.unpublish()
            proto.flush()
            await asyncio.sleep(0.2)
        elif end == "garbage":
            proto.flush()
            transport.write(os.urandom(4096))
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(proto.closed)
                return "garbage: closed by server"
            except TimeoutError:
                return "garbage: still open after 5 s"
        return end
    finally:
        if live.get(name) is me:
            del live[name]
        transport.close()


async def _send_media(session, proto: _RtmpProtocol, tags: list[FlvTag], until: float, inject: asyncio.Queue,
                      stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    loop_ms = loop_duration_ms(tags)
    headers = [x for x in tags if x.is_config]
    media = [x for x in tags if not x.is_config]
    send = {TAG_VIDEO: session.send_video, TAG_AUDIO: session.send_audio, TAG_SCRIPT: session.send_data}

    def send_headers(ts: int) -> None:
        for h in headers:
            send[h.kind](ts, _SET_DATA_FRAME + h.body if h.kind == TAG_SCRIPT else h.body)

    send_headers(0)
    proto.flush()
    start = loop.time()
    i, loops, ts = 0, 0, 0
    config_again = False
    while loop.time() < until and not stop.is_set():
        if proto.closed.done():
            raise PublishError("server closed the RTMP connection while publishing")
        now_ms = (loop.time() - start) * 1000
        while True:
            tag = media[i]
            ts = tag.ts_ms + loops * loop_ms
            if ts > now_ms:
                break
            if config_again and tag.is_video_keyframe:
                send_headers(ts)  # the good config again, so outputs recover at this keyframe
                config_again = False
            send[tag.kind](ts, tag.body)
            i += 1
            if i == len(media):
                i, loops = 0, loops + 1
        while not inject.empty():
            kind, body = inject.get_nowait()
            send[kind](ts, body)
            # A video config (even a broken one) replaces the stream's: the good one follows at the next keyframe.
            config_again = config_again or (kind == TAG_VIDEO and FlvTag(kind, ts, body).is_config)
        proto.flush()
        delay = start + (media[i].ts_ms + loops * loop_ms) / 1000 - loop.time()
        await asyncio.sleep(min(max(delay, 0.0), max(0.0, until - loop.time())))


# ----- viewers ---------------------------------------------------------------------------------------


async def watch(t: Target, kind: str, name: str, hold_s: float, tally: Tally, soak_stop: asyncio.Event) -> None:
    """One viewer of `kind` on stream `name` for `hold_s` (less if the server, the stream or the soak
    ends it)."""
    who = f"viewer:{kind}"
    path = t.path(kind, name)
    stop = asyncio.Event()
    try:
        if kind in ("flv", "ws-flv"):
            closed = asyncio.get_running_loop().create_future()

            def on_close(v) -> None:
                if not closed.done():
                    closed.set_result(None)

            opener = open_viewer if kind == "flv" else open_ws_viewer
            async with asyncio.timeout(5):
                v = await opener(t.host, t.http_port, path, on_close=on_close)
            stopping = asyncio.ensure_future(soak_stop.wait())
            try:
                await asyncio.wait([closed, stopping], timeout=hold_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                ended_early = closed.done()
                v.close()
            if v.error:
                tally.note(who, "error", v.error)
            elif v.scanner.keyframes == 0:
                tally.note(who, "no keyframe")
            else:
                tally.note(who, "ended by the server" if ended_early else "watched")
            return
        if kind == "hls":
            stats = PlayerStats(stream=0)
            player = HlsPlayer(t.host, t.http_port, path, stats, {}, defaultdict(list), (0.0, 0.0))
            errors = lambda: (stats.errors, stats.last_error)  # noqa: E731
        else:
            stats = PullStats(stream=0)
            player = LlhlsPlayer(t.host, t.http_port, path, stats, {})
            # 503 (a blocking reload held too long, e.g. while the publisher reconnects) and 400 are
            # answers a player reloads after, not errors.
            errors = lambda: (stats.errors + sum(v for k, v in stats.statuses.items()  # noqa: E731
                                                 if k not in (400, 503)),
                              stats.last_error or "HTTP " + ", ".join(f"{k} x{v}" for k, v in stats.statuses.items()))
        task = asyncio.ensure_future(player.run(stop))
        await sleep_unless(soak_stop, hold_s)
        stop.set()
        try:
            await asyncio.wait_for(task, 15)
        except TimeoutError:
            task.cancel()
        n, last = errors()
        tally.note(who, "watched" if n == 0 else "errors", last if n else None)
    except NET_ERRORS as err:
        tally.note(who, "could not connect", f"{type(err).__name__}: {err}")
