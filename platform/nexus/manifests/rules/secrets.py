"""Literal secrets in committed manifests: once pushed, a credential is public forever.

Secrets reach pods by reference (``secretKeyRef``, ``envFrom.secretRef``) to objects
created outside Git. This rule flags Secret objects with data, environment variables
and ConfigMap keys whose names say they hold credentials, and any string that looks like
a known token format or a URL with an embedded password.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding, field_path

_SECRET_WORDS = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "APIKEY", "CREDENTIALS"})
_SECRET_PAIRS = frozenset({("API", "KEY"), ("API", "KEYS"), ("PRIVATE", "KEY"), ("ACCESS", "KEY")})
_TOKEN_PATTERNS = (
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("OpenAI-style key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("AWS access key id", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.")),
    ("password in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@$]+@")),
)
FIX = (
    "remove the value from Git; create the Secret out of band (sealed/external secret) "
    "and reference it (secretKeyRef / envFrom.secretRef)"
)


def secret_name(name: str) -> bool:
    """Whether a variable/key name says it holds a credential (``GATEWAY_API_KEYS``)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name.upper()) if p]
    if any(p in _SECRET_WORDS for p in parts):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(parts))


def _strings(node: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, [*path, str(key)])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, [*path, index])


def _env_lists(node: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], list[Any]]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield [*path, key], value
            else:
                yield from _env_lists(value, [*path, str(key)])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _env_lists(value, [*path, index])


def _check(doc: Document) -> Iterator[Finding]:
    data: Mapping[str, Any] = doc.data
    if doc.kind == "Secret" and doc.group == "":
        for section in ("data", "stringData"):
            for key, value in (data.get(section) or {}).items():
                if value not in (None, ""):
                    yield doc.finding(
                        f"{section}.{key}", "literal-secret", "Secret value committed to Git", FIX
                    )
    if doc.kind == "ConfigMap":
        for key, value in (data.get("data") or {}).items():
            if secret_name(str(key)) and str(value).strip():
                yield doc.finding(
                    f"data.{key}",
                    "literal-secret",
                    f"ConfigMap key {key!r} holds a credential in clear text",
                    FIX,
                )
    for path, env in _env_lists(data, []):
        for index, var in enumerate(env):
            if isinstance(var, dict) and secret_name(str(var.get("name", ""))) and var.get("value"):
                yield doc.finding(
                    field_path([*path, index, "value"]),
                    "literal-secret",
                    f"environment variable {var.get('name')!r} has a literal value",
                    FIX,
                )
    for path, text in _strings(data, []):
        for label, pattern in _TOKEN_PATTERNS:
            if pattern.search(text):
                yield doc.finding(
                    field_path(path), "literal-secret", f"value looks like a {label}", FIX
                )
                break


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    seen: set[tuple[str, int, str]] = set()
    findings: list[Finding] = []
    for doc in docs:
        for finding in _check(doc):
            key = (finding.path, finding.document, finding.field)
            if key not in seen:
                seen.add(key)
                findings.append(finding)
    return findings
