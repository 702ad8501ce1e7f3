"""How big a model's weights are and how much GPU memory a predictor gets for them.

Shared by the renderer (GPU count, the model cache's size) and the linter's weights-fit
rule, so that both read a model the same way: parameters from the ``nexus.dev/parameters``
annotation (the registry's tag) or the model id (``Llama-3.1-70B-Instruct`` -> 70e9), bytes
per parameter from vLLM's ``--dtype`` and ``--quantization`` (or a quantization named in
the model id), usable GPU memory as count x per-GPU memory x ``--gpu-memory-utilization``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

PARAMETERS_ANNOTATION: Final = "nexus.dev/parameters"
# vLLM's own default for --gpu-memory-utilization (vllm/config/cache.py: 0.9).
DEFAULT_GPU_MEMORY_UTILIZATION: Final = 0.9
# Bytes per parameter of the weights as vLLM loads them. bf16/fp16 are 2 bytes; "auto" uses
# the checkpoint's dtype, which for every model Nexus serves is bf16 or fp16.
DTYPE_BYTES: Final[dict[str, float]] = {
    "auto": 2,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float32": 4,
    "float": 4,
}
QUANT_BYTES: Final[dict[str, float]] = {
    "fp8": 1,
    "int8": 1,
    "w8a8": 1,
    "awq": 0.5,
    "gptq": 0.5,
    "int4": 0.5,
    "bitsandbytes": 0.5,
    "gguf": 0.5,
}

_SIZE = re.compile(r"^(?:(\d+)x)?(\d+(?:\.\d+)?)([bBmM])$")


def parse_parameters(text: str) -> float | None:
    """``"70B"`` -> 70e9, ``"8x7B"`` -> 56e9, ``"500M"`` -> 5e8; None when not a size."""
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    experts = int(match.group(1) or 1)
    scale = 1e9 if match.group(3) in "bB" else 1e6
    return experts * float(match.group(2)) * scale


def parameters_of(model_id: str) -> float | None:
    """Parameters named in a model id or storage URI: the last ``<n>B`` token of its name."""
    name = model_id.rstrip("/").rsplit("/", 1)[-1]
    sizes = [s for s in (parse_parameters(tok) for tok in re.split(r"[-_]", name)) if s]
    return max(sizes) if sizes else None


def arg_value(args: Sequence[str], *flags: str) -> str | None:
    """The value of ``--flag=value`` or ``--flag value`` (last one wins, as in argparse)."""
    value: str | None = None
    for index, arg in enumerate(args):
        for flag in flags:
            if arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
            elif arg == flag and index + 1 < len(args):
                value = args[index + 1]
    return value


def bytes_per_parameter(args: Sequence[str], model_id: str) -> float:
    """From ``--quantization``, a quantization named in the model id, else ``--dtype``."""
    quant = arg_value(args, "--quantization", "-q")
    if quant is not None and quant.lower() in QUANT_BYTES:
        return QUANT_BYTES[quant.lower()]
    lowered = model_id.lower()
    for name, size in QUANT_BYTES.items():
        if re.search(rf"(^|[-_/]){name}($|[-_])", lowered):
            return size
    dtype = (arg_value(args, "--dtype") or "auto").lower()
    return DTYPE_BYTES.get(dtype, 2)


def gpu_memory_utilization(args: Sequence[str]) -> float:
    raw = arg_value(args, "--gpu-memory-utilization")
    try:
        return float(raw) if raw is not None else DEFAULT_GPU_MEMORY_UTILIZATION
    except ValueError:
        return DEFAULT_GPU_MEMORY_UTILIZATION


def weights_bytes(parameters: float, args: Sequence[str], model_id: str) -> int:
    return int(parameters * bytes_per_parameter(args, model_id))


def usable_bytes(gpus: int, gpu_memory: int, args: Sequence[str]) -> int:
    """The GPU memory vLLM may use for weights and KV cache together."""
    return int(gpus * gpu_memory * gpu_memory_utilization(args))


# Nexus's policy, not an upstream limit: weights may take at most this share of the usable
# memory, so that vLLM has room for a useful KV cache (it refuses to start with none).
WEIGHTS_SHARE: Final = 0.75


def fits(weights: int, gpus: int, gpu_memory: int, args: Sequence[str]) -> bool:
    return weights <= WEIGHTS_SHARE * usable_bytes(gpus, gpu_memory, args)


def gpus_needed(weights: int, gpu_memory: int, args: Sequence[str]) -> int:
    """The smallest power of two of GPUs the weights fit on (tensor parallel sizes must
    divide the attention heads, which powers of two do for every model Nexus serves)."""
    gpus = 1
    while not fits(weights, gpus, gpu_memory, args) and gpus < 64:
        gpus *= 2
    return gpus


def gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"
