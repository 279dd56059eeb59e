"""Failover, per-attempt deadlines, retry rules, auth and error mapping, on the fake wire.

No etcd here: ``FakeWire`` plays scripted members (answering, refusing,
stalling), and the MockClock jumps over their silences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.etcd import compare_create, op_put, open_etcd_client
from foundation.etcd._codec import pb
from foundation.etcd._fake import FakePeer, FakeWire
from foundation.etcd._transport import GRPC_CODES, Outcome, classify, map_wire_error
from foundation.etcd._wire import WireError

A, B, C = "http://a:2379", "http://b:2379", "http://c:2379"


def _put_response(revision: int = 7) -> Any:
    return pb.rpc.PutResponse(header=pb.rpc.ResponseHeader(revision=revision))


def _txn_response(revision: int = 7) -> Any:
    return pb.rpc.TxnResponse(header=pb.rpc.ResponseHeader(revision=revision), succeeded=True)


def _handler(behaviour: dict[str, Callable[[str, Any], Any]]) -> Any:
    """A unary handler: ``behaviour[endpoint](method, request)`` (may be async)."""

    async def handle(endpoint: str, method: str, request: Any) -> Any:
        result = behaviour[endpoint](method, request)
        if hasattr(result, "__await__"):
            result = await result
        return result

    return handle


def _ok(method: str, request: Any) -> Any:
    if method == "KV.Txn":
        return _txn_response()
    if method == "KV.Range":
        return pb.rpc.RangeResponse(header=pb.rpc.ResponseHeader(revision=7))
    return _put_response()


async def _stall(method: str, request: Any) -> Any:
    await trio.sleep_forever()


def _fails(code: str, details: str, *, sent: bool = True) -> Callable[[str, Any], Any]:
    def fail(method: str, request: Any) -> Any:
        raise WireError(code, details, sent=sent)

    return fail


def _endpoints_called(wire: FakeWire, method: str | None = None) -> list[str]:
    return [c[0] for c in wire.calls if method is None or c[1] == method]


# -- error mapping --------------------------------------------------------------------

# etcd's own messages (api/v3rpc/rpctypes/error.go) and what each must become.
ETCD_MESSAGES: list[tuple[str, str, type[errors.EtcdError] | Outcome]] = [
    ("INVALID_ARGUMENT", "etcdserver: key is not provided", errors.EtcdRequestError),
    ("INVALID_ARGUMENT", "etcdserver: too many operations in txn request", errors.EtcdRequestError),
    ("INVALID_ARGUMENT", "etcdserver: duplicate key given in txn request", errors.EtcdRequestError),
    ("INVALID_ARGUMENT", "etcdserver: request is too large", errors.EtcdRequestError),
    (
        "OUT_OF_RANGE",
        "etcdserver: mvcc: required revision has been compacted",
        errors.CompactedRevision,
    ),
    (
        "OUT_OF_RANGE",
        "etcdserver: mvcc: required revision is a future revision",
        errors.EtcdRequestError,
    ),
    ("OUT_OF_RANGE", "etcdserver: too large lease TTL", errors.EtcdRequestError),
    ("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded", errors.EtcdError),
    ("NOT_FOUND", "etcdserver: requested lease not found", errors.LeaseExpired),
    ("FAILED_PRECONDITION", "etcdserver: lease already exists", errors.EtcdRequestError),
    (
        "INVALID_ARGUMENT",
        "etcdserver: authentication failed, invalid user ID or password",
        errors.EtcdAuthError,
    ),
    ("FAILED_PRECONDITION", "etcdserver: authentication is not enabled", errors.EtcdAuthError),
    ("PERMISSION_DENIED", "etcdserver: permission denied", errors.EtcdPermissionDenied),
    ("UNAUTHENTICATED", "etcdserver: invalid auth token", Outcome.REAUTH),
    ("INVALID_ARGUMENT", "etcdserver: revision of auth store is old", Outcome.REAUTH),
    ("INVALID_ARGUMENT", "etcdserver: user name is empty", Outcome.REAUTH),
    ("UNAVAILABLE", "etcdserver: no leader", Outcome.RETRY),
    ("UNAVAILABLE", "etcdserver: unhealthy cluster", Outcome.RETRY),
    ("RESOURCE_EXHAUSTED", "etcdserver: too many requests", Outcome.RETRY),
    ("FAILED_PRECONDITION", "etcdserver: not capable", Outcome.RETRY),
    ("FAILED_PRECONDITION", "etcdserver: rpc not supported for learner", Outcome.RETRY),
    ("UNAVAILABLE", "etcdserver: leader changed", Outcome.UNKNOWN),
    ("UNAVAILABLE", "etcdserver: server stopped", Outcome.UNKNOWN),
    ("UNAVAILABLE", "etcdserver: request timed out", Outcome.UNKNOWN),
    (
        "UNAVAILABLE",
        "etcdserver: request timed out, possibly due to previous leader failure",
        Outcome.UNKNOWN,
    ),
    ("CANCELLED", "etcdserver: request canceled", Outcome.UNKNOWN),
    ("DEADLINE_EXCEEDED", "etcdserver: context deadline exceeded", Outcome.UNKNOWN),
    ("DATA_LOSS", "etcdserver: corrupt cluster", errors.EtcdError),
    # the concurrency services' answers are results, not a member in trouble
    ("UNKNOWN", "election: not leader", errors.EtcdError),
    ("UNKNOWN", "election: no leader", errors.EtcdError),
    # grpc's own
    ("DEADLINE_EXCEEDED", "Deadline Exceeded", Outcome.UNKNOWN),
    ("UNAVAILABLE", "Socket closed", Outcome.UNKNOWN),
    ("UNKNOWN", "Stream removed", Outcome.UNKNOWN),
    ("RESOURCE_EXHAUSTED", "Received message larger than max (5 vs. 4)", errors.EtcdRequestError),
    ("UNIMPLEMENTED", "unknown service etcdserverpb.Nope", errors.EtcdError),
]


@pytest.mark.parametrize(("code", "details", "expected"), ETCD_MESSAGES)
def test_every_etcd_message_maps_to_its_type(
    code: str, details: str, expected: type[errors.EtcdError] | Outcome
) -> None:
    exc = WireError(code, details)
    error = map_wire_error(exc, A)
    assert error.code == GRPC_CODES[code]
    assert error.endpoint == A
    assert error.message == details
    if isinstance(expected, Outcome):
        assert classify(exc) is expected
        if expected in (Outcome.RETRY, Outcome.UNKNOWN):
            assert type(error) is errors.EtcdUnavailable
        else:
            assert type(error) is errors.EtcdAuthError
    else:
        assert classify(exc) is Outcome.FAIL
        assert type(error) is expected


@pytest.mark.parametrize("code", sorted(set(GRPC_CODES) - {"OK"}))
def test_every_grpc_status_maps_to_an_etcd_error(code: str) -> None:
    error = map_wire_error(WireError(code, "something"), None)
    assert isinstance(error, errors.EtcdError)
    expected = {
        "UNAVAILABLE": errors.EtcdUnavailable,
        "DEADLINE_EXCEEDED": errors.EtcdUnavailable,
        "CANCELLED": errors.EtcdUnavailable,
        "PERMISSION_DENIED": errors.EtcdPermissionDenied,
        "UNAUTHENTICATED": errors.EtcdAuthError,
        "INVALID_ARGUMENT": errors.EtcdRequestError,
        "OUT_OF_RANGE": errors.EtcdRequestError,
        "FAILED_PRECONDITION": errors.EtcdRequestError,
    }.get(code, errors.EtcdError)
    assert type(error) is expected
    # a connection that was never made is always worth another member
    assert classify(WireError(code, "failed to connect", sent=False)) is Outcome.RETRY


# -- failover and deadlines -----------------------------------------------------------


async def test_a_refused_member_is_skipped_and_the_next_serves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wire = FakeWire(
        _handler(
            {A: _fails("UNAVAILABLE", "failed to connect to all addresses", sent=False), B: _ok}
        )
    )
    async with open_etcd_client([A, B], _wire=wire) as etcd:
        result = await etcd.put("k", "v")
        assert result.header.revision == 7
        assert etcd.current_endpoint == B
        # and a non-idempotent txn too: nothing was sent to A
        wire.calls.clear()
        await etcd.txn([compare_create("k", "==", 0)], [op_put("k", "v")])
        assert _endpoints_called(wire) == [B]  # A is backing off


async def test_a_stalled_member_costs_one_attempt_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wire = FakeWire(_handler({A: _stall, B: _ok, C: _ok}))
    async with open_etcd_client([A, B, C], timeout=6, _wire=wire) as etcd:
        start = trio.current_time()
        await etcd.put("k", "v")
        took = trio.current_time() - start
        # attempt deadline: min(timeout / 3, 1 s)
        assert took == pytest.approx(1.0, abs=0.01)
        assert _endpoints_called(wire) == [A, B]
        # the stalled member is skipped for its back-off period...
        wire.calls.clear()
        start = trio.current_time()
        await etcd.get("k")
        assert trio.current_time() - start < 0.01
        assert _endpoints_called(wire) == [B]


async def test_a_lone_endpoint_gets_the_whole_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answered_at: list[float] = []

    async def slow(method: str, request: Any) -> Any:
        await trio.sleep(3.5)  # slow, not stalled: nowhere else to go anyway
        answered_at.append(trio.current_time())
        return _put_response()

    wire = FakeWire(_handler({A: slow}))
    async with open_etcd_client([A], timeout=5, _wire=wire) as etcd:
        await etcd.put("k", "v")
    assert len(wire.calls) == 1


async def test_a_non_idempotent_write_is_not_sent_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wire = FakeWire(_handler({A: _stall, B: _ok}))
    async with open_etcd_client([A, B], timeout=3, _wire=wire) as etcd:
        start = trio.current_time()
        with pytest.raises(errors.EtcdUnavailable, match="may or may not have been applied"):
            await etcd.txn([compare_create("k", "==", 0)], [op_put("k", "v")])
        # one attempt with the whole budget, never resent to B
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.01)
        assert _endpoints_called(wire) == [A]
        # a CAS-guarded one may be: it goes to B after one attempt deadline
        wire.calls.clear()
        await etcd.txn([compare_create("k", "==", 0)], [op_put("k", "v")], retry_ambiguous=True)
        assert _endpoints_called(wire) == [B]


@pytest.mark.parametrize(
    ("details", "resent"),
    [
        ("etcdserver: no leader", True),
        ("etcdserver: request timed out", False),
        ("etcdserver: leader changed", False),
    ],
)
async def test_what_a_member_said_decides_whether_a_txn_is_resent(
    autojump_clock: trio.testing.MockClock, details: str, resent: bool
) -> None:
    wire = FakeWire(_handler({A: _fails("UNAVAILABLE", details), B: _ok}))
    async with open_etcd_client([A, B], _wire=wire) as etcd:
        if resent:
            await etcd.txn([], [op_put("k", "v")])
            assert _endpoints_called(wire) == [A, B]
        else:
            with pytest.raises(errors.EtcdUnavailable, match="may or may not"):
                await etcd.txn([], [op_put("k", "v")])
            assert _endpoints_called(wire) == [A]
        # an idempotent put is resent either way
        wire.calls.clear()
        await etcd.put("k", "v")


async def test_no_member_answering_is_unavailable_at_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down = _fails("UNAVAILABLE", "failed to connect to all addresses", sent=False)
    wire = FakeWire(_handler({A: down, B: _stall}))
    async with open_etcd_client([A, B], timeout=4, _wire=wire) as etcd:
        start = trio.current_time()
        with pytest.raises(errors.EtcdUnavailable, match=r"no member answered KV\.Range within 4"):
            await etcd.get("k")
        assert trio.current_time() - start == pytest.approx(4.0, abs=0.01)
        assert set(_endpoints_called(wire)) == {A, B}


async def test_definite_errors_are_raised_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wire = FakeWire(
        _handler(
            {
                A: _fails("INVALID_ARGUMENT", "etcdserver: too many operations in txn request"),
                B: _ok,
            }
        )
    )
    async with open_etcd_client([A, B], _wire=wire) as etcd:
        with pytest.raises(errors.EtcdRequestError, match="too many operations") as info:
            await etcd.txn([], [op_put("k", "v")])
        assert info.value.code == 3
        assert _endpoints_called(wire) == [A]


async def test_cancelling_a_call_cancels_it_on_the_wire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled: list[bool] = []

    async def blocks(method: str, request: Any) -> Any:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    wire = FakeWire(_handler({A: blocks}))
    async with open_etcd_client([A], _wire=wire) as etcd:
        with trio.move_on_after(0.5) as scope:
            await etcd.lock("l", 1)  # blocking: no deadline of its own
        assert scope.cancelled_caught
    assert cancelled == [True]


# -- auth ------------------------------------------------------------------------------


async def test_the_token_is_sent_and_fetched_again_when_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tokens = iter(["t1", "t2"])
    rejected: list[str] = []

    async def member(endpoint: str, method: str, request: Any) -> Any:
        if method == "Auth.Authenticate":
            assert request.name == "alice"
            if request.password != "secret":
                raise WireError(
                    "INVALID_ARGUMENT",
                    "etcdserver: authentication failed, invalid user ID or password",
                )
            return pb.rpc.AuthenticateResponse(token=next(tokens))
        return _ok(method, request)

    wire = FakeWire(member)
    with pytest.raises(errors.EtcdAuthError, match="authentication failed"):
        async with open_etcd_client([A], username="alice", password="wrong", _wire=wire):
            pass

    async def expiring(endpoint: str, method: str, request: Any) -> Any:
        md = dict(wire.calls[-1][3])
        if method != "Auth.Authenticate" and md.get("token") == "t1":
            rejected.append(method)
            raise WireError("UNAUTHENTICATED", "etcdserver: invalid auth token")
        return await member(endpoint, method, request)

    wire = FakeWire(expiring)
    async with open_etcd_client([A], username="alice", password="secret", _wire=wire) as etcd:
        # a rejected request was not applied: even a plain txn is resent
        await etcd.txn([], [op_put("k", "v")])
    assert rejected == ["KV.Txn"]
    sent = [(c[1], dict(c[3]).get("token")) for c in wire.calls]
    assert sent == [
        ("Auth.Authenticate", None),
        ("KV.Txn", "t1"),
        ("Auth.Authenticate", None),
        ("KV.Txn", "t2"),
    ]
    assert all(dict(c[3]).get("hasleader") == "true" for c in wire.calls if c[1] == "KV.Txn")


# -- leases ---------------------------------------------------------------------------


def _lease_member(
    stalled: set[str], grant_ttl: int = 9
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    async def unary(endpoint: str, method: str, request: Any) -> Any:
        if endpoint in stalled:
            await trio.sleep_forever()
        if method == "Lease.LeaseGrant":
            return pb.rpc.LeaseGrantResponse(ID=42, TTL=grant_ttl)
        return pb.rpc.LeaseRevokeResponse()

    async def streams(endpoint: str, method: str, request: Any, peer: FakePeer) -> None:
        assert method == "Lease.LeaseKeepAlive"
        while True:
            req = await peer.receive()
            if endpoint in stalled:
                continue  # never answers
            await trio.sleep(0.01)
            peer.send(pb.rpc.LeaseKeepAliveResponse(ID=req.ID, TTL=grant_ttl))

    return unary, streams


async def test_a_lease_renews_through_a_stalled_member(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled: set[str] = set()
    unary, streams = _lease_member(stalled)
    wire = FakeWire(unary, streams)
    async with open_etcd_client([A, B], _wire=wire) as etcd, etcd.lease(9) as lease:
        await trio.sleep(4)
        stalled.add(A)  # A stops answering; the lease must live on through B
        await trio.sleep(30)
        assert lease.alive
        assert lease.expires_at > trio.current_time() + 5
        opened = [c[0] for c in wire.calls if c[1] == "Lease.LeaseKeepAlive"]
        assert opened[0] == A
        assert B in opened


async def test_expiry_runs_from_the_send_time_of_the_last_acknowledged_renewal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled: set[str] = set()
    unary, streams = _lease_member(stalled)
    wire = FakeWire(unary, streams)
    async with open_etcd_client([A], _wire=wire) as etcd, etcd.lease(9) as lease:
        sent = trio.current_time()
        ttl = await lease.keepalive_once()
        assert ttl == 9
        # answered 10 ms after it was sent: the deadline counts from the send
        assert lease.expires_at == pytest.approx(sent + 9)
        assert lease.renewed_at == pytest.approx(sent + 0.01)
        stalled.add(A)
        last_ack = lease.expires_at
        with trio.fail_after(20):
            await lease.wait_expiring()
        assert lease.margin == 1.8
        assert trio.current_time() == pytest.approx(last_ack - 1.8, abs=0.01)
        assert lease.alive
        await lease.lost.wait()
        assert trio.current_time() == pytest.approx(last_ack, abs=0.05)
        assert isinstance(lease.error, errors.LeaseExpired)
        assert "within its TTL" in lease.error.message


async def test_ttl_zero_means_expired(autojump_clock: trio.testing.MockClock) -> None:
    async def unary(endpoint: str, method: str, request: Any) -> Any:
        return pb.rpc.LeaseGrantResponse(ID=5, TTL=9)

    async def streams(endpoint: str, method: str, request: Any, peer: FakePeer) -> None:
        while True:
            req = await peer.receive()
            peer.send(pb.rpc.LeaseKeepAliveResponse(ID=req.ID, TTL=0))

    async with open_etcd_client([A], _wire=FakeWire(unary, streams)) as etcd:
        lease = await etcd.lease_grant(9)
        with pytest.raises(errors.LeaseExpired):
            await lease.keepalive_once()
        assert not lease.alive


# -- watches --------------------------------------------------------------------------


async def test_a_stalled_watch_reopens_elsewhere_from_the_next_revision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stalled: set[str] = set()
    creates: list[tuple[str, int]] = []

    def event(rev: int) -> Any:
        kv = pb.kv.KeyValue(key=b"w/k", value=str(rev).encode(), mod_revision=rev)
        return pb.rpc.WatchResponse(
            header=pb.rpc.ResponseHeader(revision=rev), events=[pb.kv.Event(type=0, kv=kv)]
        )

    async def streams(endpoint: str, method: str, request: Any, peer: FakePeer) -> None:
        create = (await peer.receive()).create_request
        creates.append((endpoint, create.start_revision))
        peer.send(pb.rpc.WatchResponse(header=pb.rpc.ResponseHeader(revision=10), created=True))
        rev = create.start_revision
        while endpoint not in stalled:
            peer.send(event(rev))
            rev += 1
            await trio.sleep(0.5)
        await trio.sleep_forever()  # stalled: not even progress answers

    async def unary(endpoint: str, method: str, request: Any) -> Any:
        raise AssertionError("no unary call expected")

    wire = FakeWire(unary, streams)
    seen: list[int] = []
    async with (
        open_etcd_client([A, B], _wire=wire) as etcd,
        etcd.watch("w/", prefix=True, start_revision=5) as events,
    ):
        async for response in events:
            seen.extend(ev.kv.mod_revision for ev in response.events)
            if len(seen) == 3:
                stalled.add(A)
            if len(seen) == 6:
                break
    assert seen == [5, 6, 7, 8, 9, 10]  # none lost, none twice
    assert creates == [(A, 5), (B, 8)]


def test_an_attempt_deadline_is_never_negative() -> None:
    """A call whose time ran out while a stream opened gets 0 s, not a negative
    span (``trio.move_on_after`` raises ValueError on one: a lease's keepalive
    died of it under a partition)."""
    from foundation.etcd import EtcdSettings
    from foundation.etcd._transport import Transport

    transport = Transport(EtcdSettings(endpoints=("127.0.0.1:2379",)), FakeWire())
    assert transport.attempt_deadline(-0.25, True) == 0.0
    assert transport.attempt_deadline(-0.25, False) == 0.0
    assert transport.attempt_deadline(3.0, False) == 3.0
