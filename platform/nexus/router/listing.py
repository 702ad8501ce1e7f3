"""``GET /v1/models`` through a graph: the models its steps serve, under the caller's credentials.

KServe's router has no such route: every method and path runs the graph, so the official
``openai`` client's ``models.list()`` sent a GET with an empty body through the Sequence
and got a 200 carrying a 400 body (issue 11). Here the router asks every distinct service
host of the graph for ``GET <scheme>://<host>/v1/models`` (the transformer's OpenAI listing,
``transformer/app.py``), with the same propagated headers a step call carries, so each
transformer applies its own key checks and per-key model allow-lists. A KServe model
server's own v1 listing (``{"models": [...]}``) is read too.

Answers are merged into one OpenAI list (``{"object": "list", "data": [...]}``), each id
once, in step order. A 401 from any step is the answer (the client's credentials were
refused, so ``openai`` raises ``AuthenticationError``); otherwise the lists of the steps
that answered 200 are merged, and a step that is down only drops its models (logged).
When no step answered 200, the first step's error is returned as it came, or a 502 in the
OpenAI error shape when none answered at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import orjson

from nexus.edge.client import HttpClient
from nexus.edge.failures import TransportError
from nexus.errors import UpstreamFailure
from nexus.router.calls import Target, step_target
from nexus.router.graph import Graph
from nexus.router.reply import GraphError, read_step_body

log = logging.getLogger("nexus.router")

LIST_PATH = "/v1/models"
LIST_SECONDS = 30.0  # when the graph sets no serviceClient timeout
MAX_LIST_BYTES = 1024 * 1024

Answer = tuple[int, bytes]


class ModelListing:
    """Asks the graph's service hosts for their models; owns its session between start/close."""

    def __init__(self, *, graph: Graph, host_map: Mapping[str, str]) -> None:
        bases: dict[str, None] = {}  # ordered set of scheme://host of every service step
        for node in graph.nodes.values():
            for step in node.steps:
                if step.service_url:
                    parts = urlsplit(step.service_url)
                    bases[urlunsplit((parts.scheme, parts.netloc, "", "", ""))] = None
        self.targets = [step_target(base + LIST_PATH, host_map) for base in bases]
        seconds = graph.timeouts.service_client
        self.timeout = float(seconds) if seconds else LIST_SECONDS
        self._client: HttpClient | None = None

    async def start(self) -> None:
        self._client = HttpClient()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def models(self, headers: list[tuple[str, str]]) -> Answer:
        """The merged listing as ``(status, JSON body)``."""
        answers = await asyncio.gather(*(self._ask(target, headers) for target in self.targets))
        for answer in answers:
            if answer is not None and answer[0] == 401:
                return answer
        ids: dict[str, dict[str, object]] = {}
        listed = False
        for answer in answers:
            entries = _entries(answer)
            if entries is None:
                continue
            listed = True
            for entry in entries:
                ids.setdefault(str(entry["id"]), entry)
        if listed:
            return 200, orjson.dumps({"object": "list", "data": list(ids.values())})
        for answer in answers:
            if answer is not None:
                return answer
        failure = UpstreamFailure("no step of this graph answered its model list")
        return failure.status, failure.body_bytes()

    async def _ask(self, target: Target, headers: list[tuple[str, str]]) -> Answer | None:
        client = self._client
        if client is None:
            raise RuntimeError("ModelListing.start() was not awaited")
        origin, path, host = target
        out = [(name, value) for name, value in headers if name != "Content-Type"]
        try:
            async with asyncio.timeout(self.timeout):
                response = await client.request("GET", origin, path, headers=out, host=host)
                return response.status, await read_step_body(response, MAX_LIST_BYTES, step=path)
        except (TransportError, ValueError, TimeoutError, GraphError) as exc:
            log.warning("model list from %s%s failed: %r", host or origin.authority, path, exc)
            return None


def _entries(answer: Answer | None) -> list[dict[str, object]] | None:
    """The ``data`` entries of a 200 OpenAI list, or ``None`` when the answer is not one."""
    if answer is None or answer[0] != 200:
        return None
    try:
        body = orjson.loads(answer[1])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    if isinstance(data, list):
        return [e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)]
    names = body.get("models")
    if isinstance(names, list):
        # A KServe model server's v1 listing, ``{"models": [names]}`` (kserve
        # python/kserve/kserve/protocol/rest/v1_endpoints.py ``models``), for graphs whose
        # steps are predictors without a transformer.
        return [
            {"id": name, "object": "model", "created": 0, "owned_by": "kserve"}
            for name in names
            if isinstance(name, str)
        ]
    return None
