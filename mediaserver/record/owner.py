"""The node name a standalone server's recordings carry in the catalog, kept in record.path.

A row left "recording" by a killed server is recovered at the next start by the node that owns it. In a
cluster that is `cluster.node_id`; a standalone server used its host name, which changes whenever a
container is recreated, so rows of the old name stayed "recording" for ever (and retention keeps those).
The name now lives with the recordings: the first start writes its host name into `record.path/.node`,
every later start (any host name) reads it back, so whoever writes into this directory owns its rows.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

NODE_FILE = ".node"
_MAX_NAME = 128


def local_node(path: str | Path) -> str:
    """This directory's node name (written once from the host name; blocking: at start only)."""
    file = Path(path) / NODE_FILE
    try:
        name = file.read_text(encoding="utf-8").strip()
        if name and len(name) <= _MAX_NAME and name.isprintable():
            return name
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError):
        return socket.gethostname()  # unreadable: as before this file existed
    name = socket.gethostname()
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(NODE_FILE + ".partial")
        partial.write_text(name + "\n", encoding="utf-8")
        os.replace(partial, file)  # never half a name, if the server dies here
    except OSError:
        pass  # a read-only directory: recording will say so; the host name serves meanwhile
    return name
