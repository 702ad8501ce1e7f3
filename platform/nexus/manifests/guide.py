"""The prerequisite steps of ``docs/cluster.md``, generated from ``platform/prerequisites.yaml``.

The guide is hand-written prose around blocks this module writes. A block is delimited by

    <!-- BEGIN GENERATED from platform/prerequisites.yaml: PART -->
    ...
    <!-- END GENERATED -->

where PART is ``namespaces``, ``crds``, ``nodes``, ``secrets`` or ``service:NAME``.
``python -m nexus.manifests.guide [REPO_ROOT]`` rewrites every block; ``--check`` only
says whether one is stale (exit 1). ``tests/manifests/test_guide.py`` runs the check, so a
prerequisite changed in the YAML without the guide, or the guide edited inside a block,
fails the suite.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

from nexus.errors import ConfigError
from nexus.manifests.pools import Pool, load_pools
from nexus.manifests.prerequisites import PREREQUISITES_FILE, Prerequisites

PREREQUISITES: Final = Path(PREREQUISITES_FILE)
POOLS: Final = Path("platform") / "pools.yaml"
GUIDE: Final = Path("docs") / "cluster.md"
BLOCK: Final = re.compile(
    r"(?P<open><!-- BEGIN GENERATED from platform/prerequisites\.yaml: (?P<part>[\w:.-]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- END GENERATED -->)",
    re.DOTALL,
)


def _code(text: str) -> str:
    return f"`{text}`"


def _labels(labels: Mapping[str, str]) -> str:
    return ", ".join(_code(f"{k}={v}") for k, v in labels.items()) or "none"


WIDTH: Final = 100


def _outside_quotes(command: str, separator: str) -> list[int]:
    """Offsets of ``separator`` in ``command`` outside single and double quotes."""
    found: list[int] = []
    quote: str | None = None
    for index, char in enumerate(command):
        if quote is not None:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif command.startswith(separator, index):
            found.append(index)
    return found


def _shell_lines(command: str) -> list[str]:
    """One command as a reader types it: ``&&`` steps on their own lines, long ones
    continued with ``\\`` before an option (never inside quotes)."""
    lines: list[str] = []
    starts = [0, *(i + len(" && ") for i in _outside_quotes(command, " && "))]
    ends = [*(i for i in _outside_quotes(command, " && ")), len(command)]
    for start, end in zip(starts, ends, strict=True):
        step = command[start:end].strip()
        while len(step) > WIDTH:
            # Past index 1: a continued line starts with "  --", and a break there repeats it.
            options = [i for i in _outside_quotes(step, " --") if i > 1]
            if not options:
                break
            fitting = [i for i in options if i <= WIDTH - 2]
            cut = fitting[-1] if fitting else options[0]  # an option longer than a line
            lines.append(step[:cut] + " \\")
            step = "  " + step[cut + 1 :]
        lines.append(step)
    return lines


def _sh(*commands: str) -> list[str]:
    return ["```sh", *(line for command in commands for line in _shell_lines(command)), "```"]


def _namespaces(prereq: Prerequisites) -> list[str]:
    rows = [
        f"| {_code(n.name)} | {_labels(n.labels)} | {n.created_by} |" for n in prereq.namespaces
    ]
    return ["| namespace | labels the tree relies on | made by |", "|---|---|---|", *rows]


def _crds(prereq: Prerequisites) -> list[str]:
    rows = [f"| {_code(c.group)} | {', '.join(c.kinds)} | {c.installed_by} |" for c in prereq.crds]
    return ["| API group | kinds the tree uses | installed by |", "|---|---|---|", *rows]


def _nodes(prereq: Prerequisites, pools: Mapping[str, Pool]) -> list[str]:
    lines: list[str] = []
    for entry in prereq.node_labels:
        pool = pools.get(entry.pool)
        if pool is None:
            raise ConfigError(f"nodeLabels: pool {entry.pool!r} is not in {POOLS}")
        taints = [f"{t.key}={t.value or ''}:{t.effect}" for t in pool.taints]
        lines += [
            f"**Pool `{pool.name}`**: nodes selected by {_labels(pool.node_selector)}; "
            f"taints {', '.join(_code(t) for t in taints) or 'none'}.",
            "",
            *_sh(entry.command, *(f"kubectl taint node <node> {t}" for t in taints)),
            "",
        ]
    selector_keys = sorted({k for p in pools.values() for k in p.node_selector})
    lines += [
        "Check: `kubectl get nodes -L " + ",".join(selector_keys) + "` shows every node in its "
        "pool, and `kubectl get nodes -o custom-columns=NAME:.metadata.name,"
        "TAINTS:.spec.taints[*].key` its taints.",
    ]
    return lines


def _secrets(prereq: Prerequisites) -> list[str]:
    lines: list[str] = []
    for secret in prereq.secrets:
        lines += [
            f"**`{secret.namespace}/{secret.name}`** ({_code(secret.type)}, keys "
            f"{', '.join(_code(k) for k in secret.keys)}):",
            "",
            *_sh(secret.create),
            "",
            f"Check: `{secret.check}`",
            "",
        ]
    return lines[:-1]


def _service(prereq: Prerequisites, name: str) -> list[str]:
    found = [s for s in prereq.services if s.name == name]
    if not found:
        raise ConfigError(f"{GUIDE}: block service:{name} names no service of {PREREQUISITES}")
    service = found[0]
    said = [
        f"Service {_code(f'{service.name}.{service.namespace}:{service.port}')} "
        f"(role {service.role}), pods {_labels(service.pod_labels)}, "
        f"{'with' if service.sidecar else 'without'} an Istio sidecar"
    ]
    if service.selects:
        said.append(f"picks up objects labelled {_labels(service.selects)}")
    return [*_sh(service.install), "", "; ".join(said) + ".", "", f"Check: `{service.check}`"]


def render_part(part: str, prereq: Prerequisites, pools: Mapping[str, Pool]) -> list[str]:
    """The Markdown lines of one generated block."""
    if part.startswith("service:"):
        return _service(prereq, part.removeprefix("service:"))
    renderers = {
        "namespaces": lambda: _namespaces(prereq),
        "crds": lambda: _crds(prereq),
        "nodes": lambda: _nodes(prereq, pools),
        "secrets": lambda: _secrets(prereq),
    }
    if part not in renderers:
        raise ConfigError(
            f"{GUIDE}: unknown generated block {part!r} (one of {', '.join(renderers)}, "
            "service:NAME)"
        )
    return renderers[part]()


def parts(text: str) -> Iterator[str]:
    for match in BLOCK.finditer(text):
        yield match.group("part")


def generate(text: str, prereq: Prerequisites, pools: Mapping[str, Pool]) -> str:
    """``text`` with every generated block rewritten."""

    def body(match: re.Match[str]) -> str:
        lines = render_part(match.group("part"), prereq, pools)
        return match.group("open") + "\n".join(lines) + "\n" + match.group("close")

    return BLOCK.sub(body, text)


def generate_repo(root: Path) -> tuple[str, str]:
    """(current, generated) text of the repository's guide."""
    current = (root / GUIDE).read_text(encoding="utf-8")
    prereq = Prerequisites.load(root / PREREQUISITES)
    return current, generate(current, prereq, load_pools(root / POOLS))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    rest = [a for a in args if a != "--check"]
    root = Path(rest[0]) if rest else Path.cwd()
    try:
        current, generated = generate_repo(root)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if current == generated:
        return 0
    if check:
        print(f"{GUIDE} is stale: python -m nexus.manifests.guide", file=sys.stderr)
        return 1
    (root / GUIDE).write_text(generated, encoding="utf-8")
    print(root / GUIDE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
