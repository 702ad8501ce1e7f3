# Images of the transformer, the InferenceGraph router and the release pipeline's steps
# (one build, three targets):
#   docker build --target transformer -t ghcr.io/nexus-serving/nexus-transformer:0.1.0 .
#   docker build --target router      -t ghcr.io/nexus-serving/nexus-router:0.1.0 .
#   docker build --target release     -t ghcr.io/nexus-serving/nexus-release:0.1.0 .
# The install command is the Makefile's (`pip install -c constraints.txt`), from the same
# lock; tests/manifests/test_dockerfile.py keeps the two from drifting apart, and checks
# that the manifests and the compiled pipeline name only the images listed here.

# Pinned to an exact patch release; for reproducible rebuilds add its digest
# (`python:3.11.11-slim-bookworm@sha256:...`) once the registry is reachable from CI.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/nexus
ENV PATH=/opt/nexus/bin:$PATH
COPY pyproject.toml constraints.txt README.md ./
COPY platform ./platform
RUN pip install -c constraints.txt .
# The runtime needs neither pip nor setuptools; leaving them out shrinks the attack surface.
RUN pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 nexus \
    && useradd --system --uid 10001 --gid nexus --no-create-home --shell /usr/sbin/nologin nexus
COPY --from=build /opt/nexus /opt/nexus
ENV PATH=/opt/nexus/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
USER 10001:10001
# KServe passes --http_port 8080 to transformers; the router listens on 8080.
EXPOSE 8080

# The release pipeline's steps (pipelines/compiled/release.yaml): nexus with the `release`
# extra (MLflow, KFP, kfp-kubernetes) from the same lock, and git (with ssh) to push to the
# GitOps repository. KFP's launcher runs `sh -ec ... python3 -m kfp.dsl.executor_main`
# in it and mounts emptyDirs on /gcs, /s3, /minio, /.local, /.cache and /.config
# (kubeflow/pipelines 2.17.0, backend/src/v2/compiler/argocompiler/container.go), so a
# non-root user with a read-only image works.
FROM ${PYTHON_IMAGE} AS build-release
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/nexus
ENV PATH=/opt/nexus/bin:$PATH
COPY pyproject.toml constraints.txt README.md ./
COPY platform ./platform
RUN pip install -c constraints.txt ".[release]"
RUN pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE} AS release
RUN apt-get update \
    && apt-get install --yes --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 nexus \
    && useradd --system --uid 10001 --gid nexus --no-create-home --shell /usr/sbin/nologin nexus
COPY --from=build-release /opt/nexus /opt/nexus
# The GPU pools the resolve and render steps check a release against
# (nexus.release.resolve.default_pools_file): an installed package has no platform/ beside it.
COPY platform/pools.yaml /opt/nexus/pools.yaml
ENV PATH=/opt/nexus/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/tmp \
    NEXUS_POOLS_FILE=/opt/nexus/pools.yaml
WORKDIR /tmp
USER 10001:10001

FROM runtime AS router
ENTRYPOINT ["python", "-m", "nexus.router"]

# Last stage, so a plain `docker build .` produces the transformer.
FROM runtime AS transformer
ENTRYPOINT ["python", "-m", "nexus.transformer"]
