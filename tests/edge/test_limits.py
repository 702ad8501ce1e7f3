"""The shared HTTP edge (``nexus.edge.protocol``) in both real servers (issue 12, items 7 and 9).

Every case talks raw HTTP/1.1 over a socket so that the test, not a client library,
decides how much is sent and when. Before the edge, both servers answered 200 to 1 MB
headers and to 10,000 headers, buffered a 200 MB header whole, and kept a connection
whose head or body never completed open forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from nexus.edge.protocol import EdgeLimits
from nexus.errors import ConfigError
from tests.support.processes import Managed, free_port, managed, python_module
from tests.support.servers import transformer

TIMEOUTS = {"NEXUS_EDGE_HEADER_TIMEOUT": "1", "NEXUS_EDGE_BODY_TIMEOUT": "1.5"}


@dataclass
class Server:
    name: str
    port: int
    health: str
    process: Managed

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])


@contextlib.contextmanager
def start(kind: str, tmp: Path) -> Iterator[Server]:
    if kind == "router":
        port = free_port()
        spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": f"http://127.0.0.1:{free_port()}/v1/models/m:predict"}]}}}  # fmt: skip
        cmd = python_module("nexus.router", "--graph-json", orjson.dumps(spec).decode(),
                            "--port", str(port), "--host", "127.0.0.1", "--drain-seconds", "0")  # fmt: skip
        with managed(cmd, log=tmp / "router.log", env=TIMEOUTS,
                     ready_url=f"http://127.0.0.1:{port}/readyz") as process:  # fmt: skip
            yield Server(kind, port, "/readyz", process)
    else:
        env = {**TIMEOUTS, "GATEWAY_API_KEYS": "edge-key"}
        with transformer(tmp, model="chat", predictor_host=f"127.0.0.1:{free_port()}",
                         env=env) as gw:  # fmt: skip
            yield Server(kind, gw.port, "/v2/health/live", gw.process)


@pytest.fixture(scope="module", params=["router", "transformer"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with start(request.param, tmp_path_factory.mktemp(request.param)) as running:
        yield running


async def exchange(server: Server, data: bytes, *, wait: float = 10) -> bytes:
    """Send ``data`` at once and read until the server closes (or ``wait`` seconds of silence)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), wait):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


async def health_ok(server: Server) -> float:
    started = time.monotonic()
    answer = await exchange(server, f"GET {server.health} HTTP/1.1\r\nHost: h\r\n"
                            "Connection: close\r\n\r\n".encode())  # fmt: skip
    assert status_of(answer) == 200
    return time.monotonic() - started


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: h\r\n".encode() + extra + b"Connection: close\r\n\r\n"


async def test_normal_requests_pass_the_edge(server: Server) -> None:
    headers = b"".join(b"X-Field-%d: %s\r\n" % (i, b"v" * 500) for i in range(90))
    assert status_of(await exchange(server, get(server.health, headers))) == 200
    assert await health_ok(server) < 2


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (get("/", b"X-Big: " + b"a" * 1_000_000 + b"\r\n"), 431, b"header block too large"),
        (get("/", b"".join(b"X-N%d: 1\r\n" % i for i in range(10_000))), 431, b"too many"),
        (get("/" + "a" * 100_000), 414, b"request line too long"),
    ],
    ids=["1-MB-header", "10000-headers", "100-KB-request-line"],
)
async def test_oversized_heads_are_refused(
    server: Server, request_bytes: bytes, status: int, reason: bytes
) -> None:
    answer = await exchange(server, request_bytes)
    assert status_of(answer) == status
    assert b"connection: close" in answer.lower()
    assert reason in answer
    assert await health_ok(server) < 2


async def test_a_200_mb_header_is_refused_while_it_streams_and_probes_keep_answering(
    server: Server,
) -> None:
    rss_before = server.rss_kib()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ")
    sent = 0
    piece = b"a" * (1024 * 1024)
    probes = []
    with contextlib.suppress(ConnectionError):
        while sent < 200 * len(piece):
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
            if sent % (8 * len(piece)) == 0:
                probes.append(await health_ok(server))
    answer = b""
    with contextlib.suppress(ConnectionError):
        answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert sent < 20 * len(piece), f"{sent} bytes were accepted before the refusal"
    if answer:  # the 431 can be lost to the reset of a close with unread bytes
        assert status_of(answer) == 431
    assert all(p < 1 for p in probes), probes
    assert server.rss_kib() - rss_before < 30_000
    assert await health_ok(server) < 2


