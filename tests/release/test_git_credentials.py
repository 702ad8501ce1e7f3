"""A release step pushes with the Git credentials of the Secret the pipeline mounts.

A real ``git`` pushes over smart HTTP to ``git http-backend`` behind Basic auth
(``tests/support/git_http.py``), as to a hosted GitOps repository that takes a token.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nexus.errors import GitError, ReleaseError
from nexus.release.git_credentials import CREDENTIALS_ENV, git_options
from nexus.release.gitops import publish
from tests.support.git_http import git_http

TOKEN = "glpat-0123456789abcdef"


def secret(folder: Path, files: dict[str, str]) -> Path:
    """A Secret volume as the kubelet mounts it: one file per key."""
    folder.mkdir(parents=True)
    for key, value in files.items():
        (folder / key).write_text(value)
    return folder


def test_a_basic_auth_secret_lets_the_commit_step_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mounted = secret(tmp_path / "git", {"username": "nexus-release", "password": TOKEN})
    with git_http(tmp_path, user="nexus-release", password=TOKEN) as server:
        # Without the Secret the server's 401 stands: git may not prompt, so it fails.
        with pytest.raises(GitError) as refused:
            publish(repo_url=server.url, path="a.yaml", content="a: 1\n", message="first")
        assert server.refused >= 1
        assert TOKEN not in str(refused.value)

        monkeypatch.setenv(CREDENTIALS_ENV, str(mounted))
        pushed = publish(repo_url=server.url, path="a.yaml", content="a: 1\n", message="first")
        assert pushed.changed
        head = subprocess.run(["git", "--git-dir", str(server.bare), "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert head == pushed.commit
    # The token never lands in the arguments of the git processes.
    assert all(TOKEN not in option for option in git_options({CREDENTIALS_ENV: str(mounted)}))


def test_the_mount_path_is_used_without_any_environment(tmp_path: Path) -> None:
    mounted = secret(tmp_path / "mount", {"username": "bot", "password": TOKEN})
    options = git_options({}, mount=mounted)
    result = subprocess.run(["git", *options, "credential", "fill"],
                            input="protocol=https\nhost=git.example\n\n",
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert f"username=bot\npassword={TOKEN}\n" in result.stdout
    # No mount, no variable: local runs use git as the user configured it.
    assert git_options({}, mount=tmp_path / "absent") == []


def test_an_ssh_auth_secret_sets_the_key_and_checks_host_keys(tmp_path: Path) -> None:
    keys = {"ssh-privatekey": "KEY", "known_hosts": "git.example ssh-ed25519 AAAA"}
    mounted = secret(tmp_path / "ssh", keys)
    (option,) = git_options({CREDENTIALS_ENV: str(mounted)})[1:]
    assert option.startswith("core.sshCommand=ssh -i ")
    assert f"UserKnownHostsFile={mounted / 'known_hosts'}" in option
    assert "StrictHostKeyChecking=yes" in option


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"ssh-privatekey": "KEY"}, "no known_hosts"),
        ({"token": TOKEN}, "neither username/password"),
    ],
)
def test_an_unusable_secret_is_refused_with_what_it_lacks(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    mounted = secret(tmp_path / "bad", files)
    with pytest.raises(ReleaseError, match=message):
        git_options({CREDENTIALS_ENV: str(mounted)})
    with pytest.raises(ReleaseError, match="is not a directory"):
        git_options({CREDENTIALS_ENV: str(tmp_path / "nowhere")})
