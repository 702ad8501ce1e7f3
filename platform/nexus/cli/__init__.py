"""The ``nexus`` command line: the top layer, a client of every package below it.

``main`` (``nexus.cli.main``) parses and dispatches; ``registry``, ``release`` and ``demo``
hold the commands that need more than a few lines. Nothing below this package imports it.
"""

from __future__ import annotations

from nexus.cli.main import main

__all__ = ["main"]
