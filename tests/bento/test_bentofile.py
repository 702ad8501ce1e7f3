"""The Bento of the CPU worker: pinned like the rest of Nexus, buildable, and what the
rendered InferenceServices start inside it exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.processes import REPO

BENTOFILE = REPO / "bento" / "bentofile.yaml"
LOCAL_ISVCS = sorted((REPO / "inference_services" / "local").glob("*.yaml"))


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            found[name.lower().replace("_", "-")] = version
    return found


def test_bentofile_pins_are_the_constraints() -> None:
    wanted = pins(yaml.safe_load(BENTOFILE.read_text())["python"]["packages"])
    locked = pins((REPO / "constraints.txt").read_text().splitlines())
    assert wanted
    assert {name: locked.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("path", LOCAL_ISVCS, ids=lambda p: p.name)
def test_local_inference_services_start_the_worker_entry_of_the_bento(path: Path) -> None:
    isvc = yaml.safe_load(path.read_text())
    container = isvc["spec"]["predictor"]["containers"][0]
    args = container["args"]
    # The image's working directory is the Bento root; sources sit under src/.
    assert args[:2] == ["python", "src/bento/cpu_worker.py"]
    assert (REPO / "bento" / "cpu_worker.py").is_file()
    assert f"--model-name={isvc['metadata']['name']}" in args
    port = container["ports"][0]["containerPort"]
    assert f"--port={port}" in args


@pytest.mark.skipif(shutil.which("bentoml", path=str(Path(sys.executable).parent)) is None,
                    reason="bentoml CLI not installed next to this Python")  # fmt: skip
def test_bento_builds_with_the_worker_sources(tmp_path: Path) -> None:
    bentoml = str(Path(sys.executable).parent / "bentoml")
    env = {"BENTOML_HOME": str(tmp_path), "PYTHONPATH": str(REPO / "bento"),
           "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "BENTOML_DO_NOT_TRACK": "True"}  # fmt: skip
    subprocess.run([bentoml, "build", "-f", str(BENTOFILE), str(REPO)], env=env, cwd=REPO,
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    (bento,) = (tmp_path / "bentos" / "nexus-cpu-worker").glob("*/bento.yaml")
    src = bento.parent / "src"
    for name in ("bento/service.py", "bento/cpu_worker.py", "bento/vllm_metrics.py",
                 "bento/llm_text.py"):  # fmt: skip
        assert (src / name).is_file(), name
    dockerfile = (bento.parent / "env" / "docker" / "Dockerfile").read_text()
    # The worker's sources are all in src/bento: it imports nothing from the platform.
    assert "/home/bentoml/bento/src/bento" in dockerfile
    assert "src/platform" not in dockerfile
