"""Ensemble node: every step in parallel on the same input, answers merged into one object.

KServe semantics: the result is ``{"<step name or index>": <step's JSON object>, ...}``
with status 200, whatever each step's status was. Each step's body must be a JSON
*object*; anything else (an array, text, an empty body) is an error of the node (500,
with Go's ``json.Unmarshal`` wording as the cause), as is a step's transport failure.
Results are examined in step order: the first error or the first non-2xx ``Hard`` step
decides, the latter answering with its own (re-serialized) body and status. Go
serializes maps with sorted keys and HTML-safe escapes; so does this router.

KServe reads each step as soon as it is ready and may report an error of a later step
before a Hard failure of an earlier one; waiting for all steps and walking them in
order gives the same answer without the race.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from nexus.router.graph import Node, Step
from nexus.router.reply import GraphError, Reply, StepHeaders, StepRunner, go_json

_GO_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "bool"}


def _as_object(reply: Reply) -> dict[str, Any] | None:
    """``json.Unmarshal`` into ``map[string]interface{}``, with Go's error wording."""
    body = reply.body
    if not body.strip():
        raise GraphError("unexpected end of JSON input", step=reply.step)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        first = body.lstrip()[:1].decode("latin-1")
        raise GraphError(
            f"invalid character {first!r} looking for beginning of value", step=reply.step
        ) from None
    if value is None:
        return None  # Go leaves the map nil, which marshals back as `null`
    if not isinstance(value, dict):
        kind = _GO_KINDS.get(type(value), "value")
        raise GraphError(
            f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}",
            step=reply.step,
        )
    return value


async def _one(step: Step, request: bytes, headers: StepHeaders, runner: StepRunner) -> Reply:
    reply = await runner.run_step(step, request, headers)
    return await reply.buffered()


async def run_ensemble(
    node: Node, request: bytes, headers: StepHeaders, runner: StepRunner
) -> Reply:
    results = await asyncio.gather(
        *(_one(step, request, headers, runner) for step in node.steps), return_exceptions=True
    )
    merged: dict[str, dict[str, Any] | None] = {}
    for step, result in zip(node.steps, results, strict=True):
        if isinstance(result, GraphError):
            raise GraphError(result.cause, step=result.step)
        if isinstance(result, BaseException):
            raise result
        parsed = _as_object(result)
        if step.hard and not result.ok:
            return Reply(result.status, go_json(parsed), result.step)
        merged[step.key] = parsed
    return Reply(200, go_json(merged), node.name, _valid=True)
