"""KServe-compatible InferenceGraph router: same graph spec, same answers, plus SSE relay.

Front door: ``python -m nexus.router --graph-json '<spec>'`` (see ``__main__``). The
data path reads top to bottom: ``graph`` (the parsed spec) → ``server`` (ASGI entry) →
``executor`` (node dispatch) → ``sequence``/``switch``/``ensemble``/``splitter`` (one
module per router type) → ``calls`` (the HTTP step calls), with ``headers`` deciding
what is propagated and ``reply`` holding what flows back; ``continuation`` has a later
Sequence step finish a stream that broke.
"""

from __future__ import annotations

from nexus.router.graph import Graph, load_graph_file, load_graph_json, parse_spec

__all__ = ["Graph", "load_graph_file", "load_graph_json", "parse_spec"]
