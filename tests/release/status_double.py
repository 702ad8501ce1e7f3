"""A test double of the local platform's status API, driven by a bare GitOps repository.

Kept for one unit-level test only (``test_wait_is_bounded_and_says_why``): readiness is
switched on request (``POST /admin/state``), so the wait step's timeout and its message
are tested in two seconds, without starting workers. Every release test that needs the
platform's behaviour runs against the real controller (``local_platform`` in
``conftest.py``, ``nexus.local.controller``).

It answers the two Argo CD-shaped routes the wait step polls (``/api/v1/applications/
{app}`` and the InferenceService under ``/apis/serving.kserve.io/v1beta1/...``) by
reading the repository's ``main`` branch at each request, the way a sync loop would
apply it, and by playing Knative's revision rules for ``canaryTrafficPercent``: a
changed predictor spec makes a new revision; the field absent sends 100 % to the latest
revision (which becomes the rolled-out one), a percent splits latest vs previously
rolled-out, 0 sends everything back. ``POST /admin/state`` with ``{"ready": false}`` makes every
InferenceService not Ready (to test the wait's timeout).

    python -m tests.release.status_double --port P --repo /path/to/bare.git
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

APP = "nexus-inference-services"


@dataclass
class Revisions:
    """Knative's view of one InferenceService's predictor."""

    count: int = 0
    spec_hash: str = ""
    rolled_out: int | None = None  # last revision that took 100 %
    previous: int | None = None
    canary: int | None = None
    generation: int = 0
    last_doc: dict[str, Any] = field(default_factory=dict)


async def _git(repo: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git", "--git-dir", repo, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode() if proc.returncode == 0 else ""


class Cluster:
    def __init__(self, repo: str) -> None:
        self.repo = repo
        self.head = ""
        self.ready = True
        self.isvcs: dict[tuple[str, str], Revisions] = {}

    async def sync(self) -> None:
        head = (await _git(self.repo, "rev-parse", "--verify", "-q", "refs/heads/main")).strip()
        if not head or head == self.head:
            return
        files = await _git(self.repo, "ls-tree", "-r", "--name-only", head, "inference_services")
        for path in files.split():
            if path.endswith(".yaml"):
                doc = yaml.safe_load(await _git(self.repo, "show", f"{head}:{path}"))
                self.apply(doc)
        self.head = head

    def apply(self, doc: dict[str, Any]) -> None:
        key = (doc["metadata"].get("namespace", "default"), doc["metadata"]["name"])
        state = self.isvcs.setdefault(key, Revisions())
        if doc == state.last_doc:
            return
        state.last_doc = doc
        state.generation += 1
        predictor = dict(doc["spec"]["predictor"])
        percent = predictor.pop("canaryTrafficPercent", None)
        digest = hashlib.sha256(json.dumps(predictor, sort_keys=True).encode()).hexdigest()
        if digest != state.spec_hash:
            state.count += 1
            state.spec_hash = digest
        if percent is None or state.rolled_out is None:
            if state.rolled_out != state.count:
                state.previous = state.rolled_out
            state.rolled_out = state.count
            state.canary = None
        else:
            state.canary = percent

    def traffic(self, name: str, state: Revisions) -> list[dict[str, Any]]:
        def rev(n: int) -> str:
            return f"{name}-predictor-{n:05d}"

        latest = state.count
        if state.canary is None or state.rolled_out == latest:
            return [{"revisionName": rev(latest), "percent": 100, "latestRevision": True,
                     "tag": "latest"}]  # fmt: skip
        entries = [{"revisionName": rev(latest), "percent": state.canary, "latestRevision": True,
                    "tag": "latest"}]  # fmt: skip
        if state.rolled_out is not None:
            entries.append({"revisionName": rev(state.rolled_out), "percent": 100 - state.canary,
                            "latestRevision": False, "tag": "prev"})  # fmt: skip
        return entries

    def isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        state = self.isvcs.get((namespace, name))
        if state is None:
            return None
        doc = json.loads(json.dumps(state.last_doc))
        doc["metadata"]["generation"] = state.generation
        doc["status"] = {
            "observedGeneration": state.generation,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if self.ready else "False",
                    "reason": None if self.ready else "RevisionMissing",
                }
            ],
            "components": {
                "predictor": {
                    "traffic": self.traffic(name, state),
                    "latestReadyRevision": f"{name}-predictor-{state.count:05d}",
                    "latestRolledoutRevision": f"{name}-predictor-{(state.rolled_out or 0):05d}",
                }
            },
        }
        return doc


def build_app(cluster: Cluster) -> web.Application:
    async def application(request: web.Request) -> web.Response:
        if request.match_info["app"] != APP:
            return web.json_response({"message": "not found"}, status=404)
        await cluster.sync()
        return web.json_response({"metadata": {"name": APP}, "status": {
            "sync": {"status": "Synced" if cluster.head else "OutOfSync",
                     "revision": cluster.head},
            "health": {"status": "Healthy" if cluster.ready else "Progressing"},
        }})  # fmt: skip

    async def isvc(request: web.Request) -> web.Response:
        await cluster.sync()
        doc = cluster.isvc(request.match_info["ns"], request.match_info["name"])
        if doc is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(doc)

    async def state(request: web.Request) -> web.Response:
        body = await request.json()
        cluster.ready = bool(body.get("ready", cluster.ready))
        return web.json_response({"ready": cluster.ready})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/api/v1/applications/{app}", application)
    app.router.add_get(
        "/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}", isvc
    )
    app.router.add_post("/admin/state", state)
    app.router.add_get("/healthz", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()
    web.run_app(build_app(Cluster(args.repo)), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
