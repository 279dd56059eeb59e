"""Secondary indexes on metadata fields, shared by every local backend.

``Registry(indexes=("role",))`` makes ``select(ns, where={"role": "db"})``
cost O(matches) instead of a scan of the namespace. The index only narrows:
it returns candidate keys and the backend re-checks each one with
:meth:`Query.matches <foundation.registry._query.Query.matches>` on the live
entry, so a candidate that changed in the meantime is never returned wrongly
and the index may safely over-approximate.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ._query import Query

__all__ = ["MetadataIndex"]

# ns -> {name: None}; a dict rather than a set keeps insertion order cheap to
# reason about and costs the same.
_Names = dict[Any, dict[Any, None]]


class MetadataIndex:
    """Equality indexes on top-level metadata fields.

    For each indexed field: metadata value -> namespace -> names. A value that
    cannot be hashed (a list, a dict) cannot key that table, so its entry goes
    to a per-field fallback that every candidate set includes (the backend's
    re-check filters it).

    Thread-safe: every method holds one ``threading.RLock`` (re-entrant, since
    hashing a metadata value may run Python code). Backends call :meth:`add`
    and :meth:`remove` inside their write lock, with the stored (read-only)
    metadata, so the index changes in step with the table.

    Args:
        fields: the metadata fields to index; each a non-empty ``str``.

    Raises:
        ConfigError: ``fields`` is a bare str, or holds a non-str or empty field.
    """

    __slots__ = ("_fallback", "_fields", "_lock", "_values")

    def __init__(self, fields: Sequence[str]) -> None:
        if isinstance(fields, str):
            raise ConfigError(
                f"indexes must be a sequence of field names, not the str {fields!r};"
                f" write indexes=({fields!r},)"
            )
        checked: list[str] = []
        for field in fields:
            if not isinstance(field, str) or not field:
                raise ConfigError(
                    f"index field {field!r} must be a non-empty str naming a top-level metadata key"
                )
            if field not in checked:
                checked.append(field)
        self._fields: tuple[str, ...] = tuple(checked)
        self._lock = threading.RLock()
        self._values: dict[str, dict[Any, _Names]] = {f: {} for f in self._fields}
        self._fallback: dict[str, _Names] = {f: {} for f in self._fields}

    @property
    def fields(self) -> tuple[str, ...]:
        """The indexed fields, in declaration order (duplicates dropped)."""
        return self._fields

    def add(self, ns: Any, name: Any, metadata: Mapping[Any, Any]) -> None:
        """Index the entry ``(ns, name)`` under each indexed field it has."""
        if not metadata:
            return
        with self._lock:
            for field in self._fields:
                value = metadata.get(field, _MISSING)
                if value is _MISSING:
                    continue
                try:
                    bucket = self._values[field].setdefault(value, {})
                except Exception:
                    # Unhashable (or a raising __eq__): always a candidate.
                    self._fallback[field].setdefault(ns, {})[name] = None
                else:
                    bucket.setdefault(ns, {})[name] = None

    def remove(self, ns: Any, name: Any, metadata: Mapping[Any, Any]) -> None:
        """Forget ``(ns, name)``; ``metadata`` is what was passed to :meth:`add`."""
        if not metadata:
            return
        with self._lock:
            for field in self._fields:
                value = metadata.get(field, _MISSING)
                if value is _MISSING:
                    continue
                values = self._values[field]
                try:
                    bucket = values.get(value)
                except Exception:
                    bucket = None
                if bucket is not None:
                    if _discard(bucket, ns, name) and not bucket:
                        with contextlib.suppress(Exception):
                            del values[value]
                    continue
                _discard(self._fallback[field], ns, name)

    def candidates(self, ns: Any, query: Query) -> set[tuple[Any, Any]] | None:
        """Keys that may match ``query`` in ``ns``, or None if the index cannot tell.

        Args:
            ns: a namespace, or ``None`` for every namespace.
            query: the compiled query; only its ``equalities`` on indexed
                fields are used.

        Returns:
            A new set of ``(ns, name)`` pairs (always pairs, whether or not
            ``ns`` is given: the caller's ``ns``, or for ``ns=None`` each
            namespace as stored), a superset of the matching keys, to be
            looked up in the table and re-checked; or ``None`` when no indexed
            field is tested for equality, and the caller must scan.
        """
        wanted = [(f, v) for f, v in query.equalities.items() if f in self._values]
        if not wanted:
            return None
        with self._lock:
            result: set[tuple[Any, Any]] | None = None
            for field, value in wanted:
                try:
                    bucket = self._values[field].get(value)
                except Exception:
                    continue  # cannot narrow on this field; others may
                keys = _pairs(bucket, ns)
                keys |= _pairs(self._fallback[field], ns)
                result = keys if result is None else result & keys
                if not result:
                    return set()
            return result


_MISSING: Any = object()


def _discard(names: _Names, ns: Any, name: Any) -> bool:
    """Remove ``name`` from ``names[ns]``; return whether it was there."""
    try:
        in_ns = names.get(ns)
        if in_ns is None or in_ns.pop(name, _MISSING) is _MISSING:
            return False
        if not in_ns:
            del names[ns]
    except Exception:
        return False
    return True


def _pairs(names: _Names | None, ns: Any) -> set[tuple[Any, Any]]:
    # Building the set hashes and compares the keys, which may run a key's
    # __eq__, which may write to the registry and so to these very dicts:
    # iterate over copies (taken in C, no user code) never the live dicts.
    if not names:
        return set()
    if ns is None:
        return {(n, name) for n, in_ns in list(names.items()) for name in list(in_ns)}
    try:
        in_ns = names.get(ns)
    except Exception:
        return set()
    if not in_ns:
        return set()
    return {(ns, name) for name in list(in_ns)}
