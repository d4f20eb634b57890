"""Push targets and states, pure: URL parsing, ${VAR}s, redaction, the loop check, which streams a
[[relay.push]] table matches, the capped backoff and the state machine."""

from __future__ import annotations

import pytest

from mediaserver.config import ConfigError, PushTarget, config_from_dict
from mediaserver.hub.stream import StreamKey
from mediaserver.relay.manager import configured_pushes
from mediaserver.relay.state import Backoff, RelayState, RelayStatus
from mediaserver.relay.target import TargetError, expand_env, parse_push_url, redact


def test_a_push_url_splits_into_tc_url_app_and_key_with_its_query():
    t = parse_push_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh?backup=1")
    assert (t.scheme, t.host, t.port, t.app, t.key) == ("rtmp", "a.rtmp.youtube.com", 1935, "live2", "abcd-efgh?backup=1")
    assert t.tc_url == "rtmp://a.rtmp.youtube.com:1935/live2" and t.stream_name == "abcd-efgh"
    s = parse_push_url("RTMPS://[::1]:8443/app/a/b")
    assert (s.scheme, s.host, s.port, s.app, s.key, s.tls) == ("rtmps", "::1", 8443, "app", "a/b", True)
    assert parse_push_url("rtmps://live.example/app/k").port == 443


@pytest.mark.parametrize("url", ["http://a/b/c", "rtmp://", "rtmp://host", "rtmp://host/app", "rtmp://host/app/",
                                 "rtmp://h:99999/a/b", "rtmp://h:x/a/b", "rtmp://user:pw@h/a/b", "rtmp://h/a/b#f",
                                 "rtmp://h/a/b c", "", "x" * 3000, "srt://h/a/b"])
def test_bad_push_urls_are_refused_naming_the_accepted_schemes(url):
    with pytest.raises(TargetError) as err:
        parse_push_url(url)
    assert "rtmp" in str(err.value)


def test_variables_are_filled_from_the_environment_and_a_missing_one_is_named():
    assert expand_env("rtmp://h/a/${KEY}?x=${Q}", {"KEY": "k1", "Q": "2"}) == "rtmp://h/a/k1?x=2"
    assert expand_env("rtmp://h/a/$KEY", {}) == "rtmp://h/a/$KEY"  # only ${NAME} is a variable
    with pytest.raises(TargetError, match=r"\$\{YOUTUBE_KEY\}.*export YOUTUBE_KEY"):
        expand_env("rtmp://h/a/${YOUTUBE_KEY}", {})


def test_redaction_never_shows_the_key_or_the_query():
    assert redact("rtmp://a.example/live2/secret-key?token=t0k") == "rtmp://a.example:1935/live2/***"
    assert redact("rtmp://a.example/live2/${KEY}") == "rtmp://a.example:1935/live2/***"
    assert "secret" not in redact("rtmp://user:secret@h/a/b") and "secret" not in redact("garbage secret")


def test_config_targets_match_app_stream_and_rendition():
    pushes = configured_pushes([PushTarget(url="rtmp://h/a/${K}", app="live"),
                                PushTarget(url="rtmp://h/a/b", app="*", stream="cam", rendition="480p")], {"K": "k"})
    every, low = pushes
    assert every.target.key == "k" and every.shown == "rtmp://h:1935/a/***"
    assert every.matches(StreamKey("live", "x")) and not every.matches(StreamKey("other", "x"))
    assert not every.matches(StreamKey("live", "x@480p"))  # the source only, not its renditions
    assert low.matches(StreamKey("any", "cam@480p")) and not low.matches(StreamKey("any", "cam"))
    assert not low.matches(StreamKey("any", "cam@720p")) and not low.matches(StreamKey("any", "dog@480p"))
    with pytest.raises(TargetError, match=r"relay.push\[0\].url \(rtmp://h:1935/a/\*\*\*\).*\$\{K\}"):
        configured_pushes([PushTarget(url="rtmp://h/a/${K}")], {})


def test_relay_config_is_checked():
    cfg = config_from_dict({"relay": {"push": [{"url": "rtmp://h/a/k", "app": "live"},
                                               {"url": "rtmps://h/a/k2", "app": "live"}]}})
    assert [p.url for p in cfg.relay.push] == ["rtmp://h/a/k", "rtmps://h/a/k2"]  # one app may have many
    for bad, says in (({"push": [{"app": "live"}]}, "needs url"), ({"push": [{"url": "http://h/a/k"}]}, "rtmps"),
                      ({"push": [{"url": "rtmp://h/a/k", "rendition": "Bad Label"}]}, "label"),
                      ({"push_retry_min": 60.0}, "push_retry_max")):
        with pytest.raises(ConfigError, match=says):
            config_from_dict({"relay": bad})


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset():
    b = Backoff(1.0, 30.0)
    assert [b.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    b.reset()
    assert b.next_delay() == 1
    big = Backoff(1.0, 30.0, attempt=10_000)
    assert big.next_delay() == 30


def test_the_state_machine_counts_reconnects_and_keeps_the_last_error_until_live():
    s = RelayStatus()
    assert s.state is RelayState.CONNECTING and s.reconnects == 0
    assert s.retrying("NetStream.Publish.BadName: taken", 10.0, 2.0)
    assert (s.state, s.error, s.retry_at) == (RelayState.RETRYING, "NetStream.Publish.BadName: taken", 12.0)
    s.connecting(12.0)
    assert s.reconnects == 1 and s.error == "NetStream.Publish.BadName: taken"  # shown while it tries again
    assert s.retrying("NetStream.Publish.BadName: taken", 13.0, 4.0) and s.retry_at == 17.0
    s.connecting(17.0)
    assert s.live(18.0) and s.error is None and s.reconnects == 2 and s.live_since == 18.0
    assert s.stopped("the stream ended", 20.0) and s.state is RelayState.STOPPED and s.error == "the stream ended"
    assert not s.stopped("again", 21.0) and s.error == "the stream ended"
