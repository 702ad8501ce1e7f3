"""The only module that talks to MLflow: versions, tags and aliases, MLflow errors translated.

Everything returns plain Nexus values (``VersionInfo``) so that callers never handle
MLflow entities or ``MlflowException``. MLflow's HTTP client retries a refused
connection for minutes by default; a release step should rather fail fast and let the
pipeline's retry policy decide, hence the bounded retries set in ``connect``, which also
asks the server's ``/health`` first: a registry that does not answer is one
``RegistryError`` naming its URL, before MLflow's client logs urllib3's retries and
raises ``HTTPConnectionPool(...)``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nexus.errors import ConfigError, RegistryError, VersionNotFound
from nexus.manifests.model import LOCAL_STORAGE_SCHEME
from nexus.manifests.pools import Pool
from nexus.registry import conventions as c

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")
HEALTH_TIMEOUT = 5.0  # seconds for the /health answer before the registry is unreachable
EVALUATION_SET_FILE = "evaluation_set.json"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One model version as releases see it."""

    name: str
    version: str
    source: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


def _translate(what: str, exc: Exception) -> RegistryError:
    code = getattr(exc, "error_code", "")
    message = getattr(exc, "message", str(exc))
    if code == "RESOURCE_DOES_NOT_EXIST":
        return VersionNotFound(f"{what}: {message}")
    return RegistryError(f"{what}: {message}")


