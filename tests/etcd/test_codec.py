"""The gateway encoding and error mapping, without a server."""

from __future__ import annotations

import pickle

import pytest

from foundation import errors
from foundation.etcd import compare_create, op_put, op_range, prefix_end
from foundation.etcd._codec import b64, from_b64, int_field, parse_kv
from foundation.etcd._ops import parse_txn
from foundation.etcd._transport import _Retry, check_endpoints, error_from_body


def test_prefix_end_increments_the_last_byte() -> None:
    assert prefix_end("registry/") == b"registry0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_bytes_fields_are_standard_base64_both_ways() -> None:
    raw = bytes(range(256))
    assert from_b64(b64(raw)) == raw
    assert b64("registry/") == "cmVnaXN0cnkv"
    assert from_b64(None) == b""
    with pytest.raises(TypeError):
        b64(3)  # type: ignore[arg-type]


def test_int64_fields_arrive_as_strings_and_absent_means_zero() -> None:
    kv = parse_kv({"key": "Zm9v", "create_revision": "2", "lease": "7587823380406781187"})
    assert kv.key == b"foo"
    assert kv.value == b""  # omitted default
    assert kv.create_revision == 2
    assert kv.mod_revision == 0
    assert kv.lease == 7587823380406781187  # > 2**53: kept exact
    assert int_field({"n": 5}, "n") == 5


def test_txn_builders_make_the_gateway_shapes() -> None:
    assert compare_create("k", "==", 0) == {
        "key": "aw==",
        "result": "EQUAL",
        "target": "CREATE",
        "create_revision": "0",
    }
    assert op_put("k", "v", lease=10) == {
        "request_put": {"key": "aw==", "value": "dg==", "lease": "10"}
    }
    assert op_range("a/", prefix=True)["request_range"]["range_end"] == b64("a0")
    with pytest.raises(ValueError, match="compare op"):
        compare_create("k", "=", 0)  # type: ignore[arg-type]


def test_txn_results_keep_omitted_defaults() -> None:
    result = parse_txn(
        {
            "header": {"revision": "7"},
            "responses": [
                {"response_range": {"header": {}, "kvs": [{"key": "aw==", "value": "dg=="}]}},
                {"response_put": {"header": {}}},
            ],
        }
    )
    assert result.succeeded is False  # absent means false
    assert result.revision == 7
    assert result.responses[0].kvs[0].value == b"v"  # type: ignore[union-attr]


def test_endpoints_are_checked() -> None:
    assert check_endpoints("127.0.0.1:2379,http://h:1/") == ["http://127.0.0.1:2379", "http://h:1"]
    with pytest.raises(errors.ConfigError):
        check_endpoints([])
    with pytest.raises(errors.ConfigError):
        check_endpoints(["ftp://h:1"])
    with pytest.raises(errors.ConfigError):
        check_endpoints([2379])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "etcdserver: no leader", "code": 14}, _Retry),
        ({"error": "etcdserver: request timed out", "code": 14}, _Retry),
        (
            {"error": "etcdserver: authentication failed, invalid user ID or password", "code": 3},
            errors.EtcdAuthError,
        ),
        ({"error": "etcdserver: permission denied", "code": 7}, errors.EtcdPermissionDenied),
        ({"error": "etcdserver: invalid auth token", "code": 16}, errors.EtcdAuthError),
        (
            {"error": "etcdserver: mvcc: required revision has been compacted", "code": 11},
            errors.CompactedRevision,
        ),
        ({"error": "etcdserver: requested lease not found", "code": 5}, errors.LeaseExpired),
        (
            {"error": "etcdserver: too many operations in txn request", "code": 3},
            errors.EtcdRequestError,
        ),
        # the concurrency services' answers are results, not a sick member
        ({"error": "election: no leader", "code": 2}, errors.EtcdError),
        ({"code": 14, "message": "etcdserver: leader changed", "details": []}, _Retry),  # v2
    ],
)
def test_gateway_errors_map_to_typed_errors(body: dict[str, object], expected: type) -> None:
    err = error_from_body(500, body, "http://e:1")
    assert type(err) is expected


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
