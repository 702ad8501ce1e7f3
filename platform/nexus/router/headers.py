"""Header propagation: which incoming headers every step call carries (``PROPAGATE_HEADERS``).

KServe's controller passes ``inferenceservice-config`` → ``router.headers.propagate`` to the
router as the comma-separated env ``PROPAGATE_HEADERS``. The router compiles each entry as a
Go regexp and, per step call, copies every incoming header whose *canonical* name
(``x-api-key`` → ``X-Api-Key``) the pattern matches. Two details carried over on purpose:

- Go's ``Regexp.MatchString`` is a search, not a full match: ``Auth`` propagates
  ``Authorization`` and ``X-Auth-Token``; anchor with ``^...$`` for an exact name. Patterns
  are case-sensitive against the canonical name (``authorization`` matches nothing).
- A pattern that does not compile is logged and skipped; the others still apply.

Python's ``re`` stands in for RE2; the two agree on the patterns header lists use (literals,
``.*``, classes, alternation). Framing headers (``Host``, ``Content-Length``, hop-by-hop)
are never copied: Go's server strips ``Host`` and its client sets framing itself. Nor is
``X-Nexus-Fallback``, which only the router sets (``sequence.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from nexus.edge.wire import FALLBACK_HEADER

log = logging.getLogger("nexus.router")

# Bytes Go's textproto accepts in a header name; any other byte leaves the name unchanged.
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NEVER = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        # Set by the router itself on a fallback step (sequence.py); a client's value would
        # let it skip the request count of the transformer it reaches.
        FALLBACK_HEADER,
    }
)
_CACHE_LIMIT = 4096


def canonical_header_name(raw: bytes) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey`` for a lower- or mixed-case header name."""
    if not raw or any(b not in _TOKEN for b in raw):
        return raw.decode("latin-1")
    return "-".join(part[:1].upper() + part[1:].lower() for part in raw.decode().split("-"))


# Sent as Go's router would send it: a canonical name (``sequence.py``, ``continuation.py``).
FALLBACK_HEADER_NAME = canonical_header_name(FALLBACK_HEADER)


def compile_patterns(spec: str) -> tuple[re.Pattern[str], ...]:
    """Compile ``PROPAGATE_HEADERS``; a bad entry is logged and skipped, as in KServe."""
    compiled = []
    for pattern in spec.split(","):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            log.error("failed to compile header pattern %r: %s", pattern, exc)
    return tuple(compiled)


class HeaderPropagation:
    """Selects the headers to forward; decisions are cached per header name."""

    def __init__(self, patterns: Iterable[re.Pattern[str]]) -> None:
        self.patterns = tuple(patterns)
        self._decisions: dict[bytes, str | None] = {}

    def _decide(self, raw_name: bytes) -> str | None:
        if raw_name in _NEVER:
            return None
        canonical = canonical_header_name(raw_name)
        if any(p.search(canonical) for p in self.patterns):
            return canonical
        return None

    def select(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
        """The ``(canonical name, value)`` pairs to send with every step call."""
        if not self.patterns:
            return []
        decisions = self._decisions
        selected: list[tuple[str, str]] = []
        for raw_name, value in headers:
            name = raw_name.lower()
            if name in decisions:
                canonical = decisions[name]
            else:
                canonical = self._decide(name)
                if len(decisions) < _CACHE_LIMIT:
                    decisions[name] = canonical
            if canonical is not None:
                selected.append((canonical, value.decode("latin-1")))
        return selected


def passed_back(headers: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """The headers of a step's answer that the router's client gets too.

    KServe's router drops every header of a step's answer, so a 429 from the transformer
    reached the client without ``Retry-After`` and the ``openai`` client could not honour
    it (issue 11). ``Retry-After`` (RFC 9110 §10.2.3) and ``x-ratelimit-*`` (the
    transformer's limit state, named as OpenAI names its own) are passed back.
    """
    return tuple(
        (name, value)
        for name, value in headers
        if name == b"retry-after" or name.startswith(b"x-ratelimit-")
    )
