"""Publish auth over real RTMP: tokens and stream keys, good and bad, as OBS and ffmpeg send them.

A refused publisher gets an onStatus error (NetStream.Publish.Unauthorized) and the connection is closed,
so OBS shows an error instead of retrying; no stream is created. Helpers here (`rtmp_attempt`) are used by
the other auth tests too.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from mediaserver.auth.tokens import Action, mint
from mediaserver.rtmp.client import ClientSession
from mediaserver.rtmp.events import StatusReceived
from support.checks import wait_live

SECRET = "e2e-token-secret-0123456789abcdef"
STUDIO_KEY = "studioKey-4f9a2c7e1b"


def token(action: Action, name: str, ttl: float = 300, app: str = "live", secret: str = SECRET,
          address: str | None = None) -> str:
    return mint(secret.encode(), action, app, name, int(time.time() + ttl), address)


@dataclass
class Attempt:
    statuses: list[StatusReceived] = field(default_factory=list)
    closed_by_server: bool = False
    answered_after_s: float | None = None

    @property
    def codes(self) -> list[str]:
        return [s.code for s in self.statuses]


async def rtmp_attempt(port: int, key: str, *, app: str = "live", play: bool = False, timeout_s: float = 8.0) -> Attempt:
    """Connect, publish (or play) `key` the way OBS does, and report the server's onStatus answers and
    whether it closed the connection. Stops at the first NetStream status that is not an error's prelude."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    client = ClientSession()
    client.connect(app, f"rtmp://127.0.0.1:{port}/{app}")
    client.play(key) if play else client.publish(key)
    writer.write(client.data_to_send())
    result = Attempt()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    asked_at = None
    try:
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except (ConnectionError, asyncio.TimeoutError):
                data = b""
                if loop.time() >= deadline:
                    break
            if not data:
                result.closed_by_server = True
                break
            client.receive_data(data)
            for e in client.events():
                if isinstance(e, StatusReceived):
                    result.statuses.append(e)
                    if result.answered_after_s is None and asked_at is not None:
                        result.answered_after_s = loop.time() - asked_at
            out = client.data_to_send()
            if out:
                writer.write(out)
                if asked_at is None and client.stream_id:
                    asked_at = loop.time()  # publish/play went out with createStream's answer
            if any(s.code in ("NetStream.Publish.Start", "NetStream.Play.Start") for s in result.statuses):
                break
            if any(s.level == "error" for s in result.statuses) and play:
                break
    finally:
        writer.close()
    return result


def closed_server(server_factory, monkeypatch, **settings):
    monkeypatch.setenv("MEDIASERVER_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("STUDIO_KEY", STUDIO_KEY)
    return server_factory(**{
        "auth.publish_open": "", "auth.stream_keys": '["live/studio=STUDIO_KEY"]', "auth.failure_delay_ms": "200",
        **settings,
    })


BAD_CREDENTIALS = {  # what a publisher sends (app, stream key) -> the reason the server logs
    "missing": ("other", "cam", "missing"),
    "no stream key in an app that has them": ("live", "cam", "unknown_key"),
    "expired": ("live", f"cam?token={token(Action.PUBLISH, 'cam', ttl=-5)}", "expired"),
    "forged": ("live", f"cam?token={token(Action.PUBLISH, 'cam', secret='not-the-server-secret-0123')}", "invalid"),
    "another stream": ("live", f"cam?token={token(Action.PUBLISH, 'other')}", "invalid"),
    "another app": ("live", f"cam?token={token(Action.PUBLISH, 'cam', app='live2')}", "invalid"),
    "a play token": ("live", f"cam?token={token(Action.PLAY, 'cam')}", "wrong_action"),
    "garbage": ("live", "cam?token=%00%ff" + "A" * 600, "malformed"),
    "a mistyped stream key": ("live", STUDIO_KEY[:-1] + "X", "unknown_key"),
    "another address": ("live", f"cam?token={token(Action.PUBLISH, 'cam', address='10.9.9.9')}", "invalid"),
}


async def test_bad_publish_credentials_get_unauthorized_then_a_close_and_no_stream(server_factory, monkeypatch):
    server = closed_server(server_factory, monkeypatch)
    names = list(BAD_CREDENTIALS)
    attempts = await asyncio.gather(*(rtmp_attempt(server.rtmp_port, BAD_CREDENTIALS[n][1], app=BAD_CREDENTIALS[n][0])
                                      for n in names))
    for name, attempt in zip(names, attempts):
        assert attempt.codes == ["NetStream.Publish.Unauthorized"], (name, attempt.codes)
        assert attempt.statuses[0].level == "error"
        assert attempt.closed_by_server, f"{name}: the connection stayed open (OBS would wait instead of erroring)"
        assert attempt.answered_after_s is not None and attempt.answered_after_s >= 0.09, (name, attempt)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.flv_url("cam")) as resp:
            assert resp.status == 404, "a refused publisher created a stream"
    log = server.log_text()
    for name in names:
        assert f"reason={BAD_CREDENTIALS[name][2]}" in log, (name, server.log_tail())
    # Refusals are logged without the secret: no token, no stream key, not even a mistyped one.
    assert SECRET not in log and STUDIO_KEY[:-1] not in log
    for name in ("expired", "forged", "a play token"):
        assert BAD_CREDENTIALS[name][1].split("token=")[1] not in log


