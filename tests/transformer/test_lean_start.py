"""A transformer starts and answers probes without KServe (issue 23: a local platform half
the size): KServe, FastAPI, pydantic, numpy and the Kubernetes client were 160 MiB of each
transformer's 218 MiB RSS. What replaces KServe on the start path (the short argument
parser, the probe answers) is compared here with KServe's own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from nexus.config import GatewaySettings, load_settings
from nexus.edge.asgi import ForeignApp
from nexus.observability import AccessLog, TransformerMetrics, new_registry
from nexus.transformer import __main__ as entry
from nexus.transformer.app import Transformer
from nexus.transformer.kserve_bridge import build_kserve_app
from nexus.transformer.upstream import Upstream
from tests.support.processes import REPO

# Top-level packages a started transformer must not have loaded. Each is imported by KServe
# (kserve/__init__.py, 0.21.0) or was, before issue 23, by a module on the start path.
HEAVY = ("kserve", "fastapi", "starlette", "pydantic", "numpy", "pandas", "kubernetes",
         "grpc", "httpx", "aiohttp", "mlflow")  # fmt: skip

# Start-up as `python -m nexus.transformer` runs it (entry module, arguments, settings, app,
# ASGI lifespan), then every probe and a keyed route, in a fresh interpreter.
START = """
import asyncio, sys
from nexus.transformer.__main__ import create_app, parse_args, settings_from

args = parse_args(["--model_name", "chat", "--predictor_host", "127.0.0.1:9", "--http_port", "0"])
app = create_app(settings_from(args))

async def get(path, headers=()):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": path, "headers": list(headers),
             "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": ""}
    await app(scope, receive, send)
    return sent[0]["status"]

async def main():
    await app.startup()
    paths = ["/", "/v2/health/live", "/v2/health/ready", "/v2/models/chat/ready",
             "/v1/models/chat", "/metrics"]
    statuses = [await get(p) for p in paths]
    statuses.append(await get("/v1/models", [(b"x-api-key", b"k")]))
    await app.shutdown()
    return statuses

