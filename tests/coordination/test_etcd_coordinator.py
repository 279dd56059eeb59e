"""EtcdCoordinator against a real etcd: etcdctl interop, lease loss, phantoms, auth, TLS.

Real clock, bounded waits. Interop tests use ``prefix=""`` (so our lock N is
etcd's lock N) with names unique to the test, on the session's member.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from _etcd_harness import read_line, stop_process
from foundation import errors
from foundation.coordination import (
    EtcdCoordinator,
    Leader,
    LeadershipLost,
    LockLost,
    LockTimeout,
    open_etcd_coordinator,
)
from foundation.etcd import EtcdClient, open_etcd_client

pytestmark = pytest.mark.etcd

LIMIT = 30
Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
async def coord(etcd_endpoints: list[str], etcd_prefix: str) -> AsyncIterator[EtcdCoordinator]:
    async with open_etcd_coordinator(etcd_endpoints, prefix=etcd_prefix, ttl=5) as c:
        yield c


@pytest.fixture
async def raw(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    """A second, plain etcd client (someone else on the cluster)."""
    async with open_etcd_client(etcd_endpoints) as client:
        yield client


def unique(what: str) -> str:
    return f"test-{what}-{uuid.uuid4().hex[:12]}"


async def line(proc: subprocess.Popen[str], within: float) -> str | None:
    """The next line etcdctl prints, or None within ``within`` seconds.

    etcdctl's stderr is merged into the pipe, and under load its gRPC layer
    logs warnings there (``{"level":"warn",...,"msg":"retrying of unary
    invoker failed"}``): those are diagnostics, not output, and are skipped.
    """
    deadline = trio.current_time() + within
    while True:
        got = await trio.to_thread.run_sync(
            read_line, proc, max(0.0, deadline - trio.current_time())
        )
        if got is None or not got.startswith('{"level":'):
            return got


async def queue_shows(
    client: EtcdClient, queue: str, count: int, without: bytes | None = None
) -> list[Any]:
    """Poll until ``count`` keys are under ``queue`` (none of them ``without``); those keys."""
    for _ in range(1000):
        current = await keys(client, queue)
        if len(current) == count and without not in {kv.key for kv in current}:
            return current
        await trio.sleep(0.01)
    pytest.fail(f"{queue!r} never showed {count} keys")


async def stop(proc: subprocess.Popen[str]) -> None:
    """Stop an etcdctl (SIGTERM makes it release what it holds)."""
    await trio.to_thread.run_sync(stop_process, proc)


async def keys(client: EtcdClient, prefix: str) -> list[Any]:
    return (await client.range(prefix, prefix=True)).kvs


# ---------------------------------------------------------------------------
# etcdctl interop (prefix="")
# ---------------------------------------------------------------------------
async def test_etcdctl_lock_and_our_lock_exclude_each_other(
    etcd_endpoints: list[str], spawn_etcdctl: Spawn
) -> None:
    name = unique("lock")
    async with open_etcd_coordinator(etcd_endpoints, prefix="", ttl=5) as coord:
        with trio.fail_after(LIMIT):
            theirs = spawn_etcdctl(etcd_endpoints, "lock", name)
            key = await line(theirs, 10)
            assert key is not None
            assert key.startswith(name + "/")
            with pytest.raises(LockTimeout):
                async with coord.lock(name, timeout=1):
                    pytest.fail("acquired a lock etcdctl holds")
            status = await coord.lock_status(name)
            assert status is not None
            assert status.holder == key.rsplit("/", 1)[1]  # its lease, in hex
            assert len(await keys(coord.client, name + "/")) == 1  # our waiter left
            await stop(theirs)
            async with coord.lock(name, timeout=10) as held:
                assert held.fencing_token > status.token
                waiting = spawn_etcdctl(etcd_endpoints, "lock", name)
                assert await line(waiting, 1) is None  # it waits while we hold
            # released: etcdctl gets it now
            got = await line(waiting, 10)
            assert got is not None
            assert got.startswith(name + "/")
            await stop(waiting)


async def test_etcdctl_elect_and_our_election(
    etcd_endpoints: list[str], spawn_etcdctl: Spawn
) -> None:
    name = unique("elect")
    async with open_etcd_coordinator(etcd_endpoints, prefix="", ttl=5) as coord:
        election = coord.election(name)
        with trio.fail_after(LIMIT):
            theirs = spawn_etcdctl(etcd_endpoints, "elect", name, "val")
            assert await line(theirs, 10) is not None  # the leader key, then the value
            assert await line(theirs, 5) == "val"
            leader = await election.leader()
            assert leader is not None
            assert leader.candidate == "val"
            with trio.move_on_after(1) as waited:
                async with election.campaign("ours"):
                    pytest.fail("elected while etcdctl leads")
            assert waited.cancelled_caught
            assert await election.leader() == leader  # our cancelled campaign left no key
            listener = spawn_etcdctl(etcd_endpoints, "elect", "--listen", name)
            assert await line(listener, 10) is not None
            assert await line(listener, 5) == "val"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stop, theirs)
                async with election.campaign("ours") as term:
                    assert term.number > leader.term
                    assert await election.leader() == Leader("ours", term.number)
                    # etcdctl elect --listen sees our candidate as it is: raw UTF-8
                    seen = [await line(listener, 10) for _ in range(2)]
                    assert seen[-1] == "ours"
            await stop(listener)


# ---------------------------------------------------------------------------
# Leases and keys taken away
# ---------------------------------------------------------------------------
async def test_revoked_lease_while_holding_raises_lock_lost(
    coord: EtcdCoordinator, raw: EtcdClient
) -> None:
    errors_seen: list[LockLost] = []
    inside = trio.Event()
    with trio.fail_after(LIMIT):

        async def holder() -> None:
            try:
                async with coord.lock("l") as held:
                    inside.set()
                    await trio.sleep_forever()
            except LockLost as exc:
                errors_seen.append(exc)
                assert exc.token == held.fencing_token

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await inside.wait()
            (kv,) = await keys(raw, coord.prefix + "l/")
            start = trio.current_time()
            await raw.lease_revoke(kv.lease)
        assert trio.current_time() - start < 2  # the key guard saw it, no TTL wait
        (exc,) = errors_seen
        assert exc.name == "l"
        assert await coord.lock_status("l") is None
        async with coord.lock("l", timeout=1) as again:
            assert again.fencing_token > exc.token


async def test_lock_key_deleted_by_someone_else_raises_lock_lost(
    coord: EtcdCoordinator, raw: EtcdClient
) -> None:
    with trio.fail_after(LIMIT), pytest.raises(LockLost):
        async with coord.lock("d"):
            (kv,) = await keys(raw, coord.prefix + "d/")
            await raw.delete(kv.key)
            await trio.sleep(10)


async def test_resign_from_another_coordinator_raises_leadership_lost(
    coord: EtcdCoordinator, etcd_endpoints: list[str]
) -> None:
    async with open_etcd_coordinator(etcd_endpoints, prefix=coord.prefix, ttl=5) as other:
        inside = trio.Event()
        with trio.fail_after(LIMIT):

            async def lead() -> None:
                with pytest.raises(LeadershipLost) as info:
                    async with coord.election("g").campaign("one"):
                        inside.set()
                        await trio.sleep_forever()
                assert info.value.candidate == "one"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lead)
                await inside.wait()
                assert (await other.election("g").leader()) is not None
                assert await other.election("g").resign() is True
            assert await coord.election("g").leader() is None


async def test_waiting_campaign_whose_lease_is_revoked_is_no_phantom(
    coord: EtcdCoordinator, raw: EtcdClient
) -> None:
    election = coord.election("p")
    queue = coord.prefix + "p/"
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            terms: list[int] = []

            async def second() -> None:
                async with election.campaign("second") as term:
                    terms.append(term.number)
                    # it leads with a key that exists (not a phantom of the revoked one)
                    (kv,) = await keys(raw, queue)
                    assert kv.create_revision == term.number
                    assert await election.leader() == Leader("second", term.number)

            async with election.campaign("first"):
                nursery.start_soon(second)
                first_kv, second_kv = sorted(
                    await queue_shows(raw, queue, 2), key=lambda kv: kv.create_revision
                )
                await raw.lease_revoke(second_kv.lease)
                # it campaigns again with a fresh lease (a new key), still behind us
                await queue_shows(raw, queue, 2, without=second_kv.key)
                assert await election.leader() == Leader("first", first_kv.create_revision)
        (term,) = terms
        assert term > second_kv.create_revision


async def test_waiting_lock_whose_lease_is_revoked_gets_a_fresh_key(
    coord: EtcdCoordinator, raw: EtcdClient
) -> None:
    queue = coord.prefix + "w/"
    tokens: list[int] = []
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:

            async def second() -> None:
                async with coord.lock("w") as held:
                    tokens.append(held.fencing_token)
                    status = await coord.lock_status("w")
                    assert status is not None
                    assert status.token == held.fencing_token

            async with coord.lock("w") as first:
                nursery.start_soon(second)
                revoked = max(await queue_shows(raw, queue, 2), key=lambda kv: kv.create_revision)
                await raw.lease_revoke(revoked.lease)
                await queue_shows(raw, queue, 2, without=revoked.key)
        (token,) = tokens
        assert token > revoked.create_revision > first.fencing_token


async def test_cancelled_acquire_and_campaign_leave_no_key(
    coord: EtcdCoordinator, raw: EtcdClient
) -> None:
    with trio.fail_after(LIMIT):
        async with coord.lock("c"):
            with trio.move_on_after(0.3):
                async with coord.lock("c"):
                    pytest.fail("acquired a held lock")
            # deleted before the cancellation came out: no polling needed
            assert len(await keys(raw, coord.prefix + "c/")) == 1
        assert await keys(raw, coord.prefix + "c/") == []
        election = coord.election("e")
        async with election.campaign("a"):
            with trio.move_on_after(0.3):
                async with election.campaign("b"):
                    pytest.fail("elected while a leads")
            assert len(await keys(raw, coord.prefix + "e/")) == 1
        assert await keys(raw, coord.prefix + "e/") == []
        assert await election.leader() is None


async def test_fencing_tokens_increase_across_two_coordinators(
    coord: EtcdCoordinator, etcd_endpoints: list[str]
) -> None:
    tokens: list[tuple[str, int]] = []
    inside: list[str] = []
    async with open_etcd_coordinator(etcd_endpoints, prefix=coord.prefix, ttl=5) as other:

        async def worker(who: str, c: EtcdCoordinator) -> None:
            for _ in range(5):
                async with c.lock("f") as held:
                    inside.append(who)
                    assert len(inside) == 1
                    tokens.append((who, held.fencing_token))
                    await trio.sleep(0.01)
                    inside.remove(who)

        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker, "a", coord)
                nursery.start_soon(worker, "b", other)
    values = [t for _, t in tokens]
    assert values == sorted(values)
    assert len(set(values)) == 10
    assert {who for who, _ in tokens} == {"a", "b"}


# ---------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------
async def test_bad_password_fails_at_open(etcd_auth: Any) -> None:
    with pytest.raises(errors.EtcdAuthError):
        async with open_etcd_coordinator(
            etcd_auth.endpoints, prefix="alice/", username="alice", password="wrong"
        ):
            pytest.fail("opened with a wrong password")


async def test_user_confined_to_its_prefix(etcd_auth: Any) -> None:
    alice, password = etcd_auth.credentials("alice")
    theirs = f"bob/{uuid.uuid4().hex}/"
    with trio.fail_after(LIMIT):
        with pytest.raises(errors.EtcdPermissionDenied):
            async with open_etcd_coordinator(
                etcd_auth.endpoints, prefix=theirs, username=alice, password=password
            ):
                pytest.fail("opened on a prefix alice may not read")
        # with prefix="" nothing is checked at open: the first use fails, writing nothing
        async with open_etcd_coordinator(
            etcd_auth.endpoints, prefix="", username=alice, password=password
        ) as coord:
            with pytest.raises(errors.EtcdPermissionDenied):
                async with coord.lock(theirs + "l", timeout=1):
                    pytest.fail("locked under bob/")
            with pytest.raises(errors.EtcdPermissionDenied):
                await coord.counter(theirs + "n").add(1)
        # on her own prefix everything works
        async with open_etcd_coordinator(
            etcd_auth.endpoints,
            prefix=f"alice/{uuid.uuid4().hex}/",
            username=alice,
            password=password,
        ) as coord:
            async with coord.lock("l") as held:
                assert held.fencing_token > 0
            async with coord.election("g").campaign("me") as term:
                assert await coord.election("g").leader() == Leader("me", term.number)
            assert await coord.counter("n").add(2) == 2
            assert await coord.barrier("b", 1).wait() == 0
    root = etcd_auth.credentials("root")
    async with open_etcd_client(etcd_auth.endpoints, username=root[0], password=root[1]) as client:
        assert await keys(client, theirs) == []  # nothing was written under bob/


async def test_tls_with_client_certificate(etcd_tls: Any) -> None:
    files = etcd_tls.files
    with trio.fail_after(LIMIT):
        async with open_etcd_coordinator(
            etcd_tls.endpoints,
            prefix=f"test/{uuid.uuid4().hex}/",
            ca_cert=files.ca_cert,
            client_cert=files.client_cert,
            client_key=files.client_key,
        ) as coord:
            async with coord.lock("l") as held:
                status = await coord.lock_status("l")
                assert status is not None
                assert status.token == held.fencing_token
                # Let the key guard's watch finish its TLS handshake: httpcore 1.0.9
                # leaks the socket (a ResourceWarning) when a handshake is cancelled.
                await trio.sleep(0.3)
            assert await coord.agree("x", [1, 2]) == [1, 2]


async def test_closing_the_coordinator_releases_what_it_held(
    etcd_endpoints: list[str], etcd_prefix: str, raw: EtcdClient
) -> None:
    with trio.fail_after(LIMIT):
        async with open_etcd_coordinator(etcd_endpoints, prefix=etcd_prefix, ttl=5) as coord:
            held = await coord.lock("kept").acquire()
            assert held.fencing_token > 0
            assert len(await keys(raw, etcd_prefix + "kept/")) == 1
            assert coord.tasks.failures() == []
        assert await keys(raw, etcd_prefix + "kept/") == []


# ---------------------------------------------------------------------------
# Faults (three members)
# ---------------------------------------------------------------------------
@pytest.mark.etcd_cluster
async def test_hold_and_leadership_survive_their_member_dying(etcd_cluster: Any) -> None:
    # ttl 15: the keepalive (every 5 s) must reach another member; a leader's
    # death stalls writes for an election (2.5-5 s with the harness's timing).
    leader = etcd_cluster.wait_for_leader()
    endpoints = list(etcd_cluster.endpoints)
    endpoints.insert(0, endpoints.pop(leader))  # talk to the raft leader first: kill it
    async with open_etcd_coordinator(endpoints, prefix="t/", ttl=15, timeout=20) as coord:
        election = coord.election("g")
        with trio.fail_after(90):
            async with coord.lock("l") as held, election.campaign("me") as term:
                etcd_cluster.kill(etcd_cluster.endpoints.index(coord.client.current_endpoint))
                await trio.sleep(6)  # past one keepalive, the guards' watches moved over
                status = await coord.lock_status("l")
                assert status is not None
                assert status.token == held.fencing_token
                assert await election.leader() == Leader("me", term.number)
            assert await coord.lock_status("l") is None
            assert await election.leader() is None
            async with coord.lock("l", timeout=10) as again:
                assert again.fencing_token > held.fencing_token
        assert coord.tasks.failures() == []
