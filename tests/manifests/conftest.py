"""Fixtures of the manifest tests: the repository root and one schema registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.manifests.schema import SchemaRegistry

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def schemas() -> SchemaRegistry:
    # The schemas the package ships, as `nexus lint` uses them by default; converting the
    # InferenceService schema takes a second, so every test shares one registry.
    return SchemaRegistry()
