"""What the cluster's admission webhooks do to an InferenceService, as pure functions.

Plain data in (the InferenceService as a dict, the ``platform/versions.yaml`` mapping, the
ServingRuntimes by name), plain data out (messages, a defaulted copy); no I/O. The linter's
rules and the local platform call these, so both refuse what the cluster refuses, with the
cluster's own message.

Sources read (the ``fetch`` tool's snapshots):

- Knative Serving tag ``knative-v1.21.1`` (= Go module ``knative.dev/serving v0.48.1``, the
  version KServe's ``go.mod`` requires on its 0.20/0.21 line).
- KServe ``master`` at ``aaac4e294`` (2026-08-21). The snapshot carries no ``v0.21.0`` tag;
  the files cited below are byte-identical between ``v0.20.0`` and that commit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

# Knative: pkg/apis/serving/k8s_validation.go (knative-v1.21.1), `validPortNames`.
VALID_PORT_NAMES: Final = frozenset({"", "h2c", "http1"})
# Knative: pkg/apis/config/defaults.go (knative-v1.21.1), DefaultRevisionTimeoutSeconds and
# DefaultMaxRevisionTimeoutSeconds (config-defaults keys revision-timeout-seconds and
# max-revision-timeout-seconds).
DEFAULT_REVISION_TIMEOUT_SECONDS: Final = 300
DEFAULT_MAX_REVISION_TIMEOUT_SECONDS: Final = 600
# Knative: pkg/deployment/config.go (knative-v1.21.1), ProgressDeadlineDefault (600 s); a
# revision overrides it with the `serving.knative.dev/progress-deadline` annotation
# (pkg/apis/serving/register.go, ProgressDeadlineAnnotationKey).
DEFAULT_PROGRESS_DEADLINE_SECONDS: Final = 600
PROGRESS_DEADLINE_ANNOTATION: Final = "serving.knative.dev/progress-deadline"

DEPLOYMENT_MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
# KServe: pkg/constants/constants.go, DeploymentModeType values.
LEGACY_SERVERLESS: Final = "Serverless"
KNATIVE: Final = "Knative"
LEGACY_RAW: Final = "RawDeployment"
STANDARD: Final = "Standard"
# The first KServe release whose defaulting webhook rewrites the legacy names: the rewrite
# is absent from inference_service_defaults.go at v0.16.0 and present from v0.17.0.
MODE_REWRITE_SINCE: Final = (0, 17, 0)
# KServe: pkg/constants/constants.go, ArgumentModelName/ArgumentPredictorHost/
# ArgumentHttpPort and InferenceServiceDefaultHttpPort.
ARG_MODEL_NAME: Final = "--model_name"
ARG_PREDICTOR_HOST: Final = "--predictor_host"
ARG_HTTP_PORT: Final = "--http_port"
ARG_WORKERS: Final = "--workers"
DEFAULT_HTTP_PORT: Final = "8080"

COMPONENTS: Final = ("predictor", "transformer", "explainer")


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.21.0"`` / ``"v1.21.1"`` -> ``(0, 21, 1)``; a pre-release suffix is dropped."""
    core = text.strip().lstrip("v").split("-", 1)[0].split("+", 1)[0]
    try:
        return tuple(int(part) for part in core.split("."))
    except ValueError:
        raise ValueError(f"not a version: {text!r}") from None


def kserve_version(versions: Mapping[str, str]) -> tuple[int, ...]:
    return parse_version(versions["kserve"])


def port_name_refusal(name: str, path: str) -> str | None:
    """Knative's message for a serving container's first port named anything but ``""``,
    ``h2c`` or ``http1``.

    Knative ``pkg/apis/serving/k8s_validation.go`` (knative-v1.21.1),
    ``validateContainerPorts``: ``"Port name %v is not allowed"`` with the details
    ``"Name must be empty, or one of: 'h2c', 'http1'"``.
    """
    if name in VALID_PORT_NAMES:
        return None
    return f"Port name {name} is not allowed: {path}\nName must be empty, or one of: 'h2c', 'http1'"


