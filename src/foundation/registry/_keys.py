"""Key, owner, value and metadata checks shared by every local backend.

Both twins (``_python.py`` and the Cython ``_native.pyx``) import these, so a
bad key, owner or metadata gives the very same error class and message on
either backend, which is what lets the conformance suite run unchanged on
both.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

from ..errors import InvalidKey, InvalidMetadata
from ._types import EMPTY_METADATA

__all__ = [
    "check_owner",
    "copy_metadata",
    "hash_key",
    "invalid_key",
    "same_owner",
    "same_value",
]


def copy_metadata(metadata: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    """Return the registry's own read-only shallow copy of ``metadata``.

    The copy is taken before anything is written, so a caller that mutates
    its dict afterwards changes nothing in the registry, and a mapping that
    fails half-way through iteration leaves the registry untouched.

    Args:
        metadata: ``None`` or a :class:`collections.abc.Mapping`.

    Returns:
        :data:`~foundation.registry._types.EMPTY_METADATA` for ``None`` or an
        empty mapping (so entries without metadata share one object and cost
        no dict of their own), else a ``MappingProxyType`` over a new dict.

    Raises:
        InvalidMetadata: ``metadata`` is not a mapping, or reading it raised
            (the original error is the ``__cause__``).
    """
    if metadata is None:
        return EMPTY_METADATA
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata(
            metadata,
            "metadata must be a mapping (e.g. a dict) or None,"
            f" not {type(metadata).__name__}; pass metadata={{...}}",
        )
    try:
        copied = dict(metadata)
    except Exception as exc:
        raise InvalidMetadata(
            metadata, f"reading the mapping raised {type(exc).__name__}: {exc}"
        ) from exc
    if not copied:
        return EMPTY_METADATA
    return MappingProxyType(copied)


def check_owner(owner: object) -> None:
    """Refuse an owner that cannot index the owner table.

    ``unregister_owner`` is O(the owner's entries) only because owners key a
    dict, so an owner must be hashable; checking up front keeps a bad owner
    from leaving a half-written entry behind.

    Raises:
        InvalidKey: ``hash(owner)`` raised (the error is the ``__cause__``).
    """
    try:
        hash(owner)
    except Exception as exc:
        raise InvalidKey(
            owner,
            "owner must be hashable (None, a str, an int, a tuple or another hashable"
            f" token); hashing it raised {type(exc).__name__}: {exc}",
        ) from exc


def invalid_key(ns: Any, name: Any, exc: BaseException) -> InvalidKey:
    """Build the :class:`InvalidKey` for a key whose hash or ``__eq__`` raised.

    The caller raises it ``from exc`` so the original error stays visible.
    """
    what = "unhashable" if isinstance(exc, TypeError) else "unusable"
    return InvalidKey(
        (ns, name),
        f"the key is {what} ({type(exc).__name__}: {exc}); namespaces and names must"
        " be hashable, e.g. str, int or tuples of them",
    )


def hash_key(ns: Any, name: Any) -> int:
    """Return ``hash((ns, name))``, or raise :class:`InvalidKey` from the error.

    Hashing before any table is touched is what keeps a bad key from
    half-writing anything.
    """
    try:
        return hash((ns, name))
    except Exception as exc:
        raise invalid_key(ns, name, exc) from exc


def same_value(a: object, b: object) -> bool:
    """Tell whether ``b`` is the value ``a`` (identity, or a truthy ``==``).

    Used for re-registration and for group members, where values may be any
    object: an ``__eq__`` that raises, or returns something whose ``bool()``
    raises (a numpy array), means "not the same" rather than an error.
    """
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def same_owner(a: Hashable | None, b: Hashable | None) -> bool:
    """Tell whether two owners are the same: ``None`` equals only ``None``.

    Otherwise as :func:`same_value` (an ``__eq__`` that raises means "no").
    """
    if a is None or b is None:
        return a is b
    return same_value(a, b)
