"""Switch node: the first step whose GJSON ``condition`` exists in the *request* runs.

KServe semantics: the node's input must be valid JSON, otherwise nothing matches. Steps
without a condition never match (an empty GJSON path does not exist). No match fails
the node with 404 and cause ``None of the routes matched with the switch condition``;
**quirk kept:** when the Switch is not the root node, its parent reports any step error
as 500, so the 404 only reaches the client from a root Switch. The chosen step's status
and body are returned as they are (a failing step is not an error of the Switch).
"""

from __future__ import annotations

import pygjson

from nexus.router.graph import Node
from nexus.router.reply import GraphError, Headers, Reply, StepRunner, condition_holds

NO_MATCH = "None of the routes matched with the switch condition"


async def run_switch(node: Node, request: bytes, headers: Headers, runner: StepRunner) -> Reply:
    if pygjson.validate(request):
        for step in node.steps:
            if condition_holds(step, request):
                return await runner.run_step(step, request, headers)
    raise GraphError(NO_MATCH, status=404, step=node.name)
