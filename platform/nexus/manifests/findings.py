"""What the linter reports: one finding per problem, naming where it is and how to fix it.

Errors make ``nexus lint`` exit non-zero. Warnings are things the linter could not prove
either way (a resource whose schema it does not have); they are reported, never passed
silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One problem at ``path`` (document ``document``, 0-based) and ``field`` (dotted)."""

    path: str
    document: int
    field: str
    rule: str
    message: str
    fix: str
    severity: Severity = "error"

    def text(self) -> str:
        where = f"{self.path}[{self.document}]"
        if self.field:
            where += f" {self.field}"
        return f"{where}: {self.severity}: {self.rule}: {self.message}\n    fix: {self.fix}"


def field_path(parts: Iterable[str | int]) -> str:
    """``["spec", "nodes", 0, "name"]`` -> ``spec.nodes[0].name``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def has_errors(findings: Sequence[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def format_text(findings: Sequence[Finding]) -> str:
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    lines = [f.text() for f in sorted(findings)]
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def format_json(findings: Sequence[Finding]) -> str:
    return orjson.dumps([asdict(f) for f in sorted(findings)], option=orjson.OPT_INDENT_2).decode()
