"""Fixtures shared by every test: real Redis and a real vLLM-shaped upstream on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import Redis, Upstream, cpu_llm, redis_server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    with redis_server(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    with cpu_llm(tmp_path) as server:
        yield server
