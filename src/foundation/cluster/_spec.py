"""Child specs as JSON: what the distributed supervisor stores and every node reads back.

A spec must mean the same thing in every process, so only what survives a
trip through JSON is accepted, and it is checked before anything is written
(:class:`~foundation.errors.InvalidChildSpec` says what is wrong):

* the target is a function another process can import by name: a
  module-level function (or a static method), stored as
  ``"package.module:qualname"``, or such a name given as a string. Lambdas,
  closures, nested functions, bound methods and ``functools.partial``
  objects have no such name;
* ``args`` and ``register_as`` are JSON (``None``, ``bool``, ``int``, finite
  ``float``, ``str``, lists or tuples, dicts with ``str`` keys), nested at
  most :data:`MAX_DEPTH` deep. Arrays come back as tuples, so a list
  argument arrives as a tuple;
* the id is a portable key, as the etcd registry's keys are: a ``str``, an
  ``int`` (not ``bool``) or tuples of them.

Ids have two encodings: :func:`id_json` (``json.dumps(id, sort_keys=True)``)
is the key rendezvous hashing places the child by, the same in every
process; :func:`id_segment` (that JSON, compact and percent-encoded) is the
child's part of its etcd keys, so no id can reach into another's keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from ..errors import InvalidChildSpec
from ..supervision import ChildSpec, Restart
from ..supervision._spec import target_name

__all__ = [
    "MAX_DEPTH",
    "check_json",
    "check_portable_id",
    "decode_spec",
    "encode_spec",
    "from_json",
    "id_from_segment",
    "id_json",
    "id_segment",
]

#: How deep ``args``, ``register_as`` and handoff state may nest.
MAX_DEPTH = 32


def _portable(obj: Any) -> bool:
    if isinstance(obj, bool):
        return False
    if isinstance(obj, str | int):
        return True
    if isinstance(obj, tuple):
        return all(_portable(item) for item in obj)
    return False


def check_portable_id(child_id: Any) -> None:
    """Refuse an id that is not a portable key.

    Raises:
        InvalidChildSpec: not a ``str``, an ``int`` or tuples of them.
    """
    if not _portable(child_id):
        raise InvalidChildSpec(
            child_id,
            "its id is not a portable key; use a str, an int (not bool) or tuples of them",
        )


def id_json(child_id: Hashable) -> str:
    """The id as ``json.dumps(id, sort_keys=True)``: the key rendezvous hashing places it by."""
    return json.dumps(child_id, sort_keys=True)


def id_segment(child_id: Hashable) -> str:
    """The id's part of its etcd keys: compact JSON, percent-encoded (no ``/`` left)."""
    return quote(json.dumps(child_id, separators=(",", ":"), ensure_ascii=False), safe="")


def id_from_segment(segment: str) -> Any:
    """The id an :func:`id_segment` encodes (arrays as tuples).

    Raises:
        ValueError: not such a segment (a foreign key).
    """
    child_id = from_json(json.loads(unquote(segment, errors="strict")))
    if not _portable(child_id):
        raise ValueError(f"{segment!r} does not encode a portable id")
    return child_id


def check_json(value: Any, what: str, child_id: Any = None) -> Any:
    """``value`` as plain JSON data (tuples as lists), or InvalidChildSpec saying why not.

    Raises:
        InvalidChildSpec: a value JSON cannot carry as it is (a set, bytes, an
            object, NaN or an infinity, a dict key that is not a str), or
            nesting deeper than :data:`MAX_DEPTH`.
    """
    return _plain(value, what, child_id, 0)


def _plain(value: Any, what: str, child_id: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidChildSpec(child_id, f"{what} nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidChildSpec(child_id, f"{what} holds {value!r}, which JSON cannot carry")
        return value
    if isinstance(value, list | tuple):
        return [_plain(item, what, child_id, depth + 1) for item in value]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidChildSpec(
                    child_id,
                    f"{what} holds a dict key {key!r} that is not a str (JSON would turn it"
                    " into a string)",
                )
            out[key] = _plain(item, what, child_id, depth + 1)
        return out
    raise InvalidChildSpec(
        child_id,
        f"{what} holds a {type(value).__name__} ({value!r:.60}), which is not JSON; pass"
        " None, bool, int, float, str, lists, tuples or dicts with str keys",
    )


def from_json(value: Any) -> Any:
    """JSON data as the child gets it back: arrays become tuples, all the way down."""
    if isinstance(value, list):
        return tuple(from_json(item) for item in value)
    if isinstance(value, dict):
        return {key: from_json(item) for key, item in value.items()}
    return value


def encode_spec(spec: ChildSpec) -> dict[str, Any]:
    """The spec as the JSON object stored in etcd.

    Raises:
        InvalidChildSpec: see the module docstring.
    """
    if not isinstance(spec, ChildSpec):
        raise TypeError(f"expected a ChildSpec, got {type(spec).__name__} {spec!r}")
    check_portable_id(spec.id)
    target = spec.target
    if isinstance(target, str):
        name = target  # its form was checked by ChildSpec; it is imported when it starts
    else:
        found = target_name(target)
        if found is None:
            raise InvalidChildSpec(
                spec.id,
                f"its target {target!r} cannot be imported by name in another process (a"
                " lambda, a closure, a nested function, a bound method or a partial); use a"
                " module-level async function or a 'package.module:qualname' string",
            )
        name = found
    register_as = None
    if spec.register_as is not None:
        ns, reg_name = spec.register_as
        if not (_portable(ns) and _portable(reg_name)):
            raise InvalidChildSpec(
                spec.id,
                f"register_as={spec.register_as!r} is not a pair of portable keys (str, int"
                " or tuples of them)",
            )
        register_as = check_json(list(spec.register_as), "register_as", spec.id)
    return {
        "id": check_json(spec.id, "the id", spec.id),
        "target": name,
        "args": check_json(list(spec.args), "args", spec.id),
        "restart": spec.restart.value,
        # JSON has no infinity: null is "wait for ever".
        "shutdown": None if math.isinf(spec.shutdown) else float(spec.shutdown),
        "register_as": register_as,
    }


def decode_spec(data: Any) -> ChildSpec:
    """The :class:`ChildSpec` a stored JSON object describes (its target stays a name).

    Raises:
        ValueError: not a spec this module wrote.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a stored spec is a JSON object, got {data!r:.80}")
    try:
        child_id = from_json(data["id"])
        target = data["target"]
        args = from_json(data["args"])
        restart = Restart(data["restart"])
        shutdown = data["shutdown"]
        register_as = from_json(data["register_as"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored child spec ({exc!r}): {data!r:.120}") from exc
    if not _portable(child_id) or not isinstance(target, str) or not isinstance(args, tuple):
        raise ValueError(f"not a stored child spec: {data!r:.120}")
    try:
        return ChildSpec(
            id=child_id,
            target=target,
            args=args,
            restart=restart,
            shutdown=math.inf if shutdown is None else shutdown,
            register_as=register_as,
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a stored child spec ({exc}): {data!r:.120}") from exc
