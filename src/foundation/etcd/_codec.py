"""etcd's records as typed Python values, and the lazily imported protobuf modules.

The generated modules (``_proto/*_pb2.py``) need ``protobuf``, which only the
``etcd`` extra installs; :data:`pb` imports them on first use, so
``import foundation`` works without it, and using etcd without it raises a
:class:`~foundation.errors.ConfigError` that names the extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .. import errors

if TYPE_CHECKING:
    from ._proto import kv_pb2, rpc_pb2

__all__ = [
    "EXTRA_HINT",
    "KeyValue",
    "ResponseHeader",
    "header_of",
    "kv_of",
    "load_protos",
    "pb",
    "prefix_end",
    "to_bytes",
]

EXTRA_HINT = "pip install 'trio-foundation[etcd]'"


def load_protos() -> dict[str, ModuleType]:
    """Import the generated modules (and grpc); ConfigError naming the extra if missing."""
    try:
        import grpc  # noqa: F401 -- checked here, used by the wire

        from ._proto import kv_pb2, rpc_pb2, v3election_pb2, v3lock_pb2
    except ImportError as exc:
        raise errors.ConfigError(
            f"the etcd client needs grpcio and protobuf ({exc}); {EXTRA_HINT}"
        ) from exc
    return {"kv": kv_pb2, "rpc": rpc_pb2, "election": v3election_pb2, "lock": v3lock_pb2}


class _Protos:
    """``pb.rpc.PutRequest``...: the generated modules, imported on first attribute access."""

    rpc: Any
    kv: Any
    election: Any
    lock: Any

    def __getattr__(self, name: str) -> Any:
        modules = load_protos()
        if name not in modules:
            raise AttributeError(name)
        self.__dict__.update(modules)  # later lookups are plain attribute reads
        return modules[name]


#: The generated protobuf modules, loaded lazily (see :class:`_Protos`).
pb = _Protos()


def to_bytes(key: str | bytes) -> bytes:
    """A key or value as bytes: ``str`` is UTF-8 encoded."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"etcd keys and values are str or bytes, not {type(key).__name__}")


def prefix_end(prefix: str | bytes) -> bytes:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``.

    The last byte that is not 0xff is incremented and the rest dropped; an
    all-0xff (or empty) prefix means "to the end of the keyspace" (``\\0``).
    """
    raw = bytearray(to_bytes(prefix))
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """The header of every etcd response: where the cluster was when it answered."""

    revision: int
    raft_term: int
    member_id: int
    cluster_id: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it (mvccpb.KeyValue)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


def header_of(h: rpc_pb2.ResponseHeader) -> ResponseHeader:
    return ResponseHeader(h.revision, h.raft_term, h.member_id, h.cluster_id)


def kv_of(kv: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
