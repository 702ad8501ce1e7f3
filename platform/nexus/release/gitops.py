"""Step 3, commit: write one manifest into the GitOps repository and push it, race-safe.

A release changes the cluster only by committing to Git; Argo CD (or the local sync
loop) applies it. The step is idempotent: when the file already has the content, nothing
is committed and the current head is returned, so a retried step never stacks commits.
When another writer pushed first, the push is rejected; we fetch and re-apply our file
on top of the new head (a rebase of a commit that only sets one file's content, which
cannot conflict) and push again, a bounded number of times. Never a force-push.
In a cluster git authenticates with the Secret the pipeline mounts (``git_credentials``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nexus.errors import GitError, PushRace, ReleaseError
from nexus.release.git_credentials import git_options

AUTHOR: Final = ("Nexus release", "release@nexus.invalid")
# What git prints when the remote moved under us (as opposed to auth or path errors).
_RACE_MARKERS: Final = ("non-fast-forward", "fetch first", "cannot lock ref", "stale info")


@dataclass(frozen=True, slots=True)
class Pushed:
    commit: str
    changed: bool
    attempts: int


def _run(args: Sequence[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("git")
    if binary is None:
        raise GitError("git is not installed")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    name, email = AUTHOR
    cmd = [binary, "-c", f"user.name={name}", "-c", f"user.email={email}",
           "-c", "commit.gpgsign=false", *git_options(), *args]  # fmt: skip
    return subprocess.run(  # noqa: S603 - arguments are a list, never a shell line
        cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _git(args: Sequence[str], *, cwd: Path | None = None) -> str:
    result = _run(args, cwd=cwd)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        error = PushRace if any(m in detail for m in _RACE_MARKERS) else GitError
        raise error(f"git {' '.join(args[:2])} failed: {detail}")
    return result.stdout.strip()


def _checkout(work: Path, branch: str) -> None:
    """Start from the remote branch, or an unborn branch when the repository is empty."""
    if _git(["ls-remote", "--heads", "origin", branch], cwd=work):
        _git(["fetch", "--quiet", "origin", branch], cwd=work)
        _git(["checkout", "--quiet", "-B", branch, "FETCH_HEAD"], cwd=work)
    else:
        _git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], cwd=work)


def publish(
    *,
    repo_url: str,
    path: str,
    content: str,
    message: str,
    branch: str = "main",
    attempts: int = 5,
    before_push: Callable[[Path], None] | None = None,
) -> Pushed:
    """Make ``path`` hold ``content`` on ``branch`` of ``repo_url``; return the head commit.

    ``before_push`` runs in the clone right before each push; callers use it to log, and
    tests to move the remote in between, which is the race this function must survive.
    """
    if not repo_url:
        raise ReleaseError("no GitOps repository given (--gitops-repo or .nexus/endpoints.json)")
    with tempfile.TemporaryDirectory(prefix="nexus-gitops-") as tmp:
        work = Path(tmp) / "repo"
        _git(["init", "--quiet", str(work)])
        _git(["remote", "add", "origin", repo_url], cwd=work)
        _checkout(work, branch)
        target = work / path
        for attempt in range(1, attempts + 1):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
            _git(["add", "--", path], cwd=work)
            staged = _run(["diff", "--cached", "--quiet"], cwd=work)
            if staged.returncode == 0:
                return Pushed(_git(["rev-parse", "HEAD"], cwd=work), False, attempt)
            _git(["commit", "--quiet", "-m", message], cwd=work)
            if before_push is not None:
                before_push(work)
            try:
                _git(["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], cwd=work)
            except PushRace:
                if attempt == attempts:
                    raise
                _checkout(work, branch)  # drop our commit; re-apply on the new head
                continue
            return Pushed(_git(["rev-parse", "HEAD"], cwd=work), True, attempt)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def is_ancestor(repo_url: str, ancestor: str, descendant: str, *, branch: str = "main") -> bool:
    """True when ``descendant`` contains ``ancestor`` (a later sync includes our commit)."""
    if ancestor == descendant:
        return True
    with tempfile.TemporaryDirectory(prefix="nexus-gitops-") as tmp:
        work = Path(tmp) / "repo"
        _git(["init", "--quiet", "--bare", str(work)])
        _git(["fetch", "--quiet", repo_url, f"refs/heads/{branch}:refs/heads/{branch}"], cwd=work)
        result = _run(["merge-base", "--is-ancestor", ancestor, descendant], cwd=work)
        return result.returncode == 0


def commit_step(
    *,
    repo_url: str,
    environment: str,
    model: str,
    version: str,
    run: str,
    manifest: str,
    action: str,
    branch: str = "main",
    detail: str = "",
) -> str:
    """The commit that holds the manifest (new or unchanged); ``detail`` ends the subject."""
    from nexus.release.render import manifest_path

    subject = f"{action} {model} version {version} in {environment}{detail}"
    message = f"{subject}\n\nRelease run: {run}\n"
    pushed = publish(
        repo_url=repo_url,
        path=manifest_path(environment, model),
        content=manifest,
        message=message,
        branch=branch,
    )
    what = "committed" if pushed.changed else "unchanged, kept"
    print(f"nexus-release: {what} {pushed.commit[:12]} ({pushed.attempts} attempt(s))")
    return pushed.commit
