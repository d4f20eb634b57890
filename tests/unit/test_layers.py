"""Imports point downward (ARCHITECTURE.md section 4): this test holds the lines by parsing every module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mediaserver"

# package (or module) -> project packages it may import
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "log": set(),
    "transports": set(),
    "media": {"errors", "media"},
    "rtmp": {"errors", "rtmp", "media"},  # the sans-IO core (AMF0 is media vocabulary); rtmp.server apart
    "rtmp.server": {"errors", "rtmp", "hub", "media", "auth", "log", "config", "transports"},
    "hub": {"errors", "media", "hub", "log"},
    "remux": {"errors", "media", "remux"},
    "auth": {"errors", "auth"},
    "edge": {"errors", "config", "log", "hub", "remux", "media", "auth", "cluster.locator", "edge", "transports"},
    "api": {"errors", "config", "log", "hub", "auth", "cluster.locator", "api"},
    "cluster": {"errors", "log", "cluster"},
}
# third-party or asyncio imports a layer must not make
FORBIDDEN = {
    "media": {"asyncio", "aiohttp", "redis", "av", "numpy"},
    "rtmp": {"asyncio", "aiohttp", "redis", "socket"},
    "remux": {"asyncio", "aiohttp", "redis"},
    "hub": {"aiohttp", "redis"},
    "auth": {"aiohttp", "redis", "asyncio"},
    "edge": {"redis"},
}


def _layer(module: str) -> str:
    if module == "rtmp.server":
        return "rtmp.server"
    return module.split(".")[0]


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    parts = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add("mediaserver." + target if target else "mediaserver")
            elif node.module:
                found.add(node.module)
    return found


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
