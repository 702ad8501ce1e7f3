"""The model descriptions behind the committed ``inference_services/<env>/`` examples.

``python -m nexus.manifests.examples [REPO_ROOT]`` rewrites the files; the test suite
renders the same descriptions and fails when a committed file differs, so the examples
can never drift from what the renderer produces.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from nexus.manifests.model import CPU_WORKER_IMAGE, ModelDescription
from nexus.manifests.pools import Pool, load_pools
from nexus.manifests.render import render_cache_yaml, render_yaml

EXAMPLES: Mapping[str, Sequence[ModelDescription]] = {
    "prod": (
        ModelDescription(
            name="llama-70b",
            storage_uri="hf://meta-llama/Llama-3.1-70B-Instruct",
            runtime="vllm",
            pool="h100",
            environment="prod",
            min_replicas=1,
            max_replicas=4,
            # ~130 GiB of bf16 weights: four 80 GB GPUs, tensor parallel 4 (the renderer adds
            # --tensor-parallel-size and a memory-backed /dev/shm from `gpus`).
            gpus=4,
            # No `cache`: the h100 pool is tainted and KServe's model cache cannot fill
            # there (nexus.manifests.model_cache.cache_refusal).
            vllm_args=("--max-model-len=32768",),
            concurrency_target=16,
        ),
        ModelDescription(
            name="llama-8b",
            storage_uri="hf://meta-llama/Llama-3.1-8B-Instruct",
            runtime="huggingface",
            pool="a100",
            environment="prod",
            min_replicas=1,
            max_replicas=3,
            canary_percent=10,
            concurrency_target=8,
            model_aliases=("chat",),
        ),
        # The weighted split's second model and the fallback chain's smaller model: the
        # graphs in graphs/ address exactly these InferenceServices, and every model a
        # graph may route to answers for the graph's public model name, "chat".
        ModelDescription(
            name="mistral-7b",
            storage_uri="hf://mistralai/Mistral-7B-Instruct-v0.3",
            runtime="huggingface",
            pool="a100",
            environment="prod",
            min_replicas=1,
            max_replicas=2,
            concurrency_target=8,
            model_aliases=("chat",),
        ),
        ModelDescription(
            name="qwen-1-5b",
            storage_uri="hf://Qwen/Qwen2.5-1.5B-Instruct",
            runtime="huggingface",
            pool="a100",
            environment="prod",
            min_replicas=1,
            max_replicas=2,
            concurrency_target=16,
            model_aliases=("chat",),
        ),
    ),
    # The same three InferenceServices as prod, on the CPU pool with the vLLM-shaped CPU
    # worker as a custom predictor: graphs/ routes among them unchanged on one machine.
    "local": tuple(
        ModelDescription(
            name=name,
            storage_uri=uri,
            runtime="vllm",
            pool="cpu",
            environment="local",
            predictor_image=CPU_WORKER_IMAGE,
            concurrency_target=2,
            model_aliases=("chat",),
        )
        for name, uri in (
            ("llama-8b", "hf://meta-llama/Llama-3.1-8B-Instruct"),
            ("mistral-7b", "hf://mistralai/Mistral-7B-Instruct-v0.3"),
            ("qwen-1-5b", "hf://Qwen/Qwen2.5-1.5B-Instruct"),
        )
    ),
}


def example_files(pools: Mapping[str, Pool]) -> dict[Path, str]:
    """Relative path -> rendered text of every committed example (and its model cache)."""
    files: dict[Path, str] = {}
    for env, descriptions in EXAMPLES.items():
        for desc in descriptions:
            folder = Path("inference_services") / env
            files[folder / f"inferenceservice.{desc.name}.yaml"] = render_yaml([desc], pools)
            cache = render_cache_yaml(desc, pools)
            if cache is not None:
                files[folder / f"localmodelnamespacecache.{desc.name}.yaml"] = cache
    return files


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0]) if args else Path.cwd()
    for relative, text in example_files(load_pools(root / "platform" / "pools.yaml")).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
