"""The commit step against a real bare repository: idempotent, and safe under push races."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.errors import GitError
from nexus.release.gitops import publish
from tests.release.conftest import git

PATH = "inference_services/prod/inferenceservice.m.yaml"


def test_publish_writes_and_is_idempotent(gitops_repo: Path) -> None:
    first = publish(repo_url=str(gitops_repo), path=PATH, content="a: 1\n", message="one")
    assert first.changed
    again = publish(repo_url=str(gitops_repo), path=PATH, content="a: 1\n", message="two")
    assert not again.changed
    assert again.commit == first.commit
    assert git("--git-dir", str(gitops_repo), "rev-list", "--count", "main") == "1"


@pytest.mark.parametrize("same_file", [False, True], ids=["other-file", "same-file"])
def test_concurrent_push_is_retried_on_top(
    gitops_repo: Path, tmp_path: Path, same_file: bool
) -> None:
    publish(repo_url=str(gitops_repo), path=PATH, content="v: 1\n", message="base")
    other = tmp_path / "other"
    git("clone", "--quiet", str(gitops_repo), str(other))
    pushed_by_other: list[str] = []

    def race(_: Path) -> None:
        # Someone else pushes between our clone and our push (once).
        if pushed_by_other:
            return
        target = other / (PATH if same_file else "graphs/x.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("theirs: true\n")
        git("add", "-A", cwd=other)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "theirs", cwd=other)
        git("push", "--quiet", "origin", "HEAD:main", cwd=other)
        pushed_by_other.append(git("rev-parse", "HEAD", cwd=other))

    result = publish(
        repo_url=str(gitops_repo), path=PATH, content="v: 2\n", message="ours", before_push=race
    )
    repo = str(gitops_repo)
    assert result.changed
    assert result.attempts == 2
    assert git("--git-dir", repo, "rev-parse", "main") == result.commit
    # Their commit is kept (never force-pushed) and ours sits on top of it.
    assert git("--git-dir", repo, "rev-parse", "main~1") == pushed_by_other[0]
    assert git("--git-dir", repo, "show", f"main:{PATH}") == "v: 2"
    assert git("--git-dir", repo, "log", "--format=%s", "main").splitlines() == [
        "ours",
        "theirs",
        "base",
    ]


def test_unreachable_repository_fails_without_retrying(tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"does not appear to be a git repository|not found"):
        publish(repo_url=str(tmp_path / "missing.git"), path=PATH, content="x", message="m")
