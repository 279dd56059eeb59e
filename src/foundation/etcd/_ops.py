"""Transaction building blocks: comparisons, operations and their results.

A txn is ``if all(compare) then success else failure``, applied atomically
at one revision. The builders make etcd's own protobuf messages
(``etcdserverpb.Compare`` and ``RequestOp``), wrapped in :class:`Compare` and
:class:`Op` so callers need not import protobuf; a txn sends them as they
are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, final

from ._codec import KeyValue, ResponseHeader, header_of, kv_of, pb, prefix_end, to_bytes

if TYPE_CHECKING:
    from ._proto import rpc_pb2

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
    "txn_request",
]

CompareOp = Literal["==", "!=", "<", ">"]
# etcdserverpb.Compare.CompareResult and CompareTarget numbers.
_RESULTS = {"==": 0, ">": 1, "<": 2, "!=": 3}
_VERSION, _CREATE, _MOD, _VALUE, _LEASE = range(5)


class _Message:
    """A txn part: the protobuf message it sends, compared and hashed by value."""

    __slots__ = ("pb",)
    pb: Any

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.pb == other.pb

    def __hash__(self) -> int:
        return hash(self.pb.SerializeToString(deterministic=True))

    def __repr__(self) -> str:
        text = " ".join(str(self.pb).split())
        return f"{type(self).__name__}({text})"


@final
class Compare(_Message):
    """One comparison of a txn; made by the ``compare_*`` functions."""

    __slots__ = ()
    pb: rpc_pb2.Compare

    def __init__(self, message: rpc_pb2.Compare) -> None:
        #: The ``etcdserverpb.Compare`` message sent.
        self.pb = message


@final
class Op(_Message):
    """One operation of a txn; made by the ``op_*`` functions."""

    __slots__ = ()
    pb: rpc_pb2.RequestOp

    def __init__(self, message: rpc_pb2.RequestOp) -> None:
        #: The ``etcdserverpb.RequestOp`` message sent.
        self.pb = message


def _compare(key: str | bytes, op: CompareOp, target: int, **field: Any) -> Compare:
    try:
        result = _RESULTS[op]
    except KeyError:
        raise ValueError(f"compare op {op!r}: use one of {sorted(_RESULTS)}") from None
    return Compare(pb.rpc.Compare(key=to_bytes(key), result=result, target=target, **field))


def compare_create(key: str | bytes, op: CompareOp, revision: int) -> Compare:
    """Compare the key's create revision (0: the key does not exist)."""
    return _compare(key, op, _CREATE, create_revision=revision)


def compare_mod(key: str | bytes, op: CompareOp, revision: int) -> Compare:
    """Compare the key's last modification revision."""
    return _compare(key, op, _MOD, mod_revision=revision)


def compare_version(key: str | bytes, op: CompareOp, version: int) -> Compare:
    """Compare the key's version (writes since creation; 0: absent)."""
    return _compare(key, op, _VERSION, version=version)


def compare_value(key: str | bytes, op: CompareOp, value: str | bytes) -> Compare:
    """Compare the key's value."""
    return _compare(key, op, _VALUE, value=to_bytes(value))


def compare_lease(key: str | bytes, op: CompareOp, lease: int) -> Compare:
    """Compare the key's lease ID (0: no lease)."""
    return _compare(key, op, _LEASE, lease=lease)


def put_request(
    key: str | bytes,
    value: str | bytes,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    ignore_lease: bool = False,
) -> Any:
    """An ``etcdserverpb.PutRequest``."""
    if lease or prev_kv or ignore_lease:
        return pb.rpc.PutRequest(
            key=to_bytes(key),
            value=to_bytes(value),
            lease=lease,
            prev_kv=prev_kv,
            ignore_lease=ignore_lease,
        )
    # The common case, with no keyword left at its default (each costs protobuf a lookup).
    return pb.rpc.PutRequest(key=to_bytes(key), value=to_bytes(value))


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
    return Op(
        pb.rpc.RequestOp(
            request_put=put_request(
                key, value, lease=lease, prev_kv=prev_kv, ignore_lease=ignore_lease
            )
        )
    )