def timeout_refusal(
    timeout: int, *, max_revision_timeout_seconds: int = DEFAULT_MAX_REVISION_TIMEOUT_SECONDS
) -> str | None:
    """Knative's message for a revision ``timeoutSeconds`` outside ``0..max``.

    Knative ``pkg/apis/serving/v1/revision_validation.go`` (knative-v1.21.1),
    ``validateTimeoutSeconds``: ``apis.ErrOutOfBoundsValue(timeoutSeconds, 0, max,
    "timeoutSeconds")``, whose message is ``"expected %v <= %v <= %v"`` (knative.dev/pkg
    ``apis/field_error.go``). 0 means "the default" and is never refused.
    """
    if timeout == 0 or 0 <= timeout <= max_revision_timeout_seconds:
        return None
    return (
        f"expected 0 <= {timeout} <= {max_revision_timeout_seconds}: "
        "spec.template.spec.timeoutSeconds"
    )


def component_timeout(isvc: Mapping[str, Any], component: str) -> int | None:
    """The ``timeoutSeconds`` KServe gives the component's Knative revision.

    KServe ``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``:
    ``TimeoutSeconds: componentExtension.TimeoutSeconds`` (the ``spec.<component>.timeout``
    field, ``component.go``) and the same value as ``ResponseStartTimeoutSeconds``; when
    unset, Knative's ``revision-timeout-seconds`` (300 s by default) applies.
    """
    spec = _component(isvc, component)
    if spec is None:
        return None
    value = spec.get("timeout")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def effective_timeout(
    isvc: Mapping[str, Any],
    component: str,
    *,
    revision_timeout_seconds: int = DEFAULT_REVISION_TIMEOUT_SECONDS,
) -> int:
    """The total request timer Knative applies to the component (seconds)."""
    value = component_timeout(isvc, component)
    return revision_timeout_seconds if value is None or value == 0 else value


