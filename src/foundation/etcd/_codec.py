"""The JSON gateway's encoding: base64 bytes, int64 as strings, omitted defaults.

etcd's gRPC-JSON gateway (grpc-gateway v1 in etcd 3.4/3.5) sends ``bytes``
fields as standard base64, 64-bit integers as JSON strings (lease IDs exceed
2**53) and leaves out every field at its default value, so an absent ``kvs``
means no keys and an absent ``TTL`` means zero. Everything here turns those
shapes into typed Python values and back, in one place.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "KeyValue",
    "ResponseHeader",
    "b64",
    "from_b64",
    "int_field",
    "parse_header",
    "parse_kv",
    "prefix_end",
    "to_bytes",
]

Json = Mapping[str, Any]


def to_bytes(key: str | bytes) -> bytes:
    """A key or value as bytes: ``str`` is UTF-8 encoded."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"etcd keys and values are str or bytes, not {type(key).__name__}")


def b64(data: str | bytes) -> str:
    """Standard padded base64, as the gateway wants ``bytes`` fields."""
    return base64.b64encode(to_bytes(data)).decode("ascii")


def from_b64(text: str | None) -> bytes:
    """Decode a gateway ``bytes`` field (absent means empty)."""
    if not text:
        return b""
    return base64.b64decode(text)


def int_field(obj: Json, name: str) -> int:
    """An int64 field: a JSON string (or number); absent means 0."""
    value = obj.get(name)
    if value is None:
        return 0
    return int(value)


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


def parse_header(obj: Json | None) -> ResponseHeader:
    h = obj or {}
    return ResponseHeader(
        revision=int_field(h, "revision"),
        raft_term=int_field(h, "raft_term"),
        member_id=int_field(h, "member_id"),
        cluster_id=int_field(h, "cluster_id"),
    )


def parse_kv(obj: Json) -> KeyValue:
    return KeyValue(
        key=from_b64(obj.get("key")),
        value=from_b64(obj.get("value")),
        create_revision=int_field(obj, "create_revision"),
        mod_revision=int_field(obj, "mod_revision"),
        version=int_field(obj, "version"),
        lease=int_field(obj, "lease"),
    )
