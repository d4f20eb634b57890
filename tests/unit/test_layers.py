"""Imports point downward (ARCHITECTURE.md sections 2-3) and never in a circle: this test holds the lines by
parsing every module.

The gate (mediaserver/gate.py) sits between the pure rules and the listeners: it awaits webhooks and the
cluster, so it cannot be in auth/ (no asyncio there), and both rtmp.server and edge call it, so it cannot
be in either; it may use auth, hub, log and config, and only rtmp.server, edge and cli may use it."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mediaserver"

# package (or module) -> project packages it may import
ALLOWED = {
    "errors": set(),
    "config": {"errors", "config"},
    "log": set(),
    "collector": set(),
    "transports": set(),
    "tls": {"errors", "log"},  # certificates of the TLS listeners, reloaded on SIGHUP
    "media": {"errors", "media"},
    "rtmp": {"errors", "rtmp", "media"},  # the sans-IO core (AMF0 is media vocabulary); rtmp.server apart
    "rtmp.server": {"errors", "rtmp", "hub", "media", "auth", "log", "config", "gate", "transports", "tls"},
    "hub": {"errors", "media", "hub", "log"},
    "remux": {"errors", "media", "remux"},
    "auth": {"errors", "auth"},
    "gate": {"errors", "config", "log", "hub", "auth", "media"},
    "edge": {"errors", "config", "log", "hub", "remux", "media", "auth", "cluster.locator", "edge", "gate", "transports",
             "transcode", "record", "tls", "webrtc.units"},  # webrtc.units: the player's status says if WebRTC plays
    "api": {"errors", "config", "log", "hub", "auth", "cluster.locator", "api", "transcode", "record", "relay"},
    # ABR, thumbnails, health: codec work in worker processes or threads, fed from the hub; never the edge.
    "transcode": {"errors", "config", "log", "hub", "media", "remux", "auth", "transcode", "transports",
                  "cluster.locator"},
    "cluster": {"errors", "log", "cluster"},
    # Recording: fMP4 files written from the hub's sinks, their VOD index, and the catalog (the only SQL
    # of the project, record/catalog.py); the edge and the API serve them.
    "record": {"errors", "config", "log", "hub", "media", "remux", "record"},
    # Relays. Pulls: a stream ingested from a URL, published into the hub like an encoder's. Beside the edge, not
    # in it: an RTMP client (rtmp's sans-IO core) and an HTTP-FLV client (aiohttp), fed through the edge's
    # pure FlvIngest (shared with the cluster's origin pulls); only the composition root wires it in. Pushes:
    # hub subscribers publishing to other servers through the same RTMP client.
    "relay": {"errors", "config", "log", "hub", "media", "rtmp.client", "rtmp.errors", "rtmp.events", "relay",
              "edge.flv_ingest", "auth", "transports"},
    # WebRTC: WHEP viewers and WHIP publishers bridged to the hub through aiortc peer connections.
    # It answers HTTP like the edge's play routes, with the edge's JSON errors and client address (edge.common).
    "webrtc": {"errors", "config", "log", "hub", "media", "remux", "auth", "gate", "transcode", "transports", "webrtc",
               "edge.common"},
    # Several processes on one machine: the supervisor, its stream book (a StreamLocator over a Unix socket, no
    # Redis) and the merging of the workers' answers; a worker's part of the composition root (wiring/worker.py,
    # wiring/worker_traffic.py) and cli.py wire them in.
    "workers": {"errors", "config", "log", "cluster.locator", "workers"},
    # The composition root's parts (cli.py builds the server with them): they may use any layer.
    "wiring": {"errors", "config", "log", "collector", "transports", "tls", "media", "rtmp", "rtmp.server", "hub",
               "remux", "auth", "gate", "edge", "api", "transcode", "cluster", "record", "relay", "webrtc",
               "workers", "wiring", "__init__"},
}
# third-party or asyncio imports a layer must not make
FORBIDDEN = {
    "media": {"asyncio", "aiohttp", "redis", "av", "numpy"},
    "rtmp": {"asyncio", "aiohttp", "redis", "socket"},
    "remux": {"asyncio", "aiohttp", "redis"},
    "hub": {"aiohttp", "redis"},
    "auth": {"aiohttp", "redis", "asyncio"},
    "edge": {"redis"},
    "gate": {"aiohttp", "redis"},
    "transcode": {"aiohttp", "redis"},
    "record": {"aiohttp", "redis"},
    "relay": {"redis"},
    "webrtc": {"redis"},
    "workers": {"redis"},
}


def _layer(module: str) -> str:
    if module == "rtmp.server":
        return "rtmp.server"
    return module.split(".")[0]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`: imports for type checkers, never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _imports(path: Path, module: str, names: bool = False) -> set[str]:
    """What `module` imports (at run time, wherever in the module). With `names`, a `from X import y` also
    yields X.y, which is the module imported when y is a submodule."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    parts = module.split(".")
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                full = "mediaserver." + target if target else "mediaserver"
            elif node.module:
                full = node.module
            else:
                continue
            subs = [f"{full}.{a.name}" for a in node.names]
            # `from . import access` imports submodules: the package itself is only their container
            if not (names and all(_is_module(s) for s in subs)):
                found.add(full)
            if names:
                found.update(subs)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.removeprefix("mediaserver.").split("."))
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def _modules():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        if module and module not in ("cli", "__main__"):
            yield path, module


def test_project_imports_point_downward():
    problems = []
    for path, module in _modules():
        layer = _layer(module)
        allowed = ALLOWED.get(layer)
        if allowed is None:
            continue
        for name in _imports(path, module):
            if name.startswith("mediaserver."):
                target = name.removeprefix("mediaserver.")
                if target == "cli" or target.startswith("cli."):
                    problems.append(f"{module} imports cli; only __main__ may")
                if not any(target == a or target.startswith(a + ".") for a in allowed):
                    problems.append(f"{module} imports {target}, which {layer} must not")
            else:
                top = name.split(".")[0]
                if top in FORBIDDEN.get(layer.split(".")[0] if layer != "rtmp.server" else "", set()):
                    problems.append(f"{module} imports {top}, which {layer} must not")
    assert not problems, "\n".join(sorted(problems))


def test_only_the_redis_locator_imports_redis():
    for path, module in _modules():
        if module != "cluster.redis_locator":
            assert not any(n.split(".")[0] == "redis" for n in _imports(path, module)), module


def test_only_the_catalog_speaks_sql():
    """SQLAlchemy, Alembic and the database drivers stay behind record/catalog.py (and its migrations)."""
    sql = {"sqlalchemy", "alembic", "aiosqlite", "asyncpg", "sqlite3", "psycopg", "psycopg2"}
    for path, module in _modules():
        if module == "record.catalog" or module.startswith("record.migrations"):
            continue
        assert not any(n.split(".")[0] in sql for n in _imports(path, module)), module


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (packages count as their __init__)."""
    modules = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        modules[".".join(p for p in rel.parts if p != "__init__")] = path
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imports(path, module, names=True):
            if name == "mediaserver" or name.startswith("mediaserver."):
                target = name.removeprefix("mediaserver").removeprefix(".")
                if target in modules and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_project_modules_import_each_other_in_a_circle():
    """A cycle (even through an import inside a function) means two modules share one job, or a piece
    lives in the wrong one: move the shared piece down (as the edge's AppKeys moved to edge/keys.py)."""
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_names_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
