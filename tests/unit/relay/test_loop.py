"""Relay loops: a push or a pull naming this server's own stream through any of its names or addresses is
refused, with a message naming the loop; anything else is not a loop."""

from __future__ import annotations

import pytest

from mediaserver.config import PushTarget
from mediaserver.relay.loop import ThisHost, pull_loop, push_loop, this_host
from mediaserver.relay.manager import configured_pushes
from mediaserver.relay.pull_source import parse_source
from mediaserver.relay.target import TargetError, parse_push_url

HERE = ThisHost.of(("myhost", "10.0.0.5", "fd00::2", "origin.example.net."),
                   {"rtmp": 1935, "rtmps": 1936, "http": 8080, "https": 8443})


def test_a_push_to_our_own_port_app_and_stream_through_any_of_our_names_is_a_loop():
    for url in ("rtmp://127.0.0.1/live/cam", "rtmp://localhost:1935/live/cam?x=1", "rtmp://127.1.2.3/live/cam",
                "rtmp://[::1]/live/cam", "rtmp://MYHOST./live/cam", "rtmps://10.0.0.5:1936/live/cam",
                "rtmp://0.0.0.0/live/cam", "rtmp://[fd00:0::2]/live/cam", "rtmp://[::ffff:10.0.0.5]/live/cam",
                "rtmp://origin.example.net/live/cam"):
        why = push_loop(parse_push_url(url), "live", "cam", HERE)
        assert why is not None and "live/cam" in why and "loop" in why, url
    for url in ("rtmp://127.0.0.1:1940/live/cam", "rtmp://127.0.0.1/live/other", "rtmp://127.0.0.1/live2/cam",
                "rtmp://a.example/live/cam", "rtmps://127.0.0.1:1935/live/cam", "rtmp://10.0.0.6/live/cam",
                "rtmp://myhost.other/live/cam"):
        assert push_loop(parse_push_url(url), "live", "cam", HERE) is None, url


def test_a_pull_of_our_own_stream_is_a_loop_over_rtmp_and_http_flv():
    for url in ("rtmp://10.0.0.5/live/cam", "rtmps://myhost:1936/live/cam?token=x", "http://10.0.0.5:8080/live/cam.flv",
                "https://origin.example.net:8443/live/cam.flv?sign=1", "http://[::1]:8080/live/cam.flv"):
        why = pull_loop(parse_source(url, {}), "live", "cam", HERE)
        assert why is not None and "live/cam" in why and "token" not in why and "sign" not in why, url
    for url in ("rtmp://10.0.0.5/live/src", "http://10.0.0.5:8081/live/cam.flv", "http://cdn.example/live/cam.flv",
                "https://10.0.0.5:8080/live/cam.flv", "http://10.0.0.5:8080/other/cam.flv"):
        assert pull_loop(parse_source(url, {}), "live", "cam", HERE) is None, url


def test_a_configured_push_of_a_named_stream_into_itself_stops_the_start():
    with pytest.raises(TargetError, match=r"relay.push\[1\].url: .*own stream live/cam@360p"):
        configured_pushes([PushTarget(url="rtmp://a.example/x/y"),
                           PushTarget(url="rtmp://10.0.0.5/live/cam@360p", app="live", stream="cam", rendition="360p")],
                          {}, HERE)
    assert len(configured_pushes([PushTarget(url="rtmp://10.0.0.5/live/cam", app="live")], {}, HERE)) == 1  # per stream


def test_this_host_lists_loopback_the_hostname_and_the_extras():
    found = this_host(["edge.example"])
    assert "127.0.0.1" in found and "edge.example" in found and len(found) >= 3
