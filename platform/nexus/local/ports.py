"""Ports of the local platform, allocated from one range and remembered across restarts.

Every process (and every in-process listener such as an InferenceService front) gets a
port by name. The book lives in ``<state>/ports.json`` so a second ``nexus up`` reuses
the same ports: bookmarks, curl commands and Prometheus history stay valid. A new name
takes the lowest port of the range that is neither booked nor in use; a booked port that
another program took meanwhile is reported by whoever binds it (``PlatformError``).

``nexus up`` books the infrastructure ports before the controller starts; afterwards
only the controller writes the book, so one writer at a time never loses an entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nexus.errors import PlatformError
from nexus.local import atomic_file
from nexus.local.supervisor import port_in_use

DEFAULT_BASE = 18100
DEFAULT_SPAN = 200


class PortBook:
    """Name -> port, persisted as JSON; ``in_use`` is injectable for tests."""

    def __init__(
        self,
        path: Path,
        *,
        base: int | None = None,
        span: int | None = None,
        in_use: Callable[[int], bool] = port_in_use,
    ) -> None:
        """``base``/``span`` ``None``: the range booked before, else the defaults."""
        self.path = path
        saved = self._read()
        base = base if base is not None else int(saved.get("base", DEFAULT_BASE))
        span = span if span is not None else int(saved.get("span", DEFAULT_SPAN))
        if base < 1024 or base + span > 65536:
            raise PlatformError(f"port range {base}..{base + span - 1} is not within 1024..65535")
        self.base = base
        self.span = span
        self._in_use = in_use
        self._ports: dict[str, int] = self._load()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise PlatformError(
                f"{self.path} is unreadable ({exc}); delete it to re-allocate"
            ) from None
        return data if isinstance(data, dict) else {}

    def _load(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self._read().get("ports", {}).items()}

    def reload(self) -> None:
        self._ports = self._load()

    def get(self, name: str) -> int | None:
        return self._ports.get(name)

    def allocate(self, name: str, *, fixed: int | None = None) -> int:
        """The port booked for ``name``; books ``fixed`` or the lowest free one first."""
        if fixed is not None:
            if self._ports.get(name) != fixed:
                self._ports[name] = fixed
                self._save()
            return fixed
        if name in self._ports:
            return self._ports[name]
        taken = set(self._ports.values())
        for port in range(self.base, self.base + self.span):
            if port not in taken and not self._in_use(port):
                self._ports[name] = port
                self._save()
                return port
        raise PlatformError(
            f"no free port left in {self.base}..{self.base + self.span - 1} for {name}; "
            "choose another range with --port-base"
        )

    def release(self, name: str) -> None:
        if self._ports.pop(name, None) is not None:
            self._save()

    def snapshot(self) -> dict[str, int]:
        return dict(self._ports)

    def _save(self) -> None:
        payload = {"base": self.base, "span": self.span, "ports": dict(sorted(self._ports.items()))}
        atomic_file.write_text(self.path, json.dumps(payload, indent=2) + "\n")
