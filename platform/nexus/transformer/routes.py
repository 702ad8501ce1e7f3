"""Which routes a transformer exposes, and under which guard: the one allowlist.

KServe 0.21's ``RESTServer`` (``kserve/protocol/rest/server.py``, ``v1_endpoints.py``,
``v2_endpoints.py`` at tag v0.21.0) registers, besides inference and health, the model
repository extension (``POST /v2/repository/models/{name}/load`` and ``/unload``), server
metadata (``/v2``), model listings (``/v1/models``, ``/v2/models``), FastAPI's
``/openapi.json``, ``/docs``, ``/docs/oauth2-redirect`` and ``/redoc``, and a trailing-slash
307 built from the client's ``Host``. A transformer in front of one predictor has no use for
loading or unloading: anyone able to reach it could take the model offline (issue 12,
item 1). So nothing reaches KServe's app unless it is listed here:

- ``open``: liveness/readiness probes (``/``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{m}/ready``, ``/v1/models/{m}``) — kubelet and Knative's queue-proxy call
  them without credentials, and they reveal only "ready or not";
- ``keyed``: server metadata ``/v2`` and model metadata ``/v2/models/{m}``, which need a
  credential (and, for a model, permission to use it);
- everything else (repository load/unload, OpenAPI and docs, unknown paths) is answered
  404 by the gateway itself, without a redirect. That includes the ``/versions/{v}``
  forms: KServe 0.21's ``V2Endpoints`` raises ``NotImplementedError`` (a 500) for any
  model version.

OpenAI routes, ``/v1/models``, ``/v2/models``, ``/metrics`` and v1/v2 inference are
dispatched before this table is consulted (see ``app.Gateway.__call__``).
"""

from __future__ import annotations

import re
from typing import Literal

Guard = Literal["open", "keyed", "absent"]

_OPEN = re.compile(
    r"/|/v2/health/live|/v2/health/ready"
    r"|/v2/models/[^/]+/ready"
    r"|/v1/models/[^/:]+"
)
_MODEL_METADATA = re.compile(r"/v2/models/(?P<model>[^/]+)")
KSERVE_INFER = re.compile(
    r"/v1/models/(?P<v1>[^/:]+):(?P<verb>predict|explain)"
    r"|/v2/models/(?P<v2>[^/]+)/infer"
)


def kserve_route(path: str) -> tuple[Guard, str | None]:
    """The guard for a path KServe's app would serve, and the model it names (if any)."""
    if _OPEN.fullmatch(path):
        return "open", None
    if path == "/v2":
        return "keyed", None
    match = _MODEL_METADATA.fullmatch(path)
    if match:
        return "keyed", match["model"]
    return "absent", None


def infer_route(path: str) -> tuple[str, str] | None:
    """``(route label, model)`` of a v1/v2 inference path; ``:explain`` keeps its own label."""
    match = KSERVE_INFER.fullmatch(path)
    if match is None:
        return None
    if match["v1"]:
        return f"/v1/models/{{name}}:{match['verb']}", match["v1"]
    return "/v2/models/{name}/infer", match["v2"]
