"""What ``nexus up`` and ``nexus status`` print: compact tables over the platform's objects.

Kept apart from the CLI so the wording is tested with plain dictionaries, and so the
demo command can print the same tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def endpoints_table(info: Mapping[str, Any]) -> str:
    """The table at the end of ``nexus up``, with a curl and an openai snippet to try."""
    rows: list[tuple[str, str]] = [("WHAT", "URL")]
    rows += [(f"graph {name}", url) for name, url in sorted(info["graphs"].items())]
    rows += [(f"isvc {name}", url) for name, url in sorted(info["inference_services"].items())]
    rows.append(("MLflow UI / tracking", info.get("tracking_uri") or "(mlflow not installed)"))
    rows.append(("Prometheus", info.get("prometheus_url") or "(prometheus not installed)"))
    rows.append(("status API", info["status_url"]))
    rows.append(("GitOps repository", info["gitops_repo"]))
    rows.append(("logs", info["logs"]))
    graphs = info["graphs"]
    graph = graphs.get("chat-fallback") or next(iter(graphs.values()), "http://127.0.0.1:PORT")
    key = info["api_key"]
    lines = ["", "Nexus is up.", "", *_table(rows), "", f"  demo API key  {key}", ""]
    lines.append(f"""Try it:
  curl -s {graph}/openai/v1/chat/completions \\
    -H "Authorization: Bearer {key}" -H 'Content-Type: application/json' \\
    -d '{{"model": "chat", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python - <<'EOF'
  import openai
  client = openai.OpenAI(base_url="{graph}/openai/v1", api_key="{key}")
  reply = client.chat.completions.create(
      model="chat", messages=[{{"role": "user", "content": "Hi"}}]
  )
  print(reply.choices[0].message.content)
  EOF

Release by pushing to the GitOps repository (git clone {info["gitops_repo"]}).
`nexus status` shows InferenceServices and graphs, `nexus down` stops everything.""")
    return "\n".join(lines)


def _ready(obj: Mapping[str, Any]) -> str:
    for condition in obj.get("status", {}).get("conditions", []):
        if condition["type"] == "Ready":
            return "True" if condition["status"] == "True" else "False"
    return "Unknown"


def _traffic(predictor: Mapping[str, Any]) -> str:
    parts = [f"{t['revisionName'].rpartition('-')[2]}:{t['percent']}%" + (
        f"({t['tag']})" if t.get("tag") else "") for t in predictor.get("traffic", [])]  # fmt: skip
    return " ".join(parts) or "-"


def status_table(live: Mapping[str, Any]) -> str:
    """``nexus status``: applications, InferenceServices (KServe's status), graphs, and the
    platform's services (MLflow, Redis, Prometheus) with their state while restarting."""
    lines = []
    apps = [("APPLICATION", "SYNC", "REVISION", "HEALTH")]
    for app in live["applications"]:
        sync = app["status"]["sync"]
        apps.append((app["metadata"]["name"], sync["status"], (sync.get("revision") or "-")[:10],
                     app["status"]["health"]["status"]))  # fmt: skip
    lines += _table(apps)
    isvcs = [("INFERENCESERVICE", "READY", "URL", "TRAFFIC", "LATEST ROLLED OUT", "PREVIOUS")]
    for obj in live["inference_services"]:
        predictor = obj["status"].get("components", {}).get("predictor", {})
        isvcs.append((f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", _ready(obj),
                      obj["status"].get("url") or "-", _traffic(predictor),
                      predictor.get("latestRolledoutRevision", "-"),
                      predictor.get("previousRolledoutRevision", "-")))  # fmt: skip
    lines += ["", *_table(isvcs)]
    graphs = [("INFERENCEGRAPH", "READY", "URL")]
    for obj in live["graphs"]:
        graphs.append((f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", _ready(obj),
                       obj["status"].get("url") or "-"))  # fmt: skip
    lines += ["", *_table(graphs)]
    services = [("SERVICE", "READY", "STATUS", "RESTARTS", "PORT")]
    for pod in live.get("services", []):
        container = pod["status"]["containerStatuses"][0]
        waiting = container["state"].get("waiting")
        state = waiting["reason"] if waiting else "Running" if container["ready"] else "Starting"
        services.append((pod["metadata"]["name"], str(container["ready"]), state,
                         str(container["restartCount"]),
                         str(container["ports"][0]["containerPort"])))  # fmt: skip
    if len(services) > 1:
        lines += ["", *_table(services)]
    for obj in (*live["inference_services"], *live["graphs"], *live.get("services", [])):
        for condition in obj["status"].get("conditions", []):
            if condition["type"] == "Ready" and condition.get("message"):
                lines.append(f"  ! {obj['metadata']['name']}: {condition['message']}")
    return "\n".join(lines)
