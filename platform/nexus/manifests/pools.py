"""Node pools from ``platform/pools.yaml``: where predictors run and what they need there.

One file describes each pool (node selector, taints, accelerator, default vLLM arguments)
so that the renderer places InferenceServices and the linter checks hand-written ones
against the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nexus.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str | None
    effect: str

    def tolerated_by(self, toleration: Mapping[str, Any]) -> bool:
        """Kubernetes' toleration matching, restricted to what pools use."""
        effect = toleration.get("effect")
        if effect and effect != self.effect:
            return False
        key = toleration.get("key")
        operator = toleration.get("operator", "Equal")
        if not key:
            return bool(operator == "Exists")
        if key != self.key:
            return False
        if operator == "Exists":
            return True
        return bool(toleration.get("value", "") == (self.value or ""))

    def toleration(self) -> dict[str, str]:
        """The toleration a pod needs for this taint."""
        if self.value is None:
            return {"key": self.key, "operator": "Exists", "effect": self.effect}
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(text: str) -> int:
    """A Kubernetes memory quantity (``80Gi``, ``40G``, ``1024``) in bytes."""
    # Two-letter binary suffixes first, so that "80Gi" is not read as "80G" + "i".
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _UNITS[suffix])
    return int(float(text))


@dataclass(frozen=True, slots=True)
class Accelerator:
    """``count`` devices of ``resource`` per pod by default, each with ``memory`` (bytes)."""

    resource: str
    count: int
    memory: int | None = None


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    node_selector: Mapping[str, str]
    taints: tuple[Taint, ...]
    accelerator: Accelerator | None
    cpu: str
    memory: str
    vllm_args: tuple[str, ...]
    # Optional `allocatable:` of one node (resource name -> quantity, e.g. memory: 1800Gi,
    # nvidia.com/gpu: "8"); empty when the pool does not declare it, and then the
    # rehearsal's capacity check says so instead of guessing.
    allocatable: Mapping[str, str] = field(default_factory=dict)

    def selected_by(self, node_selector: Mapping[str, Any]) -> bool:
        """True when a pod's node selector asks for this pool's nodes."""
        return bool(self.node_selector) and all(
            node_selector.get(key) == value for key, value in self.node_selector.items()
        )


def _pool(name: str, raw: Any) -> Pool:
    where = f"pools.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    selector = raw.get("nodeSelector") or {}
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise ConfigError(f"{where}.nodeSelector must map label names to strings")
    taints = []
    for index, taint in enumerate(raw.get("taints") or []):
        if not isinstance(taint, dict) or "key" not in taint or "effect" not in taint:
            raise ConfigError(f"{where}.taints[{index}] needs `key` and `effect`")
        value = taint.get("value")
        taints.append(
            Taint(str(taint["key"]), None if value is None else str(value), taint["effect"])
        )
    accelerator = None
    acc = raw.get("accelerator")
    if acc is not None:
        if not isinstance(acc, dict) or not isinstance(acc.get("count"), int) or acc["count"] < 1:
            raise ConfigError(f"{where}.accelerator needs `resource` and a positive `count`")
        memory = acc.get("memory")
        try:
            memory_bytes = None if memory is None else quantity_bytes(str(memory))
        except ValueError:
            raise ConfigError(f"{where}.accelerator.memory must be a quantity like 80Gi") from None
        accelerator = Accelerator(str(acc["resource"]), acc["count"], memory_bytes)
    resources = raw.get("resources") or {}
    args = raw.get("vllmArgs") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}.vllmArgs must be a list of strings")
    allocatable = raw.get("allocatable") or {}
    if not isinstance(allocatable, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int)) and not isinstance(v, bool)
        for k, v in allocatable.items()
    ):
        raise ConfigError(f"{where}.allocatable must map resource names to quantities")
    return Pool(
        name=name,
        node_selector=dict(selector),
        taints=tuple(taints),
        accelerator=accelerator,
        cpu=str(resources.get("cpu", "1")),
        memory=str(resources.get("memory", "1Gi")),
        vllm_args=tuple(args),
        allocatable={key: str(value) for key, value in allocatable.items()},
    )


def load_pools(path: Path) -> dict[str, Pool]:
    """Read and validate a pools file; raises ``ConfigError`` naming the bad entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pools file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("pools"), dict):
        raise ConfigError(f"{path}: expected a top-level `pools:` mapping")
    return {name: _pool(name, raw) for name, raw in sorted(data["pools"].items())}
