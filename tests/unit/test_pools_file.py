"""Where a release finds the GPU pools: the checkout, or the release image's NEXUS_POOLS_FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.release.resolve import default_pools_file

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_uses_platform_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEXUS_POOLS_FILE", raising=False)
    assert default_pools_file() == REPO / "platform" / "pools.yaml"


def test_the_release_image_points_at_its_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_POOLS_FILE", "/opt/nexus/pools.yaml")
    assert default_pools_file() == Path("/opt/nexus/pools.yaml")
