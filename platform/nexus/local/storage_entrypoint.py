"""KServe's storage initializer entry point, run with the vLLM environment's Python.

In a cluster KServe injects an init container that runs
``python/storage-initializer/scripts/initializer-entrypoint`` (kserve/kserve, master of
2026-12) with ``src_uri dest_path`` pairs; it calls ``kserve_storage.Storage.download_files``
and exits 1 on failure. This file does the same with the same library, so a local revision
gets its weights exactly as a pod gets ``/mnt/models``. It imports nothing from ``nexus``:
it runs in ``.venv-vllm`` (where ``kserve-storage`` is installed, see
``vllm/constraints-cpu.txt``), as the initializer runs in its own image.

    .venv-vllm/bin/python platform/nexus/local/storage_entrypoint.py SRC_URI DEST_DIR
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: storage_entrypoint.py SRC_URI DEST_DIR", file=sys.stderr)
        return 2
    try:
        from kserve_storage import Storage  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"kserve-storage is not installed in {sys.prefix}: {exc}", file=sys.stderr)
        return 1
    try:
        Storage.download_files([argv[0]], [argv[1]])
    except Exception as exc:  # noqa: BLE001 - the entry point KServe ships catches the same
        print(f"storage initialization of {argv[0]} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
