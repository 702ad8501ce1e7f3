"""``nexus``'s one error handler: an operational error is one line and an exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nexus.cli import main


def test_a_refused_input_exits_2_with_the_command_and_the_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = main(["release", "llama-8b", "--version", "1", "--state-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("nexus release: refused: no tracking_uri or gitops_repo")
    assert "Traceback" not in err


def test_subcommands_are_named_in_the_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["schemas", "generate", "--crds", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.startswith(
        f"nexus schemas generate: refused: no CustomResourceDefinition found under {tmp_path}"
    )


def test_an_operational_error_exits_1_without_a_traceback(tmp_path: Path) -> None:
    # Nothing listens on the discard port: MLflow's client fails, Registry raises RegistryError.
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    result = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "registry", "register", "llama-8b",
         "--storage-uri", "hf://meta-llama/Llama-3.1-8B-Instruct", "--runtime", "huggingface",
         "--gpu-pool", "h100", "--tracking-uri", "http://127.0.0.1:9",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr
    # One line naming the registry and what to do, no urllib3 retries or HTTPConnectionPool.
    assert result.stderr.startswith(
        "nexus registry register: the MLflow registry at http://127.0.0.1:9 is unreachable"
    )
    assert result.stderr.count("\n") == 1
    assert "HTTPConnectionPool" not in result.stderr
