"""A loopback HTTP server that answers the part of KFP's v2beta1 REST API a submission uses.

Paths, query parameters, the multipart field and the JSON field names are the API
server's (kubeflow/pipelines 2.17.0: ``backend/src/apiserver/main.go`` registers
``/apis/v2beta1/pipelines/upload`` and ``…/upload_version``;
``backend/src/apiserver/server/pipeline_upload_server.go`` reads the file from the
``uploadfile`` form field and ``name``/``pipelineid`` from the query; the other routes and
bodies are ``backend/api/v2beta1/{pipeline,experiment,run,healthz}.proto``, served with
their proto field names). Every request is recorded so a test can check what the client
sent; state (pipelines, versions, experiments, runs) lives in the instance.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import yaml

from tests.support.http_server import send_json, serving

API = "/apis/v2beta1"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class KfpApi:
    """The server's state and the requests it received, in order."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    pipelines: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def calls(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]


def _matches(item: dict[str, Any], query: dict[str, list[str]]) -> bool:
    """The ``display_name EQUALS`` predicates of a v2beta1 filter (filter.proto).

    The enum arrives by name or by number (``EQUALS = 1``): proto JSON takes both, and
    ``kfp.Client.get_pipeline_id`` sends the number.
    """
    for raw in query.get("filter", []):
        for predicate in json.loads(raw).get("predicates", []):
            assert predicate["operation"] in ("EQUALS", 1), predicate
            key = predicate["key"]
            if item.get(key) != predicate["stringValue"]:
                return False
    return True


def _upload(body: bytes, content_type: str) -> bytes:
    """The ``uploadfile`` part of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "uploadfile":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise ValueError("no uploadfile part")


def _handler(api: KfpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            api.requests.append(Recorded(method, url.path, query, dict(self.headers.items()), body))
            status, answer = self._route(method, url.path, query, body)
            send_json(self, status, answer)

        def _route(
            self, method: str, path: str, query: dict[str, list[str]], body: bytes
        ) -> tuple[int, dict[str, Any]]:
            if (method, path) == ("GET", f"{API}/healthz"):
                return 200, {"multi_user": False, "pipeline_store": "database"}
            if (method, path) == ("GET", f"{API}/pipelines"):
                found = [p for p in api.pipelines if _matches(p, query)]
                return 200, {"pipelines": found, "total_size": len(found)}
            if (method, path) == ("POST", f"{API}/pipelines/upload"):
                package = _upload(body, self.headers["Content-Type"])
                api.uploads.append(package)
                name = query["name"][0]
                pipeline = {"pipeline_id": api.new_id("pipeline"), "display_name": name,
                            "name": name}  # fmt: skip
                api.pipelines.append(pipeline)
                # The first version takes the pipeline's name, as the API server does.
                self._version(pipeline["pipeline_id"], name, package)
                return 200, pipeline
            if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
                package = _upload(body, self.headers["Content-Type"])
                api.uploads.append(package)
                pipeline_id = query["pipelineid"][0]
                if not any(p["pipeline_id"] == pipeline_id for p in api.pipelines):
                    return 404, {"error": f"pipeline {pipeline_id} not found", "code": 5}
                return 200, self._version(pipeline_id, query["name"][0], package)
            parts = path.removeprefix(f"{API}/").split("/")
            if method == "GET" and len(parts) == 3 and parts[::2] == ["pipelines", "versions"]:
                found = [v for v in api.versions
                         if v["pipeline_id"] == parts[1] and _matches(v, query)]  # fmt: skip
                found.sort(key=lambda v: v["created_at"], reverse=True)
                size = int(query.get("page_size", ["10"])[0])
                return 200, {"pipeline_versions": found[:size], "total_size": len(found)}
            if (method, path) == ("GET", f"{API}/experiments"):
                found = [e for e in api.experiments if _matches(e, query)]
                return 200, {"experiments": found, "total_size": len(found)}
            if (method, path) == ("POST", f"{API}/experiments"):
                experiment = {**json.loads(body), "experiment_id": api.new_id("experiment")}
                api.experiments.append(experiment)
                return 200, experiment
            if (method, path) == ("POST", f"{API}/runs"):
                run = {**json.loads(body), "run_id": api.new_id("run"), "state": "PENDING"}
                api.runs.append(run)
                return 200, run
            return 404, {"error": f"no route {method} {path}", "code": 5}

        def _version(self, pipeline_id: str, name: str, package: bytes) -> dict[str, Any]:
            spec = next(yaml.safe_load_all(package))
            version = {"pipeline_id": pipeline_id, "pipeline_version_id": api.new_id("version"),
                       "display_name": name, "name": name, "pipeline_spec": spec,
                       "created_at": f"2026-01-01T00:00:{len(api.versions):02d}Z"}  # fmt: skip
            api.versions.append(version)
            return version

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler


@contextlib.contextmanager
def kfp_api() -> Iterator[KfpApi]:
    """The API on a free loopback port, served from a thread; stopped on exit."""
    api = KfpApi()
    with serving(_handler(api)) as api.url:
        yield api
