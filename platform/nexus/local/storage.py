"""The local storage initializer: a revision's weights in its own folder, as in its pod.

KServe's webhook injects an init container into every predictor pod with a ``storageUri``;
it downloads the URI with ``kserve_storage`` into ``/mnt/models``, an emptyDir the model
container mounts (``pkg/webhook/admission/pod/storage_initializer_injector.go``). Here the
same library runs in the vLLM environment (``storage_entrypoint.py``, KServe's entry point
redone) into ``<state>/models/<revision>``, once per revision, before its engine starts.
A failed download leaves no folder behind, so the next attempt starts clean, as a new pod
would. Local URIs (``file://`` and paths, what a local MLflow artifact store gives) are
linked file by file rather than copied (``Storage._download_local``).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from nexus.errors import PlatformError

ENTRYPOINT = Path(__file__).with_name("storage_entrypoint.py")
DONE = ".nexus-storage-done"
OUTPUT_TAIL = 600  # characters of the initializer's output quoted in an error


class StorageInitializer:
    """Downloads into ``root/<revision>`` with ``python`` (an interpreter with kserve-storage)."""

    def __init__(self, *, python: Path, root: Path, timeout: float = 600.0) -> None:
        self.python = python
        self.root = root
        # Knative's progress deadline (600 s) bounds the initializer in a cluster too.
        self.timeout = timeout

    def folder(self, revision: str) -> Path:
        return self.root / revision

    def placed(self, revision: str) -> bool:
        return (self.folder(revision) / DONE).exists()

    async def place(self, uri: str, revision: str) -> Path:
        """The revision's model folder, downloading ``uri`` into it unless done already."""
        dest = self.folder(revision)
        if self.placed(revision):
            return dest
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        # -P: the entry point's folder holds a `platform.py` that must not shadow the stdlib.
        process = await asyncio.create_subprocess_exec(
            str(self.python), "-P", str(ENTRYPOINT), uri, str(partial),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            shutil.rmtree(partial, ignore_errors=True)
            raise PlatformError(
                f"storage initializer for {revision} did not finish {uri} in {self.timeout:.0f} s"
            ) from None
        if process.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = output.decode(errors="replace").strip()[-OUTPUT_TAIL:]
            raise PlatformError(f"storage initializer for {revision} failed on {uri}: {tail}")
        (partial / DONE).touch()
        partial.rename(dest)
        return dest

    def remove(self, revision: str) -> None:
        """Drop a stopped revision's folder (its pod's emptyDir goes with the pod)."""
        shutil.rmtree(self.folder(revision), ignore_errors=True)
