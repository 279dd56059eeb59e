"""Transaction building blocks: comparisons, operations and their results.

A txn is ``if all(compare) then success else failure``, applied atomically
at one revision. The builders return the gateway's JSON shapes (opaque to
callers) so a txn costs no conversion step when it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NewType

from ._codec import KeyValue, ResponseHeader, b64, int_field, parse_header, parse_kv, prefix_end

__all__ = [
    "Compare",
    "DeleteResult",
    "Op",
    "PutResult",
    "RangeResult",
    "TxnResult",
    "compare_create",
    "compare_lease",
    "compare_mod",
    "compare_value",
    "compare_version",
    "op_delete",
    "op_put",
    "op_range",
    "op_txn",
    "parse_txn",
]

#: One comparison of a txn (built by the ``compare_*`` functions).
Compare = NewType("Compare", dict[str, Any])
#: One operation of a txn (built by the ``op_*`` functions).
Op = NewType("Op", dict[str, Any])

CompareOp = Literal["==", "!=", "<", ">"]
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def _compare(key: str | bytes, op: CompareOp, target: str, field: str, value: Any) -> Compare:
    try:
        result = _RESULTS[op]
    except KeyError:
        raise ValueError(f"compare op {op!r}: use one of {sorted(_RESULTS)}") from None
    return Compare({"key": b64(key), "result": result, "target": target, field: value})


def compare_create(key: str | bytes, op: CompareOp, revision: int) -> Compare:
    """Compare the key's create revision (0: the key does not exist)."""
    return _compare(key, op, "CREATE", "create_revision", str(revision))


def compare_mod(key: str | bytes, op: CompareOp, revision: int) -> Compare:
    """Compare the key's last modification revision."""
    return _compare(key, op, "MOD", "mod_revision", str(revision))


def compare_version(key: str | bytes, op: CompareOp, version: int) -> Compare:
    """Compare the key's version (writes since creation; 0: absent)."""
    return _compare(key, op, "VERSION", "version", str(version))


def compare_value(key: str | bytes, op: CompareOp, value: str | bytes) -> Compare:
    """Compare the key's value."""
    return _compare(key, op, "VALUE", "value", b64(value))


def compare_lease(key: str | bytes, op: CompareOp, lease: int) -> Compare:
    """Compare the key's lease ID (0: no lease)."""
    return _compare(key, op, "LEASE", "lease", str(lease))


def op_put(
    key: str | bytes,
    value: str | bytes,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_lease: bool = False,
) -> Op:
    """Put ``value`` at ``key`` (bound to ``lease`` when non-zero).

    ``ignore_lease=True`` keeps the key's current lease (the value changes,
    the owner of the key does not).
    """
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    if prev_kv:
        body["prev_kv"] = True
    if ignore_lease:
        body["ignore_lease"] = True
    return Op({"request_put": body})


def op_range(
    key: str | bytes,
    *,
    prefix: bool = False,
    range_end: str | bytes | None = None,
    limit: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
) -> Op:
    """Read ``key`` (or every key under it with ``prefix=True``)."""
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    elif range_end is not None:
        body["range_end"] = b64(range_end)
    if limit:
        body["limit"] = str(limit)
    if keys_only:
        body["keys_only"] = True
    if count_only:
        body["count_only"] = True
    return Op({"request_range": body})


def op_delete(key: str | bytes, *, prefix: bool = False, prev_kv: bool = False) -> Op:
    """Delete ``key`` (or every key under it with ``prefix=True``)."""
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    if prev_kv:
        body["prev_kv"] = True
    return Op({"request_delete_range": body})


def op_txn(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A nested txn, as one operation of an outer txn."""
    return Op({"request_txn": txn_body(compare, success, failure)})


def txn_body(
    compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
) -> dict[str, Any]:
    return {"compare": list(compare), "success": list(success), "failure": list(failure)}


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What a range read found."""

    header: ResponseHeader
    kvs: list[KeyValue]
    count: int
    more: bool


@dataclass(frozen=True, slots=True)
class PutResult:
    """A put's outcome; ``prev_kv`` only when asked for and the key existed."""

    header: ResponseHeader
    prev_kv: KeyValue | None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """How many keys a delete removed (and what they held, when asked for)."""

    header: ResponseHeader
    deleted: int
    prev_kvs: list[KeyValue]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the comparisons held, and the result of each operation run."""

    header: ResponseHeader
    succeeded: bool
    responses: list[RangeResult | PutResult | DeleteResult | TxnResult]

    @property
    def revision(self) -> int:
        """The store's revision after the txn (its own, when it wrote)."""
        return self.header.revision


def parse_range(obj: Mapping[str, Any], header: ResponseHeader | None = None) -> RangeResult:
    return RangeResult(
        header=header or parse_header(obj.get("header")),
        kvs=[parse_kv(kv) for kv in obj.get("kvs", ())],
        count=int_field(obj, "count"),
        more=bool(obj.get("more", False)),
    )


def parse_put(obj: Mapping[str, Any], header: ResponseHeader | None = None) -> PutResult:
    prev = obj.get("prev_kv")
    return PutResult(
        header=header or parse_header(obj.get("header")),
        prev_kv=parse_kv(prev) if prev else None,
    )


def parse_delete(obj: Mapping[str, Any], header: ResponseHeader | None = None) -> DeleteResult:
    return DeleteResult(
        header=header or parse_header(obj.get("header")),
        deleted=int_field(obj, "deleted"),
        prev_kvs=[parse_kv(kv) for kv in obj.get("prev_kvs", ())],
    )


def parse_txn(obj: Mapping[str, Any], header: ResponseHeader | None = None) -> TxnResult:
    # Inner responses carry a header of their own only in part; the outer
    # header is the one that tells the txn's revision, so it is shared.
    head = header or parse_header(obj.get("header"))
    responses: list[RangeResult | PutResult | DeleteResult | TxnResult] = []
    for item in obj.get("responses", ()):
        if "response_range" in item:
            responses.append(parse_range(item["response_range"], head))
        elif "response_put" in item:
            responses.append(parse_put(item["response_put"], head))
        elif "response_delete_range" in item:
            responses.append(parse_delete(item["response_delete_range"], head))
        elif "response_txn" in item:
            responses.append(parse_txn(item["response_txn"], head))
        else:
            # grpc-gateway omits an empty oneof member (e.g. a put with no prev_kv
            # whose header is empty): it was a put.
            responses.append(PutResult(head, None))
    return TxnResult(header=head, succeeded=bool(obj.get("succeeded", False)), responses=responses)
