"""A router starts without numpy (issue 23): only the nesting scan of a deep body loads it.

numpy was 14 MiB of each router's 49 MiB RSS, loaded by ``nexus.edge.nesting`` at import
although ordinary bodies never reach the scan (``deeper_than``'s bracket count decides).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import REPO

# The router's entry module and graph, an ordinary request checked, then a deep one.
START = """
import sys
import nexus.router.__main__
from nexus.edge.nesting import DEFAULT_MAX_NESTING as LIMIT, deeper_than

loaded = ["numpy" in sys.modules]
loaded.append((deeper_than(b'{"model":"chat","messages":[]}', LIMIT), "numpy" in sys.modules))
loaded.append((deeper_than(b"[" * (LIMIT + 1), LIMIT), "numpy" in sys.modules))
print(loaded)
"""


def test_numpy_is_loaded_by_the_first_deep_body_only() -> None:
    path = os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", START],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[False, (False, False), (True, True)]"