def range_request(
    key: str | bytes,
    *,
    prefix: bool = False,
    range_end: str | bytes | None = None,
    limit: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
    revision: int = 0,
    serializable: bool = False,
) -> Any:
    """An ``etcdserverpb.RangeRequest``."""
    raw = to_bytes(key)
    end = b""
    if prefix:
        end = prefix_end(raw)
    elif range_end is not None:
        end = to_bytes(range_end)
    return pb.rpc.RangeRequest(
        key=raw,
        range_end=end,
        limit=limit,
        keys_only=keys_only,
        count_only=count_only,
        revision=revision,
        serializable=serializable,
    )


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
    request = range_request(
        key,
        prefix=prefix,
        range_end=range_end,
        limit=limit,
        keys_only=keys_only,
        count_only=count_only,
    )
    return Op(pb.rpc.RequestOp(request_range=request))


def delete_request(key: str | bytes, *, prefix: bool = False, prev_kv: bool = False) -> Any:
    """An ``etcdserverpb.DeleteRangeRequest``."""
    raw = to_bytes(key)
    return pb.rpc.DeleteRangeRequest(
        key=raw, range_end=prefix_end(raw) if prefix else b"", prev_kv=prev_kv
    )


def op_delete(key: str | bytes, *, prefix: bool = False, prev_kv: bool = False) -> Op:
    """Delete ``key`` (or every key under it with ``prefix=True``)."""
    request = delete_request(key, prefix=prefix, prev_kv=prev_kv)
    return Op(pb.rpc.RequestOp(request_delete_range=request))


def txn_request(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> Any:
    """An ``etcdserverpb.TxnRequest`` of the given parts."""
    return pb.rpc.TxnRequest(
        compare=[c.pb for c in compare],
        success=[o.pb for o in success],
        failure=[o.pb for o in failure],
    )


def op_txn(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A nested txn, as one operation of an outer txn."""
    return Op(pb.rpc.RequestOp(request_txn=txn_request(compare, success, failure)))


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


def parse_range(msg: Any, header: ResponseHeader | None = None) -> RangeResult:
    return RangeResult(
        header or header_of(msg.header), [kv_of(kv) for kv in msg.kvs], msg.count, msg.more
    )


def parse_put(msg: Any, header: ResponseHeader | None = None) -> PutResult:
    prev = kv_of(msg.prev_kv) if msg.HasField("prev_kv") else None
    return PutResult(header or header_of(msg.header), prev)


def parse_delete(msg: Any, header: ResponseHeader | None = None) -> DeleteResult:
    return DeleteResult(
        header or header_of(msg.header), msg.deleted, [kv_of(kv) for kv in msg.prev_kvs]
    )


def parse_txn(msg: Any, header: ResponseHeader | None = None) -> TxnResult:
    # Inner responses carry no header of their own worth reading; the outer
    # header tells the txn's revision, so it is shared.
    head = header or header_of(msg.header)
    responses: list[RangeResult | PutResult | DeleteResult | TxnResult] = []
    append = responses.append
    # A put without prev_kv has nothing but the shared header: one frozen
    # result serves them all (a txn of 100 puts parses in a tenth the time).
    plain_put = PutResult(head, None)
    for item in msg.responses:
        which = item.WhichOneof("response")
        if which == "response_put":
            put = item.response_put
            append(parse_put(put, head) if put.HasField("prev_kv") else plain_put)
        elif which == "response_range":
            append(parse_range(item.response_range, head))
        elif which == "response_delete_range":
            append(parse_delete(item.response_delete_range, head))
        elif which == "response_txn":
            append(parse_txn(item.response_txn, head))
        else:  # pragma: no cover - etcd always sets one
            append(PutResult(head, None))
    return TxnResult(head, msg.succeeded, responses)
