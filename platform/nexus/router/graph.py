"""The InferenceGraph model: parse a spec (JSON) or a whole resource (YAML) into frozen nodes.

The router receives ``spec`` as JSON (``--graph-json``, exactly what KServe's controller
passes) or, as a local-platform extension, a whole ``InferenceGraph`` resource from a YAML
file. Parsing happens once at start-up so a malformed graph fails before the first
request, and GJSON conditions are compiled once instead of on every request.

Field names follow the CRD (``serving.kserve.io/v1alpha1``). Where KServe's router is
lenient the model is lenient too: an unknown ``routerType`` is accepted here and answered
with KServe's ``invalid route type`` error at request time; ``dependency`` defaults to
``Soft`` (KServe quirk: a failing step only stops a Sequence when marked ``Hard``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import pygjson
import yaml

from nexus.errors import ConfigError

ROOT_NODE = "root"
RouterType = Literal["Sequence", "Splitter", "Ensemble", "Switch"]
ROUTER_TYPES: frozenset[str] = frozenset({"Sequence", "Splitter", "Ensemble", "Switch"})


@dataclass(frozen=True, slots=True)
class Step:
    """One ``InferenceStep``: a target (service URL or another node) plus routing hints."""

    index: int
    name: str
    service_url: str = ""
    node_name: str = ""
    data: str = ""
    condition: str = ""
    dependency: Literal["Soft", "Hard"] = "Soft"
    weight: int = 0
    map_predictions_to_instances: bool = False
    compiled_condition: pygjson.Path | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The key KServe uses for this step in an Ensemble result: its name, else its index."""
        return self.name or str(self.index)

    @property
    def label(self) -> str:
        """How metrics, logs and ``x-nexus-graph-step`` name the step."""
        return self.name or self.node_name or f"step-{self.index}"

    @property
    def hard(self) -> bool:
        return self.dependency == "Hard"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    router_type: str
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class RouterTimeouts:
    """``spec.routerTimeouts`` in seconds; ``None`` means KServe's default."""

    server_read: int | None = None
    server_write: int | None = None
    server_idle: int | None = None
    service_client: int | None = None


@dataclass(frozen=True, slots=True)
class Graph:
    nodes: Mapping[str, Node]
    timeouts: RouterTimeouts = field(default_factory=RouterTimeouts)
    name: str = ""

    @property
    def root(self) -> Node:
        return self.nodes[ROOT_NODE]


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string, got {value!r}")
    return value


def _timeout(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"spec.routerTimeouts.{key} must be a non-negative integer (seconds)")
    return value


def _step(raw: object, index: int, where: str) -> Step:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    name = _str(raw, "name", where)
    service_url = _str(raw, "serviceUrl", where)
    node_name = _str(raw, "nodeName", where)
    if _str(raw, "serviceName", where) and not service_url:
        # The controller turns serviceName into a URL before the router sees the graph;
        # a bare serviceName here means nobody did, so there is nothing to call.
        raise ConfigError(
            f"{where}: serviceName needs the KServe controller to resolve it; "
            "give the router a serviceUrl instead"
        )
    if bool(service_url) == bool(node_name):
        raise ConfigError(f"{where} needs exactly one target: serviceUrl or nodeName")
    dependency = _str(raw, "dependency", where) or "Soft"
    if dependency not in ("Soft", "Hard"):
        raise ConfigError(f"{where}.dependency must be Soft or Hard, got {dependency!r}")
    weight = raw.get("weight") or 0
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise ConfigError(f"{where}.weight must be a non-negative integer")
    condition = _str(raw, "condition", where)
    return Step(
        index=index,
        name=name,
        service_url=service_url,
        node_name=node_name,
        data=_str(raw, "data", where),
        condition=condition,
        dependency="Hard" if dependency == "Hard" else "Soft",
        weight=weight,
        map_predictions_to_instances=bool(raw.get("mapPredictionsToInstances", False)),
        compiled_condition=pygjson.compile(condition) if condition else None,
    )


def parse_spec(spec: object, *, name: str = "") -> Graph:
    """Build a :class:`Graph` from an ``InferenceGraphSpec`` mapping; raise ``ConfigError``."""
    if not isinstance(spec, dict):
        raise ConfigError("the graph spec must be a JSON object")
    raw_nodes = spec.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise ConfigError("spec.nodes must be a non-empty object")
    nodes: dict[str, Node] = {}
    for node_name, raw_node in raw_nodes.items():
        where = f"spec.nodes.{node_name}"
        if not isinstance(raw_node, dict):
            raise ConfigError(f"{where} must be an object")
        router_type = _str(raw_node, "routerType", where)
        if not router_type:
            raise ConfigError(f"{where}.routerType is required")
        raw_steps = raw_node.get("steps") or []
        if not isinstance(raw_steps, list):
            raise ConfigError(f"{where}.steps must be a list")
        steps = tuple(_step(s, i, f"{where}.steps[{i}]") for i, s in enumerate(raw_steps))
        nodes[node_name] = Node(name=node_name, router_type=router_type, steps=steps)
    if ROOT_NODE not in nodes:
        raise ConfigError(f"spec.nodes must contain the entry node {ROOT_NODE!r}")
    for node in nodes.values():
        for step in node.steps:
            if step.node_name and step.node_name not in nodes:
                raise ConfigError(
                    f"spec.nodes.{node.name}.steps[{step.index}].nodeName "
                    f"{step.node_name!r} is not a node of this graph"
                )
    raw_timeouts = spec.get("routerTimeouts") or {}
    if not isinstance(raw_timeouts, dict):
        raise ConfigError("spec.routerTimeouts must be an object")
    timeouts = RouterTimeouts(
        server_read=_timeout(raw_timeouts, "serverRead"),
        server_write=_timeout(raw_timeouts, "serverWrite"),
        server_idle=_timeout(raw_timeouts, "serverIdle"),
        service_client=_timeout(raw_timeouts, "serviceClient"),
    )
    return Graph(nodes=nodes, timeouts=timeouts, name=name)


def load_graph_json(text: str) -> Graph:
    """Parse ``--graph-json``: the spec exactly as KServe's controller serializes it."""
    try:
        spec = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"--graph-json is not valid JSON: {exc}") from None
    return parse_spec(spec)


def load_graph_file(path: Path) -> Graph:
    """Parse ``--graph-file``: a whole ``InferenceGraph`` resource (YAML or JSON)."""
    try:
        resource = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read graph file {path}: {exc}") from None
    if not isinstance(resource, dict) or resource.get("kind") != "InferenceGraph":
        raise ConfigError(f"{path} does not hold an InferenceGraph resource")
    metadata = resource.get("metadata") or {}
    name = metadata.get("name", "") if isinstance(metadata, dict) else ""
    return parse_spec(resource.get("spec"), name=str(name))
