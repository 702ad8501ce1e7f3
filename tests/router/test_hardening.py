"""Hostile input against a real router process (issue 12, items 2, 8, 11 and 12).

Each case failed before the fix: the deep bodies killed the process with SIGSEGV inside
GJSON, the body nested along the condition's path held the event loop (and ``/readyz``)
for seconds, any body was buffered whole, and error bodies carried the address a step
was really called at and aiohttp's own error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import orjson

from tests.router.conftest import Models, Router, RouterFactory, sequence
from tests.support.processes import free_port

FAILED = "Failed to process request"
MIB = 1024 * 1024


def switch_graph(models: Models) -> dict[str, object]:
    return {"nodes": {"root": {"routerType": "Switch", "steps": [
        {"name": "a", "serviceUrl": models.url("/predictions/a"),
         "condition": "error.upstream_failure"},
        {"name": "b", "serviceUrl": models.url("/predictions/b"), "condition": "instances"},
    ]}}}  # fmt: skip


def fallback_graph(models: Models, primary: str) -> dict[str, object]:
    return sequence(
        {"name": "primary", "serviceUrl": models.url(primary)},
        {"name": "fallback", "serviceUrl": models.url("/predictions/fb"),
         "condition": "error.upstream_failure"},
    )  # fmt: skip


async def raw_exchange(router: Router, data: bytes) -> bytes:
    """Write ``data`` at once; collect the answer until the router closes (or resets)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    received: list[bytes] = []
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            while chunk := await asyncio.wait_for(reader.read(65536), 5):
                received.append(chunk)
    finally:
        writer.close()
    return b"".join(received)


async def assert_alive(router: Router, client: aiohttp.ClientSession) -> None:
    assert router.process.proc.poll() is None, router.process.output()[-2000:]
    async with client.get(f"{router.url}/readyz") as response:
        assert response.status == 200


async def test_a_million_brackets_to_a_switch_is_a_400_and_the_router_lives(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(switch_graph(models))
    for body in (b"[" * 1_000_000, b"[" * 500_000 + b"]" * 500_000, b'["x", ' + b"{" * 900_000):
        async with client.post(router.url, data=body) as response:
            assert response.status == 400
            assert await response.json() == {
                "error": FAILED, "cause": "request body is JSON nested deeper than 128 levels"}  # fmt: skip
        await assert_alive(router, client)
    # Nesting inside strings is text, not structure; ordinary requests still route.
    async with client.post(router.url, json={"instances": ["[" * 5000]}) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": "b"}


async def test_a_2_mb_nested_body_is_refused_413_before_it_is_read(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(switch_graph(models))
    # Raw socket: the router answers and closes after the head and the first 1,000 bytes;
    # a client library would race that close while still writing the rest.
    answer = await raw_exchange(
        router, b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 2000000\r\n\r\n" + b"[" * 1000
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert orjson.loads(body) == {
        "error": FAILED, "cause": "request body of 2000000 bytes exceeds the 1048576-byte limit"}  # fmt: skip
    await assert_alive(router, client)


async def test_a_body_nested_along_the_condition_path_does_not_stall_readyz(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """300 KB nested along ``error.upstream_failure``: 7 s of GJSON on the loop before."""
    router = start_router(switch_graph(models))
    attack = b'{"error":' * 30_000 + b"1" + b"}" * 30_000
    probes: list[float] = []

    async def probe_readyz() -> None:
        for _ in range(40):
            started = time.monotonic()
            async with client.get(f"{router.url}/readyz") as response:
                assert response.status == 200
            probes.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    async def attack_once() -> int:
        async with client.post(router.url, data=attack) as response:
            await response.read()
            return response.status

    prober = asyncio.ensure_future(probe_readyz())
    statuses = await asyncio.gather(*(attack_once() for _ in range(8)))
    await prober
    assert statuses == [400] * 8
    assert max(probes) < 1.0, probes
    await assert_alive(router, client)


async def test_a_step_answer_nested_a_million_deep_is_a_502_in_a_sequence(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(fallback_graph(models, "/deep/1000000"))
    async with client.post(router.url, json={"instances": [1]}) as response:
        assert response.status == 502
        assert await response.json() == {
            "error": FAILED, "cause": "step primary answered JSON nested deeper than 128 levels"}  # fmt: skip
        assert response.headers["x-nexus-graph-step"] == "primary"
    assert not models.calls("/predictions/fb")
    await assert_alive(router, client)
    # Same answer as the last step of a plain graph: the content-type check reads it too.
    plain = start_router(sequence({"name": "only", "serviceUrl": models.url("/deep/1000000")}))
    async with client.post(plain.url, json={}) as response:
        assert response.status == 502
    await assert_alive(plain, client)


async def test_a_step_answer_over_the_response_limit_is_a_502(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(fallback_graph(models, "/big/300000"),
                          args=["--max-response-bytes", "100000"])  # fmt: skip
    async with client.post(router.url, json={}) as response:
        assert response.status == 502
        assert await response.json() == {
            "error": FAILED, "cause": "step primary answered more than the router's 100000-byte limit"}  # fmt: skip
    await assert_alive(router, client)


async def test_the_body_limit_is_configurable_and_holds_for_chunked_bodies(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": models.url("/echo")}),
                          args=["--max-body-bytes", "1000"])  # fmt: skip
    async with client.post(router.url, data=b'"' + b"x" * 998 + b'"') as response:
        assert response.status == 200

    # Chunked, so no Content-Length warns the router: 2,000 bytes in 100-byte chunks.
    chunk = b"64\r\n" + b"x" * 100 + b"\r\n"
    answer = await raw_exchange(
        router, b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 20
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(body)["cause"] == "request body exceeds the 1000-byte limit"
    await assert_alive(router, client)


async def test_a_declared_500_mb_body_is_answered_before_it_is_sent(
    models: Models, start_router: RouterFactory
) -> None:
    """The 413 comes back while the client has sent headers only."""
    router = start_router(sequence({"serviceUrl": models.url("/echo")}))
    reader, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 524288000\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    writer.close()


async def test_error_bodies_name_the_spec_url_not_the_mapped_address_or_aiohttp(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    dead = free_port()
    router = start_router(
        sequence({"name": "gone", "serviceUrl": "http://gone.models.svc/v1/models/m:predict"}),
        args=["--host-map", f"gone.models.svc=127.0.0.1:{dead}"],
    )
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        cause = (await response.json())["cause"]
    assert cause == ('Post "http://gone.models.svc/v1/models/m:predict": '
                     "dial tcp gone.models.svc:80: connect: connection refused")  # fmt: skip
    assert str(dead) not in cause
    cut = start_router(sequence({"name": "cut", "serviceUrl": models.url("/cut")}))
    async with client.post(cut.url, json={}) as response:
        assert response.status == 500
        cause = (await response.json())["cause"]
    assert cause == f'Post "{models.url("/cut")}": EOF'


async def test_request_ids_are_logged_only_when_sane(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": models.url("/echo")}))
    hostile = "x" * 20_000 + '"\\u001b[31m'
    for rid in ("rid-ok.1", hostile, "a b"):
        async with client.post(router.url, json={}, headers={"X-Request-Id": rid}) as response:
            assert response.status == 200
    await asyncio.sleep(0.3)  # the access log is flushed once per loop tick
    ids = [orjson.loads(line)["request_id"] for line in router.process.output().splitlines()
           if line.startswith("{") and '"request_id"' in line]  # fmt: skip
    assert ids[0] == "rid-ok.1"
    assert len(ids) == 3
    assert all(len(i) == 32 and i.isalnum() for i in ids[1:]), [i[:40] for i in ids]
