"""Start-up: bad settings stop the process with the variable named; ``--host`` binds (item 14)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import warnings
from pathlib import Path

import httpx
import pytest

from nexus.config import GatewaySettings
from nexus.observability import AccessLog, TransformerMetrics, new_registry
from nexus.transformer.app import Transformer
from tests.support.processes import free_port, managed, python_module
from tests.transformer.conftest import BASE_ENV

# One process per case (a start is a second or more on a loaded machine); every
# other variable is checked in-process by tests/unit/test_config.py.
BAD_SETTINGS = [
    ({"GATEWAY_REDIS_URL": "http://127.0.0.1:6379"}, "GATEWAY_REDIS_URL"),
    ({"GATEWAY_RATE_LIMIT_PER_MIN": "5"}, "GATEWAY_RATE_LIMIT_PER_MIN"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_SETTINGS)
def test_bad_settings_stop_the_process_naming_the_variable(bad: dict[str, str], named: str) -> None:
    cmd = python_module("nexus.transformer", "--model_name", "chat",
                        "--predictor_host", "127.0.0.1:9", "--http_port", str(free_port()))  # fmt: skip
    done = subprocess.run(
        cmd, env={**_base_env(), **bad}, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert named in done.stderr
    assert "Traceback" not in done.stderr
    assert "Unclosed" not in done.stderr


def _base_env() -> dict[str, str]:
    import os

    return {**os.environ, **BASE_ENV}


def test_a_failed_start_closes_the_session() -> None:
    """Settings built around ``load_settings`` still fail in lifespan; nothing leaks then."""
    settings = GatewaySettings(
        model_name="chat", predictor_host="127.0.0.1:9", api_keys=("k",), redis_url="http://x"
    )

    async def no_app(*_: object) -> None:
        raise AssertionError("never served")

    gateway = Transformer(
        settings=settings,
        metrics=TransformerMetrics(new_registry(), tenant_label=False),
        build_kserve_app=lambda _upstream: no_app,
        access_log=AccessLog("nexus.test"),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="Redis URL scheme"):
            asyncio.run(gateway.startup())
        gc.collect()
    assert not [w for w in caught if "Unclosed" in str(w.message)]


def test_host_flag_binds_loopback_only(tmp_path: Path) -> None:
    port = free_port()
    cmd = python_module("nexus.transformer", "--model_name", "chat", "--host", "127.0.0.1",
                        "--predictor_host", "127.0.0.1:9", "--http_port", str(port))  # fmt: skip
    with managed(cmd, log=tmp_path / "t.log", env=BASE_ENV,
                 ready_url=f"http://127.0.0.1:{port}/v2/health/live"):  # fmt: skip
        listening = _listening_addresses(port)
        assert listening == {"0100007F"}, listening
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a listening socket on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found
