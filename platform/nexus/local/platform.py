"""``nexus up`` / ``status`` / ``down``: KServe + Argo CD on one machine.

``up`` seeds the local GitOps repository once and starts the controller, handing it the
infrastructure a cluster would have (MLflow on SQLite, Redis and Prometheus when
installed) to keep running (see ``service_reconciler``); the controller reconciles that
repository into processes (see ``controller``). ``up`` waits until the services are ready
and both Argo CD applications are Synced and Healthy, and writes
``<state>/endpoints.json`` for people, the release pipeline and tests. ``down`` stops
the controller first (so nothing is restarted behind its back), then every process with
a pid file; the data under the state directory stays.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.errors import PlatformError
from nexus.local import atomic_file, gitops, prometheus, vllm_model
from nexus.local.ports import PortBook
from nexus.local.resources import PredictorMode
from nexus.local.status import GRAPH_APP, ISVC_APP, KSERVE_GROUP, SYSTEM_NAMESPACE
from nexus.local.supervisor import Service, Supervisor, port_in_use, python, save_services
from nexus.local.vllm_engine import STOP_GRACE, has_gpu, missing_reason, vllm_python
from nexus.registry.client import Registry

__all__ = ["Options", "PlatformError", "down", "status", "up"]

Progress = Callable[[str], None]
# platform/k8s/base holds the ConfigMaps the transformers read (resources.CONFIG_FOLDER).
GITOPS_FOLDERS = ("inference_services/local", "graphs", "platform/k8s/base")
KEY_FILE = "demo-api-key"
# MLflow 3.17.2's `mlflow server` starts a job runner and seven huey consumers unless this
# is false (`_run_server` in mlflow/server/__init__.py reads it; default True in
# mlflow/environment_variables.py). The registry the platform uses needs no jobs; those
# eight processes held 1,076 MiB PSS, 1,554 MiB RSS (scripts/footprint.py).
MLFLOW_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass(frozen=True, slots=True)
class Options:
    project_dir: Path
    port_base: int | None = None
    port_span: int | None = None
    status_port: int | None = None
    mlflow_port: int | None = None
    redis_port: int | None = None
    prometheus_port: int | None = None
    predictor: PredictorMode = "cpu"
    timeout: float = 300.0


def demo_key(state_dir: Path) -> str:
    """The demo API key, made once and kept (mode 0600) so restarts keep working clients."""
    path = state_dir / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = "nexus-demo-" + secrets.token_urlsafe(18)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def _infrastructure(
    state: Path, book: PortBook, options: Options, progress: Progress
) -> tuple[list[Service], dict[str, Any]]:
    """The services ``up`` starts itself, and what they mean for the endpoints."""
    found: list[Service] = []
    info: dict[str, Any] = {"tracking_uri": None, "prometheus_url": None, "redis_url": None}
    if importlib.util.find_spec("mlflow") is not None:
        port = book.allocate("mlflow", fixed=options.mlflow_port)
        folder = state / "mlflow"
        (folder / "artifacts").mkdir(parents=True, exist_ok=True)
        args = python("mlflow", "server", "--backend-store-uri",
                      f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root",
                      str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                      "--workers", "1")  # fmt: skip
        ready = f"http://127.0.0.1:{port}/health"
        found.append(Service("mlflow", args, port, ready, env=MLFLOW_ENV))
        info["tracking_uri"] = f"http://127.0.0.1:{port}"
    else:
        progress("mlflow is not installed (pip install 'nexus-serving[release]'): no registry")
    if redis := shutil.which("redis-server"):
        port = book.allocate("redis", fixed=options.redis_port)
        (state / "redis").mkdir(parents=True, exist_ok=True)
        args = [redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(state / "redis")]
        found.append(Service("redis", args, port))
        info["redis_url"] = f"redis://127.0.0.1:{port}/0"
    else:
        progress("redis-server not found: each transformer limits rates in-process (one replica)")
    if binary := shutil.which("prometheus"):
        port = book.allocate("prometheus", fixed=options.prometheus_port)
        config = state / "prometheus" / "prometheus.yml"
        if not config.exists():
            status_port = book.get("controller")
            atomic_file.write_text(config, prometheus.render([prometheus.Target(
                f"127.0.0.1:{status_port}", "front")]))  # fmt: skip
        args = prometheus.command(binary, state, port)
        found.append(Service("prometheus", args, port, f"http://127.0.0.1:{port}/-/ready"))
        info["prometheus_url"] = f"http://127.0.0.1:{port}"
    else:
        progress("prometheus not found: no metrics are collected (apt-get install prometheus)")
    return found, info


def _predictor_mode(options: Options, progress: Progress) -> PredictorMode:
    if options.predictor != "vllm":
        return "cpu"
    reason = missing_reason(options.project_dir)
    if reason is not None:
        raise PlatformError(f"--predictor vllm: {reason}")
    progress("vLLM InferenceServices get real vLLM engines (--predictor vllm)")
    return "vllm"


def _model_record(state: Path) -> Path:
    """The tiny model's record, kept only while the model it names exists."""
    record = state / "models" / "tiny-llama.json"
    if record.exists():
        uri = str(json.loads(record.read_text())["storage_uri"])
        if not Path(uri.removeprefix("file://")).exists():
            record.unlink()
    return record


