"""The release pipeline of Nexus, and its compilation to ``pipelines/compiled/release.yaml``.

The pipeline and its components are defined in ``nexus.release.pipeline`` (importable
by the ``nexus`` command and the release image); this file is the entry point a KFP user
expects. Regenerate the committed YAML after changing them:

    python pipelines/release.py

``tests/release/test_compiled.py`` fails when the committed YAML differs from a fresh
compile.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nexus.release.pipeline import compile_pipeline, release

__all__ = ["COMPILED", "release"]

COMPILED = Path(__file__).resolve().parent / "compiled" / "release.yaml"

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else COMPILED
    compile_pipeline(target)
    print(f"wrote {target}")
