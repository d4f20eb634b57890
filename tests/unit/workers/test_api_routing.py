"""Which worker answers an admin API request, and the one answer of a request every worker applied."""

from __future__ import annotations

import json

import pytest

from mediaserver.workers.worker import ALL, api_route, pick_answer
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
    ("POST", "/api/v1/streams/live/s/viewers/7/kick", "live/s"),
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
