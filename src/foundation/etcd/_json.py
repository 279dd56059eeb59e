"""JSON with bounded nesting: what the library writes to etcd, and what it reads back.

Anyone who may write a prefix can put any bytes there (``etcdctl put``). A
JSON text nested a few hundred levels deep is valid, but ``json.loads``
recurses (its C decoder raises RecursionError past the interpreter's
limit, ~1000 frames counting the caller's), and so does any walk over the
decoded value: a registry's watch loop, a key decoder, a comparison. So
readers check the nesting *before* decoding and treat a deeper text as not
theirs, and writers refuse to write anything deeper than readers accept.

The check is cheap for the common case: the number of ``[`` and ``{`` bytes
bounds the depth from above, so a small record is cleared by two
``bytes.count`` calls. Only a text with more brackets than the limit is
scanned exactly, with bytes methods only (no Python loop per byte): escapes
and then strings are cut out, the brackets that remain are kept (both kinds
as one), and innermost pairs are removed one level per pass, at most
``limit`` passes. Measured on a 260 kB array of 10,000 small objects: 0.4 ms,
against 5 ms for ``json.loads`` of it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_NESTING", "loads_bounded", "too_deep"]

#: How deeply the library nests what it writes to etcd, and the deepest it
#: reads back: containers inside containers (a scalar is 0, ``[1]`` is 1,
#: ``{"a": [1]}`` is 2).
MAX_NESTING = 64

# Brackets only, both kinds as "[" and "]": in valid JSON they nest in
# matched pairs, so the depth is the same. (Unbalanced text never clears,
# and counts as too deep: not decodable either way.)
_UNIFY = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def too_deep(raw: bytes, limit: int = MAX_NESTING) -> bool:
    """True when the JSON text ``raw`` nests containers more than ``limit`` deep.

    Also true for bracket soup that is not JSON at all (unbalanced), which
    no caller may decode either.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    if b"\\" in raw:
        # An escaped backslash, then an escaped quote: neither ends a string.
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Outside strings: every other piece between quotes.
    text = b"".join(raw.split(b'"')[::2]).translate(_UNIFY, _NOT_BRACKETS)
    for _ in range(limit):
        if not text:
            return False
        shorter = text.replace(b"[]", b"")  # one level: non-overlapping, one scan
        if len(shorter) == len(text):
            return True  # unbalanced: not JSON
        text = shorter
    return bool(text)


def loads_bounded(raw: bytes | str, limit: int = MAX_NESTING) -> Any:
    """``json.loads(raw)`` for a text nested at most ``limit`` deep.

    Raises:
        ValueError: not JSON, or nested deeper than ``limit`` (the message
            says "nested deeper"); never RecursionError.
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if too_deep(data, limit):
        raise ValueError(f"JSON nested deeper than {limit} levels (or not JSON)")
    return json.loads(data)
