"""The transformer with some of its governed parts switched off, to measure what each costs.

A measuring tool for ``python -m bench costs``, never a way to run Nexus. It builds the
transformer from its public parts, the named ones replaced by no-ops, and serves it with
``nexus.transformer.__main__.main`` and the remaining arguments, as KServe starts it:

- ``auth``: the first request's principal is reused; no key lookup per request;
- ``limiter``: admission checks the model only; no Redis script, no reservation;
- ``metrics``: no Prometheus update per request (request, upstream, token, in-flight);
- ``log``: no access-log line;
- ``usage``: the answer's usage is not parsed (the reservation is refunded whole).

    python -m bench.ablated_transformer --without limiter,log -- --model_name chat ...

Only public names are replaced: the transformer's ``open_parts`` and ``read_usage`` seams,
the governor's methods (through a wrapper), the metrics' per-request methods and families
(through a subclass) and the access log's ``write``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from prometheus_client import CollectorRegistry

from nexus.auth import Principal
from nexus.config import GatewaySettings
from nexus.edge.asgi import ASGIApp
from nexus.limits import Decision, Quota
from nexus.observability import AccessLog, TransformerMetrics, new_registry
from nexus.transformer.__main__ import main as serve_transformer
from nexus.transformer.app import OpenParts, Transformer
from nexus.transformer.components import Components, open_components
from nexus.transformer.governance import Admission, Governor
from nexus.transformer.kserve_bridge import build_kserve_app
from nexus.transformer.usage import Usage, body_usage

PARTS = ("auth", "limiter", "metrics", "log", "usage")
ADMITTED = Decision(True, Quota(0, 0), 0, 0.0, 0, 0.0)


class Nothing:
    """Stands for a metric family and its children: every update is dropped."""

    def labels(self, *_: object) -> Nothing:
        return self

    def inc(self, *_: object) -> None: ...

    def dec(self, *_: object) -> None: ...

    def observe(self, *_: object) -> None: ...


class QuietMetrics(TransformerMetrics):
    """The transformer's metrics without the per-request updates; the rest stays."""

    def __init__(self, registry: CollectorRegistry, *, tenant_label: bool = False) -> None:
        super().__init__(registry, tenant_label=tenant_label)
        nothing: Any = Nothing()
        self.in_flight = self.upstream_latency = self.upstream_requests = nothing

    def observe_request(self, labels: tuple[str, ...], seconds: float) -> None: ...

    def count_tokens(self, prompt: int, completion: int, tenant: tuple[str, ...] = ()) -> None: ...


class QuietLog(AccessLog):
    """An access log that writes no line."""

    def write(self, *_: object, **__: object) -> None: ...


class PartialGovernor:
    """The real governor, with authentication done once and/or admission reduced to the
    model check; everything else is the real one's."""

    def __init__(self, real: Governor, *, auth: bool, limiter: bool) -> None:
        self.real, self.auth, self.limiter = real, auth, limiter
        self.first: Principal | None = None

    async def authenticate(self, api_key: bytes | None, authorization: bytes | None) -> Principal:
        if self.auth:
            return await self.real.authenticate(api_key, authorization)
        if self.first is None:
            self.first = await self.real.authenticate(api_key, authorization)
        return self.first

    def check_model(self, principal: Principal, model: str) -> None:
        self.real.check_model(principal, model)

    async def admit(
        self, principal: Principal, model: str, tokens: int, *, fallback: bool = False
    ) -> Admission:
        if self.limiter:
            return await self.real.admit(principal, model, tokens, fallback=fallback)
        self.real.check_model(principal, model)
        return Admission(principal, ADMITTED, None)

    async def settle(self, admission: Admission, usage: Usage | None) -> None:
        await self.real.settle(admission, usage)


def open_parts(without: frozenset[str]) -> OpenParts:
    """The transformer's components, its governor wrapped when auth or limiter are off."""

    async def opened(settings: GatewaySettings, metrics: TransformerMetrics) -> Components:
        parts = await open_components(settings, metrics)
        if {"auth", "limiter"} & without:
            partial_governor = PartialGovernor(
                parts.governor, auth="auth" not in without, limiter="limiter" not in without
            )
            parts.governor = cast(Governor, partial_governor)
        return parts

    return opened


def ablated_app(without: frozenset[str]) -> Callable[[GatewaySettings], ASGIApp]:
    """``create_app`` of ``nexus.transformer.__main__`` with the ``without`` parts off."""

    def create(settings: GatewaySettings) -> ASGIApp:
        metrics = QuietMetrics if "metrics" in without else TransformerMetrics
        log = QuietLog if "log" in without else AccessLog
        return Transformer(
            settings=settings,
            metrics=metrics(new_registry(), tenant_label=settings.tenant_label),
            build_kserve_app=partial(build_kserve_app, settings),
            access_log=log("nexus.transformer"),
            open_parts=open_parts(without),
            read_usage=(lambda _data: None) if "usage" in without else body_usage,
        )

    return create


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "--without" or "--" not in args:
        raise SystemExit(__doc__)
    parts = frozenset(p for p in args[1].split(",") if p and p != "none")
    unknown = sorted(parts - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; known: {list(PARTS)}")
    serve_transformer(args[args.index("--") + 1 :], make_app=ablated_app(parts))


if __name__ == "__main__":
    main()
