"""``nexus demo``: the release story of one model on the local platform, start to end.

It drives the platform only through the doors a person (or a CI job) has: the MLflow
registry, the release pipeline (``kfp.local`` by default, the same graph as on a KFP
cluster), the status API, Prometheus and the InferenceGraph's public URL. In order:
``nexus up`` unless it runs; llama-8b registered and released at 100 % (skipped when a
champion serves already, so the demo can be run again); traffic through the
chat-fallback graph; a new version registered and released in steps (``--steps``,
20 %, 50 %, then the promotion) while traffic flows, each step judged on its own window
by the pipeline's analysis; the split each window measured printed as a table; then the
rolled-out worker refuses connections (the CPU worker's ``refuse`` fault, which clears
itself) and the graph answers from the fallback model. The platform keeps running
afterwards, with its endpoints printed.

With ``--predictor vllm`` every revision is a real vLLM engine: a canary starts a second
engine, the analysis judges it on vLLM's ``vllm:time_to_first_token_seconds`` by revision
(``nexus.release.analyze.TTFT_SERIES``, chosen by the model's runtime) beside the
queue-proxy's histogram, and the fallback step kills the rolled-out engine (vLLM has no
fault route; a dead predictor pod is the cluster's equivalent), which the platform then
restarts. Without a GPU the engines serve the tiny Llama the platform trained, whose
likelihood means something, so the demo also shows the quality gate: the model's
evaluation set (held-out text) is attached in MLflow before the stepped release, which
then passes the gate at 0 % first; and a broken copy (embeddings zeroed, registered from
its MLflow artifact URI) is stopped at 0 % and never takes traffic.

Every wait is bounded and says what it waited for; the traffic thread is stopped
whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nexus.edge import wire
from nexus.errors import PlatformError
from nexus.local import vllm_model
from nexus.local.platform import Options, fetch, status, tiny_model, up
from nexus.local.ports import PortBook
from nexus.local.report import endpoints_table
from nexus.manifests.metric_names import QUEUE_PROXY_DURATION

if TYPE_CHECKING:
    from nexus.release.tracking import LocalEvidence

Say = Callable[[str], None]
CHAT_PATH: Final = "/openai/v1/chat/completions"
STEP_HEADER: Final = wire.STEP_HEADER.decode()
ISVC_API: Final = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices"
FIRST_URI: Final = "hf://meta-llama/Llama-3.1-8B-Instruct"
EXIT_ROLLED_BACK: Final = 3
STEP_FALLBACK: Final = 7  # 6 is the broken release, shown with --predictor vllm


@dataclass(frozen=True, slots=True)
class DemoOptions:
    state_dir: Path
    up: Options
    model: str = "llama-8b"
    fallback: str = "qwen-1-5b"
    graph: str = "chat-fallback"
    steps: str = "20,50,100"
    analysis_window_s: float = 30.0
    wait_timeout_s: float = 300.0
    refuse_seconds: float = 60.0
    inline: bool = False


def chat(url: str, key: str, *, timeout: float = 30.0) -> tuple[int, str, dict[str, Any]]:
    """One chat completion through a graph: (status, answering step, body)."""
    body = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    request = urllib.request.Request(  # noqa: S310 - the platform's loopback URL
        url + CHAT_PATH,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return (
                response.status,
                response.headers.get(STEP_HEADER, ""),
                json.loads(response.read()),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get(STEP_HEADER, ""), {}


def answered(status: int, body: Mapping[str, Any]) -> str | None:
    """``None`` for a completion, else what went wrong (an error code, or the status).

    A graph's ``Sequence`` answers 200 with the primary's error body when the fallback
    condition does not match (a 429 or a 401 is the client's problem, not a failure to
    fall back from), so the status alone does not say whether a completion came back.
    """
    if status == 200 and "choices" in body:
        return None
    error = body.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    return str(code or f"status {status}")


class Traffic:
    """Chat completions through the graph from two threads until stopped; counts answers.

    Threads because the release pipeline blocks the demo's own thread; they never print
    (the pipeline's progress owns the terminal). Each thread sends at most ``per_second``
    requests a second: the demo key shares one limit per minute and model
    (``GATEWAY_RATE_LIMIT_PER_MINUTE``, 600 locally), and two threads at 3 a second stay
    well below it, so what the demo shows is serving, not rate limiting.
    """

    def __init__(self, url: str, key: str, *, threads: int = 2, per_second: float = 3) -> None:
        self.url, self.key = url, key
        self.interval = 1 / per_second
        self.seen: Counter[tuple[str, str | None]] = Counter()  # (step, problem)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, step, body = chat(self.url, self.key, timeout=10)
                problem = answered(status, body)
            except (OSError, ValueError) as exc:
                step, problem = "", type(exc).__name__
            with self._lock:
                self.seen[(step, problem)] += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def summary(self) -> str:
        with self._lock:
            seen = dict(self.seen)
        total = sum(seen.values())
        steps, problems = Counter[str](), Counter[str]()
        for (step, problem), n in seen.items():
            if problem is None:
                steps[step or "?"] += n
            else:
                problems[problem] += n
        by_step = ", ".join(f"{step} {n}" for step, n in steps.most_common())
        text = f"{total} requests, {steps.total()} completions ({by_step or 'none'})"
        if problems:
            text += "; not answered: " + ", ".join(f"{p} {n}" for p, n in problems.most_common())
        return text


def _platform(options: DemoOptions, say: Say) -> dict[str, Any]:
    live = status(options.state_dir)
    if live is None:
        say("the platform is not running: starting it (nexus up)")
        endpoints = up(options.state_dir, options.up, progress=lambda line: say(f"  {line}"))
    else:
        say(f"the platform is running (status API {live['endpoints']['status_url']})")
        endpoints = dict(live["endpoints"])
    for need in ("tracking_uri", "prometheus_url"):
        if not endpoints.get(need):
            raise PlatformError(
                f"the demo needs {need} (MLflow and Prometheus); see the notes of `nexus up`"
            )
    return endpoints


def _register(endpoints: Mapping[str, Any], model: str, uri: str, fallback: str) -> str:
    from nexus.manifests.pools import load_pools
    from nexus.registry import conventions as c
    from nexus.registry.client import Registry
    from nexus.release.resolve import default_pools_file

    registry = Registry.connect(str(endpoints["tracking_uri"]))
    spec = c.ServingSpec(storage_uri=uri, runtime="vllm", gpu_pool="a100")
    pools = load_pools(default_pools_file())
    # "chat" is the public name the graphs' clients send: the released model must keep it.
    return registry.register(model, spec, pools, fallback=fallback, model_aliases=("chat",)).version


def _release(
    options: DemoOptions, endpoints: Mapping[str, Any], version: str
) -> tuple[str, LocalEvidence | None]:
    """Run the release pipeline; its status in the registry, and its evidence (files, run)."""
    from nexus.registry import conventions as c
    from nexus.registry.client import Registry
    from nexus.release.run import run_inline, run_local
    from nexus.release.tracking import save_local

    params = {
        "model_name": options.model,
        "version": version,
        "environment": "local",
        "steps": options.steps,
        "analysis_window_s": options.analysis_window_s,
        "max_error_ratio": 0.02,
        "max_p95_latency_ratio": 1.5,
        "min_canary_requests": 10,
        "gitops_repo": str(endpoints["gitops_repo"]),
        "prometheus_url": str(endpoints["prometheus_url"]),
        "tracking_uri": str(endpoints["tracking_uri"]),
        "status_url": str(endpoints["status_url"]),
        "namespace": "nexus",
        "wait_timeout_s": options.wait_timeout_s,
    }
    if options.inline:
        run_inline(params)
    else:
        run_local(params, pipeline_root=options.state_dir.resolve() / "kfp")
    tags = Registry.connect(str(endpoints["tracking_uri"])).version(options.model, version).tags
    stem = options.state_dir.resolve() / "kfp" / f"release-{options.model}-{version}"
    evidence = save_local(str(endpoints["tracking_uri"]), options.model, version, stem)
    return tags.get(c.RELEASE_STATUS, "failed"), evidence


def split_table(analysis: Mapping[str, Any]) -> str:
    """One canary window as Prometheus measured it (the analysis' own numbers)."""
    rows = [("REVISION", "ROLE", "REQUESTS", "SHARE", "5XX RATIO", "P95 LATENCY", "P95 TTFT")]
    measured = [(role, analysis.get(role)) for role in ("stable", "canary")]
    total = sum(float(s["requests"]) for _, s in measured if s) or 1.0

    def ms(seconds: float | None) -> str:
        return "-" if seconds is None else f"{1000 * seconds:.0f} ms"

    for role, stats in measured:
        if not stats:
            continue
        ratio = stats.get("error_ratio")
        rows.append((stats["revision"], role, f"{stats['requests']:.0f}",
                     f"{100 * float(stats['requests']) / total:.0f} %",
                     "-" if ratio is None else f"{ratio:.3f}",
                     ms(stats.get("p95_latency_s")), ms(stats.get("p95_ttft_s"))))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                     for row in rows)  # fmt: skip


def evidence_lines(
    options: DemoOptions, endpoints: Mapping[str, Any], version: str, evidence: LocalEvidence | None
) -> str:
    """Where to look at the canary's judgement: its report and chart, and its MLflow run."""
    if evidence is None:
        return f"\nThe release of version {version} left no evidence (it failed before analysis)."
    return "\n".join((
        f"\nThe canary's judgement (version {version}):",
        f"  report      {evidence.report}",
        f"  chart       {evidence.chart}",
        f"  MLflow run  {evidence.run.url}",
        f"  version     {endpoints['tracking_uri']}/#/models/{options.model}/versions/{version}",
    ))  # fmt: skip


def steps_lines(analysis: Mapping[str, Any]) -> str:
    """Every stage of a release: the gate's verdict at 0 %, each step's window as a table."""
    from nexus.release.gate import GATE_KEY

    lines = []
    for step in analysis.get("steps") or [analysis]:
        reasons = "; ".join(step.get("reasons", []))
        if step.get(GATE_KEY):
            lines.append(f"   at 0 % (quality gate, no traffic): {step.get('decision', '?')} "
                         f"({reasons})")  # fmt: skip
            continue
        window = f"{step.get('window_s', 0):.0f} s window"
        lines.append(f"   at {step.get('percent', '?')} % ({window}): "
                     f"{step.get('decision', '?')} ({reasons})")  # fmt: skip
        lines.append(split_table(step))
    return "\n".join(lines)


def _gated_model(
    options: DemoOptions, endpoints: Mapping[str, Any], say: Say
) -> vllm_model.TinyModel | None:
    """With vLLM engines serving the tiny Llama: its evaluation set attached to the model,
    so every release of it starts with the quality gate at 0 %; the tiny model, else ``None``."""
    from nexus.local.vllm_engine import has_gpu
    from nexus.registry.client import Registry

    if options.up.predictor != "vllm" or has_gpu():
        return None
    tiny = tiny_model(options.state_dir.resolve(), options.up.project_dir)
    text = tiny.evaluation.read_text(encoding="utf-8")
    uri = Registry.connect(str(endpoints["tracking_uri"])).attach_evaluation_set(
        options.model, text
    )
    count = len(json.loads(text).get("examples", []))
    say(f"   the evaluation set ({count} examples of held-out text, {uri}) is attached to "
        f"{options.model}: each release first runs the quality gate at 0 %")  # fmt: skip
    return tiny


def _broken_release(
    options: DemoOptions, endpoints: Mapping[str, Any], tiny: vllm_model.TinyModel, say: Say
) -> tuple[str, LocalEvidence | None]:
    """A copy of the served model with zeroed embeddings, registered from its MLflow artifact
    URI and released: the gate must stop it at 0 %. Its version and evidence."""
    from nexus.registry.client import Registry
    from nexus.release.gate import EXIT_BLOCKED, OUTCOME_BLOCKED

    registry = Registry.connect(str(endpoints["tracking_uri"]))
    zeroed = vllm_model.zeroed_copy(tiny, options.state_dir.resolve() / "models" / "zeroed")
    uri = registry.log_files(zeroed, run_name=f"{options.model}-zeroed-embeddings")
    version = _register(endpoints, options.model, uri, options.fallback)
    say(f"\n6. registered {options.model} version {version} from its MLflow artifacts "
        f"({uri}):\n   the same model, embeddings zeroed: it answers fast, with 200")  # fmt: skip
    outcome, evidence = _release(options, endpoints, version)
    analysis = evidence.analysis if evidence else {}
    say(steps_lines(analysis))
    if outcome != OUTCOME_BLOCKED:
        raise PlatformError(f"the quality gate let version {version} through ({outcome})")
    say(f"   {options.model} version {version}: {outcome} (`nexus release` exits "
        f"{EXIT_BLOCKED}); it never took traffic, and the revert is committed")  # fmt: skip
    return version, evidence


def _rolled_out(endpoints: Mapping[str, Any], model: str) -> tuple[str, dict[str, int]]:
    obj = fetch(f"{endpoints['status_url']}{ISVC_API}/{model}")
    predictor = obj["status"]["components"]["predictor"]
    traffic = {t["revisionName"]: int(t["percent"]) for t in predictor.get("traffic", [])}
    return str(predictor.get("latestRolledoutRevision", "")), traffic


def _refuse(options: DemoOptions, revision: str) -> int:
    """Make the revision's worker refuse connections for ``refuse_seconds``; its port.

    A real vLLM engine has no fault route: it is killed instead (its process group, as
    a node loses a pod), and the platform restarts it (``nexus.local.workloads``).
    """
    state = options.state_dir.resolve()
    port = PortBook(state / "ports.json").get(revision)
    if port is None:
        raise PlatformError(f"no port is booked for {revision}; is the platform running?")
    if options.up.predictor == "vllm":
        try:
            os.killpg(int((state / "run" / f"{revision}.pid").read_text()), signal.SIGKILL)
        except (OSError, ValueError) as exc:
            raise PlatformError(f"cannot kill the engine of {revision}: {exc}") from exc
        return port
    body = json.dumps({"refuse": True, "refuse_seconds": options.refuse_seconds}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/faults",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
    except OSError as exc:
        raise PlatformError(f"the worker of {revision} did not take the fault: {exc}") from exc
    return port


def _fallback_answer(graph_url: str, key: str, fallback: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            code, step, body = chat(graph_url, key)
        except (OSError, ValueError) as exc:
            code, step, body = 0, "", {}
            last = str(exc)
        if answered(code, body) is None and step == fallback:
            return body
        last = f"status {code} ({answered(code, body) or 'a completion'}), "
        last += f"{STEP_HEADER}: {step or '-'}"
        time.sleep(0.5)
    raise PlatformError(f"the graph did not answer from {fallback} within {timeout:.0f}s: {last}")


def run(options: DemoOptions, *, say: Say) -> int:
    """The demo; 0 when the canary was promoted, 3 when the analysis rolled it back."""
    from nexus.errors import VersionNotFound
    from nexus.registry import conventions as c
    from nexus.registry.client import Registry

    started = time.monotonic()
    say("1. the platform")
    endpoints = _platform(options, say)
    key, graph_url = str(endpoints["api_key"]), str(endpoints["graphs"][options.graph])
    model = options.model
    registry = Registry.connect(str(endpoints["tracking_uri"]))
    try:
        champion = registry.alias(model, c.CHAMPION)
    except VersionNotFound:  # not registered yet: a fresh platform
        champion = None
    if champion is None:
        version = _register(endpoints, model, FIRST_URI, options.fallback)
        say(f"\n2. registered {model} version {version} ({FIRST_URI}); releasing it at 100 %")
        outcome, _ = _release(options, endpoints, version)
        if outcome != "promoted":
            raise PlatformError(f"the first release of {model} ended {outcome}; see the log above")
        champion = version
    else:
        say(f"\n2. {model} version {champion} is champion already (an earlier demo): kept")
    say(f"\n3. traffic through the {options.graph} graph ({graph_url})")
    with Traffic(graph_url, key) as warmup:
        time.sleep(5)
    say(f"   {warmup.summary()}")

    tiny = _gated_model(options, endpoints, say)
    uri = f"hf://nexus-demo/llama-3.1-8b-chat-{time.strftime('%Y%m%d-%H%M%S')}"
    canary = _register(endpoints, model, uri, options.fallback)
    say(f"\n4. registered {model} version {canary} ({uri}); releasing it in steps of "
        f"{options.steps.replace(',', ', ')} % while traffic flows")  # fmt: skip
    with Traffic(graph_url, key) as during:
        outcome, evidence = _release(options, endpoints, canary)
    analysis = evidence.analysis if evidence else {}
    say(f"   traffic during the release: {during.summary()}")
    say("\n5. each step as Prometheus measured it:")
    say(steps_lines(analysis))
    judged_by = ", ".join(s for s in (QUEUE_PROXY_DURATION, analysis.get("ttft_series")) if s)
    say(f"   judged on {judged_by}, by revision")
    say(f"   decision: {analysis.get('decision', '?')} ({'; '.join(analysis.get('reasons', []))})")
    revision, traffic = _rolled_out(endpoints, model)
    say(f"   {model} version {canary}: {outcome}; traffic now {traffic}")
    say(f"   MLflow aliases: champion -> {registry.alias(model, c.CHAMPION)}, "
        f"challenger -> {registry.alias(model, c.CHALLENGER)}")  # fmt: skip
    blocked = None if tiny is None else _broken_release(options, endpoints, tiny, say)

    if options.up.predictor == "vllm":
        say(f"\n{STEP_FALLBACK}. the rolled-out vLLM engine ({revision}) is killed")
    else:
        say(f"\n{STEP_FALLBACK}. the rolled-out worker ({revision}) refuses connections for "
            f"{options.refuse_seconds:.0f} s")  # fmt: skip
    port = _refuse(options, revision)
    body = _fallback_answer(graph_url, key, options.fallback, timeout=30)
    say(f"   {options.graph} answered with {STEP_HEADER}: {options.fallback} "
        f"(model {body.get('model')}): "
        f"{body['choices'][0]['message']['content']!r}")  # fmt: skip
    if options.up.predictor == "vllm":
        say(f"   the platform restarts the engine on :{port} (about a minute on two cores)")
    else:
        say(f"   the worker on :{port} accepts connections again by itself after the fault")

    say(endpoints_table(endpoints))
    requests = f'{QUEUE_PROXY_DURATION}_count{{isvc="{model}"}}'
    query = urllib.parse.quote(f"sum by (revision) ({requests})")
    say(f"\nThe demo's model in the MLflow UI: {endpoints['tracking_uri']}/#/models/{model}")
    say(f"Requests by revision in Prometheus: {endpoints['prometheus_url']}/graph?g0.expr={query}")
    say(f"Release another version: nexus registry register {model} --storage-uri hf://... "
        f"--runtime vllm --gpu-pool a100 && nexus release {model} --version N "
        f"--environment local --steps {options.steps}")  # fmt: skip
    say(evidence_lines(options, endpoints, canary, evidence))
    if blocked is not None:
        say(evidence_lines(options, endpoints, *blocked))
    say(f"\nnexus demo took {time.monotonic() - started:.0f} s; the platform keeps running.")
    return 0 if outcome == "promoted" else EXIT_ROLLED_BACK
