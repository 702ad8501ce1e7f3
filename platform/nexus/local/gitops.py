"""The local GitOps repository: a bare Git repo that plays the part of the cluster's Git.

``nexus up`` creates ``<state>/gitops.git`` once, seeded from the project's
``inference_services/<environment>/`` and ``graphs/`` with the same paths, so that the
release pipeline commits ``inference_services/local/<name>.yaml`` exactly as it would to
the repository Argo CD watches. Later ``up``s never touch it: its history is the
platform's deployment history.

The controller reads the bare repo directly (``rev-parse``, ``ls-tree``, ``show``), like
Argo CD's repo server reads a commit, without a working tree that could drift.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from nexus.errors import PlatformError

BRANCH = "main"
IDENTITY = ("-c", "user.name=Nexus local platform", "-c", "user.email=nexus@localhost")


def _git(*args: str, cwd: Path | None = None) -> str:
    git = shutil.which("git")
    if git is None:
        raise PlatformError("git is not installed; the local GitOps repository needs it")
    result = subprocess.run(  # noqa: S603 - fixed argv
        [git, *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise PlatformError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def has_commits(repo: Path) -> bool:
    try:
        _git("--git-dir", str(repo), "rev-parse", "--verify", f"refs/heads/{BRANCH}")
    except PlatformError:
        return False
    return True


def _copy(project: Path, folders: Sequence[str], work: Path) -> int:
    copied = 0
    for folder in folders:
        for source in sorted((project / folder).glob("*.yaml")):
            target = work / folder / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied += 1
    return copied


def seed(repo: Path, project: Path, folders: Sequence[str]) -> bool:
    """Create and seed ``repo`` unless it already has history; True when it was seeded."""
    if has_commits(repo):
        return False
    repo.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(repo))
    with tempfile.TemporaryDirectory(prefix="nexus-seed-") as tmp:
        work = Path(tmp)
        _git("init", "--quiet", f"--initial-branch={BRANCH}", cwd=work)
        if not _copy(project, folders, work):
            raise PlatformError(f"nothing to seed the GitOps repository with in {project}")
        _git("add", "--all", cwd=work)
        _git(*IDENTITY, "commit", "--quiet", "-m", "Seed from the project's manifests", cwd=work)
        _git("push", "--quiet", str(repo), f"HEAD:refs/heads/{BRANCH}", cwd=work)
    return True


def add_missing(repo: Path, project: Path, folders: Sequence[str]) -> list[str]:
    """Commit the ``folders`` that ``repo``'s branch lacks entirely; the folders added.

    A repository seeded by an older Nexus has no ``platform/k8s/base``, which the
    controller now reads its ConfigMaps from. Folders that exist are never touched: their
    history is the deployment history.
    """
    head = f"refs/heads/{BRANCH}"
    missing = [f for f in folders if not _git("--git-dir", str(repo), "ls-tree", head, f"{f}/")]
    if not missing:
        return []
    with tempfile.TemporaryDirectory(prefix="nexus-seed-") as tmp:
        work = Path(tmp)
        _git("clone", "--quiet", "--branch", BRANCH, str(repo), str(work))
        if not _copy(project, missing, work):
            return []
        _git("add", "--all", cwd=work)
        message = f"Add {', '.join(missing)} from the project's manifests"
        _git(*IDENTITY, "commit", "--quiet", "-m", message, cwd=work)
        _git("push", "--quiet", "origin", f"HEAD:{head}", cwd=work)
    return missing


class GitReader:
    """Async reads of one branch of a bare repository."""

    def __init__(self, repo: Path, *, branch: str = BRANCH) -> None:
        self.repo = repo
        self.branch = branch

    async def _run(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "git",
            "--git-dir",
            str(self.repo),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise PlatformError(f"git {' '.join(args)}: {err.decode(errors='replace').strip()}")
        return out.decode()

    async def head(self) -> str:
        return (await self._run("rev-parse", f"refs/heads/{self.branch}")).strip()

    async def files(self, commit: str, folder: str) -> dict[str, str]:
        """Path -> text of every ``*.yaml``/``*.yml`` directly under ``folder`` at ``commit``."""
        listing = await self._run("ls-tree", "--name-only", commit, f"{folder.rstrip('/')}/")
        paths = [p for p in listing.splitlines() if p.endswith((".yaml", ".yml"))]
        texts = await asyncio.gather(*(self._run("show", f"{commit}:{p}") for p in paths))
        return dict(zip(paths, texts, strict=True))
