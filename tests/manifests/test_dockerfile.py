"""The Dockerfile installs exactly like the Makefile and starts the modules the tests start.

No Docker engine runs where the tests run, so the image is kept honest by reading it:
same lock file, same install command, non-root, pinned base, module entrypoints that exist.
"""

from __future__ import annotations

import json
import re
import tomllib
from importlib.util import find_spec

import pytest
import yaml

from tests.manifests.conftest import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            current = []
            stages[rest.split(" AS ")[-1].strip()] = current
        current.append((keyword, rest))
    return stages


def test_install_uses_the_makefiles_lock() -> None:
    runs = [rest for keyword, rest in _stages()["build"] if keyword == "RUN"]
    assert "pip install -c constraints.txt ." in runs
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install --quiet -c constraints.txt" in makefile
    assert (REPO_ROOT / "constraints.txt").is_file()


ENTRYPOINTS = [("transformer", "nexus.transformer"), ("router", "nexus.router")]


@pytest.mark.parametrize(("stage", "module"), ENTRYPOINTS)
def test_entrypoints_are_the_module_commands(stage: str, module: str) -> None:
    entry = [rest for keyword, rest in _stages()[stage] if keyword == "ENTRYPOINT"]
    assert [json.loads(e) for e in entry] == [["python", "-m", module]]
    assert find_spec(f"{module}.__main__") is not None


def test_final_stages_run_as_non_root_without_build_tools() -> None:
    stages = _stages()
    runtime = stages["runtime"]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users
    assert not users[-1].startswith(("0", "root"))
    for name in ("runtime", "transformer", "router"):
        text = " ".join(rest for _, rest in stages[name])
        for tool in ("gcc", "build-essential", "pip install", "apt-get install"):
            assert tool not in text, (name, tool)


def test_base_image_is_pinned() -> None:
    (arg,) = [rest for keyword, rest in _instructions() if keyword == "ARG"]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", image)
    froms = [rest for keyword, rest in _instructions() if keyword == "FROM"]
    assert all(f.startswith(("${PYTHON_IMAGE}", "runtime")) for f in froms)


def built_images() -> dict[str, str]:
    """``{target: image}`` from the header's ``docker build --target T -t IMAGE .`` lines."""
    found = re.findall(r"^#\s+docker build --target (\S+)\s+-t (\S+) \.$", DOCKERFILE, re.M)
    return dict(found)


def test_every_image_the_platform_runs_is_built_here() -> None:
    from nexus.manifests.model import ROUTER_IMAGE, TRANSFORMER_IMAGE
    from nexus.release.pipeline import RELEASE_IMAGE

    images = built_images()
    assert set(images) <= set(_stages()), "a documented target has no stage"
    assert images == {
        "transformer": TRANSFORMER_IMAGE,
        "router": ROUTER_IMAGE,
        "release": RELEASE_IMAGE,
    }


def test_the_compiled_pipeline_runs_only_the_release_image() -> None:
    text = (REPO_ROOT / "pipelines" / "compiled" / "release.yaml").read_text("utf-8")
    compiled = next(yaml.safe_load_all(text))  # the pipeline spec; then its platform spec
    executors = compiled["deploymentSpec"]["executors"].values()
    used = {executor["container"]["image"] for executor in executors}
    assert used == {built_images()["release"]}


def test_release_image_holds_what_the_steps_import_and_git() -> None:
    stages = _stages()
    build = [rest for keyword, rest in stages["build-release"] if keyword == "RUN"]
    assert 'pip install -c constraints.txt ".[release]"' in build
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))
    names = {
        re.split(r"[<>=\[ ]", r)[0] for r in extra["project"]["optional-dependencies"]["release"]
    }
    assert {"mlflow", "kfp", "kfp-kubernetes"} <= names
    lock = (REPO_ROOT / "constraints.txt").read_text("utf-8").splitlines()
    for name in ("mlflow", "kfp", "kfp-kubernetes"):
        assert any(line.startswith(f"{name}==") for line in lock), name
    release = stages["release"]
    text = " ".join(rest for _, rest in release)
    assert re.search(r"apt-get install --yes --no-install-recommends git\b", text)
    assert "pip install" not in text
    assert "gcc" not in text
    assert ("COPY", "--from=build-release /opt/nexus /opt/nexus") in release
    # The steps resolve pools from NEXUS_POOLS_FILE: the installed package has no platform/.
    assert ("COPY", "platform/pools.yaml /opt/nexus/pools.yaml") in release
    assert "NEXUS_POOLS_FILE=/opt/nexus/pools.yaml" in text
    users = [rest for keyword, rest in release if keyword == "USER"]
    assert users
    assert not users[-1].startswith(("0", "root"))
    # No entrypoint: KFP's launcher gives the command of every step.
    assert not [rest for keyword, rest in release if keyword == "ENTRYPOINT"]
    # A plain `docker build .` still produces the transformer.
    assert list(stages)[-1] == "transformer"
