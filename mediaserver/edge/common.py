"""What every edge route shares: typed app keys, JSON errors, CORS, stream lookup."""

from __future__ import annotations

import inspect
import json
import re

from aiohttp import web

from ..auth import cors
from ..auth.names import NAME_RULE
from ..errors import UsageError
from ..hub.stream import Stream, StreamKey
from .keys import CONFIG, GATE, REGISTRY, request_key
from .names import stream_key

PLAY_QUERY = request_key("mediaserver.play_query", str)
"""Request key set by the admission middleware: the play token's query, carried to segment URIs."""


def _exception_classes() -> dict[int, type[web.HTTPException]]:
    """One aiohttp exception class per 4xx/5xx status, each constructible from a body and headers alone.
    A few (405, 413, 451) take required arguments of their own (allowed methods, sizes, a link); for those a
    subclass with the plain constructor is used, and the caller passes what they describe as headers
    (`Allow` for 405), so `except web.HTTPMethodNotAllowed` still matches."""
    found: dict[int, type[web.HTTPException]] = {}
    todo = [web.HTTPException]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.status_code >= 400 and cls.status_code not in found:
            params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # after self
            if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                cls = type(cls.__name__, (cls,), {"__init__": web.HTTPException.__init__})
            found[cls.status_code] = cls
    return found


_BY_STATUS = _exception_classes()


def json_error(status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    """An HTTP error whose body is `{"error": ..., "hint": ...}`: what went wrong and what to do.
    A 405 should carry an `Allow` header (RFC 9110 15.5.6)."""
    cls = _BY_STATUS.get(status, web.HTTPBadRequest if status < 500 else web.HTTPInternalServerError)
    return cls(text=json.dumps({"error": error, "hint": hint}), content_type="application/json", headers=headers)


def cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.app[CONFIG].http.cors_origin
    return cors.cors_headers(request.headers.get("Origin"), (origin,) if origin else (), cors.MEDIA_EXPOSED)


def peer_of(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = peer[0]
        if request.remote and request.remote != host:  # the client named by a trusted proxy
            return f"{request.remote} via {host}"
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(request.remote or "unknown")


def find_stream(request: web.Request, app: str, name: str) -> Stream:
    """The live (or reconnecting) stream named in the URL; 400 for a bad name, 404 if not published."""
    key = stream_key(app, name)
    if key is None:
        raise json_error(
            400, "invalid stream name",
            NAME_RULE,
            cors_headers(request),
        )
    stream = request.app[REGISTRY].get(key)
    if stream is None or stream.ended:
        raise not_published(request, key)
    return stream


def not_published(request: web.Request, key: StreamKey) -> web.HTTPException:
    """The 404 for a stream this node cannot serve, with the gate's hint (blocked, not in the cluster, or
    not published)."""
    error, hint = request.app[GATE].not_found(key)
    return json_error(404, error, hint, cors_headers(request))


async def send_shared(request: web.Request, body: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Answer with `body`, a bytes object shared by every viewer, without copying it per request: the
    headers go out in a write of their own, then the body as it is (web.Response would join the two)."""
    resp = web.StreamResponse(headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    if request.method != "HEAD":
        try:
            await resp.write(b"")  # sends the buffered headers alone
            await resp.write(body)
        except ConnectionError:
            return resp  # the viewer left mid-answer: aiohttp meets the lost connection and logs only the access
    await resp.write_eof()
    return resp


def play_refused(request: web.Request, subject: str, reason: str, why: str, hint: str) -> web.HTTPException:
    """A refused play credential as an HTTP answer: 401 when none was sent, else 403. `hint` says where
    the token goes for this kind of URL."""
    headers = cors_headers(request)
    if reason == "missing":
        headers["WWW-Authenticate"] = 'Bearer realm="mediaserver play"'
        return json_error(401, f"playing {subject} needs a play token",
                          f"{hint}; `mediaserver token --action play` mints one", headers)
    return json_error(403, f"playing {subject} is refused: {why}",
                      "ask for a new play URL; tokens are for one stream and expire", headers)


QUERY_SLOT = "\ue000"
"""Stands for a viewer's query in a playlist or MPD template: a private-use character no URI we write
contains. A packager renders the template once per change and fills each viewer's play token in."""
QUERY_SLOT_BYTES = QUERY_SLOT.encode()
_UNSAFE_IN_QUERY = re.compile('[\x00-\x1f\x7f"#' + QUERY_SLOT + "]")


def fill_query(template: bytes, query: str) -> bytes:
    """A template rendered with QUERY_SLOT, with `query` in its place; a query that could smuggle lines or
    tags or attributes into a playlist (a control character, a quote or '#') is refused, as the renderers do."""
    if _UNSAFE_IN_QUERY.search(query):
        raise UsageError(f"query {query[:40]!r} holds a control character, a quote or '#'")
    return template.replace(QUERY_SLOT_BYTES, query.encode())
