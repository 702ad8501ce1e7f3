"""Fault 9 of issue 9: ConfigMaps come from the synced commit, as Argo CD applies them.

The real controller, a real bare repository, real transformer processes; what a
transformer got is read from ``/proc/<pid>/environ``.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from nexus.local import gitops
from nexus.local.resources import CONFIG_FOLDER
from tests.local.conftest import (
    CONFIG_PATH,
    ISVC,
    ISVC_PATH,
    LocalController,
    git,
    project_copy,
)

TRANSFORMER_1 = f"{ISVC}-transformer-00001"
LIMIT = "GATEWAY_RATE_LIMIT_PER_MINUTE"


def test_transformers_read_the_synced_commit_not_the_checkout(
    controller: LocalController,
) -> None:
    # The working checkout differs from Git: a cluster never sees uncommitted edits.
    checkout = controller.project / CONFIG_PATH
    edited = yaml.safe_load(checkout.read_text())
    edited["data"][LIMIT] = "7"
    checkout.write_text(yaml.safe_dump(edited))
    controller.ready_revision("00001")
    committed = controller.read(CONFIG_PATH)["data"][LIMIT]
    assert committed != "7"
    assert controller.environ(TRANSFORMER_1)[LIMIT] == committed
    pid = controller.pid(TRANSFORMER_1)

    # A ConfigMap change in Git reaches no running pod: envFrom is resolved when a
    # container is created, and a Knative revision is immutable.
    body = controller.read(CONFIG_PATH)
    body["data"][LIMIT] = "11"
    assert controller.push(CONFIG_PATH, body, "Lower the rate limit").returncode == 0
    head = controller.head()
    controller.wait(lambda: controller.application()["status"]["sync"]["revision"] == head,
                    "the ConfigMap commit synced")  # fmt: skip
    time.sleep(1.0)  # three more passes of the loop (0.3 s each)
    assert controller.pid(TRANSFORMER_1) == pid
    assert controller.environ(TRANSFORMER_1)[LIMIT] == committed

    # A new revision is a new pod: it reads the ConfigMap of the commit it was made from.
    isvc = controller.read(ISVC_PATH)
    isvc["spec"]["predictor"]["containers"][0]["env"].append({"name": "REV", "value": "2"})
    assert controller.push(ISVC_PATH, isvc, "New predictor revision").returncode == 0
    controller.ready_revision("00002")
    assert controller.environ(f"{ISVC}-transformer-00002")[LIMIT] == "11"


def test_an_older_gitops_repository_gets_the_configmaps_once(tmp_path: Path) -> None:
    """`nexus up` on a repository seeded before ConfigMaps moved to Git adds them once."""
    project = project_copy(tmp_path)
    repo = tmp_path / "gitops.git"
    gitops.seed(repo, project, ["inference_services/local"])
    folders = ["inference_services/local", "graphs", CONFIG_FOLDER]
    assert gitops.add_missing(repo, project, folders) == ["graphs", CONFIG_FOLDER]
    assert gitops.add_missing(repo, project, folders) == []
    log = git("--git-dir", str(repo), "log", "--format=%s", "main").splitlines()
    assert log == [
        f"Add graphs, {CONFIG_FOLDER} from the project's manifests",
        "Seed from the project's manifests",
    ]
    listed = git("--git-dir", str(repo), "ls-tree", "--name-only", "main", f"{CONFIG_FOLDER}/")
    assert CONFIG_PATH in listed.splitlines()
