"""``nexus release --kfp-host``: upload the compiled pipeline to a KFP cluster and start a run.

The calls are KFP's v2beta1 REST API through ``kfp.Client`` (kfp 2.17,
``kfp/client/client.py``); the paths are the API server's (kubeflow/pipelines 2.17.0,
``backend/src/apiserver/main.go`` and ``backend/api/v2beta1/*.proto``):

1. ``GET /apis/v2beta1/healthz``: the client asks whether the cluster is multi-user;
2. ``GET /apis/v2beta1/pipelines?filter=…``: the ``nexus-release`` pipeline, by name;
3. a version named after the package's digest, so submitting the same package twice
   uploads it once: ``GET …/pipelines/{id}/versions?filter=…``, else
   ``POST /apis/v2beta1/pipelines/upload_version?name=…&pipelineid=…`` (multipart field
   ``uploadfile``, ``backend/src/apiserver/server/pipeline_upload_server.go``), after
   ``POST /apis/v2beta1/pipelines/upload`` when the cluster has no such pipeline yet;
4. ``GET``/``POST /apis/v2beta1/experiments``: the ``nexus-release`` experiment;
5. ``POST /apis/v2beta1/runs``: the run, referencing the uploaded version, with the
   release's parameters and the ``nexus-release`` ServiceAccount (``run.proto``,
   ``service_account``), whose RBAC ``platform/k8s/pipelines`` defines.

Parameters left empty are not sent, so the pipeline's in-cluster defaults apply
(``pipeline.IN_CLUSTER``): the URLs a laptop knows (``.nexus/endpoints.json``) mean
nothing inside the cluster.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nexus.errors import ReleaseError

EXPERIMENT: Final = "nexus-release"


def _by_name(name: str) -> str:
    """A v2beta1 ``filter`` (``backend/api/v2beta1/filter.proto``) on ``display_name``."""
    predicate = {"operation": "EQUALS", "key": "display_name", "stringValue": name}
    return json.dumps({"predicates": [predicate]})


def _pipeline_version(client: Any, package: Path, name: str, version: str) -> tuple[str, str]:
    """``(pipeline id, version id)`` of ``version`` of pipeline ``name``, uploaded if new."""
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        # The server names a new pipeline's first version after the pipeline
        # (pipeline_upload_server.go), so the digest-named version is uploaded next to it:
        # looking versions up by digest is what makes a resubmission upload nothing.
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=name).pipeline_id
    else:
        found = client.list_pipeline_versions(
            pipeline_id, page_size=1, filter=_by_name(version)
        ).pipeline_versions
        if found:
            return str(pipeline_id), str(found[0].pipeline_version_id)
    uploaded = client.upload_pipeline_version(str(package), version, pipeline_id=pipeline_id)
    return str(pipeline_id), str(uploaded.pipeline_version_id)


def submit(
    host: str,
    arguments: Mapping[str, Any],
    *,
    package: Path | None = None,
    service_account: str = "",
) -> str:
    """Upload the compiled package (or a fresh compile) and start a run; the run's URL."""
    import kfp
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from nexus.release.pipeline import PIPELINE_NAME, SERVICE_ACCOUNT, compile_pipeline

    params = {key: value for key, value in arguments.items() if value != ""}
    run_name = f"release-{arguments['model_name']}-{arguments['version']}"
    with tempfile.TemporaryDirectory(prefix="nexus-kfp-") as tmp:
        if package is None or not package.is_file():
            package = Path(tmp) / "release.yaml"
            compile_pipeline(package)
        digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
        try:
            with warnings.catch_warnings():
                # kfp.Client warns on every construction that it needs KFP >= 2.0.0-beta.2.
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host)
            pipeline_id, version_id = _pipeline_version(
                client, package, PIPELINE_NAME, f"{PIPELINE_NAME}-{digest}"
            )
            experiment = client.create_experiment(EXPERIMENT)
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=run_name,
                params=params,
                pipeline_id=pipeline_id,
                version_id=version_id,
                service_account=service_account or SERVICE_ACCOUNT,
            )
        except ApiException as exc:
            raise ReleaseError(
                f"KFP at {host} refused the release ({exc.status} {exc.reason}): "
                f"{(exc.body or '').strip()[:300]}"
            ) from exc
        except (HTTPError, OSError, TimeoutError) as exc:
            raise ReleaseError(f"KFP at {host} did not answer: {exc}") from exc
        except ValueError as exc:  # the client's own checks, e.g. two pipelines of one name
            raise ReleaseError(f"KFP at {host}: {exc}") from exc
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
