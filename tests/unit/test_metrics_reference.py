"""docs/metrics.md lists every family a running transformer and router export.

The Nexus tables are compared with the families the servers register (read back from their
registries), and a live scrape of a real transformer and router finds nothing the reference
does not name. On a mismatch the assertion shows the table the reference should hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from nexus.observability import Family
from tests.router.conftest import router_process
from tests.support.metric_families import router_families, transformer_families
from tests.support.servers import transformer

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
TENANT_ONLY = "tenant"


def render(families: Iterable[Family], *, optional: frozenset[str] = frozenset()) -> str:
    """The Markdown table of ``families``; labels in ``optional`` appear in brackets."""
    rows = ["| Name | Type | Labels | Meaning |", "|---|---|---|---|"]
    for family in families:
        labels = ", ".join(
            f"[`{label}`]" if label in optional else f"`{label}`" for label in family.labels
        )
        rows.append(f"| `{family.name}` | {family.type} | {labels or '—'} | {family.help} |")
    return "\n".join(rows)


def expected_tables() -> dict[str, str]:
    plain = {f.name: f.labels for f in transformer_families(tenant_label=False)}
    optional = frozenset(
        label for f in transformer_families() for label in f.labels if label not in plain[f.name]
    )
    return {
        "transformer": render(transformer_families(), optional=optional),
        "router": render(router_families()),
    }


def _documented_names(text: str) -> set[str]:
    return set(re.findall(r"^\| `([a-z_:]+)` \|", text, flags=re.MULTILINE))


def test_reference_tables_are_the_registered_families() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for server, table in expected_tables().items():
        assert table in text, f"docs/metrics.md should hold the {server} table:\n{table}"
    registered = {f.name for f in (*transformer_families(), *router_families())}
    nexus_rows = {n for n in _documented_names(text) if n.startswith("nexus_")}
    assert nexus_rows == registered


def test_render_marks_the_optional_tenant_label() -> None:
    assert "[`tenant`]" in expected_tables()["transformer"]
    assert "`tenant`" not in expected_tables()["router"]


def _scraped(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    names = set()
    for family in text_string_to_metric_families(text):
        # The text parser reads a histogram's `_created` line as a family of its own.
        if family.name.endswith("_created"):
            continue
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_family_a_running_server_exports_is_documented(tmp_path: Path) -> None:
    documented = _documented_names(REFERENCE.read_text(encoding="utf-8"))
    env = {"GATEWAY_API_KEYS": "metrics-reference-key"}
    # Nothing listens on the discard port: /metrics needs no predictor.
    with transformer(tmp_path, model="chat", predictor_host="127.0.0.1:9", env=env) as server:
        from_transformer = _scraped(server.url)
    spec = {"nodes": {"root": {"routerType": "Sequence",
                               "steps": [{"serviceUrl": "http://127.0.0.1:9/v1/chat"}]}}}  # fmt: skip
    with router_process(tmp_path, spec=spec) as router:
        from_router = _scraped(router.url)
    assert "nexus_transformer_requests_total" in from_transformer  # the scrape was parsed
    assert "nexus_router_requests_total" in from_router
    assert (from_transformer | from_router) - documented == set()
