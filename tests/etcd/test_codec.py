"""etcd's messages, the txn builders, endpoint and settings checks, without a server."""

from __future__ import annotations

import pickle

import pytest

from foundation import errors
from foundation._endpoints import check_endpoints
from foundation.etcd import (
    EtcdSettings,
    compare_create,
    compare_lease,
    compare_mod,
    compare_value,
    compare_version,
    op_delete,
    op_put,
    op_range,
    op_txn,
    prefix_end,
)
from foundation.etcd._codec import pb, to_bytes
from foundation.etcd._ops import PutResult, parse_txn, txn_request


def test_prefix_end_increments_the_last_byte() -> None:
    assert prefix_end("registry/") == b"registry0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_keys_and_values_are_bytes_or_utf8() -> None:
    assert to_bytes("é") == "é".encode()
    assert to_bytes(b"\xff") == b"\xff"
    with pytest.raises(TypeError):
        to_bytes(3)  # type: ignore[arg-type]


def test_txn_builders_make_etcds_messages() -> None:
    c = compare_create("k", "==", 0).pb
    assert (c.key, c.target, c.result, c.WhichOneof("target_union")) == (
        b"k",
        pb.rpc.Compare.CREATE,
        pb.rpc.Compare.EQUAL,
        "create_revision",
    )
    assert compare_mod("k", "<", 5).pb.mod_revision == 5
    assert compare_mod("k", "<", 5).pb.result == pb.rpc.Compare.LESS
    assert compare_version("k", ">", 2).pb.result == pb.rpc.Compare.GREATER
    assert compare_value("k", "!=", "v").pb.value == b"v"
    assert compare_value("k", "!=", "v").pb.result == pb.rpc.Compare.NOT_EQUAL
    assert compare_lease("k", "==", 9).pb.target == pb.rpc.Compare.LEASE
    put = op_put("k", "v", lease=10, prev_kv=True).pb.request_put
    assert (put.key, put.value, put.lease, put.prev_kv, put.ignore_lease) == (
        b"k",
        b"v",
        10,
        True,
        False,
    )
    assert op_range("a/", prefix=True).pb.request_range.range_end == b"a0"
    assert op_range("a", range_end="b", keys_only=True).pb.request_range.keys_only
    assert op_delete("a/", prefix=True).pb.request_delete_range.range_end == b"a0"
    nested = op_txn([compare_create("k", "==", 0)], [op_put("k", "v")]).pb.request_txn
    assert len(nested.compare) == 1
    assert op_put("k", "v") == op_put(b"k", b"v")
    assert "request_put" in repr(op_put("k", "v"))
    with pytest.raises(ValueError, match="compare op"):
        compare_create("k", "=", 0)  # type: ignore[arg-type]
    # a txn request is exactly what etcd's Go client would send
    request = txn_request([compare_create("k", "==", 0)], [op_put("k", "v")], [op_range("k")])
    again = pb.rpc.TxnRequest.FromString(request.SerializeToString())
    assert again == request


def test_txn_results_keep_omitted_defaults() -> None:
    response = pb.rpc.TxnResponse(
        header=pb.rpc.ResponseHeader(revision=7),
        responses=[
            pb.rpc.ResponseOp(
                response_range=pb.rpc.RangeResponse(
                    kvs=[pb.kv.KeyValue(key=b"k", value=b"v", lease=7587823380406781187)]
                )
            ),
            pb.rpc.ResponseOp(response_put=pb.rpc.PutResponse()),
            pb.rpc.ResponseOp(
                response_put=pb.rpc.PutResponse(prev_kv=pb.kv.KeyValue(key=b"k", value=b"o"))
            ),
        ],
    )
    result = parse_txn(response)
    assert result.succeeded is False  # absent means false
    assert result.revision == 7
    kv = result.responses[0].kvs[0]  # type: ignore[union-attr]
    assert kv.value == b"v"
    assert kv.lease == 7587823380406781187  # int64, exact
    assert kv.mod_revision == 0
    assert result.responses[1] == PutResult(result.header, None)
    assert result.responses[2].prev_kv.value == b"o"  # type: ignore[union-attr]


def test_endpoints_are_checked() -> None:
    assert check_endpoints("127.0.0.1:2379,http://h:1/,https://s:3") == [
        "http://127.0.0.1:2379",
        "http://h:1",
        "https://s:3",
    ]
    for bad in ([], ["ftp://h:1"], [2379], ["h"], ["http://h:1/path"], ["http://:1"]):
        with pytest.raises(errors.ConfigError):
            check_endpoints(bad)  # type: ignore[arg-type]


def test_settings_are_checked_and_frozen() -> None:
    s = EtcdSettings("a:1,b:2", timeout=3)
    assert s.endpoints == ("http://a:1", "http://b:2")
    assert s.timeout == 3.0
    assert "password" not in repr(EtcdSettings(["a:1"], username="u", password="secret"))
    with pytest.raises(AttributeError):
        s.timeout = 4  # type: ignore[misc]
    assert s.replace(timeout=1).timeout == 1.0
    assert s.replace(endpoints=["c:3"]).endpoints == ("http://c:3",)
    for kwargs in (
        {"username": "u"},
        {"password": "p"},
        {"client_key": "k.pem"},
        {"timeout": 0},
        {"timeout": True},
        {"ca_cert": 3},
    ):
        with pytest.raises(errors.ConfigError):
            EtcdSettings(["a:1"], **kwargs)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(s)) == s


def test_etcd_errors_print_and_pickle() -> None:
    for err in (
        errors.EtcdUnavailable("down", 14, "http://e:1"),
        errors.LeaseExpired("gone", 5, "http://e:1", 0x694D5D29978CC503),
        errors.CompactedRevision("old", 11, None, 42),
        errors.EtcdPermissionDenied("no", 7, None),
    ):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err)
        assert str(again) == str(err)
        assert again.args == err.args
    assert "694d5d29978cc503" in str(errors.LeaseExpired("gone", None, None, 0x694D5D29978CC503))
    assert isinstance(errors.EtcdUnavailable("x"), ConnectionError)
