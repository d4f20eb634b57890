"""Every 4xx and 5xx the edge can answer is built as a JSON error, including those whose aiohttp class
wants arguments of its own (405 built without them answered 500, issue 9 defect 8)."""

from __future__ import annotations

import json

from aiohttp import web

from mediaserver.edge.common import _BY_STATUS, json_error


def test_every_error_status_builds_with_a_json_body():
    assert {405, 413, 416, 429, 451, 503} <= set(_BY_STATUS)
    for status in sorted(_BY_STATUS):
        err = json_error(status, "what went wrong", "what to do")
        assert err.status == status and err.content_type == "application/json"
        assert json.loads(err.text) == {"error": "what went wrong", "hint": "what to do"}


def test_a_405_keeps_its_class_and_carries_allow():
    err = json_error(405, "method not allowed", "this URL answers GET", {"Allow": "GET,HEAD"})
    assert isinstance(err, web.HTTPMethodNotAllowed) and err.headers["Allow"] == "GET,HEAD"
