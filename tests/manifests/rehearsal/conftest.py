"""A copy of the repository's manifest tree to plant mistakes in, and `nexus lint` over it.

The copy holds what the rehearsal reads: ``platform/k8s``, ``platform/{pools,versions,
prerequisites}.yaml``, ``inference_services``, ``graphs``, ``argocd``, the compiled
pipeline and ``pyproject.toml``. ``lint`` runs ``nexus lint`` without paths, as a user
does, with the copy as working directory.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus.cli import main
from tests.manifests.conftest import REPO_ROOT

FOLDERS = ("platform/k8s", "inference_services", "graphs", "argocd", "pipelines/compiled")
FILES = (
    "pyproject.toml",
    "platform/pools.yaml",
    "platform/versions.yaml",
    "platform/prerequisites.yaml",
)


@dataclass(frozen=True)
class Tree:
    """The copy, with helpers that plant one mistake each."""

    root: Path

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text(encoding="utf-8")

    def replace(self, relative: str, old: str, new: str) -> None:
        text = self.read(relative)
        assert old in text, f"{old!r} not in {relative}: the shipped file changed"
        (self.root / relative).write_text(text.replace(old, new, 1), encoding="utf-8")

    def add(self, folder: str, name: str, documents: list[dict[str, Any]]) -> None:
        """Write ``documents`` to ``folder/name`` and list it in the folder's kustomization."""
        (self.root / folder / name).write_text(yaml.safe_dump_all(documents), encoding="utf-8")
        kustomization = self.root / folder / "kustomization.yaml"
        if kustomization.is_file():
            data = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
            data["resources"] = [*data.get("resources", []), name]
            kustomization.write_text(yaml.safe_dump(data), encoding="utf-8")

    def edit_yaml(self, relative: str, change: Callable[[Any], None]) -> None:
        data = yaml.safe_load(self.read(relative))
        change(data)
        (self.root / relative).write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    for folder in FOLDERS:
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    for name in FILES:
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    return Tree(tmp_path)


@dataclass(frozen=True)
class Result:
    code: int
    findings: list[dict[str, Any]]

    def naming(self, rule: str, name: str) -> list[dict[str, Any]]:
        """Errors of ``rule`` whose message or file names ``name``."""
        return [
            f
            for f in self.findings
            if f["rule"] == rule
            and f["severity"] == "error"
            and (name in f["message"] or name in f["path"])
        ]

    def first(self, rule: str, name: str) -> dict[str, Any]:
        """The first error of ``rule`` naming ``name``; fails showing every finding."""
        found = self.naming(rule, name)
        assert found, f"no {rule} error naming {name!r} in {self.findings}"
        return found[0]


@pytest.fixture
def lint(
    tree: Tree, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[], Result]:
    def run() -> Result:
        monkeypatch.chdir(tree.root)
        code = main(["lint", "--format", "json"])
        return Result(code, json.loads(capsys.readouterr().out))

    return run