statuses = asyncio.run(main())
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(statuses, heavy)
"""


def test_a_started_transformer_loads_no_heavy_module() -> None:
    env = {**os.environ, "GATEWAY_API_KEYS": "k",
           "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", START, *HEAVY],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # The last line: the access log writes to stdout before it.
    assert done.stdout.splitlines()[-1] == f"{[200] * 7} []"


# ── KServe's app: built by the first request that needs it ──────────────────────────────


def _settings() -> GatewaySettings:
    return load_settings(
        {"GATEWAY_API_KEYS": "k", "GATEWAY_MODEL_ALIASES": "primary"},
        model_name="chat",
        predictor_host="127.0.0.1:9",
    )


def _transformer(build: Callable[[Upstream], ForeignApp]) -> Transformer:
    return Transformer(
        settings=_settings(),
        metrics=TransformerMetrics(new_registry(), tenant_label=False),
        build_kserve_app=build,
        access_log=AccessLog("nexus.test"),
    )


async def test_kserve_is_built_by_the_first_request_that_needs_it() -> None:
    built: list[Upstream] = []

    async def kserve(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"kserve"})

    def build(upstream: Upstream) -> ForeignApp:
        built.append(upstream)
        return kserve

    app = _transformer(build)
    await app.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            for path in ("/", "/v2/health/live", "/v2/health/ready", "/v1/models/primary"):
                assert (await client.get(path)).status_code == 200
            assert (await client.get("/v1/chat/completions")).status_code == 405
            assert built == []
            # Server metadata is KServe's: the first call builds its app, around our upstream.
            assert (await client.get("/v2", headers={"x-api-key": "k"})).status_code == 299
            assert built == [app.parts.upstream]
            assert (await client.get("/v2/health/ready")).text == "kserve"
            assert (
                await client.post("/v2/models/chat", headers={"x-api-key": "k"})
            ).text == "kserve"
            assert len(built) == 1
    finally:
        await app.shutdown()


# KServe 0.21 answers through FastAPI's deprecated ORJSONResponse; in a server process that
# warning is only logged, under pytest it would become an error.
@pytest.mark.filterwarnings("ignore:ORJSONResponse is deprecated")
async def test_probes_are_answered_as_kserve_answers_them() -> None:
    """Until KServe's app is built, its answer is the transformer's; other cases build it."""
    settings = _settings()
    kserve = build_kserve_app(settings, None)  # type: ignore[arg-type]
    lean = [("GET", p) for p in ("/", "/v2/health/live", "/v2/health/ready",
            "/v2/models/chat/ready", "/v2/models/primary/ready", "/v1/models/chat",
            "/v1/models/primary")]  # fmt: skip
    kserves = [("GET", "/v2/models/other/ready"), ("GET", "/v1/models/other"),
               ("HEAD", "/v2/health/live"), ("POST", "/")]  # fmt: skip
    for (method, path), answered_here in [*((c, True) for c in lean),
                                          *((c, False) for c in kserves)]:  # fmt: skip
        built, ours = await _ask_fresh(settings, method, path)
        assert built is not answered_here, (method, path)
        assert ours == await _ask(kserve, method, path), (method, path)


async def _ask_fresh(
    settings: GatewaySettings, method: str, path: str
) -> tuple[bool, tuple[int, bytes, str | None]]:
    """A new transformer's answer, and whether it built KServe's app for it."""
    built: list[Upstream] = []

    def build(upstream: Upstream) -> ForeignApp:
        built.append(upstream)
        return build_kserve_app(settings, upstream)

    app = _transformer(build)
    await app.startup()
    try:
        answer = await _ask(app, method, path)
    finally:
        await app.shutdown()
    return bool(built), answer


async def _ask(app: ForeignApp, method: str, path: str) -> tuple[int, bytes, str | None]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        answer = await client.request(method, path)
    return answer.status_code, answer.content, answer.headers.get("content-type")


# ── The command line: the short parser reads the flags KServe's parser reads ─────────────

OWN_FLAGS = {"log_level", "host"}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in OWN_FLAGS | {"help"}}


def test_the_short_parser_declares_kserves_flags_as_kserve_does() -> None:
    ours, theirs = _actions(entry._short_parser()), _actions(entry._kserve_parser())
    assert ours
    for dest, action in ours.items():
        kserve = theirs[dest]
        assert action.option_strings == kserve.option_strings, dest
        assert action.default == kserve.default, dest
        assert (action.nargs, action.const, action.choices) == (
            kserve.nargs, kserve.const, kserve.choices), dest  # fmt: skip
        samples = ("0", "8080", "-1") if action.type is int else ("true", "False", "TRUE")
        assert action.type is not None
        assert kserve.type is not None
        for sample in samples:
            assert action.type(sample) == kserve.type(sample), (dest, sample)


CONTROLLER = [
    "--model_name",
    "chat",
    "--predictor_host",
    "chat-predictor.ns",
    "--http_port",
    "8080",
]


@pytest.mark.parametrize(
    ("argv", "short"),
    [
        ([], True),
        (CONTROLLER, True),
        ([*CONTROLLER, "--workers", "4"], True),
        (["--http_port=9000", "--timeout-keep-alive", "5", "--host", "127.0.0.1"], True),
        (
            ["--predictor_use_ssl", "True", "--ssl_certfile", "c.pem", "--ssl_keyfile", "k.pem"],
            True,
        ),
        (["--log_level", "DEBUG", "--model_name", "a", "--model_name", "b"], True),
        (["--predictor_use_ssl", "yes"], False),  # a spelling only KServe's strtobool reads
        ([*CONTROLLER, "--predictor_protocol", "v2"], False),  # a flag only KServe's parser has
        (["--model", "chat"], False),  # an abbreviation, which KServe's parser allows
    ],
)
def test_command_lines_read_as_kserves_parser_reads_them(argv: list[str], short: bool) -> None:
    args, expected = entry.parse_args(argv), entry._kserve_parser().parse_args(argv)
    assert hasattr(args, "predictor_protocol") is not short
    assert {k: getattr(args, k) for k in vars(args)} == {k: vars(expected)[k] for k in vars(args)}


@pytest.mark.parametrize(
    "argv", [["--http_port", "x"], ["--workers"], ["--predictor_use_ssl", "maybe"], ["--nope"]]
)
def test_refusals_are_kserves_parsers(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ours:
        entry.parse_args(argv)
    said = capsys.readouterr().err
    with pytest.raises(SystemExit) as theirs:
        entry._kserve_parser().parse_args(argv)
    assert (ours.value.code, said) == (theirs.value.code, capsys.readouterr().err)
    assert ours.value.code == 2
    assert "usage: python -m nexus.transformer" in said


def test_help_is_kserves(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        entry.parse_args(["--help"])
    assert done.value.code == 0
    assert "--enable_predictor_health_check" in capsys.readouterr().out
