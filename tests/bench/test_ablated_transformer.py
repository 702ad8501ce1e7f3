"""The transformer with every governed part switched off (``bench/ablated_transformer.py``),
started as ``python -m bench costs`` starts it, in front of the canned upstream."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import redis as redis_py
from bench.ablated_transformer import PARTS
from bench.harness import CHAT_BODY, MODEL, OPENAI_PATH
from bench.processes import Children

from bench import servers

KEY = "sk-bench-test"


def post(url: str) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=CHAT_BODY, headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
        answer: dict[str, object] = json.loads(reply.read())
    return answer


def test_all_parts_off_still_serves_and_records_nothing(tmp_path: Path) -> None:
    with Children(tmp_path) as children:
        redis = servers.start_redis(children)
        fast = servers.start_fast_upstream(children)
        ablated = servers.start_nexus(
            children, upstream=fast, redis=redis, model=MODEL, api_key=KEY, name="ablated",
            entry=("-m", "bench.ablated_transformer", "--without", ",".join(PARTS), "--"),
        )  # fmt: skip
        for _ in range(3):
            assert post(ablated.base_url + OPENAI_PATH)["choices"]
        with urllib.request.urlopen(ablated.base_url + "/metrics", timeout=10) as reply:  # noqa: S310
            metrics = reply.read().decode()
        log = ablated.child.tail()
        stored = redis_py.Redis(port=redis.port).dbsize()
    # metrics off: no request, token or upstream sample; the families are still exposed
    assert "# TYPE nexus_transformer_requests_total counter" in metrics
    assert "nexus_transformer_requests_total{" not in metrics
    assert "nexus_transformer_tokens_total{" not in metrics
    assert "nexus_transformer_upstream_requests_total{" not in metrics
    # log off: no access-log line; limiter off: nothing written to Redis
    assert '"message":"request"' not in log.replace(" ", "")
    assert stored == 0


def test_an_unknown_part_is_refused(tmp_path: Path) -> None:
    with Children(tmp_path) as children:
        args = [sys.executable, "-m", "bench.ablated_transformer", "--without", "cache", "--"]
        child = children.start("ablated", args)
        assert child.proc.wait(timeout=60) == 1
        assert "unknown parts ['cache']" in child.tail()
