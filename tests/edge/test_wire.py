"""Each wire name both servers agree on is written once, in ``nexus.edge.wire``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "platform" / "nexus").rglob("*.py")) + sorted(
    (ROOT / "bench").rglob("*.py")
)
WIRE = ROOT / "platform" / "nexus" / "edge" / "wire.py"


@pytest.mark.parametrize(
    "literal",
    [r"x-nexus-fallback", r"x-nexus-graph-step", r"/openai/v1/models", r"lifespan\.startup\.complete",
     r"getrandbits\(128\)"],
)  # fmt: skip
def test_written_once(literal: str) -> None:
    """Outside docstrings and comments, the literal appears in one module only."""
    pattern = re.compile(rf"""["']{literal}["']|{literal}\)""", re.IGNORECASE)
    found = [path.relative_to(ROOT).as_posix() for path in SOURCES
             if pattern.search(path.read_text(encoding="utf-8"))]  # fmt: skip
    assert len(found) <= 1, found


def test_the_wire_module_holds_them() -> None:
    text = WIRE.read_text(encoding="utf-8")
    for name in ("FALLBACK_HEADER", "STEP_HEADER", "MODELS_ROUTES"):
        assert re.search(rf"^{name}: Final = ", text, re.MULTILINE), name
