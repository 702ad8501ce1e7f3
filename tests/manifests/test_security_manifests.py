"""The security manifests platform teams expect, read as the cluster would read them.

- TLS on the public entry point: every Gateway the graphs' VirtualService binds serves
  HTTPS with a ``credentialName`` or only redirects to HTTPS;
- every graph of ``graphs/`` is routed publicly or listed as deliberately not exposed;
- Istio authorization: only transformers reach predictors, only routers and the ingress
  reach transformers, with principals of ServiceAccounts the component creates;
- every Secret the manifests reference can come from an ExternalSecret of the
  ``external-secrets`` component.

Field names were checked against Istio's CRDs (istio/api ``kubernetes/customresource
definitions.gen.yaml``, Jul 2026) and External Secrets Operator's
(``config/crds/bases/external-secrets.io_externalsecrets.yaml``, v1 served, Aug 2026).
The files are followed through their kustomizations, as ``kubectl kustomize`` would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nexus.manifests.model import PREDICTOR_PATH_PREFIX
from nexus.manifests.rehearsal.reachability import GATE_CALLS
from tests.manifests.conftest import REPO_ROOT

K8S = REPO_ROOT / "platform" / "k8s"
COMPONENTS = K8S / "components"
NAMESPACE = "nexus"


def documents(folder: Path) -> list[dict[str, Any]]:
    """Every document a kustomization (or Component) includes, resources and components."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        target = (folder / entry).resolve()
        if target.is_dir():
            found += documents(target)
        else:
            found += [d for d in yaml.safe_load_all(target.read_text()) if d]
    return found


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def graph_names() -> set[str]:
    return {
        d["metadata"]["name"]
        for path in (REPO_ROOT / "graphs").glob("*.yaml")
        for d in yaml.safe_load_all(path.read_text())
        if d and d.get("kind") == "InferenceGraph"
    }


def test_the_public_entry_point_is_tls_only() -> None:
    base = documents(K8S / "base")
    gateways = of_kind(base, "Gateway")
    for service in of_kind(base, "VirtualService").values():
        hosts = set(service["spec"]["hosts"])
        assert service["spec"]["gateways"], "a VirtualService without a Gateway is not public"
        for ref in service["spec"]["gateways"]:
            gateway = gateways[ref.removeprefix(f"{NAMESPACE}/")]
            https = [s for s in gateway["spec"]["servers"] if s["port"]["protocol"] == "HTTPS"]
            assert https
            for server in https:
                assert server["tls"]["mode"] in ("SIMPLE", "MUTUAL")
                assert server["tls"]["credentialName"]
            assert hosts <= {h for s in https for h in s["hosts"]}
            for server in gateway["spec"]["servers"]:
                if server["port"]["protocol"] == "HTTP":
                    assert server["tls"] == {"httpsRedirect": True}, "plain HTTP only redirects"


def test_every_graph_is_exposed_or_deliberately_not() -> None:
    service = of_kind(documents(K8S / "base"), "VirtualService")["nexus-graphs"]
    suffix = f".{NAMESPACE}.svc.cluster.local"
    exposed = {route["rewrite"]["authority"].removesuffix(suffix)
               for route in service["spec"]["http"]}  # fmt: skip
    hidden = set(service["metadata"]["annotations"]["nexus.dev/not-exposed"].split(","))
    assert not exposed & hidden
    assert exposed | hidden == graph_names()


