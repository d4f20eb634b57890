"""The node-local stream book and its wire protocol (sans-IO): who publishes which stream, each worker's
record, and the requests workers send the supervisor over its Unix socket.

Wire: one JSON object per line, at most MAX_LINE bytes. A worker's first request is `hello` (its node id);
then any of OPS, each `{"id": N, "op": OP, ...}`, answered `{"id": N, "ok": VALUE}` or
`{"id": N, "error": TEXT}`, in order. News (a ClusterEvent's JSON) comes unasked as `{"event": TEXT}`.
A worker's claims and record live as long as its connection: when it drops, they go and its death is news.
The node's blocks (`block`, `unblock`, `blocks`) and its workers' restarts outlive any worker: a restarted
worker copies the blocks before it listens, and /metrics shows the restarts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..cluster.locator import NODE_DOWN, ClusterEvent, LocatorError, NodeInfo, Owner

MAX_LINE = 1 << 20
"""Longest line either side sends or accepts (a node record lists its streams: room for thousands)."""
OPS = ("hello", "announce", "withdraw", "lookup", "send", "nodes", "node", "claims", "record", "ready", "block",
       "unblock", "blocks", "restarts")
MAX_NAME = 1024
"""Longest stream or node name accepted."""


class ProtocolError(Exception):
    """A line that is not a request (or reply) of this protocol: the connection is closed."""


def encode(message: dict[str, Any]) -> bytes:
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ProtocolError(f"message of {len(line)} bytes is over the {MAX_LINE}-byte line limit")
    return line


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line of {len(line)} bytes is over the {MAX_LINE}-byte limit")
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError) as err:
        raise ProtocolError(f"line is not JSON ({err}): {line[:80]!r}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"line is not a JSON object: {line[:80]!r}")
    return message


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    op: str
    args: dict[str, Any]


def parse_request(message: dict[str, Any]) -> Request:
    number, op = message.get("id"), message.get("op")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ProtocolError(f"request id must be a whole number >= 0, got {number!r}")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}; one of {', '.join(OPS)}")
    return Request(number, op, message)


def _name(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ProtocolError(f"{key} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def _owner(args: dict[str, Any]) -> Owner:
    try:
        return Owner.from_json(json.dumps(args.get("owner")))
    except LocatorError as err:
        raise ProtocolError(str(err)) from None


def _number(args: dict[str, Any], key: str) -> float:
    value = args.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ProtocolError(f"{key} must be a number")
    return float(value)


@dataclass(frozen=True, slots=True)
class BookBlock:
    """A publish block the book keeps for workers started later (auth.policy.Block's fields: the wiring
    converts; workers/ stays below auth/)."""

    app: str
    name: str
    until: float
    """Unix seconds."""
    reason: str = ""


def _block(args: dict[str, Any]) -> BookBlock:
    raw = args.get("block")
    if not isinstance(raw, dict):
        raise ProtocolError("block must be an object")
    reason = raw.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_NAME:
        raise ProtocolError(f"a block's reason must be a string of at most {MAX_NAME} characters")
    return BookBlock(_name(raw, "app"), _name(raw, "name"), _number(raw, "until"), reason)


@dataclass
class StreamBook:
    """The truth on one machine: claims by stream (only a connected worker's count) and workers' records."""

    claims: dict[str, Owner] = field(default_factory=dict)
    records: dict[str, NodeInfo] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)
    blocks: dict[tuple[str, str], BookBlock] = field(default_factory=dict)
    """The node's blocks, kept here so that a restarted worker's publish gate gets them back."""
    restarts: dict[int, int] = field(default_factory=dict)
    """Worker index -> times the supervisor started it again (the supervisor counts)."""

    def join(self, node: str) -> None:
        self.live.add(node)

    def leave(self, node: str) -> list[str]:
        """The node's connection dropped: its claims and record go. Returns the streams it held."""
        self.live.discard(node)
        self.records.pop(node, None)
        gone = [stream for stream, owner in self.claims.items() if owner.node == node]
        for stream in gone:
            del self.claims[stream]
        return gone

    def announce(self, stream: str, owner: Owner) -> Owner:
        held = self.claims.get(stream)
        if held is not None and held.node in self.live:
            return held  # a live worker's (this one's own earlier claim included)
        self.claims[stream] = owner
        return owner

    def withdraw(self, stream: str, owner: Owner) -> None:
        if self.claims.get(stream) == owner:
            del self.claims[stream]

    def lookup(self, stream: str) -> Owner | None:
        held = self.claims.get(stream)
        return held if held is not None and held.node in self.live else None

    def current_blocks(self, now: float) -> list[BookBlock]:
        """The blocks still in force at `now` (Unix seconds, the workers' clock); the others are dropped."""
        for key in [k for k, b in self.blocks.items() if b.until <= now]:
            del self.blocks[key]
        return sorted(self.blocks.values(), key=lambda b: (b.app, b.name))

    def handle(self, node: str, request: Request) -> tuple[Any, ClusterEvent | None]:
        """Apply one request from `node`: (the reply's value, news to pass to the other workers or None).
        Raises ProtocolError for arguments that do not fit."""
        args, op = request.args, request.op
        if op == "announce":
            return asdict(self.announce(_name(args, "stream"), _owner(args))), None
        if op == "withdraw":
            self.withdraw(_name(args, "stream"), _owner(args))
            return None, None
        if op == "lookup":
            found = self.lookup(_name(args, "stream"))
            return (asdict(found) if found is not None else None), None
        if op == "send":
            text = args.get("event")
            try:
                news = ClusterEvent.from_json(text if isinstance(text, str) else "")
            except LocatorError as err:
                raise ProtocolError(str(err)) from None
            return None, news
        if op == "record":
            try:
                info = NodeInfo.from_json(json.dumps(args.get("node")))
            except LocatorError as err:
                raise ProtocolError(str(err)) from None
            if info.id != node:
                raise ProtocolError(f"a worker records itself only ({info.id!r} is not {node!r})")
            self.records[node] = info
            return None, None
        if op == "nodes":
            return [asdict(n) for _, n in sorted(self.records.items())], None
        if op == "node":
            found_node = self.records.get(_name(args, "node"))
            return (asdict(found_node) if found_node is not None else None), None
        if op == "claims":
            return {s: asdict(o) for s, o in self.claims.items() if o.node in self.live}, None
        if op == "block":
            block = _block(args)
            if "now" in args:  # the expired ones go as new ones come (a worker's start asks with `blocks` too)
                self.current_blocks(_number(args, "now"))
            self.blocks[(block.app, block.name)] = block
            return None, None
        if op == "unblock":
            self.blocks.pop((_name(args, "app"), _name(args, "name")), None)
            return None, None
        if op == "blocks":
            return [asdict(b) for b in self.current_blocks(_number(args, "now"))], None
        if op == "restarts":
            return {str(i): n for i, n in sorted(self.restarts.items())}, None
        if op in ("hello", "ready"):
            return None, None
        raise ProtocolError(f"unknown op {op!r}")  # pragma: no cover - parse_request checked it

    def node_down(self, node: str) -> ClusterEvent:
        return ClusterEvent(kind=NODE_DOWN, sender=node, reason="worker_exited")
