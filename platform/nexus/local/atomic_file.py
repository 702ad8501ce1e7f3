"""One way the local platform writes a file that another process may read at any moment.

The controller's state, the port book, the routers' graph files and Prometheus'
configuration are read by other processes (a router at start-up, Prometheus on reload,
the next ``nexus up``) while the platform runs. Writing a sibling temporary file and
``os.replace``-ing it over the target means a reader sees the old file or the new one,
never half of one (``rename(2)`` replaces atomically within a file system).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text(path: Path, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` unless it holds it already; True if changed.

    Skipping an unchanged write keeps the file's mtime, so a reader that reloads on change
    (Prometheus through ``/-/reload``) is only asked to when something changed.
    """
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True
