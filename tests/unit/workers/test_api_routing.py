"""Which worker answers an admin API request, and the one answer of a request every worker applied."""

from __future__ import annotations

import json

import pytest

from mediaserver.wiring.worker import (ALL, VIEWERS, api_route, merge_viewers, node_viewer_id, pick_answer,
                                       segmented_stream, session_of, session_worker, split_viewer_id,
                                       with_node_viewer_ids)
from aiohttp import web


@pytest.mark.parametrize("method, path, where", [
    ("GET", "/api/v1/streams", None),  # merged by the node view instead
    ("GET", "/api/v1/nodes", None),
    ("GET", "/api/v1/blocks", None),
    ("PUT", "/api/v1/blocks/live/s", ALL),
    ("DELETE", "/api/v1/blocks/live/s", ALL),
    ("POST", "/api/v1/streams/live/s/viewers/kick", ALL),
    ("POST", "/api/v1/streams/live/s/kick", "live/s kick"),
    ("GET", "/api/v1/streams/live/s", "live/s"),
    ("POST", "/api/v1/streams/live/s/viewers/7/kick", "live/s viewer"),
    ("GET", "/api/v1/streams/live/s/viewers", VIEWERS),
    ("DELETE", "/api/v1/streams/live/s/record", "live/s"),
    ("OPTIONS", "/api/v1/streams/live/s", None),
    ("GET", "/api/v1/streams//s", None),
    ("GET", "/live/s.flv", None),
])
def test_requests_go_to_the_worker_that_can_answer_them(method, path, where):
    assert api_route(method, path) == where


def test_one_answer_from_many():
    forwarded = web.json_response({"kicked": "live/s", "forwarded": True})
    held = web.json_response({"kicked": "live/s", "viewers_ended": 3})
    missing = web.json_response({"error": "no"}, status=404)
    assert pick_answer([forwarded, missing, held]) is held
    assert pick_answer([missing]) is missing
    assert pick_answer([]).status == 503
    kicked = pick_answer([web.json_response({"stream": "live/s", "viewers_kicked": [1, 2]}), missing,
                          web.json_response({"stream": "live/s", "viewers_kicked": [1]})], kicked_viewers=True)
    assert json.loads(kicked.body)["viewers_kicked"] == [1, 2, 1]


@pytest.mark.parametrize("method, path, stream", [
    ("GET", "/live/s/index.m3u8", "live/s"),
    ("GET", "/live/s/1a2b-3.ts", "live/s"),
    ("HEAD", "/live/s@480p/cmaf.m3u8", "live/s@480p"),
    ("GET", "/live/s/manifest.mpd", "live/s"),
    ("GET", "/live/s/v1-7.m4s", "live/s"),
    ("GET", "/live/s.flv", None),  # FLV viewers pull the stream instead
    ("GET", "/live/s/thumbnail.jpg", None),
    ("POST", "/live/s/index.m3u8", None),
    ("GET", "/api/v1/streams.m3u8", None),
    ("GET", "/vod/abc/index.m3u8", None),  # recordings: files on the shared disk
    ("GET", "//s/index.m3u8", None),
    ("GET", "/a/b/c/index.m3u8", None),
])
def test_segmented_formats_of_a_stream_are_recognised(method, path, stream):
    assert segmented_stream(method, path) == stream


def test_a_viewer_has_one_id_on_the_node_that_names_its_worker():
    assert split_viewer_id(str(node_viewer_id(7, 1))) == (1, 7)
    assert node_viewer_id(7, 0) != node_viewer_id(7, 1)
    assert split_viewer_id("x7") is None and split_viewer_id("1" * 16) is None


def test_the_viewers_of_a_stream_are_every_workers_each_with_its_node_wide_id():
    publisher = web.json_response({"stream": "live/s", "viewers": [{"id": 1, "format": "flv"}], "note": "n"})
    other = web.json_response({"stream": "live/s", "viewers": [{"id": 1, "format": "rtmp"}, {"id": 4, "format": "flv"}]})
    missing = web.json_response({"error": "no"}, status=404)
    body = json.loads(merge_viewers({0: publisher, 1: other, 2: missing}).body)
    assert [(v["id"], v["worker"], v["format"]) for v in body["viewers"]] == [
        (node_viewer_id(1, 0), 0, "flv"), (node_viewer_id(1, 1), 1, "rtmp"), (node_viewer_id(4, 1), 1, "flv")]
    assert body["stream"] == "live/s" and body["note"] == "n"
    assert merge_viewers({0: missing}) is missing and merge_viewers({}).status == 503


@pytest.mark.parametrize("path, session", [
    ("/live/s/whep/abc-_1.0", "abc-_1.0"),
    ("/live/s/whip/abc", "abc"),
    ("/live/s/whep", None),
    ("/live/s/whep/", None),
    ("/live/s/index.m3u8", None),
    ("/a/b/c/whep/x", None),
])
def test_a_webrtc_session_url_is_recognised(path, session):
    assert session_of(path) == session


def test_a_session_names_its_worker_and_hostile_indexes_are_no_worker():
    assert session_worker("abc-_1.0") == ("abc-_1", 0) and session_worker("abc.12") == ("abc", 12)
    for hostile in ("abc", ".1", "abc.", "abc.\u00b2", "abc.\u0661", "abc." + "9" * 5000, "abc.1x"):
        assert session_worker(hostile) is None, hostile[:20]


def test_hostile_viewer_ids_are_no_viewer():
    for hostile in ("\u00b2", "\u0661\u0662", "9" * 5000, "-1", ""):
        assert split_viewer_id(hostile) is None, hostile[:20]


def test_the_viewers_a_worker_kicked_are_named_by_their_node_wide_ids():
    answer = web.json_response({"stream": "live/s", "viewers_kicked": [1, 2]})
    body = json.loads(with_node_viewer_ids(answer, 1).body)
    assert body == {"stream": "live/s", "viewers_kicked": [node_viewer_id(1, 1), node_viewer_id(2, 1)]}
    missing = web.json_response({"error": "no"}, status=404)
    assert with_node_viewer_ids(missing, 1) is missing


def test_a_siblings_hls_answer_is_awaited_longer_than_the_owner_may_hold_a_blocking_reload():
    import dataclasses

    from mediaserver.config import Config
    from mediaserver.wiring.worker import PROXY_TIMEOUT_S, WorkerSetup

    setup = WorkerSetup(1, "/nonexistent.sock", "secret")
    try:
        assert setup._proxy_timeout_s() == PROXY_TIMEOUT_S
        setup.config = Config()
        assert setup._proxy_timeout_s() == PROXY_TIMEOUT_S  # 2 s segments: held at most 6 s
        setup.config = dataclasses.replace(Config(), hls=dataclasses.replace(Config().hls, segment_duration=10.0))
        assert setup._proxy_timeout_s() > 30.0  # held up to 30 s by the owner's fast lane
    finally:
        setup._private.close()
        setup.outbox.close()
