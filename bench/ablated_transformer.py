"""The transformer with some of its governed parts switched off, to measure what each costs.

A measuring tool for ``bench/costs.py``, never a way to run Nexus: it replaces the named
parts with no-ops, then starts ``python -m nexus.transformer`` with the remaining
arguments, exactly as KServe would.

- ``auth``: the first request's principal is reused; no key lookup per request;
- ``limiter``: admission checks the model only; no Redis script, no reservation;
- ``metrics``: no Prometheus update per request (request, upstream, token, in-flight);
- ``log``: no access-log line;
- ``usage``: the answer's usage is not parsed (the reservation is refunded whole).

    python bench/ablated_transformer.py --without limiter,log -- --model_name chat ...

The replacements name internals of ``nexus.transformer``; a rename there makes this
script fail at start, loudly, which is what a benchmark should do.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from typing import Any

from nexus import observability
from nexus.transformer import app, governance, upstream


class _Nothing:
    """Stands for a metric child: every update is dropped."""

    def inc(self, *_: object) -> None: ...

    def dec(self, *_: object) -> None: ...

    def observe(self, *_: object) -> None: ...


def _without_auth() -> None:
    authenticate = governance.Governor.authenticate
    first: dict[str, Any] = {}

    async def once(self: governance.Governor, api_key: Any, authorization: Any) -> Any:
        if "principal" not in first:
            first["principal"] = await authenticate(self, api_key, authorization)
        return first["principal"]

    governance.Governor.authenticate = once  # type: ignore[method-assign]


def _without_limiter() -> None:
    decision = governance.Decision(True, governance.Quota(0, 0), 0, 0.0, 0, 0.0)

    async def admit(
        self: governance.Governor, principal: Any, model: str, tokens: int, **_: Any
    ) -> governance.Admission:
        self.check_model(principal, model)
        return governance.Admission(principal, decision, None)

    governance.Governor.admit = admit  # type: ignore[method-assign]


def _without_metrics() -> None:
    observability.TransformerMetrics.observe_request = lambda *_: None  # type: ignore[method-assign]
    observability.TransformerMetrics.count_tokens = lambda *_: None  # type: ignore[method-assign]
    upstream.Upstream._count = lambda *_: None  # type: ignore[method-assign]
    opened = upstream.Upstream.__init__
    started = app.Transformer.__init__

    def upstream_init(self: upstream.Upstream, **kwargs: Any) -> None:
        opened(self, **kwargs)
        self._latency = _Nothing()

    def transformer_init(self: app.Transformer, **kwargs: Any) -> None:
        started(self, **kwargs)
        self.metrics.in_flight = _Nothing()  # type: ignore[assignment]

    upstream.Upstream.__init__ = upstream_init  # type: ignore[method-assign]
    app.Transformer.__init__ = transformer_init  # type: ignore[method-assign]


def _without_log() -> None:
    observability.AccessLog.write = lambda *_, **__: None  # type: ignore[method-assign]


def _without_usage() -> None:
    app.body_usage = lambda _data: None


PARTS: dict[str, Callable[[], None]] = {
    "auth": _without_auth,
    "limiter": _without_limiter,
    "metrics": _without_metrics,
    "log": _without_log,
    "usage": _without_usage,
}


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "--without" or "--" not in args:
        raise SystemExit(__doc__)
    parts = [p for p in args[1].split(",") if p and p != "none"]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; known: {sorted(PARTS)}")
    for part in parts:
        PARTS[part]()
    sys.argv = ["nexus.transformer", *args[args.index("--") + 1 :]]
    runpy.run_module("nexus.transformer", run_name="__main__")


if __name__ == "__main__":
    main()
