"""The transformer's route table, as starlette's router has one: each path or pattern, its
guard and its handler. The table itself is ``app.Transformer.routes``; nothing is served
that it does not list.

KServe 0.21's ``RESTServer`` (``kserve/protocol/rest/server.py``, ``v1_endpoints.py``,
``v2_endpoints.py`` at tag v0.21.0) registers, besides inference and health, the model
repository extension (``POST /v2/repository/models/{name}/load`` and ``/unload``), server
metadata (``/v2``), model listings (``/v1/models``, ``/v2/models``), FastAPI's
``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc``, and a trailing-slash
307 built from the client's ``Host``. A transformer in front of one predictor has no use for
loading or unloading: anyone able to reach it could take the model offline (issue 12,
item 1). So nothing reaches KServe's app unless it is listed here:

- ``Open``: liveness/readiness probes (``/``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{m}/ready``, ``/v1/models/{m}``) — kubelet and Knative's queue-proxy call
  them without credentials, and they reveal only "ready or not";
- ``Keyed``: server metadata ``/v2`` and model metadata ``/v2/models/{m}``, which need a
  credential (and, for a model, permission to use it);
- everything else (repository load/unload, OpenAPI and docs, unknown paths) is answered
  404 by the transformer itself, without a redirect. That includes the ``/versions/{v}``
  forms: KServe 0.21's ``V2Endpoints`` raises ``NotImplementedError`` (a 500) for any
  model version.

The OpenAI routes, ``/v1/models``, ``/v2/models`` and v1/v2 inference are ``Keyed`` too;
``/metrics`` is ``Open``. A ``Keyed`` route is accounted (metrics, log line) and checks its
method, then the credential, before its handler runs.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from nexus.auth import Principal
from nexus.edge.asgi import HTTPScope, Receive, Send
from nexus.transformer.components import Exchange

OPEN_PROBES = re.compile(
    r"/v2/health/live|/v2/health/ready"
    r"|/v2/models/[^/]+/ready"
    r"|/v1/models/[^/:]+"
)
MODEL_METADATA = re.compile(r"/v2/models/(?P<model>[^/]+)")
V1_PREDICT = re.compile(r"/v1/models/(?P<model>[^/:]+):predict")
V1_EXPLAIN = re.compile(r"/v1/models/(?P<model>[^/:]+):explain")
V2_INFER = re.compile(r"/v2/models/(?P<model>[^/]+)/infer")


@dataclass(slots=True)
class Call:
    """One accounted request, as a ``Keyed`` handler gets it."""

    scope: HTTPScope
    receive: Receive
    send: Send
    headers: dict[bytes, bytes]
    ex: Exchange
    model: str | None  # the model the path names, if it names one


Handler = Callable[[Call, Principal], Awaitable[None]]
OpenHandler = Callable[[HTTPScope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Open:
    """Served as it comes: no credential, no accounting."""

    path: str | re.Pattern[str]
    handler: OpenHandler


@dataclass(frozen=True, slots=True)
class Keyed:
    """Accounted; ``method`` (if set), then a credential, are checked before the handler."""

    path: str | re.Pattern[str]
    label: str  # the route template in metrics and logs
    handler: Handler
    method: str | None = None


Route = Open | Keyed


class Routes:
    """Finds the route of a path: exact paths by lookup, then patterns in table order.

    No exact path of the table also matches one of its patterns, so looking exact paths
    up first changes no answer; it keeps the OpenAI routes one dict lookup away.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._exact = {r.path: r for r in self.routes if isinstance(r.path, str)}
        self._patterns = [(r.path, r) for r in self.routes if isinstance(r.path, re.Pattern)]

    def match(self, path: str) -> tuple[Route, str | None] | None:
        """The route serving ``path`` and the model the path names; ``None``: not served."""
        route = self._exact.get(path)
        if route is not None:
            return route, None
        for pattern, candidate in self._patterns:
            found = pattern.fullmatch(path)
            if found is not None:
                return candidate, found.groupdict().get("model")
        return None
