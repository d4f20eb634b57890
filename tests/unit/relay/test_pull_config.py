"""[[relay.pull]]: URLs, names and loops checked at load; ${VAR} filled at start; secrets never shown."""

from __future__ import annotations

import pytest

from mediaserver.config import ConfigError, config_from_dict
from mediaserver.errors import UsageError
from mediaserver.relay.pull_source import Backoff, parse_source, redact


def _pulls(*tables: dict, **top) -> dict:
    return {"relay": {"pull": list(tables), **top}}


def test_a_pull_loads_with_its_defaults():
    config = config_from_dict(_pulls({"app": "live", "stream": "cam1", "url": "rtmp://cam.example/live/${KEY}"},
                                     {"app": "live", "stream": "cam2", "url": "https://cdn.example/a/b.flv",
                                      "mode": "always"}))
    first, second = config.relay.pull
    assert (first.mode, second.mode) == ("on_demand", "always")
    assert config.relay.pull_grace == 10.0


@pytest.mark.parametrize(("table", "words"), [
    ({"url": "srt://cam.example/live/x"}, ["relay.pull[0].url", "scheme 'srt'", "rtmp://"]),
    ({"url": "rtmp:///live/x"}, ["relay.pull[0].url", "names no host"]),
    ({"url": "rtmp://cam.example/live"}, ["relay.pull[0].url", "rtmp://HOST[:PORT]/APP/STREAM"]),
    ({"url": "rtmp://cam.example:port/live/x"}, ["relay.pull[0].url", "is not a URL"]),
    ({"stream": "../x"}, ["relay.pull[0].stream", "not a valid name"]),
    ({"mode": "sometimes"}, ["relay.pull[0].mode", "on_demand, always"]),
    ({"url": "rtmp://127.0.0.1:1935/live/cam1"}, ["relay.pull[0].url", "own stream", "loop"]),
    ({"url": "http://localhost:8080/live/cam1.flv"}, ["own stream", "loop"]),
])
def test_bad_pulls_are_refused_naming_the_key(table, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_pulls({"app": "live", "stream": "cam1", "url": "rtmp://cam.example/live/cam1", **table}))
    for word in words:
        assert word in str(err.value)


def test_a_pull_of_another_local_server_or_name_is_no_loop():
    config_from_dict(_pulls({"app": "live", "stream": "cam1", "url": "rtmp://127.0.0.1:1936/live/cam1"},
                            {"app": "live", "stream": "cam2", "url": "rtmp://127.0.0.1/live/other"}))


def test_a_stream_pulled_twice_and_a_missing_url_are_refused():
    with pytest.raises(ConfigError, match=r"relay.pull\[1\] pulls live/cam1 again"):
        config_from_dict(_pulls({"app": "live", "stream": "cam1", "url": "rtmp://a.example/live/a"},
                                {"app": "live", "stream": "cam1", "url": "rtmp://b.example/live/b"}))
    with pytest.raises(ConfigError, match=r"relay.pull\[0\] needs url"):
        config_from_dict(_pulls({"app": "live", "stream": "cam1"}))


def test_variables_are_filled_and_a_missing_one_is_named():
    source = parse_source("rtmps://cam.example/live/${KEY}?token=${TOKEN}", {"KEY": "s3cret", "TOKEN": "t0ken"})
    assert (source.scheme, source.host, source.port, source.app) == ("rtmps", "cam.example", 443, "live")
    assert source.name == "s3cret?token=t0ken"
    assert source.tc_url == "rtmps://cam.example:443/live"
    assert "s3cret" not in source.shown and "t0ken" not in source.shown
    assert source.shown == "rtmps://cam.example/live/***"
    with pytest.raises(UsageError, match=r"relay.pull\[3\].url uses \$\{KEY\}"):
        parse_source("rtmp://cam.example/live/${KEY}", {}, "relay.pull[3].url")


def test_a_variable_that_breaks_the_url_is_refused_without_showing_it():
    with pytest.raises(UsageError) as err:
        parse_source("${URL}", {"URL": "ftp://user:pw@host/x"}, "relay.pull[0].url")
    assert "pw" not in str(err.value) and "relay.pull[0].url" in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("http://u:p@cdn.example:8080/live/key.flv?sig=abc", "http://cdn.example:8080/live/***"),
    ("https://cdn.example/KEY.flv", "https://cdn.example/***"),
    ("rtmp://[::1]:1935/live/key", "rtmp://[::1]:1935/live/***"),
    ("rtmp://cam.example/live/a/b?x=1", "rtmp://cam.example/live/***"),
])
def test_redacted_urls_keep_host_and_app_only(url, shown):
    assert redact(url) == shown


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(cap=3.0)
    assert [backoff.next_wait() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_wait() == 0.5
