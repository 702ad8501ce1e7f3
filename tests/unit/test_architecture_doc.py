"""docs/architecture.md matches the code: every file it names exists, every layer is drawn."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
PACKAGE = REPO / "platform" / "nexus"


def test_every_file_the_doc_names_exists() -> None:
    named = set(re.findall(r"\b((?:[a-z_]+/)+[a-z_]+\.py)\b", DOC))
    assert len(named) > 25
    missing = sorted(p for p in named if not (PACKAGE / p).is_file())
    assert missing == []


def test_the_doc_draws_every_layer_of_the_contract() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    modules = {name.strip() for layer in layers for name in layer.split("|")}
    diagram = DOC.split("```")[1]
    undrawn = sorted(m for m in modules if not re.search(rf"\b{m}(/|\.py)", diagram))
    assert undrawn == []
