"""The graph executor: runs a node by its router type and a step by its target.

This is KServe's ``routeStep``/``executeStep`` pair. A step naming another node runs that
node recursively; **quirk kept:** any error raised inside a nested node (a Switch without
a match, a transport failure) reaches the client as 500, because KServe's parents turn
every ``executeStep`` error into status 500. ``mapPredictionsToInstances`` renames the
``predictions`` key of the step's input to ``instances`` before the step is called (an
input that is not a JSON object passes unchanged), matching KServe's chainer test where
a step so marked receives ``instances`` although the graph was called with
``predictions``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import orjson

from nexus.router.calls import StepCaller
from nexus.router.ensemble import run_ensemble
from nexus.router.graph import Graph, Node, Step
from nexus.router.metrics import RouterMetrics
from nexus.router.reply import GraphError, Reply, StatusPolicy, StepHeaders
from nexus.router.sequence import run_sequence
from nexus.router.splitter import run_splitter
from nexus.router.switch import run_switch

Strategy = Callable[[Node, bytes, StepHeaders, "Executor"], Awaitable[Reply]]
STRATEGIES: dict[str, Strategy] = {
    "Sequence": run_sequence,
    "Switch": run_switch,
    "Ensemble": run_ensemble,
    "Splitter": run_splitter,
}


def map_predictions_to_instances(body: bytes) -> bytes:
    """``{"predictions": x, ...}`` → ``{"instances": x, ...}``; anything else unchanged."""
    if b'"predictions"' not in body:
        return body
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(value, dict) or "predictions" not in value:
        return body
    value["instances"] = value.pop("predictions")
    return orjson.dumps(value)


class Executor:
    """Runs the graph for one router process; implements ``StepRunner`` for the strategies."""

    def __init__(
        self,
        *,
        graph: Graph,
        caller: StepCaller,
        metrics: RouterMetrics,
        rng: random.Random | None = None,
        status_policy: StatusPolicy = "client",
        continue_streams: bool = True,
    ) -> None:
        self.graph = graph
        self.status_policy: StatusPolicy = status_policy
        self.continue_streams = continue_streams
        self.caller = caller
        self.metrics = metrics
        self.rng = rng or random.Random()  # noqa: S311 - traffic splitting, not security

    async def run_node(self, name: str, body: bytes, headers: StepHeaders) -> Reply:
        node = self.graph.nodes[name]
        strategy = STRATEGIES.get(node.router_type)
        if strategy is None:
            raise GraphError(f"invalid route type: {node.router_type}", step=name)
        return await strategy(node, body, headers, self)

    async def run_step(self, step: Step, body: bytes, headers: StepHeaders) -> Reply:
        if step.map_predictions_to_instances:
            body = map_predictions_to_instances(body)
        if step.node_name:
            try:
                return await self.run_node(step.node_name, body, headers)
            except GraphError as exc:
                raise GraphError(
                    exc.cause, status=500, step=exc.step, upstream=exc.upstream
                ) from exc
        return await self.caller.call(step.service_url, step.label, body, headers)

    def draw_percent(self) -> int:
        return self.rng.randrange(100)

    def fallback_used(self, node: Node, failed: str, taken: Step) -> None:
        self.metrics.fallback(failed, taken.label)

    def stream_continued(self, failed: str, taken: str) -> None:
        self.metrics.continued(self.graph.name, taken)
