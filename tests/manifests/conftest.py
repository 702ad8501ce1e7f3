"""Fixtures of the manifest tests: the repository root, the CRDs, one schema registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nexus.manifests.schema import SchemaRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def crds_dir() -> Path | None:
    """$NEXUS_CRDS_DIR, else <repo>/../shared/crds (the same default as `nexus lint`)."""
    env = os.environ.get("NEXUS_CRDS_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "crds"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def crds() -> Path:
    found = crds_dir()
    if found is None:
        pytest.skip("no CRD directory: set NEXUS_CRDS_DIR or provide ../shared/crds")
    return found


@pytest.fixture(scope="session")
def schemas(crds: Path) -> SchemaRegistry:
    # Parsing and converting the CRDs takes seconds; every test shares one registry.
    return SchemaRegistry(crds)
