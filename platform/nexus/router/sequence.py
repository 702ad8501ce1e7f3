"""Sequence node: steps in order, each fed the original request or the previous response.

KServe semantics (status policy ``kserve``), case by case, from KServe v0.20.0
``cmd/router/main.go`` (``routeStep``'s Sequence branch):

- ``data: $response`` sends the previous step's body (ignored on the first step);
  anything else sends the node's input.
- A step's ``condition`` is evaluated on the *previous response*. A previous body that is
  not valid JSON (including "no previous step": a condition on the first step) fails the
  node with ``invalid response`` (500). **Quirk kept:** a condition that does not hold stops
  the sequence and returns the previous body with status **200**, whatever status that
  step had - so a Soft primary that failed with a body lacking the fallback marker comes
  back as 200.
- ``dependency`` defaults to ``Soft``: a non-2xx step lets the chain continue. A non-2xx
  ``Hard`` step stops the chain and its body and status are the answer.
- Otherwise the last step's status and body are the answer.
- A transport failure calling a step (refused, reset, timeout) ends the node with the
  router's own 500, whatever steps follow.

Status policy ``client`` (the Nexus router's default; ``--status-policy`` in
``router/__main__.py``) differs in two ways, so an OpenAI client can act on the status and
``chat-fallback`` covers the primary being down:

- A condition that does not hold returns the previous body with **that step's status**
  (a 401 or 429 from the primary stays a 401 or 429), where KServe returns
  ``responseBytes, 200, nil``.
- When the next step is conditional, a step that cannot be reached (the transport
  failures above) or that answers a 5xx that is not a Nexus transformer's error JSON
  (the local front's JSON 503, Knative's activator's plain 502/503: the transformer is
  gone) is turned into the transformer's upstream-failure body
  (``nexus.errors.UpstreamFailure``: 502 for transport, the step's own 5xx otherwise,
  with ``error.upstream_failure``), so the fallback's condition matches.

Nexus extension: a 2xx ``text/event-stream`` reply is relayed as a stream. If the next
step is conditional, the stream is the answer (a streaming success skips the conditional
fallbacks before the first byte); a stream that breaks later is continued by them
(``continuation.py``). If the next step is unconditional
the stream is read whole and the chain goes on exactly as in KServe.

Nexus extension: a conditional step that runs because the previous step failed carries
``X-Nexus-Fallback: <failed step>``, so the transformer it reaches charges the caller's
tokens but not a second request (one caller request is one request, whichever
InferenceService answers it: ``transformer/components.py``). The router never forwards a
client's own value of that header (``headers._NEVER``).
"""

from __future__ import annotations

from nexus.router.continuation import continuing
from nexus.router.graph import Node, Step
from nexus.router.headers import FALLBACK_HEADER_NAME
from nexus.router.reply import (
    GraphError,
    Reply,
    StepHeaders,
    StepRunner,
    condition_holds,
    is_transformer_error,
    upstream_failure_reply,
)


async def run_sequence(
    node: Node, request: bytes, headers: StepHeaders, runner: StepRunner
) -> Reply:
    client = runner.status_policy == "client"
    steps = node.steps
    reply: Reply | None = None
    for index, step in enumerate(steps):
        step_headers = headers
        if step.condition:
            if reply is None:
                raise GraphError("invalid response", step=step.label)
            if reply.stream is not None:
                return continuing(
                    reply, steps[index:], request=request, headers=headers, runner=runner
                )
            if not reply.is_valid_json:
                raise GraphError("invalid response", step=step.label)
            if not condition_holds(step, reply.body):
                if not client:  # KServe's 200: no Retry-After or limit headers on it
                    return Reply(200, reply.body, reply.step, _valid=True)
                return Reply(reply.status, reply.body, reply.step, _valid=True,
                             headers=reply.headers)  # fmt: skip
            if not reply.ok:
                runner.fallback_used(node, reply.step, step)
                step_headers = [*headers, (FALLBACK_HEADER_NAME, reply.step)]
        body = request
        if step.data == "$response" and reply is not None:
            reply = await reply.buffered()
            body = reply.body
        elif reply is not None:
            reply.close()
        if client and index + 1 < len(steps) and steps[index + 1].condition:
            reply = await _run_guarded(runner, step, body, step_headers)
        else:
            reply = await runner.run_step(step, body, step_headers)
        if step.hard and not reply.ok:
            return reply
    if reply is None:
        raise GraphError(f"node {node.name} has no steps", step=node.name)
    return reply


async def _run_guarded(runner: StepRunner, step: Step, body: bytes, headers: StepHeaders) -> Reply:
    """Run a step a conditional step follows; failures without a JSON error become one."""
    try:
        reply = await runner.run_step(step, body, headers)
    except GraphError as exc:
        if not exc.upstream:
            raise
        return upstream_failure_reply(exc.step or step.label, 0, exc.cause)
    if reply.status >= 500 and reply.stream is None and not is_transformer_error(reply):
        return upstream_failure_reply(reply.step, reply.status, "")
    return reply
