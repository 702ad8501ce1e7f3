"""Each cluster fault of issue 9, planted in a copy of the repository, fails `nexus lint FILE`.

The copy holds the shipped manifest folders and ``platform/{pools,versions}.yaml``; the
test lints one file of it by path from another directory, so the repository around the
file is the context (the ISVC case of the runtime's port name is only visible that way).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nexus.cli import main
from tests.manifests.conftest import REPO_ROOT

ISVC_70B = "inference_services/prod/inferenceservice.llama-70b.yaml"
ISVC_8B = "inference_services/prod/inferenceservice.llama-8b.yaml"
RUNTIME = "platform/k8s/runtimes/servingruntime.nexus-vllm.yaml"
GRAPH = "graphs/inferencegraph.chat-split.yaml"

# (case, file changed, old text, new text, file linted, rule expected)
PLANTED = [
    ("port name", RUNTIME, "        - containerPort: 8080",
     "        - name: http\n          containerPort: 8080", ISVC_70B, "knative-port-name"),
    ("timeout above max", ISVC_8B, "scaleTarget: 8\n    timeout: 600",
     "scaleTarget: 8\n    timeout: 1300", ISVC_8B, "knative-timeout"),
    ("no timeout", GRAPH, "  timeout: 600\n", "", GRAPH, "knative-timeout"),
    ("router timeout", GRAPH, "    serverWrite: 600", "    serverWrite: 1300", GRAPH,
     "router-timeouts"),
    ("token in env only", ISVC_8B, "    serving.kserve.io/storageSecretName: hf-token\n", "",
     ISVC_8B, "storage-credentials"),
    ("deployment mode", ISVC_8B, "deploymentMode: Knative", "deploymentMode: Serverless",
     ISVC_8B, "deployment-mode"),
    ("weights do not fit", ISVC_70B, "nvidia.com/gpu: '4'", "nvidia.com/gpu: '1'", ISVC_70B,
     "gpu-fit"),
    ("tensor parallel", ISVC_70B, "--tensor-parallel-size=4", "--tensor-parallel-size=2",
     ISVC_70B, "tensor-parallel"),
    ("no /dev/shm", ISVC_70B, "      volumeMounts:\n        - name: dshm\n          mountPath: /dev/shm\n",
     "", ISVC_70B, "dev-shm"),
    ("predictor host", GRAPH, "http://llama-8b.nexus", "http://llama-8b-predictor.nexus", GRAPH,
     "graph-predictor-host"),
    ("path prefix", ISVC_8B, "value: /openai", "value: ''", ISVC_8B, "gateway-path-prefix"),
    ("removed vLLM arg", RUNTIME, "        - --served-model-name={{.Name}}\n",
     "        - --served-model-name={{.Name}}\n        - --disable-log-requests\n", RUNTIME,
     "vllm-args"),
    ("vLLM image", RUNTIME, "vllm/vllm-openai:v0.24.0", "vllm/vllm-openai:v0.10.2", RUNTIME,
     "vllm-image-version"),
    ("public hosts", ISVC_8B, "    networking.knative.dev/visibility: cluster-local\n", "",
     ISVC_8B, "cluster-local"),
    ("startup budget", ISVC_70B, "progress-deadline: 1800s", "progress-deadline: 600s",
     ISVC_70B, "startup-budget"),
    # Issue 20: a graph's router is public without its own visibility label.
    ("public graph", GRAPH, "    networking.knative.dev/visibility: cluster-local\n", "", GRAPH,
     "graph-cluster-local"),
]  # fmt: skip


def copy_repo(target: Path) -> Path:
    for name in ("pyproject.toml",):
        shutil.copy2(REPO_ROOT / name, target / name)
    for folder in ("inference_services", "graphs", "argocd", "platform/k8s"):
        shutil.copytree(REPO_ROOT / folder, target / folder)
    for name in ("pools.yaml", "versions.yaml"):
        shutil.copy2(REPO_ROOT / "platform" / name, target / "platform" / name)
    return target


def lint_file(file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``nexus lint FILE`` as a user runs it: the shipped schemas, the file's repository."""
    code = main(["lint", str(file)])
    return code, capsys.readouterr().out


def test_the_unchanged_copy_lints_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXUS_CRDS_DIR", raising=False)
    repo = copy_repo(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    for relative in (ISVC_70B, ISVC_8B, RUNTIME, GRAPH):
        code, out = lint_file(repo / relative, capsys)
        assert code == 0, out


@pytest.mark.parametrize(
    ("case", "changed", "old", "new", "linted", "rule"), PLANTED, ids=[p[0] for p in PLANTED]
)
def test_planted_mistake_is_an_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    changed: str,
    old: str,
    new: str,
    linted: str,
    rule: str,
) -> None:
    monkeypatch.delenv("NEXUS_CRDS_DIR", raising=False)
    repo = copy_repo(tmp_path)
    path = repo / changed
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{case}: the shipped file changed; update the plant"
    path.write_text(text.replace(old, new), encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)
    code, out = lint_file(repo / linted, capsys)
    assert code == 1, out
    errors = [line for line in out.splitlines() if f": error: {rule}:" in line]
    assert errors, out
