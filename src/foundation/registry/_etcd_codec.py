"""How the etcd backend maps registry keys, owners, values and metadata to etcd.

One documented encoding, so any process (or ``etcdctl``) reads the same keys:

* A unique name ``(ns, name)`` lives at
  ``prefix + "reg/" + json.dumps([ns, name])`` (compact separators, UTF-8,
  ``ensure_ascii=False``).
* A group member lives at ``prefix + "grp/" + json.dumps([ns, group, digest])``
  where ``digest`` is the SHA-256 (hex, 32 chars) of the member value's
  canonical JSON (sorted keys; integral floats as ints, so ``1 == 1.0`` are
  one member as they are locally). The key stays short however big the value.
* ``sync()`` sentinels live under ``prefix + "sync/"``.
* Pub/sub messages live at ``prefix + "msg/" + instance``: one key per
  publishing instance (bound to its lease), overwritten by each
  ``publish``; every other instance's watch sees each put. The value is
  ``{"n": ns, "t": topic, "m": message}``.
* ``prefix + "cluster/"`` is reserved for the distributed supervisor
  (``foundation.cluster``), which keeps its own keys there: the registry
  neither reads nor counts them.
* The etcd value is the JSON object ``{"v": value, "m": metadata,
  "o": owner, "i": instance}``; ``i`` is the id of the registry instance
  (and lease) that wrote the entry.

Only portable keys travel: ``str``, ``int`` (not ``bool``) and tuples of
them, nested. Tuples are JSON arrays, and since lists are not portable keys,
every array in a key or an owner decodes back to a tuple: keys and owners
come back exactly as given. Values and metadata are JSON: tuples come back as
lists, dict keys must be ``str``, floats must be finite. Anything else is
refused with :class:`~foundation.errors.InvalidKey`,
:class:`~foundation.errors.InvalidValue` or
:class:`~foundation.errors.InvalidMetadata` before anything is written.

Nesting is bounded both ways (:data:`MAX_NESTING`, 64): a value, the
metadata mapping, an owner, a namespace or a name nested deeper is refused
on write, and a record under the prefix whose key or value is nested deeper
than anything the library writes is not decoded at all (``decode_entry``
raises ValueError, so the reader skips it as foreign). ``json.loads`` and
every walk over what it returns recurse, so a record a few hundred levels
deep, written by anyone with access to the prefix, once killed every
registry on it with RecursionError.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidKey, InvalidMetadata, InvalidValue
from ..etcd._json import MAX_NESTING, too_deep
from ._keys import check_owner, hash_key

__all__ = [
    "CLUSTER",
    "GRP",
    "MAX_ENTRY_BYTES",
    "MAX_NESTING",
    "MSG",
    "REG",
    "SYNC",
    "Decoded",
    "canonical_value",
    "decode_entry",
    "encode_entry",
    "encode_key",
    "encode_member_key",
    "encode_message",
    "encode_owner",
    "from_json_key",
    "json_value",
    "to_json",
]

REG = b"reg/"
GRP = b"grp/"
SYNC = b"sync/"
#: Pub/sub messages, one key per publishing instance.
MSG = b"msg/"
#: The distributed supervisor's subtree under a registry's prefix (keys without a lease).
CLUSTER = b"cluster/"

#: Largest key + value the backend sends in one entry. etcd refuses requests
#: above ``--max-request-bytes`` (1.5 MiB by default); the rest is headroom
#: for the txn around it.
MAX_ENTRY_BYTES = 1_500_000

_dumps = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
).encode
_canonical_dumps = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,
    separators=(",", ":"),
    sort_keys=True,
).encode
_loads = json.loads

_PORTABLE_HINT = (
    "the etcd backend takes only portable keys: str, int (not bool) or tuples of them,"
    " e.g. 'svc' or ('test', 3); use a local backend for other hashables"
)
_TOO_DEEP = (
    f"nested deeper than {MAX_NESTING} levels, the most the etcd backend writes (and"
    " reads back: deeper records are skipped as foreign)"
)
#: The deepest key or entry text a reader decodes: one level (the key's
#: ``[ns, name]`` array, the entry's object) around parts of MAX_NESTING.
_MAX_TEXT_NESTING = MAX_NESTING + 1


class _TooDeep(Exception):
    """A value, key or owner nests containers deeper than MAX_NESTING."""


# -- keys and owners -------------------------------------------------------------


def _portable(obj: Any, depth: int = 0) -> bool:
    """True for str, int and tuples of them; ``depth``: tuples around ``obj``.

    Raises:
        _TooDeep: tuples nested deeper than MAX_NESTING.
    """
    tp = type(obj)
    if tp is str or tp is int:
        return True
    if tp is tuple:
        if depth >= MAX_NESTING:
            raise _TooDeep
        return all(_portable(item, depth + 1) for item in obj)
    return False


def encode_key(prefix: bytes, kind: bytes, ns: Any, name: Any) -> bytes:
    """The etcd key of ``(ns, name)`` in key space ``kind`` (REG or GRP).

    Raises:
        InvalidKey: the key is unhashable (as locally), not portable, or
            nested deeper than MAX_NESTING.
    """
    hash_key(ns, name)  # unhashable: the same InvalidKey (and cause) as locally
    _check_portable(ns, name)
    try:
        return prefix + kind + _dumps([ns, name]).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey((ns, name), f"cannot be encoded for etcd ({exc})") from exc


def _check_portable(ns: Any, name: Any) -> None:
    try:
        portable = _portable(ns) and _portable(name)
    except _TooDeep:
        raise InvalidKey((ns, name), _TOO_DEEP) from None
    if not portable:
        raise InvalidKey((ns, name), _PORTABLE_HINT)


def encode_member_key(prefix: bytes, ns: Any, group: Any, canonical: str) -> bytes:
    """The etcd key of member ``canonical`` (see :func:`canonical_value`) of a group."""
    hash_key(ns, group)
    _check_portable(ns, group)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]
    try:
        return prefix + GRP + _dumps([ns, group, digest]).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey((ns, group), f"cannot be encoded for etcd ({exc})") from exc


def encode_owner(owner: Any) -> Any:
    """Check that ``owner`` can travel through etcd; returns it unchanged.

    Raises:
        InvalidKey: unhashable (as locally), not None/str/int/tuple of them,
            or nested deeper than MAX_NESTING.
    """
    check_owner(owner)
    if owner is None:
        return owner
    try:
        portable = _portable(owner)
    except _TooDeep:
        raise InvalidKey(owner, f"the owner is {_TOO_DEEP}") from None
    if not portable:
        raise InvalidKey(
            owner,
            "on the etcd backend an owner must be None or portable (str, int or tuples"
            " of them), since other processes read it back",
        )
    return owner


def from_json_key(obj: Any) -> Any:
    """A decoded JSON key or owner part, arrays back to tuples.

    Raises:
        ValueError: something no portable key encodes to (float, dict, bool, null).
    """
    tp = type(obj)
    if tp is str or tp is int:
        return obj
    if tp is list:
        return tuple(from_json_key(item) for item in obj)
    raise ValueError(f"{obj!r} is not a portable key part")


# -- values and metadata --------------------------------------------------------


def to_json(obj: Any, depth: int = 0) -> Any:
    """``obj`` as it comes back from a JSON round trip (tuples become lists).

    ``depth`` is the number of containers around ``obj``; a container deeper
    than MAX_NESTING (a cycle included) is refused.

    Raises:
        TypeError: a type JSON has no form for, or a dict key that is not a str.
        ValueError: a float that is NaN or infinite.
        _TooDeep: containers nested deeper than MAX_NESTING.
    """
    tp = type(obj)
    if tp is str or tp is int or tp is bool or obj is None:
        return obj
    if tp is float:
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} is not a finite number, which JSON cannot hold")
        return obj
    if depth >= MAX_NESTING and isinstance(obj, (list, tuple, Mapping)):
        raise _TooDeep
    if tp is list or tp is tuple:
        return [to_json(item, depth + 1) for item in obj]
    if tp is dict or isinstance(obj, Mapping):
        out = {}
        for key, item in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"dict key {key!r} is a {type(key).__name__}; JSON object keys are str"
                )
            out[str(key)] = to_json(item, depth + 1)
        return out
    # subclasses of the JSON scalars travel as their base type
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return to_json(float(obj))
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_json(item, depth + 1) for item in obj]
    raise TypeError(f"a {type(obj).__name__} has no JSON form")


def json_value(value: Any) -> Any:
    """``value`` as it comes back from a JSON round trip.

    Raises:
        InvalidValue: no JSON form, or nested deeper than MAX_NESTING.
    """
    return _json_value(value)


def _json_value(value: Any) -> Any:
    try:
        return to_json(value)
    except _TooDeep:
        raise InvalidValue(value, f"the value is {_TOO_DEEP}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidValue(
            value,
            f"the etcd backend stores JSON values only ({exc}); use str, int, float, bool,"
            " None, lists/tuples and dicts with str keys",
        ) from exc


def _json_metadata(metadata: Mapping[Any, Any]) -> dict[str, Any]:
    try:
        out = to_json(metadata)
    except _TooDeep:
        raise InvalidMetadata(
            metadata, f"the metadata (the mapping itself one level) is {_TOO_DEEP}"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidMetadata(
            metadata,
            f"the etcd backend stores JSON metadata only ({exc}); use str keys and JSON values",
        ) from exc
    assert isinstance(out, dict)
    return out


def _canonical_form(obj: Any) -> Any:
    # integral floats as ints, so members equal in Python share one key
    if type(obj) is float and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    if type(obj) is list:
        return [_canonical_form(item) for item in obj]
    if type(obj) is dict:
        return {key: _canonical_form(item) for key, item in obj.items()}
    return obj


def canonical_value(value: Any) -> tuple[Any, str]:
    """``(json_form, canonical_text)`` of a group member value.

    Raises:
        InvalidValue: not JSON.
    """
    json_form = _json_value(value)
    return json_form, _canonical_dumps(_canonical_form(json_form))


def encode_entry(
    key: bytes, value: Any, metadata: Mapping[Any, Any], owner: Any, instance: str
) -> tuple[bytes, Any, dict[str, Any]]:
    """``(raw, json_value, json_metadata)`` for an entry written by ``instance``.

    ``value`` may already be in JSON form (its JSON form is itself).

    Raises:
        InvalidValue / InvalidMetadata: not JSON, or the entry is too large.
    """
    json_value = _json_value(value)
    json_metadata = _json_metadata(metadata) if metadata else {}
    raw = _dumps({"v": json_value, "m": json_metadata, "o": owner, "i": instance}).encode("utf-8")
    size = len(raw) + len(key)
    if size > MAX_ENTRY_BYTES:
        reason = (
            f"the entry is {size} bytes as JSON; etcd takes at most {MAX_ENTRY_BYTES} per"
            " entry (its --max-request-bytes): store large data elsewhere and register a"
            " reference to it"
        )
        if len(_dumps(json_metadata)) > len(_dumps(json_value)):
            raise InvalidMetadata(metadata, reason)
        raise InvalidValue(value, reason)
    return raw, json_value, json_metadata


def reencode(value: Any, metadata: Mapping[str, Any], owner: Any, instance: str) -> bytes:
    """The raw etcd value of an entry whose parts are already JSON (no checks)."""
    return _dumps({"v": value, "m": dict(metadata), "o": owner, "i": instance}).encode("utf-8")


class Decoded:
    """One etcd entry of the registry, decoded."""

    __slots__ = ("group", "instance", "is_member", "metadata", "name", "ns", "owner", "value")

    def __init__(
        self,
        is_member: bool,
        ns: Any,
        name: Any,
        value: Any,
        metadata: dict[str, Any],
        owner: Any,
        instance: str,
    ) -> None:
        self.is_member = is_member
        self.ns = ns
        self.name = name
        self.value = value
        self.metadata = metadata
        self.owner = owner
        self.instance = instance


def decode_key(prefix_len: int, key: bytes) -> tuple[bytes, Any, Any] | None:
    """``(kind, ns, name)`` of an etcd key under the prefix; None for sync keys.

    Raises:
        ValueError: not a key this backend wrote (nested too deep included).
    """
    kind = key[prefix_len : prefix_len + 4]
    if kind in (REG, GRP):
        text = key[prefix_len + 4 :]
        if too_deep(text, _MAX_TEXT_NESTING):
            raise ValueError(f"the key is JSON {_TOO_DEEP}")
        parts = _loads(text)
        if type(parts) is not list or len(parts) != (2 if kind == REG else 3):
            raise ValueError("not a registry key")
        return kind, from_json_key(parts[0]), from_json_key(parts[1])
    if key[prefix_len : prefix_len + 5] == SYNC:
        return None
    raise ValueError("not a registry key")


def decode_entry(prefix_len: int, key: bytes, raw: bytes) -> Decoded | None:
    """Decode an entry; None for a ``sync()`` sentinel.

    Raises:
        ValueError: a key or value this backend did not write (a foreign
            writer's, or JSON nested deeper than the backend writes).
    """
    decoded_key = decode_key(prefix_len, key)
    if decoded_key is None:
        return None
    kind, ns, name = decoded_key
    if too_deep(raw, _MAX_TEXT_NESTING):
        raise ValueError(f"the value is JSON {_TOO_DEEP}")
    body = _loads(raw)
    if type(body) is not dict or "v" not in body:
        raise ValueError("not a registry entry")
    metadata = body.get("m") or {}
    if type(metadata) is not dict:
        raise ValueError("metadata is not an object")
    owner = body.get("o")
    if owner is not None:
        owner = from_json_key(owner)
    instance = body.get("i")
    if type(instance) is not str:
        instance = ""
    return Decoded(kind == GRP, ns, name, body["v"], metadata, owner, instance)


# -- pub/sub messages --------------------------------------------------------------


def encode_message(
    prefix: bytes, instance: str, ns: Any, topic: Any, message: Any
) -> tuple[bytes, bytes, Any]:
    """``(key, raw, json_message)`` of a message ``instance`` publishes to ``(ns, topic)``.

    ``json_message`` is the message as every subscriber receives it (after
    a JSON round trip).

    Raises:
        InvalidKey: ``ns`` or ``topic`` is not a portable key.
        InvalidValue: the message is not JSON, or too large.
    """
    hash_key(ns, topic)
    _check_portable(ns, topic)
    json_message = _json_value(message)
    raw = _dumps({"n": ns, "t": topic, "m": json_message}).encode("utf-8")
    key = prefix + MSG + instance.encode("ascii")
    size = len(raw) + len(key)
    if size > MAX_ENTRY_BYTES:
        raise InvalidValue(
            message,
            f"the message is {size} bytes as JSON; etcd takes at most {MAX_ENTRY_BYTES}"
            " per request: publish a reference to large data instead",
        )
    return key, raw, json_message


def decode_message(prefix_len: int, key: bytes, raw: bytes) -> tuple[str, Any, Any, Any]:
    """``(instance, ns, topic, message)`` of a message key and its value.

    Raises:
        ValueError: not a message this library wrote.
    """
    if key[prefix_len : prefix_len + 4] != MSG:
        raise ValueError("not a message key")
    instance = key[prefix_len + 4 :].decode("ascii")
    if too_deep(raw, _MAX_TEXT_NESTING):
        raise ValueError(f"the message is JSON {_TOO_DEEP}")
    body = _loads(raw)
    if type(body) is not dict or not {"n", "t", "m"} <= body.keys():
        raise ValueError("not a pub/sub message")
    return instance, from_json_key(body["n"]), from_json_key(body["t"]), body["m"]
