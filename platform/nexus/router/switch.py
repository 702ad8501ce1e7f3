"""Switch node: the first step whose GJSON ``condition`` exists in the *request* runs.

KServe semantics: the node's input must be valid JSON, otherwise nothing matches. Steps
without a condition never match (an empty GJSON path does not exist). No match fails
the node with 404 and cause ``None of the routes matched with the switch condition``;
**quirk kept:** when the Switch is not the root node, its parent reports any step error
as 500, so the 404 only reaches the client from a root Switch. The chosen step's status
and body are returned as they are (a failing step is not an error of the Switch).

Nexus guard: a request nested deeper than the router's limit is never handed to GJSON
(its recursive validator crashes the process on deep input); the server refuses such a
request with 400 before any node runs, and this check backs that up for nested Switches.
"""

from __future__ import annotations

from nexus.router.graph import Node
from nexus.router.reply import (
    GraphError,
    Reply,
    StepHeaders,
    StepRunner,
    condition_holds,
    request_json_valid,
)

NO_MATCH = "None of the routes matched with the switch condition"


async def run_switch(node: Node, request: bytes, headers: StepHeaders, runner: StepRunner) -> Reply:
    if request_json_valid(request):
        for step in node.steps:
            if condition_holds(step, request):
                return await runner.run_step(step, request, headers)
    raise GraphError(NO_MATCH, status=404, step=node.name)
