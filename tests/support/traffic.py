"""Steady chat completions from a thread, while the test's own thread drives something else."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import httpx


class Traffic:
    """POSTs a chat completion to ``url`` every ``interval`` seconds until the block ends.

    A thread, because what the test drives meanwhile (a release pipeline, a Git push and
    the wait for it) blocks the test's own thread. ``statuses`` counts the answers by
    HTTP status, transport errors under 0. The default pace, 5 a second at most, stays
    below the transformers' default limit of 600 requests a minute per key and model.
    """

    def __init__(
        self, url: str, *, headers: dict[str, str], model: str = "chat", interval: float = 0.2
    ) -> None:
        self.url, self.headers, self.model, self.interval = url, headers, model, interval
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._httpx_level = logging.NOTSET

    def _run(self) -> None:
        body = {"model": self.model, "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    status = client.post(self.url, json=body).status_code
                except httpx.HTTPError:
                    status = 0
                self.statuses[status] += 1
                self._stop.wait(self.interval)

    def __enter__(self) -> Traffic:
        # httpx logs every request at INFO; a pipeline's log is not the place for them.
        self._httpx_level = logging.getLogger("httpx").level
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        logging.getLogger("httpx").setLevel(self._httpx_level)
