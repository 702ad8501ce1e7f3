"""Hostile requests against the real processes: the router (Switch graph in front of the
CPU LLM) and the transformer. Each example must get an answer below 500 and both processes
must stay up; the figures in the README's Reliability section come from this file and from
``tests/router/test_hardening.py`` and ``tests/edge/test_limits.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import json_bytes, json_values
from tests.support.processes import Managed, free_port, managed, python_module
from tests.support.servers import Upstream, cpu_llm, transformer

KEY = "fuzz-key"
LIVE = settings(max_examples=settings.default.max_examples // 2)

chats = st.fixed_dictionaries(
    {"model": st.sampled_from(["chat", "other"]),
     "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": json_values}),
                          min_size=1, max_size=2)},
    optional={"max_tokens": st.integers(-1, 8) | json_values, "stream": st.booleans() | json_values,
              "instances": json_values, "error": json_values},
).map(orjson.dumps)  # fmt: skip
bodies = json_bytes | chats
# Any byte a client library lets through in a header value: visible ASCII, space, tab, obs-text.
header_values = st.lists(
    st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=40
).map(lambda values: bytes(values).strip(b" \t"))


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with cpu_llm(tmp_path_factory.mktemp("llm")) as server:
        yield server


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, llm: Upstream) -> Iterator[Managed]:
    chat = f"{llm.url}/v1/chat/completions"
    spec = {"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": chat, "condition": "error.upstream_failure"},
        {"serviceUrl": chat, "condition": 'messages.#(role=="user")'},
    ]}}}  # fmt: skip
    port = free_port()
    cmd = python_module("nexus.router", "--graph-json", orjson.dumps(spec).decode(), "--port",
                        str(port), "--host", "127.0.0.1", "--drain-seconds", "0")  # fmt: skip
    with managed(cmd, log=tmp_path_factory.mktemp("router") / "router.log",
                 ready_url=f"http://127.0.0.1:{port}/readyz") as process:  # fmt: skip
        process.port = port  # type: ignore[attr-defined]
        yield process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, llm: Upstream) -> Iterator[Managed]:
    with transformer(tmp_path_factory.mktemp("gw"), model="chat", predictor_host=llm.host,
                     env={"GATEWAY_API_KEYS": KEY}) as gw:  # fmt: skip
        gw.process.port = gw.port  # type: ignore[attr-defined]
        yield gw.process


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def post(
    http: httpx.Client, process: Managed, path: str, body: bytes, headers: dict[str, bytes]
) -> int:
    url = f"http://127.0.0.1:{process.port}{path}"  # type: ignore[attr-defined]
    return http.post(url, content=body, headers=headers).status_code


@LIVE
@given(body=bodies, request_id=header_values)
def test_router_answers_any_body_below_500(
    http: httpx.Client, router: Managed, body: bytes, request_id: bytes
) -> None:
    status = post(http, router, "/", body, {"x-request-id": request_id})
    assert status < 500 or status == 502, status  # 502: the LLM refused a step answer
    assert router.proc.poll() is None


@LIVE
@given(
    body=bodies,
    path=st.sampled_from(["/v1/chat/completions", "/openai/v1/chat/completions",
                          "/v1/completions", "/v1/embeddings", "/v1/models/chat:predict",
                          "/v2/models/chat/infer"]),
    auth=st.sampled_from([b"Bearer " + KEY.encode(), b"Bearer x", b""]) | header_values,
    extra=header_values,
)  # fmt: skip
def test_transformer_answers_any_request_below_500(
    http: httpx.Client,
    gateway: Managed,
    body: bytes,
    path: str,
    auth: bytes,
    extra: bytes,
) -> None:
    headers = {
        "authorization": auth,
        "x-request-id": extra,
        # KServe 0.21 answered 500 for `abc` (int(); issue 12 item 10) and for a JSON part
        # `null` (a TypeError in its decoder); the transformer now checks both (400).
        "inference-header-content-length": extra,
    }
    status = post(http, gateway, path, body, headers)
    assert status < 500 or status in (502, 503, 504), status  # upstream failures keep their codes
    assert gateway.proc.poll() is None


def test_both_processes_are_still_ready(router: Managed, gateway: Managed, tmp_path: Path) -> None:
    assert httpx.get(f"http://127.0.0.1:{router.port}/readyz").status_code == 200  # type: ignore[attr-defined]
    assert httpx.get(f"http://127.0.0.1:{gateway.port}/v2/health/live").status_code == 200  # type: ignore[attr-defined]
