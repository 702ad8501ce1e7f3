"""The real servers tests need: redis-server, the CPU LLM upstream and the transformer."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.certs import Issued
from tests.support.processes import Managed, free_port, managed, python_module, wait_http


@dataclass
class Redis:
    port: int  # plaintext; 0 when the server speaks TLS only
    process: Managed
    workdir: Path
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


@contextlib.contextmanager
def redis_server(
    tmp: Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
    *,
    tls: Issued | None = None,
    plaintext: bool = True,
) -> Iterator[Redis]:
    """A private redis-server on a free port, nothing persisted.

    With ``tls`` it also serves TLS on a free ``tls_port`` with that certificate (clients
    are not asked for one unless ``extra_args`` say ``--tls-auth-clients yes``); without
    ``plaintext`` it serves TLS only, as managed Redis services do.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed; run `make system-deps`")
    if tls is None and not plaintext:
        raise ValueError("a Redis without plaintext needs tls")
    port = (port or free_port()) if plaintext else 0
    tls_port = free_port() if tls is not None else None
    tls_args: tuple[str, ...] = ()
    if tls is not None:
        tls_args = ("--tls-port", str(tls_port), "--tls-cert-file", str(tls.cert_file),
                    "--tls-key-file", str(tls.key_file), "--tls-ca-cert-file", str(tls.ca_file),
                    "--tls-auth-clients", "no")  # fmt: skip
    tmp.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp), *tls_args, *extra_args]  # fmt: skip
    ready = port or tls_port
    with managed(args, log=tmp / f"redis-{ready}.log", ready_port=ready) as process:
        yield Redis(port=port, process=process, workdir=tmp, tls_port=tls_port)


@dataclass
class Upstream:
    port: int
    process: Managed
    model: str

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def cpu_llm(tmp: Path, *, model: str = "chat", args: tuple[str, ...] = ()) -> Iterator[Upstream]:
    """The vLLM-shaped CPU server from ``tests/support/cpu_llm.py`` on a free port."""
    port = free_port()
    cmd = python_module("tests.support.cpu_llm", "--port", str(port), "--model", model, *args)
    with managed(cmd, log=tmp / f"cpu-llm-{port}.log",
                 ready_url=f"http://127.0.0.1:{port}/health") as process:  # fmt: skip
        yield Upstream(port=port, process=process, model=model)


@dataclass
class Transformer:
    port: int
    process: Managed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def transformer(
    tmp: Path,
    *,
    model: str,
    predictor_host: str,
    env: Mapping[str, str],
    workers: int = 1,
    port: int | None = None,
) -> Iterator[Transformer]:
    """``python -m nexus.transformer`` started exactly as KServe starts a transformer."""
    port = port or free_port()
    cmd = python_module(
        "nexus.transformer",
        "--model_name", model,
        "--predictor_host", predictor_host,
        "--http_port", str(port),
        "--workers", str(workers),
    )  # fmt: skip
    with managed(cmd, log=tmp / f"transformer-{port}.log", env=env,
                 ready_url=f"http://127.0.0.1:{port}/v2/health/live") as process:  # fmt: skip
        yield Transformer(port=port, process=process)


@contextlib.contextmanager
def transformers(
    tmp: Path,
    count: int,
    *,
    model: str,
    predictor_host: str,
    env: Mapping[str, str],
) -> Iterator[list[Transformer]]:
    """Several transformer replicas started together (start-up is paid once, in parallel)."""
    ports = [free_port() for _ in range(count)]
    processes = []
    for port in ports:
        args = python_module("nexus.transformer", "--model_name", model,
                             "--predictor_host", predictor_host, "--http_port", str(port))  # fmt: skip
        processes.append(Managed(args, log=tmp / f"transformer-{port}.log", env=env))
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_http(f"http://127.0.0.1:{port}/v2/health/live", timeout=60, proc=process.proc)
        yield [Transformer(port=p, process=proc) for p, proc in zip(ports, processes, strict=True)]
    finally:
        for process in processes:
            process.stop()
