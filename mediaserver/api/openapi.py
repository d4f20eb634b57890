"""The admin API described as an OpenAPI 3.1 document, served at /api/v1/openapi.json.

Written by hand next to the routes (`admin.ROUTES`); a test checks that every route is described and
every described operation is a route, with the same methods and path parameters.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_~-][A-Za-z0-9_.~-]{0,127}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "503": {"$ref": "#/components/responses/Disabled"},
}
_NOT_FOUND = {"404": {"$ref": "#/components/responses/NotFound"}}
_STREAM_PARAMS = [
    {"name": "app", "in": "path", "required": True, "schema": _NAME, "description": "The app, e.g. live."},
    {"name": "name", "in": "path", "required": True, "schema": _NAME, "description": "The public stream name."},
]
_REASON_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {
        "type": "object", "properties": {"reason": {"type": "string", "maxLength": 64}},
    }}},
}


def _op(op_id: str, summary: str, ok: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, not_found: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    responses = {"200": ok, **_ERRORS, **(_NOT_FOUND if not_found else {}), **(extra or {})}
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = body
    return op


def openapi_document() -> dict[str, Any]:
    viewer_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
                 "description": "The viewer's id, as listed by .../viewers."}
    recording_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                    "description": "The recording's id, as listed by /recordings."}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mediaserver admin API",
            "version": __version__,
            "description": "Operate a live-streaming node: list streams and viewers, kick publishers and viewers, "
                           "block stream names, mint tokens, start and stop transcodes (ABR). Every route but this document needs "
                           "`Authorization: Bearer $MEDIASERVER_ADMIN_TOKEN`. Errors are `{error, hint}`.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/openapi.json": {"get": {**_op("openapi", "This document.", _json({"type": "object"}, "OpenAPI 3.1")),
                                      "security": []}},
            "/streams": {"get": _op("list_streams", "Every stream on this node, or in the whole cluster with ?scope=cluster.",
                                    _json({"type": "object", "properties": {"streams": {"type": "array", "items": _ref("Stream")}}},
                                          "The streams, sorted by app and name."),
                                    params=[{"name": "scope", "in": "query", "required": False,
                                             "description": "node (default) or cluster: every stream published in the "
                                                            "cluster, with viewers added up across nodes.",
                                             "schema": {"enum": ["node", "cluster"], "default": "node"}}])},
            "/streams/{app}/{name}": {"get": _op(
                "get_stream", "One stream in detail, with its viewers.",
                _json({"allOf": [_ref("Stream"), {"type": "object", "properties": {
                    "viewer_list": {"type": "array", "items": _ref("Viewer")}}}]}, "The stream."),
                params=_STREAM_PARAMS, not_found=True)},
            "/streams/{app}/{name}/kick": {"post": _op(
                "kick_stream", "End the publisher's session; its viewers get the end of the stream. With "
                "block_seconds the name is also blocked, so an encoder that reconnects is refused.",
                _json({"type": "object", "properties": {
                    "kicked": {"type": "string"}, "reason": {"type": "string"}, "viewers_ended": {"type": "integer"},
                    "blocked_until": {"type": ["number", "null"]}}}, "Kicked."),
                params=_STREAM_PARAMS, not_found=True,
                body={"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "reason": {"type": "string", "maxLength": 64},
                    "block_seconds": {"type": "number", "minimum": 1, "maximum": 366 * 86400}}}}}})},
            "/streams/{app}/{name}/viewers": {"get": _op(
                "list_viewers", "The stream's HTTP-FLV, WebSocket-FLV and RTMP viewers (HLS is stateless).",
                _json({"type": "object", "properties": {"stream": {"type": "string"},
                                                        "viewers": {"type": "array", "items": _ref("Viewer")}}},
                      "The viewers."),
                params=_STREAM_PARAMS, not_found=True)},
            "/streams/{app}/{name}/viewers/kick": {"post": _op(
                "kick_viewers", "Disconnect every viewer of the stream; the publisher goes on.",
                _json({"type": "object", "properties": {"viewers_kicked": {"type": "array", "items": {"type": "integer"}}}},
                      "The ids of the viewers disconnected."),
                params=_STREAM_PARAMS, not_found=True, body=_REASON_BODY)},
            "/streams/{app}/{name}/viewers/{id}/kick": {"post": _op(
                "kick_viewer", "Disconnect one viewer; the others keep playing.",
                _json({"type": "object", "properties": {"viewer_kicked": {"type": "integer"}}}, "Disconnected."),
                params=[*_STREAM_PARAMS, viewer_id], not_found=True, body=_REASON_BODY)},
            "/blocks": {"get": _op("list_blocks", "Blocked stream names still in force.",
                                   _json({"type": "object", "properties": {"blocks": {"type": "array", "items": _ref("Block")}}},
                                         "The blocks."))},
            "/blocks/{app}/{name}": {
                "put": _op("put_block", "Refuse publishing this public name (with any credential) for a while.",
                           _json(_ref("Block"), "Blocked."), params=_STREAM_PARAMS,
                           body={"required": True, "content": {"application/json": {"schema": {
                               "type": "object", "required": ["seconds"], "properties": {
                                   "seconds": {"type": "number", "minimum": 1, "maximum": 366 * 86400},
                                   "reason": {"type": "string", "maxLength": 128}}}}}}),
                "delete": _op("delete_block", "Lift a block.",
                              _json({"type": "object", "properties": {"unblocked": {"type": "string"}}}, "Lifted."),
                              params=_STREAM_PARAMS, not_found=True),
            },
            "/tokens": {"post": _op(
                "mint_token", "Mint a signed play or publish token (needs the token secret configured).",
                _json({"type": "object", "properties": {
                    "token": {"type": "string"}, "expires_at": {"type": "integer"}, "action": {"type": "string"},
                    "app": {"type": "string"}, "stream": {"type": "string"}, "ip": {"type": ["string", "null"]}}},
                    "The token; put it in the URL as ?token=..."),
                body={"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["action", "app", "stream"], "properties": {
                        "action": {"enum": ["play", "publish"]}, "app": _NAME, "stream": _NAME,
                        "ttl": {"type": "number", "minimum": 1, "default": 3600},
                        "ip": {"type": "string", "description": "Bind the token to this client address."}}}}}},
                extra={"409": {"$ref": "#/components/responses/Conflict"}})},
            "/streams/{app}/{name}/abr": {
                "get": _op("get_abr", "The stream's transcode (ABR): whether it runs, its renditions with their "
                           "viewers and bit rates, its worker's CPU, speed and restarts.",
                           _json(_ref("Abr"), "The transcode's state."), params=_STREAM_PARAMS, not_found=True),
                "post": _op("start_abr", "Start the stream's transcode (or keep a running one in use) and wait up to "
                            "abr.wait seconds for its renditions' first keyframes.",
                            _json(_ref("Abr"), "Running; `started` is false when it already ran."),
                            params=_STREAM_PARAMS, not_found=True, extra={
                                "409": _json(_ref("AbrRefusal"), "No rung of the ladder is below the source."),
                                "415": _json(_ref("AbrRefusal"), "The workers cannot decode the source."),
                                "503": _json(_ref("AbrRefusal"), "This node's transcode budget (abr.max_jobs) is "
                                                                 "spent, or the API is disabled.")}),
                "delete": _op("stop_abr", "Stop the stream's transcode; its renditions end, the source goes on.",
                              _json(_ref("Abr"), "Stopped."), params=_STREAM_PARAMS, not_found=True),
            },
            "/streams/{app}/{name}/record": {
                "post": _op("start_record", "Record the stream from its kept history on (fMP4 files under record.path, "
                            "one catalog row per file); a stream already recorded goes on.",
                            _json({"type": "object"}, "Recording."), params=_STREAM_PARAMS, not_found=True),
                "delete": _op("stop_record", "Stop recording the stream; its file is closed and its row completed.",
                              _json({"type": "object"}, "Stopped."), params=_STREAM_PARAMS, not_found=True),
            },
            "/recordings": {"get": _op(
                "list_recordings", "Recordings newest first, one page at a time (`next` is the cursor of the next).",
                _json({"type": "object", "properties": {"recordings": {"type": "array", "items": _ref("Recording")},
                                                        "next": {"type": ["string", "null"]}}}, "A page."),
                params=[{"name": n, "in": "query", "required": False, "schema": {"type": "string"}, "description": d}
                        for n, d in (("app", "Only this app."), ("stream", "Only this stream."),
                                     ("since", "Overlapping this time or later (ISO 8601)."),
                                     ("until", "Started before this time (ISO 8601)."),
                                     ("limit", "Rows per page, 1-200 (50)."), ("cursor", "The previous page's next."))],
                not_found=True)},
            "/recordings/{id}": {
                "get": _op("get_recording", "One recording and its VOD URLs.", _json(_ref("Recording"), "The row."),
                           params=[recording_id], not_found=True),
                "delete": _op("delete_recording", "Delete a finished recording: its file and its row.",
                              _json({"type": "object"}, "Deleted."), params=[recording_id], not_found=True,
                              extra={"409": {"$ref": "#/components/responses/Conflict"}}),
            },
            "/streams/{app}/{name}/relays": {
                "get": _op("list_relays", "The stream's pushes to other servers ([[relay.push]] and added here), "
                           "with their state, last error, bytes, bit rate and reconnects.",
                           _json({"type": "object", "properties": {"stream": {"type": "string"}, "relays": {
                               "type": "array", "items": _ref("Relay")}}}, "The pushes."),
                           params=_STREAM_PARAMS, not_found=True),
                "post": _op("add_relay", "Push the live stream to another RTMP or RTMPS server (as it arrives, no "
                            "re-encoding, reconnecting with backoff) until it ends or the push is deleted.",
                            _json(_ref("Relay"), "The push, starting."), params=_STREAM_PARAMS, not_found=True,
                            body={"required": True, "content": {"application/json": {"schema": {
                                "type": "object", "required": ["url"], "properties": {"url": {
                                    "type": "string", "description": "rtmp://HOST[:PORT]/APP/KEY or rtmps://..."}}}}}},
                            extra={"429": {"$ref": "#/components/responses/BadRequest"}}),
            },
            "/streams/{app}/{name}/relays/{id}": {
                "delete": _op("delete_relay", "Stop a push and remove it.", _json(_ref("Relay"), "Removed."),
                              params=[*_STREAM_PARAMS, {"name": "id", "in": "path", "required": True,
                                                        "schema": {"type": "string"},
                                                        "description": "The push's id, as listed by .../relays."}],
                              not_found=True),
            },
            "/nodes": {"get": _op("list_nodes", "The nodes of the cluster from Redis (this node alone when standalone).",
                                  _json({"type": "object", "properties": {"nodes": {"type": "array", "items": {"type": "object"}}}},
                                        "The nodes."))},
            "/pulls": {"get": _op("list_pulls", "The pull relays ([[relay.pull]]): each stream's source URL (scheme, "
                                  "host and app; key and query left out), mode, state, last error, bytes and "
                                  "reconnects.",
                                  _json({"type": "object", "properties": {"pulls": {"type": "array", "items": {
                                      "type": "object", "properties": {
                                          "app": {"type": "string"}, "stream": {"type": "string"},
                                          "source": {"type": "string"}, "mode": {"enum": ["on_demand", "always"]},
                                          "state": {"enum": ["connecting", "live", "retrying", "idle", "stopped",
                                                             "standby"],
                                                    "description": "standby: a cluster origin whose pull waits while "
                                                    "another node holds the stream (last_error names it)."},
                                          "since": {"type": "number", "description": "Unix time of the last change "
                                                    "of state."},
                                          "last_error": {"type": "string", "description": "Why the last "
                                                         "connection ended or failed (\"\" before any)."},
                                          "bytes": {"type": "integer"}, "connects": {"type": "integer"},
                                          "reconnects": {"type": "integer"}}}}}},
                                        "The pulls."))},
            "/route/{app}/{name}": {"get": {
                **_op("get_route", "Where a player should watch the stream: its play URLs on the least loaded edge "
                      "(role edge or both, heartbeat current, under cluster.max_viewers and max_egress_mbps; ties "
                      "by node id). A standalone node answers its own URLs on the host the request came to. "
                      "Public: no admin token, but the play token when the app needs one (?token=, carried "
                      "into every URL). The node chosen admits the viewer (viewers limit, on_play) when it "
                      "plays. NAME may be a rendition, NAME@LABEL.",
                      _json(_ref("Route"), "The node chosen and its play URLs, one per format it serves."),
                      params=[*_STREAM_PARAMS, {"name": "token", "in": "query", "required": False,
                                                "schema": {"type": "string"},
                                                "description": "The play token, when the app needs one."}],
                      extra={"401": _json(_ref("Error"), "The app needs a play token and none was sent."),
                             "403": _json(_ref("Error"), "The play token is refused (expired, for another "
                                          "stream or address)."),
                             "503": _json(_ref("Error"), "No edge can take a viewer now (none serves viewers, "
                                          "or every one is at its ceiling); Retry-After says when to ask again.")}),
                "security": []}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "The value of MEDIASERVER_ADMIN_TOKEN (or api.token_env)."}},
            "schemas": {
                "Route": {"type": "object", "required": ["node", "base", "urls"], "properties": {
                    "app": {"type": "string"}, "stream": {"type": "string"},
                    "node": {"type": "string", "description": "The node's id (cluster.node_id)."},
                    "standalone": {"type": "boolean", "description": "true: this node is not in a cluster."},
                    "base": {"type": "string", "description": "The node's HTTP base URL for players "
                             "(cluster.public_url, else advertise_url)."},
                    "player": {"type": "string", "description": "The node's player page for the stream."},
                    "live": {"type": "boolean", "description": "Whether the stream (a rendition's source) is "
                             "published now, here or on a node of the cluster. false: the URLs are right but "
                             "answer 404 until it is; players may wait and retry."},
                    "urls": {"type": "object", "description": "Play URLs by format, for the formats the node "
                             "serves: flv, ws-flv, hls, llhls, dash, rtmp.",
                             "additionalProperties": {"type": "string"}},
                    "load": {"type": "object", "description": "The node's load as its last heartbeat told it.",
                             "properties": {"viewers": {"type": "integer"}, "egress_bps": {"type": "integer"},
                                            "max_viewers": {"type": "integer"},
                                            "max_egress_bps": {"type": "integer"}}}}},
                "Error": {"type": "object", "required": ["error", "hint"],
                          "properties": {"error": {"type": "string"}, "hint": {"type": "string"}}},
                "Stream": {"type": "object", "properties": {
                    "app": {"type": "string"}, "name": {"type": "string"},
                    "state": {"enum": ["live", "idle"], "description": "idle: the publisher left and may come back "
                                                                        "within the reconnect grace."},
                    "publisher": {"type": ["string", "null"], "description": "The publisher's address and port."},
                    "video": {"type": ["object", "null"], "properties": {
                        "codec": {"type": "string"}, "width": {"type": ["integer", "null"]},
                        "height": {"type": ["integer", "null"]}, "fps": {"type": "number"}}},
                    "audio": {"type": ["object", "null"], "properties": {
                        "codec": {"type": "string"}, "sample_rate": {"type": ["integer", "null"]},
                        "channels": {"type": ["integer", "null"]}}},
                    "uptime_s": {"type": "number"}, "frames_in": {"type": "integer"}, "bytes_in": {"type": "integer"},
                    "bitrate_kbps": {"type": "object", "properties": {
                        "measured": {"type": ["number", "null"], "description": "Received, over the last ~10 s."},
                        "declared": {"type": ["object", "null"], "description": "The encoder's metadata (video, audio)."}}},
                    "viewers": {"type": "object", "additionalProperties": {"type": "integer"},
                                "description": "Viewers by format: flv, ws-flv, rtmp."},
                    "viewers_total": {"type": "integer"},
                    "recording": {"type": ["object", "null"], "description": "null when this node cannot record the "
                                  "stream (record.mode, record.apps); else whether it is recorded and the id of the "
                                  "file being written (null until its first fragment).", "properties": {
                                      "active": {"type": "boolean"}, "id": {"type": ["string", "null"]}}},
                    "health": {"type": ["object", "null"], "description": "null unless [health] watches the "
                               "stream; else black, frozen, silent: null or {since (Unix s), duration_s} while "
                               "flagged.", "additionalProperties": {"type": ["object", "null"], "properties": {
                                   "since": {"type": "number"}, "duration_s": {"type": "number"}}}},
                    "frames_dropped": {"type": "integer", "description": "Frames dropped for viewers that fell behind."},
                    "frames_skipped": {"type": "object", "additionalProperties": {"type": "integer"},
                                       "description": "Frames the publisher sent that a packager could not parse "
                                                      "and skipped, by format: hls, cmaf."},
                    "bad_sequence_headers": {"type": "integer",
                                             "description": "Malformed codec configurations the publisher sent."},
                    "gop_cache_bytes": {"type": "integer"},
                    "relays": {"type": "array", "items": _ref("Relay"), "description": "The stream's pushes to "
                               "other servers (see /streams/{app}/{name}/relays)."},
                    "abr": {"type": "object", "description": "The stream's transcode (see Abr), or for a rendition "
                                                           "{rendition_of, label}; absent when ABR is not set up."},
                }},
                "Relay": {"type": "object", "description": "One push to another server.", "properties": {
                    "id": {"type": "string"}, "stream": {"type": "string"},
                    "url": {"type": "string", "description": "The target, its stream key shown as ***."},
                    "source": {"enum": ["config", "api"]},
                    "state": {"enum": ["connecting", "live", "retrying", "stopped"]},
                    "error": {"type": ["string", "null"], "description": "Why the last attempt failed (e.g. the "
                              "target's NetStream.Publish.BadName description), or why the push stopped."},
                    "note": {"type": ["string", "null"]}, "since_s": {"type": "number"},
                    "retry_in_s": {"type": ["number", "null"]}, "bytes": {"type": "integer"},
                    "bitrate_kbps": {"type": "number"}, "reconnects": {"type": "integer"}}},
                "Recording": {"type": "object", "description": "One recorded file.", "properties": {
                    "id": {"type": "string"}, "app": {"type": "string"}, "stream": {"type": "string"},
                    "node": {"type": "string"}, "status": {"enum": ["recording", "complete", "interrupted",
                                                                     "uploading", "failed"]},
                    "started_at": {"type": "string", "format": "date-time"},
                    "ended_at": {"type": ["string", "null"], "format": "date-time"},
                    "duration_s": {"type": "number"}, "bytes": {"type": "integer"},
                    "video_codec": {"type": ["string", "null"]}, "audio_codec": {"type": ["string", "null"]},
                    "width": {"type": ["integer", "null"]}, "height": {"type": ["integer", "null"]},
                    "final_status": {"type": ["string", "null"], "description": "While \"uploading\" (record."
                                     "storage = \"s3\"): the status it takes once the file is in the bucket."},
                    "storage": {"enum": ["local", "s3"], "description": "Where the file lies: the recording "
                                "node's record.path, or the bucket (record.storage = \"s3\")."},
                    "vod": {"type": "object", "properties": {"mp4": {"type": "string"}, "hls": {"type": "string"},
                                                             "dash": {"type": "string"}}}}},
                "Abr": {"type": "object", "properties": {
                    "running": {"type": "boolean"}, "enabled": {"type": "boolean",
                                                                "description": "ABR applies to the stream's app."},
                    "source": {"type": "string"}, "node": {"type": "string"}, "pid": {"type": ["integer", "null"]},
                    "state": {"enum": ["starting", "running", "restarting", "stopped"]},
                    "renditions": {"type": "array", "items": {"type": "object", "properties": {
                        "label": {"type": "string"}, "stream": {"type": "string", "description": "APP/STREAM@LABEL"},
                        "width": {"type": "integer"}, "height": {"type": "integer"}, "codec": {"type": "string"},
                        "video_kbps": {"type": "integer", "description": "The rung's configured bit rate."},
                        "kbps": {"type": ["number", "null"], "description": "Measured, over the last second."},
                        "ready": {"type": "boolean"}, "shed": {"type": "boolean"}, "viewers": {"type": "integer"},
                        "packagers": {"type": "integer"}}}},
                    "cpu_percent": {"type": ["number", "null"], "description": "The worker's CPU (100 = one core)."},
                    "cpu_seconds": {"type": "number"}, "speed": {"type": ["number", "null"],
                                                             "description": "Media time over real time; < 1 is behind."},
                    "backlog_ms": {"type": ["number", "null"], "description": "Source media queued ahead of the "
                                                                           "encoders."},
                    "late_ms": {"type": ["number", "null"], "description": "How far behind the wall clock the "
                                                                       "worker is."},
                    "restarts": {"type": "integer"},
                    "shed": {"type": "array", "items": {"type": "string"},
                             "description": "Rungs dropped because the worker fell behind real time."},
                    "started_at": {"type": "number", "description": "Unix seconds."},
                    "refused": {"type": "object", "additionalProperties": {"type": "integer"},
                                "description": "Requests for this stream's renditions refused, by reason."},
                    "refusal": {"type": "object", "description": "Why it cannot run (kept for a while after a "
                                                                 "worker's error)."}}},
                "AbrRefusal": {"type": "object", "required": ["error", "hint", "reason"], "properties": {
                    "error": {"type": "string"}, "hint": {"type": "string"},
                    "reason": {"type": "string", "description": "off, no_source, ladder, no_video, codec, budget, "
                                                                "or the worker's reason (undecodable, ...)."}}},
                "Viewer": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "format": {"type": "string"}, "peer": {"type": "string"},
                    "connected_s": {"type": "number"}, "bytes_sent": {"type": "integer"},
                    "frames_dropped": {"type": "integer"}}},
                "Block": {"type": "object", "properties": {
                    "app": {"type": "string"}, "name": {"type": "string"},
                    "until": {"type": "number", "description": "Unix seconds."},
                    "remaining_s": {"type": "number"}, "reason": {"type": "string"}}},
            },
            "responses": {
                "BadRequest": _json(_ref("Error"), "Bad JSON, a bad field or an invalid stream name."),
                "Unauthorized": _json(_ref("Error"), "No bearer token, or a wrong one (with WWW-Authenticate)."),
                "NotFound": _json(_ref("Error"), "No such stream, viewer or block."),
                "Conflict": _json(_ref("Error"), "The server cannot do it as configured."),
                "Disabled": _json(_ref("Error"), "The API is disabled: no admin token is configured."),
            },
        },
    }