async def test_a_token_in_the_stream_key_or_in_the_server_url_publishes(server_factory, monkeypatch):
    server = closed_server(server_factory, monkeypatch)
    attempt = await rtmp_attempt(server.rtmp_port, f"a?token={token(Action.PUBLISH, 'a')}")
    assert attempt.codes[-1] == "NetStream.Publish.Start"
    # OBS users may put it in the server URL instead: rtmp://HOST/live?token=...
    attempt = await rtmp_attempt(server.rtmp_port, "b", app=f"live?token={token(Action.PUBLISH, 'b')}")
    assert attempt.codes[-1] == "NetStream.Publish.Start"


async def test_ffmpeg_without_a_token_fails_fast_with_the_error_and_with_one_publishes(
        server_factory, monkeypatch, publish, media, stream_name):
    server = closed_server(server_factory, monkeypatch)
    refused = publish(server, stream_name, media.av, expect_failure=True)
    assert refused.wait(10.0) not in (None, 0), "ffmpeg kept trying instead of failing on Unauthorized"
    assert "Unauthorized" in refused.log_text() or "error" in refused.log_text().lower(), refused.log_text()
    good = f"{stream_name}?token={token(Action.PUBLISH, stream_name)}"
    publish(server, good, media.av, loop=True)
    first = await wait_live(server, stream_name)
    assert first is not None


async def test_a_stream_key_publishes_under_its_public_name_and_viewers_never_see_the_key(
        server_factory, monkeypatch, publish, media):
    server = closed_server(server_factory, monkeypatch)
    publish(server, STUDIO_KEY, media.av, loop=True)
    await wait_live(server, "studio")
    async with aiohttp.ClientSession() as http:
        async with http.get(server.flv_url(STUDIO_KEY)) as resp:
            assert resp.status == 404
        async with http.get(server.hls_url("studio")) as resp:
            playlist = await resp.text()
            assert resp.status == 200 and STUDIO_KEY not in playlist
    assert STUDIO_KEY not in server.log_text(), "the stream key leaked into the log"
    # The public name itself is reserved: publishing it directly needs a token.
    attempt = await rtmp_attempt(server.rtmp_port, "studio")
    assert attempt.codes == ["NetStream.Publish.Unauthorized"]


def run_token_command(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mediaserver", "token", *args], capture_output=True, text=True,
                          timeout=30, env=env)


async def test_the_token_command_mints_tokens_the_server_accepts(server_factory, monkeypatch, publish, media,
                                                                 stream_name):
    import os

    server = closed_server(server_factory, monkeypatch, **{"auth.play_open": ""})
    env = {**os.environ, "MEDIASERVER_TOKEN_SECRET": SECRET}
    out = run_token_command("--action", "publish", "--app", "live", "--stream", stream_name, "--ttl", "600",
                            "--base-url", f"rtmp://127.0.0.1:{server.rtmp_port}", env=env)
    assert out.returncode == 0, out.stderr
    tok, url = out.stdout.split()
    assert url == f"rtmp://127.0.0.1:{server.rtmp_port}/live/{stream_name}?token={tok}"
    publish(server, f"{stream_name}?token={tok}", media.av, loop=True)
    out = run_token_command("--action", "play", "--stream", stream_name, "--base-url", server.http_base, env=env)
    assert out.returncode == 0, out.stderr
    tok, flv_url, hls_url = out.stdout.split()
    assert hls_url.endswith(f"/live/{stream_name}/index.m3u8?token={tok}")
    viewer = server.flv_viewer(stream_name)
    viewer.url = flv_url
    async with viewer:
        assert await viewer.wait_video_frames(10, timeout_s=10)
    # Without a secret it says what to set, and exits 2.
    bare = {k: v for k, v in env.items() if k != "MEDIASERVER_TOKEN_SECRET"}
    out = run_token_command("--action", "play", "--stream", "x", env=bare)
    assert out.returncode == 2 and "MEDIASERVER_TOKEN_SECRET" in out.stderr


@pytest.mark.parametrize("settings, env, message", [
    ({"auth.play_open": ""}, {}, "no play token can be valid"),
    ({"auth.stream_keys": '["live/x=NOT_SET_ANYWHERE"]'}, {}, "NOT_SET_ANYWHERE"),
    ({}, {"MEDIASERVER_ADMIN_TOKEN": "short"}, "at least 16"),
    ({}, {"MEDIASERVER_TOKEN_SECRET": "short"}, "at least 16"),
    ({"webhooks.on_publish": "ftp://x"}, {}, "http:// or https://"),
])
def test_settings_that_cannot_work_stop_the_server_at_start_with_the_reason(tmp_path, monkeypatch, settings, env, message):
    import os

    monkeypatch.delenv("MEDIASERVER_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("MEDIASERVER_ADMIN_TOKEN", raising=False)
    args = [sys.executable, "-m", "mediaserver", "--set", "rtmp.port=1", "--set", "http.port=1"]
    for k, v in settings.items():
        args += ["--set", f"{k}={v}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30, env={**os.environ, **env}, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
