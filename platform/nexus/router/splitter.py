"""Splitter node: one step chosen at random by ``weight``; its answer returned as it is.

KServe draws a number and walks the steps adding weights until the draw is below the
running sum; the controller's webhook makes the weights add up to 100. The draw here is
uniform in [0, 100) as KServe's code comment states. (Some KServe releases draw from
[0, 100] - ``rand.Int(101)`` - so one request in 101 finds no step and the Go router
panics, dropping the connection; that bug is not reproduced. Weights summing to less
than 100 leave a gap that is answered with a 500 error body instead of a dropped
connection.)
"""

from __future__ import annotations

from nexus.router.graph import Node
from nexus.router.reply import GraphError, Reply, StepHeaders, StepRunner


async def run_splitter(
    node: Node, request: bytes, headers: StepHeaders, runner: StepRunner
) -> Reply:
    point = runner.draw_percent()
    end = 0
    for step in node.steps:
        end += step.weight
        if point < end:
            return await runner.run_step(step, request, headers)
    raise GraphError(
        f"no step of splitter {node.name} covers draw {point}: weights must sum to 100",
        step=node.name,
    )
