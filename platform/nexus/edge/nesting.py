"""How deep a JSON document nests, measured without a recursive parser.

GJSON (``pygjson``, bindings to gjson.rs) validates and walks documents recursively: a
body of one million ``[`` overflows its stack and kills the process with SIGSEGV, and a
body nested 30,000 levels along a condition's path costs it 4.7 s of CPU with the GIL
held (measured on the development machine, 300 KB). orjson stops at 1,024 levels but
builds every object first (0.5 s for 1 MiB of small nested arrays). So the depth is
measured here with vectorised byte operations and nothing else parses a body that nests
deeper than the limit.

Measured on the development machine (shared, 2 cores) for 1 MiB bodies: 10-17 ms for one
million ``[``, for 8,192 blocks nested 128 deep and for 350,000 empty strings; under
0.05 ms for a chat request. ``deeper_than`` skips the scan (20 µs of numpy set-up per
call, a fifth of the router's CPU per request) when the body has too few opening brackets
to nest that deep, which is every ordinary request and answer. With the limit in force,
a Switch condition on a 1 MiB body costs at most about 35 ms in all (scan, ``validate``,
``get``) instead of seconds.

numpy is imported by the first scan, not with this module: it adds 14 MiB to the RSS of a
router that has its other modules loaded (49 MiB in ``scripts/footprint.py``'s table),
and a router that only sees ordinary bodies never scans. The first scan pays the import
once (0.15 s, ``python -X importtime``).
"""

from __future__ import annotations

DEFAULT_MAX_NESTING = 128
_STRUCTURAL = b'"[]{}'
_DROP = bytes(byte for byte in range(256) if byte not in _STRUCTURAL)
# Opening brackets count +1, closing ones -1 (0xFF read as int8), quotes 0.
_SIGNS = bytes.maketrans(b'"[]{}', b"\x00\x01\xff\x01\xff")


def nesting_depth(body: bytes) -> int:
    """The deepest bracket nesting outside strings; an upper bound for invalid JSON.

    Escapes are removed first (``\\\\`` before ``\\"``, as a JSON lexer reads them left
    to right), so every quote left delimits a string; brackets between an opening and a
    closing quote do not count. For a malformed body the figure may be too high, never
    too low for the part a parser would read before failing.
    """
    import numpy as np  # see the module docstring

    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structural = body.translate(None, _DROP)
    if not structural:
        return 0
    raw = np.frombuffer(structural, dtype=np.uint8)
    signs = np.frombuffer(structural.translate(_SIGNS), dtype=np.int8).astype(np.int32)
    if b'"' in structural:
        inside = (np.cumsum(raw == ord('"'), dtype=np.int32) & 1).astype(bool)
        signs[inside] = 0
    return max(0, int(np.cumsum(signs).max()))


def deeper_than(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests deeper than ``limit`` (``nesting_depth(body) > limit``).

    A body cannot nest deeper than it has opening brackets, strings included: when those
    are at most ``limit`` (two ``bytes.count`` passes, about 1 µs for a chat body) the
    vectorised scan is not needed.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    return nesting_depth(body) > limit
