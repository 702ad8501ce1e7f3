"""Git credentials for the steps that push, from a Kubernetes Secret mounted as files.

The pipeline mounts the Secret named by its ``git_secret`` parameter at ``MOUNT_PATH`` in
the commit, promote, rollback and exit-handler steps (``kfp.kubernetes.use_secret_as_volume``);
``CREDENTIALS_ENV`` names another directory where the Secret's files are elsewhere. Local
runs (``kfp.local`` ignores Kubernetes platform settings) have neither, and git uses the
user's own configuration. Two of Kubernetes' built-in Secret types are
understood, by their keys:

- ``kubernetes.io/basic-auth``: ``username`` and ``password`` (a token for HTTPS remotes;
  GitHub, GitLab and Gitea all take a token as the password);
- ``kubernetes.io/ssh-auth``: ``ssh-privatekey``, with ``known_hosts`` in the same Secret
  (host keys are checked, never accepted blindly).

They become ``git -c`` options, so nothing is written into the clone or a home directory
and the secret never appears in a remote URL, a log line or an error. A credential
helper that ``cat``s the files at the moment git asks keeps the values out of the
process' arguments too. Secret volumes are mounted root-owned with mode 0644; OpenSSH
refuses a too-open key only when the running user owns it (``sshkey_perm_ok`` in
openssh-portable ``authfile.c``), so the release image's non-root user can use it as is.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from nexus.errors import ReleaseError

CREDENTIALS_ENV: Final = "NEXUS_GIT_CREDENTIALS"
MOUNT_PATH: Final = "/var/run/secrets/nexus/git"


def git_options(
    environ: Mapping[str, str] | None = None, *, mount: Path = Path(MOUNT_PATH)
) -> list[str]:
    """The ``-c key=value`` options that make git authenticate as the mounted Secret says.

    Empty when neither ``CREDENTIALS_ENV`` nor the mount exists (local runs).
    """
    folder = (os.environ if environ is None else environ).get(CREDENTIALS_ENV, "")
    if not folder:
        if not mount.is_dir():
            return []
        folder = str(mount)
    directory = Path(folder)
    if not directory.is_dir():
        raise ReleaseError(
            f"{CREDENTIALS_ENV}={folder} is not a directory (is the Secret mounted?)"
        )
    username, password = directory / "username", directory / "password"
    key, known_hosts = directory / "ssh-privatekey", directory / "known_hosts"
    if username.is_file() and password.is_file():
        # Git runs `!`-helpers through the shell with the action as $1 (gitcredentials(7));
        # only `get` must answer, `store`/`erase` must stay silent.
        helper = (
            '!f() { test "$1" = get || exit 0; '
            f'printf "username=%s\\npassword=%s\\n" "$(cat {shlex.quote(str(username))})" '
            f'"$(cat {shlex.quote(str(password))})"; }}; f'
        )
        # The empty value first clears helpers configured elsewhere (a desktop keyring).
        return ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
    if key.is_file():
        if not known_hosts.is_file():
            raise ReleaseError(
                f"{directory} holds ssh-privatekey but no known_hosts: add the Git host's "
                f"keys (ssh-keyscan) to the Secret"
            )
        ssh = shlex.join(["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes",
                          "-o", f"UserKnownHostsFile={known_hosts}",
                          "-o", "StrictHostKeyChecking=yes"])  # fmt: skip
        return ["-c", f"core.sshCommand={ssh}"]
    raise ReleaseError(
        f"{directory} holds neither username/password (kubernetes.io/basic-auth) nor "
        f"ssh-privatekey (kubernetes.io/ssh-auth)"
    )
