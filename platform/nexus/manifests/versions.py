"""The engine versions the tree is written for, read from ``platform/versions.yaml``.

Version-dependent linter rules and the admission model (``admission.py``) take the plain
mapping this returns, so changing one line of that file moves every rule with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import yaml

from nexus.errors import ConfigError
from nexus.manifests.admission import parse_version

VERSIONS_FILE: Final = Path("platform") / "versions.yaml"
REQUIRED: Final = ("kserve", "knative_serving", "argocd", "vllm")


def load_versions(path: Path) -> dict[str, str]:
    """``name -> version`` from a versions file; ``ConfigError`` naming what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read versions file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of engine name to version")
    versions = {str(key): str(value) for key, value in data.items()}
    for key in REQUIRED:
        if key not in versions:
            raise ConfigError(f"{path}: no version for {key!r}")
    for key, value in versions.items():
        try:
            parse_version(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {key}: {exc}") from exc
    return versions
