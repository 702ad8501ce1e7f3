"""Running the release pipeline: through ``kfp.local`` on this machine, or on a KFP cluster.

Local runs use ``kfp.local.SubprocessRunner(use_venv=False)``: each component runs in a
subprocess of this interpreter, which already has ``nexus``. KFP prints every
component's whole executor input and log; ``ProgressFilter`` keeps what a person wants
to follow (each step starting and ending, and the steps' own ``nexus-release:`` lines)
and the full log goes to a file. The outcome is read back from the registry, where the
exit handler recorded it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from nexus.errors import ReleaseError
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.tracking import LocalEvidence, save_local

ENDPOINTS_FILE: Final = "endpoints.json"
ENDPOINT_KEYS: Final = ("tracking_uri", "gitops_repo", "prometheus_url", "status_url")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_ERROR = re.compile(r"^\s*(?:nexus\.[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def local_endpoints(state_dir: Path) -> dict[str, str]:
    """What ``nexus up`` wrote to ``<state_dir>/endpoints.json`` (empty when absent)."""
    path = state_dir / ENDPOINTS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read {path}: {exc}") from exc
    return {key: str(raw[key]) for key in ENDPOINT_KEYS if raw.get(key)}


class ProgressFilter(io.TextIOBase):
    """A stdout stand-in that passes on step progress and keeps everything in ``log``."""

    def __init__(self, out: TextIO, log: TextIO) -> None:
        self._out = out
        self._log = log
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _show(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()

    def _line(self, line: str) -> None:
        if "nexus-release:" in line:
            self._show("    " + line.split("nexus-release:", 1)[1].strip())
        elif match := _STARTED.search(line):
            self._show(f"· {match[1]}")
        elif match := _FINISHED.search(line):
            self._show(f"  {match[1]}: {match[2]}")
        elif match := _ERROR.match(line):
            self._show(f"    {match[1]}: {match[2]}")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    analysis: Mapping[str, Any]
    log: Path
    # The report and chart beside the log, and the MLflow run they come from.
    evidence: LocalEvidence | None = None


def run_local(
    arguments: Mapping[str, Any],
    *,
    pipeline_root: Path,
    out: TextIO | None = None,
) -> Outcome:
    """Run the pipeline in this process' interpreter; the outcome as the registry has it."""
    from kfp import local

    from nexus.release.pipeline import release

    pipeline_root.mkdir(parents=True, exist_ok=True)
    log_path = pipeline_root / f"release-{arguments['model_name']}-{arguments['version']}.log"
    with warnings.catch_warnings(), log_path.open("w", encoding="utf-8") as log:
        # The base image is for clusters; locally the components run in this interpreter.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(pipeline_root),
            raise_on_error=False,
        )
        progress = ProgressFilter(out or sys.stdout, log)
        with contextlib.redirect_stdout(progress):
            release(**arguments)
    registry = Registry.connect(str(arguments["tracking_uri"]))
    tags = registry.version(str(arguments["model_name"]), str(arguments["version"])).tags
    # The files of the analyze step's artifacts, as the release's MLflow run holds them.
    evidence = save_local(
        str(arguments["tracking_uri"]),
        str(arguments["model_name"]),
        str(arguments["version"]),
        log_path.with_suffix(""),
    )
    analysis = evidence.analysis if evidence else {}
    return Outcome(tags.get(c.RELEASE_STATUS, "failed"), analysis, log_path, evidence)


def run_inline(arguments: Mapping[str, Any], *, run: str = "") -> str:
    """The pipeline's steps (``steps.STEPS``) in this process, without KFP; the final status.

    For quick local iterations (one interpreter instead of one per step, which matters
    on small machines where importing MLflow and KServe takes seconds) and for tests of
    step behaviour. Parameters left out take the pipeline's defaults.
    """
    from nexus.release.pipeline import release
    from nexus.release.steps import run_steps

    inputs = (release.component_spec.inputs or {}).items()
    defaults = {name: spec.default for name, spec in inputs if spec.default is not None}
    values = {**defaults, **arguments}
    run = run or f"inline-{values['model_name']}-{values['version']}-{int(time.time())}"
    return run_steps({**values, "run": run})