def deployment_mode(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> str | None:
    """The ``deploymentMode`` annotation after KServe's defaulting webhook.

    KServe ``pkg/apis/serving/v1beta1/inference_service_defaults.go``,
    ``DefaultInferenceService``: ``Serverless`` becomes ``Knative`` and ``RawDeployment``
    becomes ``Standard`` (since v0.17.0; v0.16.0 has no such rewrite).
    """
    annotations = _annotations(isvc)
    mode = annotations.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode is None or kserve_version(versions) < MODE_REWRITE_SINCE:
        return mode
    return {LEGACY_SERVERLESS: KNATIVE, LEGACY_RAW: STANDARD}.get(mode, mode)


def transformer_args(isvc: Mapping[str, Any]) -> list[str] | None:
    """The first transformer container's args after KServe appends its own.

    KServe ``pkg/apis/serving/v1beta1/transformer_custom.go``, ``GetContainer``: appends
    ``--model_name <isvc>``, ``--predictor_host <predictor service>.<namespace>`` and
    ``--http_port 8080``, each only when the container's args do not already name it, and
    ``--workers <containerConcurrency>`` when the transformer sets ``containerConcurrency``
    and its args do not name ``--workers`` (same function, ``constants.ArgumentWorkers``).
    The predictor service is ``<isvc>-predictor`` (``constants.PredictorServiceName``, with
    ``components/transformer.go`` passing the predictor's name).
    """
    transformer = _component(isvc, "transformer")
    if transformer is None:
        return None
    containers = transformer.get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        return None
    args = [str(a) for a in containers[0].get("args") or []]
    metadata = isvc.get("metadata") or {}
    name = str(metadata.get("name", ""))
    namespace = str(metadata.get("namespace", "default"))
    predictor = _component(isvc, "predictor") or {}
    predictor_name = predictor.get("name")
    service = f"{name}-{predictor_name}-predictor" if predictor_name else f"{name}-predictor"
    for flag, value in (
        (ARG_MODEL_NAME, name),
        (ARG_PREDICTOR_HOST, f"{service}.{namespace}"),
        (ARG_HTTP_PORT, DEFAULT_HTTP_PORT),
    ):
        if not _includes_arg(args, flag):
            args += [flag, value]
    concurrency = transformer.get("containerConcurrency")
    if isinstance(concurrency, int) and not _includes_arg(args, ARG_WORKERS):
        args += [ARG_WORKERS, str(concurrency)]
    return args


def kserve_defaults(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``isvc`` as KServe's defaulting leaves it (the parts Nexus depends on):
    the ``deploymentMode`` rewrite and the transformer's injected arguments."""
    out: dict[str, Any] = copy.deepcopy(dict(isvc))
    mode = deployment_mode(isvc, versions)
    if mode is not None:
        out.setdefault("metadata", {}).setdefault("annotations", {})[DEPLOYMENT_MODE_ANNOTATION] = (
            mode
        )
    args = transformer_args(isvc)
    if args is not None:
        out["spec"]["transformer"]["containers"][0]["args"] = args
    return out


def knative_refusals(
    isvc: Mapping[str, Any],
    versions: Mapping[str, str],
    *,
    runtimes: Mapping[str, Mapping[str, Any]] | None = None,
    max_revision_timeout_seconds: int = DEFAULT_MAX_REVISION_TIMEOUT_SECONDS,
) -> list[str]:
    """Knative's messages for every revision KServe would create from ``isvc``; [] if none.

    Only for Knative-mode InferenceServices (``Serverless``/``Knative`` after defaulting, or
    no annotation): a Standard deployment creates no Knative revision. ``runtimes`` are the
    ServingRuntime/ClusterServingRuntime documents by name; KServe copies the runtime's
    container (ports included) into the predictor, so the runtime's port names count.
    """
    if deployment_mode(isvc, versions) not in (None, KNATIVE, LEGACY_SERVERLESS):
        return []
    refusals: list[str] = []
    for component in COMPONENTS:
        spec = _component(isvc, component)
        if spec is None:
            continue
        for container, where in _containers(spec, component, runtimes or {}):
            ports = container.get("ports")
            if isinstance(ports, list) and ports and isinstance(ports[0], dict):
                message = port_name_refusal(str(ports[0].get("name") or ""), where)
                if message:
                    refusals.append(f"{component}: {message}")
        timeout = component_timeout(isvc, component)
        if timeout is not None:
            message = timeout_refusal(
                timeout, max_revision_timeout_seconds=max_revision_timeout_seconds
            )
            if message:
                refusals.append(f"{component}: {message}")
    return refusals


def _containers(
    spec: Mapping[str, Any], component: str, runtimes: Mapping[str, Mapping[str, Any]]
) -> list[tuple[Mapping[str, Any], str]]:
    found: list[tuple[Mapping[str, Any], str]] = []
    for index, container in enumerate(spec.get("containers") or []):
        if isinstance(container, dict):
            found.append((container, f"spec.{component}.containers[{index}].ports"))
    model = spec.get("model")
    if isinstance(model, dict):
        runtime = runtimes.get(str(model.get("runtime") or ""))
        if runtime is not None:
            containers = (runtime.get("spec") or {}).get("containers") or []
            name = (runtime.get("metadata") or {}).get("name", "")
            for index, container in enumerate(containers):
                if isinstance(container, dict):
                    merged = {**container, **{k: v for k, v in model.items() if k == "ports"}}
                    where = f"ServingRuntime {name} spec.containers[{index}].ports"
                    found.append((merged, where))
    return found


def _includes_arg(args: Sequence[str], flag: str) -> bool:
    # KServe pkg/utils/collections.go, IncludesArg: a plain prefix match
    # (`strings.HasPrefix(v, arg)`), so `--model_name=x` also counts as given.
    return any(arg.startswith(flag) for arg in args)


def _component(isvc: Mapping[str, Any], component: str) -> dict[str, Any] | None:
    spec = isvc.get("spec")
    if not isinstance(spec, dict):
        return None
    value = spec.get(component)
    return value if isinstance(value, dict) else None


def _annotations(isvc: Mapping[str, Any]) -> Mapping[str, str]:
    metadata = isvc.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    return annotations if isinstance(annotations, dict) else {}
