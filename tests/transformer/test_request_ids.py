"""Fresh request ids: 32 hex digits as before, unique within a process and across a fork."""

from __future__ import annotations

import os
import re

from nexus.edge.asgi import request_id_from


def test_fresh_ids_are_unique_hex_tokens() -> None:
    ids = [request_id_from(None) for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_sane_caller_id_is_kept() -> None:
    assert request_id_from(b"req-42.a:b") == "req-42.a:b"
    assert request_id_from(b"bad id\n") != "bad id\n"


def test_a_forked_child_does_not_repeat_its_parent_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, request_id_from(None).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    parent = request_id_from(None)
    assert len(child) == 32
    assert child[:16] != parent[:16]