def sources(policy: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(principals, namespaces) a policy allows for every path (rules without ``to``)."""
    principals: set[str] = set()
    namespaces: set[str] = set()
    for rule in policy["spec"]["rules"]:
        if "to" in rule:
            continue
        for item in rule["from"]:
            principals |= set(item["source"].get("principals", []))
            namespaces |= set(item["source"].get("namespaces", []))
    return principals, namespaces


def test_only_transformers_reach_predictors_and_only_routers_and_ingress_reach_transformers() -> (
    None
):
    component = documents(COMPONENTS / "authorization")
    kustomization = yaml.safe_load(
        (COMPONENTS / "authorization" / "kustomization.yaml").read_text()
    )
    assert kustomization["kind"] == "Component"
    # The accounts live in the base: every InferenceService and graph names them, with or
    # without the component.
    assert not of_kind(component, "ServiceAccount")
    accounts = {f"cluster.local/ns/{d['metadata']['namespace']}/sa/{name}"
                for name, d in of_kind(documents(K8S / "base"), "ServiceAccount").items()}  # fmt: skip
    policies = {d["spec"]["selector"]["matchLabels"]["component"]: d
                for d in component if d["kind"] == "AuthorizationPolicy"}  # fmt: skip
    assert {p["spec"]["action"] for p in policies.values()} == {"ALLOW"}
    ingress = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    transformer = f"cluster.local/ns/{NAMESPACE}/sa/nexus-transformer"
    router = f"cluster.local/ns/{NAMESPACE}/sa/nexus-router"
    assert {transformer, router} == accounts
    # Knative's activator forwards on a revision's behalf (knative-serving namespace).
    assert sources(policies["predictor"]) == ({transformer}, {"knative-serving"})
    assert sources(policies["transformer"]) == ({router, ingress}, {"knative-serving"})
    # Whatever else a rule lets in is limited to reading metrics on the metrics ports, from
    # any source: `source.namespaces: [monitoring]` matches only mTLS peers (Istio
    # srcNamespaceGenerator), and the Prometheus of platform/prerequisites.yaml has no
    # sidecar, so a `from` there would refuse its scrapes with 403.
    metrics_ports = {"predictor": ["8080", "9091"], "transformer": ["8080"]}
    # Except the release pipeline's quality gate and judge (nexus.release.gate_stage): their
    # OpenAI calls to predictors, under every runtime's prefix, and nothing else.
    release = "cluster.local/ns/kubeflow/sa/nexus-release"
    gate = {
        (m, prefix + path) for m, path in GATE_CALLS for prefix in PREDICTOR_PATH_PREFIX.values()
    }
    for component, policy in policies.items():
        for rule in policy["spec"]["rules"]:
            if rule.get("from") == [{"source": {"principals": [release]}}]:
                assert component == "predictor"
                operations = [to["operation"] for to in rule["to"]]
                assert all(set(op) == {"methods", "paths"} for op in operations)
                asked = {
                    (m, path) for op in operations for m in op["methods"] for path in op["paths"]
                }
                assert asked == gate
                continue
            for to in rule.get("to", []):
                assert "from" not in rule
                assert to["operation"] == {
                    "ports": metrics_ports[component],
                    "methods": ["GET"],
                    "paths": ["/metrics"],
                }
            assert "monitoring" not in str(rule.get("from", ""))


def referenced_secrets() -> dict[tuple[str, str], str]:
    """(namespace, Secret) -> where the shipped manifests reference it."""
    found: dict[tuple[str, str], str] = {}
    for path in sorted((REPO_ROOT / "inference_services").glob("*/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "InferenceService":
                continue
            where = path.relative_to(REPO_ROOT).as_posix()
            annotations = doc["metadata"].get("annotations") or {}
            if name := annotations.get("serving.kserve.io/storageSecretName"):
                found[(NAMESPACE, name)] = where
            for component in ("predictor", "transformer"):
                for container in (doc["spec"].get(component) or {}).get("containers") or []:
                    for source in container.get("envFrom") or []:
                        if ref := source.get("secretRef"):
                            found[(NAMESPACE, ref["name"])] = where
                    for item in container.get("env") or []:
                        if ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                            found[(NAMESPACE, ref["name"])] = where
    for folder in sorted(p for p in K8S.iterdir() if (p / "kustomization.yaml").exists()):
        for doc in documents(folder):
            if doc["kind"] == "Deployment":
                # Redis's password (issue 20: referenced, created nowhere).
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for item in container.get("env") or []:
                        if ref := (item.get("valueFrom") or {}).get("secretKeyRef"):
                            namespace = doc["metadata"].get("namespace", NAMESPACE)
                            found[(namespace, ref["name"])] = f"platform/k8s/{folder.name}"
            if doc["kind"] == "ServiceAccount":
                for ref in doc.get("secrets") or []:
                    namespace = doc["metadata"].get("namespace", NAMESPACE)
                    found[(namespace, ref["name"])] = f"platform/k8s/{folder.name} (ServiceAccount)"
    for gateway in of_kind(documents(K8S / "base"), "Gateway").values():
        for server in gateway["spec"]["servers"]:
            if name := server.get("tls", {}).get("credentialName"):
                # Istio reads it in the gateway workload's namespace.
                found[("istio-system", name)] = "platform/k8s/base (Gateway)"
    return found


def test_every_referenced_secret_can_come_from_an_external_secret() -> None:
    component = documents(COMPONENTS / "external-secrets")
    produced = {(d["metadata"]["namespace"], d["spec"]["target"]["name"])
                for d in component if d["kind"] == "ExternalSecret"}  # fmt: skip
    referenced = referenced_secrets()
    assert {("nexus", "nexus-gateway-secrets"), ("istio-system", "nexus-public-tls")} <= set(
        referenced
    )
    missing = {key: where for key, where in referenced.items() if key not in produced}
    assert missing == {}
    for secret in component:
        assert secret["spec"]["secretStoreRef"] == {"name": "nexus-secrets",
                                                    "kind": "ClusterSecretStore"}  # fmt: skip
        assert all(item["remoteRef"]["key"] for item in secret["spec"]["data"])
