"""The local platform starts each transformer on loopback only (issue 12, item 14)."""

from __future__ import annotations

from nexus.local.resources import transformer_command
from nexus.transformer.__main__ import parse_args


def test_local_transformers_bind_loopback_and_parse() -> None:
    kserve_args = ["--model_name", "llama-8b", "--predictor_host", "127.0.0.1:9001"]
    command = transformer_command([*kserve_args, "--http_port", "9002"])
    assert command[command.index("--host") + 1] == "127.0.0.1"
    args = parse_args(command[3:])
    assert args.host == "127.0.0.1"
    assert args.http_port == 9002


def test_the_default_host_is_every_interface_as_in_a_pod() -> None:
    assert parse_args(["--model_name", "m", "--predictor_host", "h:1"]).host == "0.0.0.0"