def _check_reachable(tracking_uri: str) -> None:
    """``RegistryError`` naming the URL and what to do when an HTTP registry does not answer.

    Any HTTP answer counts (MLflow's ``/health``; a server behind a proxy may answer 404):
    only a refused, reset or timed-out connection is unreachable.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return  # a file or database store: MLflow opens it in-process
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT):  # noqa: S310 - http(s) only
            return
    except urllib.error.HTTPError as exc:
        exc.close()
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(
            f"the MLflow registry at {tracking_uri} is unreachable ({reason}): start it "
            "(`nexus up` runs one; `nexus status` shows whether it is restarting) or point "
            "--tracking-uri / MLFLOW_TRACKING_URI at a running server"
        ) from None


class Registry:
    """Model versions, tags and aliases of one MLflow tracking server."""

    def __init__(self, client: MlflowClient, *, tracking_uri: str) -> None:
        self._client = client
        self.tracking_uri = tracking_uri

    @classmethod
    def connect(cls, tracking_uri: str) -> Registry:
        if not tracking_uri:
            raise ConfigError("no MLflow tracking URI (flag --tracking-uri or MLFLOW_TRACKING_URI)")
        # Set before MLflow reads them; an operator's explicit values are kept.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        _check_reachable(tracking_uri)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        return cls(client, tracking_uri=tracking_uri)

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except MlflowException as exc:
            raise _translate(what, exc) from exc

    def version(self, name: str, version: str) -> VersionInfo:
        mv = self._call(
            f"model {name!r} version {version}", self._client.get_model_version, name, version
        )
        return VersionInfo(
            name=name,
            version=str(mv.version),
            source=str(mv.source or ""),
            tags=dict(mv.tags or {}),
            aliases=tuple(mv.aliases or ()),
        )

    def model_tags(self, name: str) -> dict[str, str]:
        model = self._call(f"model {name!r}", self._client.get_registered_model, name)
        return dict(model.tags or {})

    def alias(self, name: str, alias: str) -> str | None:
        """The version an alias points to, or ``None`` when the alias (or model) is unset."""
        model = self._call(f"model {name!r}", self._client.get_registered_model, name)
        aliases: Mapping[str, str] = model.aliases or {}
        value = aliases.get(alias)
        return None if value is None else str(value)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(
            f"alias {alias} of {name!r} to version {version}",
            self._client.set_registered_model_alias,
            name,
            alias,
            version,
        )

    def delete_alias(self, name: str, alias: str) -> None:
        """Drop the alias; a missing alias is not an error (releases are retried)."""
        if self.alias(name, alias) is None:
            return
        self._call(
            f"delete alias {alias} of {name!r}",
            self._client.delete_registered_model_alias,
            name,
            alias,
        )

    def public_names(self, name: str) -> tuple[str, ...]:
        """The extra model names the registered model answers for (``serving.model_aliases``)."""
        raw = self.model_tags(name).get(c.SERVING_MODEL_ALIASES, "")
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in sorted(tags.items()):
            self._call(
                f"tag {key} of {name!r} version {version}",
                self._client.set_model_version_tag,
                name,
                version,
                key,
                value,
            )

    def register(
        self,
        name: str,
        spec: c.ServingSpec,
        pools: Mapping[str, Pool],
        *,
        fallback: str = "",
        model_aliases: tuple[str, ...] = (),
    ) -> VersionInfo:
        """Validate, then create the registered model if needed and a new version.

        Validation happens first and fully, so a bad value writes nothing. The version's
        ``source`` is the storage URI: KServe downloads from there, MLflow keeps no weights.
        An MLflow artifact URI (``runs:/<run>/<path>``, or the ``file://`` path of a run's
        artifacts in a local store) is registered as its location, with its run
        (``artifact_source``).
        """
        source, run_id = self.artifact_source(spec.storage_uri)
        spec = dataclasses.replace(spec, storage_uri=source)
        description = c.validate(name, spec, pools)
        if fallback:
            dataclasses.replace(description, name=fallback)  # the same name rules apply
        for alias in model_aliases:
            dataclasses.replace(description, name=alias)
        from mlflow.exceptions import MlflowException

        model_tags = {c.SERVING_FALLBACK: fallback} if fallback else {}
        if model_aliases:
            model_tags[c.SERVING_MODEL_ALIASES] = ",".join(model_aliases)
        try:
            self._client.create_registered_model(name, tags=model_tags)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise _translate(f"create model {name!r}", exc) from exc
            for key, value in model_tags.items():
                self._call(
                    f"tag {key} of {name!r}",
                    self._client.set_registered_model_tag,
                    name,
                    key,
                    value,
                )
        try:
            mv = self._client.create_model_version(
                name, source=spec.storage_uri, run_id=run_id, tags=spec.tags()
            )
        except MlflowException as exc:
            error = _translate(f"create a version of {name!r}", exc)
            if spec.storage_uri.startswith("https://"):
                # MLflow refuses host-addressed sources unless the server allows them.
                error = RegistryError(
                    f"{error}; start the MLflow server with "
                    "MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES=https to register https:// "
                    "storage URIs"
                )
            raise error from exc
        return self.version(name, str(mv.version))

    def artifact_source(self, uri: str) -> tuple[str, str | None]:
        """``uri`` as a storage URI and the MLflow run whose artifacts it names (if any).

        ``runs:/<run>/<path>`` becomes the run's artifact location plus ``path`` (a plain path
        of a local store becomes ``file://``). A ``file://`` path under a run's artifacts
        (``<root>/<experiment>/<run>/artifacts/...``, MLflow's file store layout) keeps its
        URI and gains the run: MLflow registers a local source only with the run that holds
        it (``create_model_version`` answers INVALID_PARAMETER_VALUE otherwise).
        """
        if uri.startswith("runs:/"):
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            base = self._artifact_uri(run_id)
            return (f"{base.rstrip('/')}/{path}" if path else base), run_id
        if uri.startswith(LOCAL_STORAGE_SCHEME):
            parts = Path(uri.removeprefix(LOCAL_STORAGE_SCHEME)).parts
            if "artifacts" in parts[1:]:
                run_id = parts[len(parts) - 1 - parts[::-1].index("artifacts") - 1]
                from mlflow.exceptions import MlflowException

                try:
                    base = self._artifact_uri(run_id)
                except (MlflowException, RegistryError):
                    return uri, None
                if uri.startswith(base.rstrip("/") + "/") or uri == base:
                    return uri, run_id
        return uri, None

    def _artifact_uri(self, run_id: str) -> str:
        run = self._call(f"run {run_id!r}", self._client.get_run, run_id)
        base = str(run.info.artifact_uri)
        if "://" not in base and not base.startswith("mlflow-artifacts:"):
            base = f"{LOCAL_STORAGE_SCHEME}{base}"
        return base

    def log_files(self, folder: Path, *, run_name: str, experiment: str = "nexus-models") -> str:
        """Log the files of ``folder`` as the artifacts (under ``model/``) of a new run of
        ``experiment``; their artifact URI. A local artifact store gives a plain path, which
        becomes ``file://`` (the local scheme of ``kserve_storage``)."""
        return self._log_files(folder, run_name=run_name, experiment=experiment)[0]

    def _log_files(self, folder: Path, *, run_name: str, experiment: str) -> tuple[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self._client.create_experiment(experiment)
            )
            run = self._client.create_run(experiment_id, run_name=run_name)
            self._client.log_artifacts(run.info.run_id, str(folder), "model")
            self._client.set_terminated(run.info.run_id)
        except MlflowException as exc:
            raise _translate(f"log the files of {folder}", exc) from exc
        return f"{self._artifact_uri(run.info.run_id)}/model", run.info.run_id

    def register_files(
        self, name: str, folder: Path, tags: Mapping[str, str], *, experiment: str = "nexus-models"
    ) -> VersionInfo:
        """A new version of ``name`` whose artifacts are the files of ``folder``.

        The version's source and its ``serving.storage_uri`` tag are the files' artifact URI
        (``log_files``), so KServe's storage initializer downloads exactly what MLflow holds.
        """
        from mlflow.exceptions import MlflowException

        uri, run_id = self._log_files(folder, run_name=f"{name}-files", experiment=experiment)
        try:
            try:
                self._client.create_registered_model(name)
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                    raise
            all_tags = {**tags, c.SERVING_STORAGE_URI: uri}
            mv = self._client.create_model_version(name, source=uri, run_id=run_id, tags=all_tags)
        except MlflowException as exc:
            raise _translate(f"register the files of {folder} as {name!r}", exc) from exc
        return self.version(name, str(mv.version))

    def set_model_tags(self, name: str, tags: Mapping[str, str]) -> None:
        """Tags of the registered model itself (``serving.fallback``, ``quality.*``)."""
        for key, value in sorted(tags.items()):
            self._call(
                f"tag {key} of {name!r}", self._client.set_registered_model_tag, name, key, value
            )

    def attach_evaluation_set(
        self, name: str, text: str, *, experiment: str = "nexus-evaluation-sets"
    ) -> str:
        """Keep ``text`` (the set's JSON) as a run artifact; point the model's tag at it.

        A registered model has no artifacts of its own in MLflow, so the set is the file
        ``evaluation_set.json`` of a run, and the model's ``quality.evaluation_set`` tag holds
        its ``runs:/<run_id>/evaluation_set.json`` URI. Every attach is a new run, so the set a
        past release used stays readable. Returns the URI.
        """
        from mlflow.exceptions import MlflowException

        self.model_tags(name)  # the model must exist: VersionNotFound names it otherwise
        try:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self._client.create_experiment(experiment)
            )
            run = self._client.create_run(experiment_id, run_name=f"{name}-evaluation-set")
            self._client.log_text(run.info.run_id, text, EVALUATION_SET_FILE)
            self._client.set_terminated(run.info.run_id)
        except MlflowException as exc:
            raise _translate(f"attach an evaluation set to {name!r}", exc) from exc
        uri = f"runs:/{run.info.run_id}/{EVALUATION_SET_FILE}"
        self.set_model_tags(name, {c.QUALITY_EVALUATION_SET: uri})
        return uri

    def evaluation_set(self, name: str) -> str | None:
        """The JSON text of the model's evaluation set, or ``None`` when none is attached."""
        uri = self.model_tags(name).get(c.QUALITY_EVALUATION_SET)
        if not uri:
            return None
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if not uri.startswith("runs:/") or not run_id or not path:
            raise RegistryError(f"tag {c.QUALITY_EVALUATION_SET}={uri!r} is not runs:/<run>/<path>")
        with tempfile.TemporaryDirectory(prefix="nexus-evaluation-") as tmp:
            local = self._call(
                f"download {uri}", self._client.download_artifacts, run_id, path, tmp
            )
            return Path(local).read_text(encoding="utf-8")