async def test_a_head_that_never_completes_is_closed_after_the_header_timeout(
    server: Server,
) -> None:
    started = time.monotonic()
    answer = await exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: 1", wait=10)
    elapsed = time.monotonic() - started
    assert status_of(answer) == 408
    assert b"request headers not received in time" in answer
    assert 0.8 < elapsed < 4, elapsed


async def test_a_silent_connection_is_closed_after_the_header_timeout(server: Server) -> None:
    started = time.monotonic()
    answer = await exchange(server, b"", wait=10)
    assert status_of(answer) == 408
    assert time.monotonic() - started < 4


async def test_a_body_that_never_completes_is_cut_off_after_the_body_timeout(
    server: Server,
) -> None:
    started = time.monotonic()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer edge-key\r\n")  # fmt: skip
    answer = await exchange(server, head + b'Content-Length: 100\r\n\r\n{"model":', wait=10)
    elapsed = time.monotonic() - started
    assert status_of(answer) == 408
    assert b"request body not received in time" in answer
    assert 1.2 < elapsed < 5, elapsed
    assert await health_ok(server) < 2


async def test_a_trickling_head_does_not_extend_the_deadline(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    received: list[bytes] = []

    async def read_all() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received.append(chunk)

    reading = asyncio.ensure_future(read_all())
    writer.write(b"GET / HTTP/1.1\r\n")
    with contextlib.suppress(ConnectionError):
        for i in range(40):  # a header line every 100 ms, never the end of the head
            if reading.done():
                break
            writer.write(b"X-T%d: 1\r\n" % i)
            await writer.drain()
            await asyncio.sleep(0.1)
    await asyncio.wait_for(reading, 10)
    writer.close()
    assert status_of(b"".join(received)) == 408
    assert time.monotonic() - started < 3


def test_limits_come_from_the_environment_and_bad_values_name_the_variable() -> None:
    limits = EdgeLimits.from_env({"NEXUS_EDGE_MAX_HEADERS": "7", "NEXUS_EDGE_BODY_TIMEOUT": "2.5"})
    assert (limits.max_headers, limits.body_timeout) == (7, 2.5)
    assert EdgeLimits.from_env({}) == EdgeLimits()
    for name, value in (("NEXUS_EDGE_MAX_HEADERS", "many"), ("NEXUS_EDGE_HEADER_TIMEOUT", "0")):
        with pytest.raises(ConfigError, match=name):
            EdgeLimits.from_env({name: value})


def test_a_router_with_a_bad_edge_variable_refuses_to_start(tmp_path: Path) -> None:
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:1/x"}]}}}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "nexus.router", "--graph-json", orjson.dumps(spec).decode(),
         "--port", str(free_port())],
        env={**os.environ, "NEXUS_EDGE_MAX_HEADER_BYTES": "-1"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "NEXUS_EDGE_MAX_HEADER_BYTES must be greater than 0" in done.stdout + done.stderr


async def test_transformer_workers_carry_the_limits(tmp_path: Path) -> None:
    """``--workers 2``: the limits travel to uvicorn's worker processes with the config."""
    env = {**TIMEOUTS, "GATEWAY_API_KEYS": "edge-key", "NEXUS_EDGE_MAX_HEADERS": "20"}
    with transformer(tmp_path, model="chat", predictor_host=f"127.0.0.1:{free_port()}",
                     env=env, workers=2) as gw:  # fmt: skip
        server = Server("transformer", gw.port, "/v2/health/live", gw.process)
        many = b"".join(b"X-N%d: 1\r\n" % i for i in range(30))
        for _ in range(4):  # connections land on either worker
            answer = await exchange(server, get("/v2/health/live", many))
            assert status_of(answer) == 431
            assert b"too many request header fields" in answer
        assert await health_ok(server) < 2