def tiny_model(state: Path, project_dir: Path) -> vllm_model.TinyModel:
    """The tiny Llama every vLLM engine serves without a GPU, built once per state."""
    python = vllm_python(project_dir)
    return vllm_model.build(python, project_dir, state / "models" / "build" / "tiny")


def _cpu_model(record: Path, options: Options, tracking_uri: str | None,
               progress: Progress) -> None:  # fmt: skip
    """Without a GPU every engine serves the tiny model, registered in MLflow once per state;
    the controller waits for ``record`` before it starts engines."""
    if tracking_uri is None:
        raise PlatformError("--predictor vllm without a GPU registers its model in MLflow: "
                            "pip install 'nexus-serving[release]'")  # fmt: skip
    if record.exists():
        return
    progress("no GPU: building the tiny Llama model for vLLM's CPU engine (~10 s)")
    model = tiny_model(record.parents[1], options.project_dir)
    version = vllm_model.register(Registry.connect(tracking_uri), model)
    uri = version.tags["serving.storage_uri"]
    text = json.dumps({"version": version.version, "storage_uri": uri}) + "\n"
    atomic_file.write_text(record, text)
    progress(f"registered {version.name} version {version.version} in MLflow: {uri}")


def up(state_dir: Path, options: Options, *, progress: Progress) -> dict[str, Any]:
    """Start everything; on any failure stop what was started and raise ``PlatformError``."""
    state = state_dir.resolve()
    supervisor = Supervisor(state)
    if supervisor.running():
        raise PlatformError(
            f"the platform is already running ({', '.join(supervisor.running())}); "
            "`nexus status` shows it, `nexus down` stops it"
        )
    book = PortBook(state / "ports.json", base=options.port_base, span=options.port_span)
    key = demo_key(state)
    repo = state / "gitops.git"
    if gitops.seed(repo, options.project_dir, GITOPS_FOLDERS):
        progress(f"seeded the GitOps repository {repo} from {', '.join(GITOPS_FOLDERS)}")
    else:
        progress(f"GitOps repository {repo} keeps its history")
        for folder in gitops.add_missing(repo, options.project_dir, GITOPS_FOLDERS):
            progress(f"added {folder} to the GitOps repository (it had none)")
    status_port = book.allocate("controller", fixed=options.status_port)
    mode = _predictor_mode(options, progress)
    platform_services, info = _infrastructure(state, book, options, progress)
    services_file = state / "controller" / "services.json"
    save_services(services_file, platform_services)
    controller = python("nexus.local.controller", "--state-dir", str(state),
                        "--project-dir", str(options.project_dir), "--gitops-repo", str(repo),
                        "--status-port", str(status_port), "--port-base", str(book.base),
                        "--port-span", str(book.span), "--api-key-file", str(state / KEY_FILE),
                        "--predictor", mode, "--services-file", str(services_file))  # fmt: skip
    record = _model_record(state) if mode == "vllm" and not has_gpu() else None
    if record is not None:
        controller += ["--vllm-model-record", str(record)]
    for flag, value in (("--redis-url", info["redis_url"]),
                        ("--prometheus-url", info["prometheus_url"])):  # fmt: skip
        if value:
            controller += [flag, value]
    status_url = f"http://127.0.0.1:{status_port}"
    control = Service("controller", controller, status_port, status_url + "/healthz")
    for service in (*platform_services, control):
        if port_in_use(service.port):
            raise PlatformError(
                f"port {service.port} for {service.name} is already in use by another program; "
                "stop it or choose other ports (--port-base, --<name>-port)"
            )
    try:
        progress(f"waiting for controller on :{status_port}")
        supervisor.wait_ready(control, supervisor.launch(control), timeout=options.timeout)
        _wait_services(status_url, platform_services, options.timeout, progress)
        if record is not None:
            _cpu_model(record, options, info["tracking_uri"], progress)
        isvcs, graphs = _wait_synced(status_url, options.timeout, progress)
    except PlatformError:
        supervisor.stop_all()
        raise
    endpoints = {
        **{k: v for k, v in info.items() if k != "redis_url"},
        "gitops_repo": str(repo),
        "status_url": status_url,
        "graphs": {g["metadata"]["name"]: g["status"]["url"] for g in graphs},
        "inference_services": {i["metadata"]["name"]: i["status"]["url"] for i in isvcs},
        "api_key": key,
        "redis_url": info["redis_url"],
        "logs": str(state / "logs"),
    }
    (state / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")
    return endpoints


def fetch(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our loopback API
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PlatformError(f"the controller's status API did not answer {url}: {exc}") from exc


def _wait_services(
    status_url: str, expected: list[Service], timeout: float, progress: Progress
) -> None:
    """Until the controller reports every platform service ready; a crash loop ends it."""
    deadline = time.monotonic() + timeout
    for service in expected:
        progress(f"waiting for {service.name} on :{service.port}")
        while True:
            pods = fetch(f"{status_url}/api/v1/namespaces/{SYSTEM_NAMESPACE}/pods")["items"]
            found = {p["metadata"]["name"]: p["status"]["containerStatuses"][0] for p in pods}
            container = found.get(service.name, {})
            if container.get("ready"):
                break
            waiting = container.get("state", {}).get("waiting", {})
            if waiting.get("reason") == "CrashLoopBackOff" or time.monotonic() > deadline:
                why = waiting.get("message") or f"not ready after {timeout:.0f} s"
                raise PlatformError(f"{service.name} did not start: {why}")
            time.sleep(0.2)


def _list(status_url: str, version: str, plural: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = fetch(f"{status_url}/apis/{KSERVE_GROUP}/{version}/{plural}")[
        "items"
    ]
    return items


def _wait_synced(
    status_url: str, timeout: float, progress: Progress
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Until both applications are Synced and Healthy; progress when the picture changes."""
    deadline = time.monotonic() + timeout
    last = ""
    warned: set[str] = set()
    while True:
        apps = [fetch(f"{status_url}/api/v1/applications/{n}") for n in (ISVC_APP, GRAPH_APP)]
        isvcs = _list(status_url, "v1beta1", "inferenceservices")
        graphs = _list(status_url, "v1alpha1", "inferencegraphs")
        ready = [sum(_is_ready(o) for o in objs) for objs in (isvcs, graphs)]
        line = (f"InferenceServices ready {ready[0]}/{len(isvcs)}, "
                f"InferenceGraphs ready {ready[1]}/{len(graphs)}")  # fmt: skip
        if line != last:
            progress(line)
            last = line
        refused = _refusals(status_url)
        for name, message in refused.items():
            if name not in warned:
                progress(f"InferenceService {name}: {message}")
                warned.add(name)
        stuck = [f"{i['metadata']['name']}: {refused[i['metadata']['name']]}" for i in isvcs
                 if not _is_ready(i) and i["metadata"]["name"] in refused]  # fmt: skip
        if stuck:
            # KServe retries a refused Knative Service forever; waiting cannot help.
            raise PlatformError("the cluster's webhooks refused: " + "; ".join(stuck))
        states = [(a["status"]["sync"]["status"], a["status"]["health"]["status"]) for a in apps]
        if all(s == ("Synced", "Healthy") for s in states):
            return isvcs, graphs
        if any(h == "Degraded" for _, h in states) or time.monotonic() > deadline:
            why = [c.get("message", "") for o in (*isvcs, *graphs) if not _is_ready(o)
                   for c in o["status"]["conditions"] if c["type"] == "Ready"]  # fmt: skip
            raise PlatformError(
                f"the platform did not become healthy ({states}): {'; '.join(why)[:1500]}"
            )
        time.sleep(0.5)


def _refusals(status_url: str) -> dict[str, str]:
    """InferenceService name -> the newest refusal KServe recorded as an event."""
    events = fetch(f"{status_url}/api/v1/events")["items"]
    return {e["involvedObject"]["name"]: e["message"] for e in events
            if e["reason"] == "InternalError"}  # fmt: skip


def _is_ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def status(state_dir: Path) -> dict[str, Any] | None:
    """The live objects, or ``None`` when the platform is not running."""
    state = state_dir.resolve()
    supervisor = Supervisor(state)
    if supervisor.pid_of("controller") is None:
        return None
    endpoints = json.loads((state / "endpoints.json").read_text())
    url = endpoints["status_url"]
    return {
        "applications": [fetch(f"{url}/api/v1/applications/{n}") for n in (ISVC_APP, GRAPH_APP)],
        "inference_services": _list(url, "v1beta1", "inferenceservices"),
        "graphs": _list(url, "v1alpha1", "inferencegraphs"),
        "services": fetch(f"{url}/api/v1/namespaces/{SYSTEM_NAMESPACE}/pods")["items"],
        "processes": {name: supervisor.pid_of(name) for name in supervisor.running()},
        "endpoints": endpoints,
    }


def down(state_dir: Path) -> list[str]:
    # Long enough for vLLM engines, which take ~30 s after SIGTERM; others exit at once.
    return Supervisor(state_dir.resolve()).stop_all(timeout=STOP_GRACE)


def default_project_dir() -> Path:
    """The checkout ``nexus`` runs from: the working directory if it has the manifests."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (candidate / "graphs").is_dir() and (candidate / "inference_services").is_dir():
            return candidate
    raise PlatformError("run `nexus up` from a Nexus checkout (no graphs/ and inference_services/)")
