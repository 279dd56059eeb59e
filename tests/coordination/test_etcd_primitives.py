"""Semaphores, read/write locks and memberships on etcd: across coordinators, lease loss.

Real clock, bounded waits. Two coordinators on one prefix stand for two
processes; a plain client (``raw``) plays someone else on the cluster.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from foundation import telemetry
from foundation.coordination import EtcdCoordinator, HeldLock, LockLost, open_etcd_coordinator
from foundation.errors import ConfigError
from foundation.etcd import EtcdClient, open_etcd_client

pytestmark = pytest.mark.etcd

LIMIT = 30


@pytest.fixture
async def pair(
    etcd_endpoints: list[str],
) -> AsyncIterator[tuple[EtcdCoordinator, EtcdCoordinator]]:
    """Two coordinators on one fresh prefix (two processes, as far as etcd can tell)."""
    prefix = f"test/{uuid.uuid4().hex}/"
    async with (
        open_etcd_coordinator(etcd_endpoints, prefix=prefix, ttl=5) as one,
        open_etcd_coordinator(etcd_endpoints, prefix=prefix, ttl=5) as two,
    ):
        yield one, two


@pytest.fixture
async def raw(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    async with open_etcd_client(etcd_endpoints) as client:
        yield client


async def keys_under(client: EtcdClient, prefix: str) -> list[Any]:
    return (await client.range(prefix, prefix=True)).kvs


async def count_becomes(client: EtcdClient, prefix: str, count: int) -> None:
    """Poll until ``count`` keys are under ``prefix`` (within the test's own bound)."""
    while True:
        if len(await keys_under(client, prefix)) == count:
            return
        await trio.sleep(0.01)


async def test_semaphore_limit_holds_across_coordinators(
    pair: tuple[EtcdCoordinator, EtcdCoordinator],
) -> None:
    one, two = pair
    inside = 0
    most = 0

    async def worker(coord: EtcdCoordinator) -> None:
        nonlocal inside, most
        for _ in range(3):
            async with coord.semaphore("pool", 2):
                inside += 1
                most = max(most, inside)
                assert inside <= 2
                await trio.sleep(0.01)
                inside -= 1

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for coord in (one, two, one, two):
                nursery.start_soon(worker, coord)
    assert most <= 2
    # Disagreeing on the limit is refused across coordinators too.
    with trio.fail_after(LIMIT):
        async with one.semaphore("pool", 2):
            with pytest.raises(ConfigError):
                async with two.semaphore("pool", 5):
                    pytest.fail("a holder with another limit got in")


async def test_semaphore_fifo_across_coordinators(
    pair: tuple[EtcdCoordinator, EtcdCoordinator], raw: EtcdClient
) -> None:
    one, two = pair
    order: list[int] = []
    directory = one.prefix + "semaphore/fifo/"

    async def waiter(i: int) -> None:
        async with (one if i % 2 else two).semaphore("fifo", 1):
            order.append(i)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            first = one.semaphore("fifo", 1)
            await first.acquire()
            for i in range(5):
                nursery.start_soon(waiter, i)
                await count_becomes(raw, directory, 2 + i)
            await first.release()
    assert order == list(range(5))


@pytest.mark.parametrize("kind", ["semaphore", "read", "write"])
async def test_revoked_lease_while_holding_raises_lock_lost(
    pair: tuple[EtcdCoordinator, EtcdCoordinator], raw: EtcdClient, kind: str
) -> None:
    coord, other = pair
    handles = {
        "semaphore": lambda c: c.semaphore("s", 2),
        "read": lambda c: c.rwlock("rw").read(),
        "write": lambda c: c.rwlock("rw").write(),
    }
    subtree = "semaphore/s/" if kind == "semaphore" else "rwlock/rw/"
    lost: list[LockLost] = []
    inside = trio.Event()
    held: list[HeldLock] = []

    async def holder() -> None:
        try:
            async with handles[kind](coord) as hold:
                held.append(hold)
                inside.set()
                await trio.sleep_forever()
        except LockLost as exc:
            lost.append(exc)

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await inside.wait()
            (kv,) = await keys_under(raw, coord.prefix + subtree)
            start = trio.current_time()
            await raw.lease_revoke(kv.lease)
        assert trio.current_time() - start < 3  # the key guard saw it, no TTL wait
        (exc,) = lost
        assert exc.token == held[0].fencing_token
        assert (
            exc.kind == {"semaphore": "semaphore", "read": "read lock", "write": "write lock"}[kind]
        )
        # Free again, for the other coordinator too.
        async with handles[kind](other) as again:
            assert again.fencing_token > exc.token


async def test_rwlock_across_coordinators(
    pair: tuple[EtcdCoordinator, EtcdCoordinator], raw: EtcdClient
) -> None:
    one, two = pair
    order: list[str] = []
    directory = one.prefix + "rwlock/doc/"

    async def write() -> None:
        async with two.rwlock("doc").write():
            order.append("writer")

    async def read() -> None:
        async with one.rwlock("doc").read():
            order.append("reader")

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            first = one.rwlock("doc").read()
            await first.acquire()
            nursery.start_soon(write)
            await count_becomes(raw, directory, 2)
            nursery.start_soon(read)
            await count_becomes(raw, directory, 3)
            await trio.sleep(0.2)
            assert order == []  # the reader waits behind the writer
            await first.release()
    assert order == ["writer", "reader"]


async def test_membership_across_coordinators(
    pair: tuple[EtcdCoordinator, EtcdCoordinator],
) -> None:
    one, two = pair
    with trio.fail_after(LIMIT):
        async with one.membership("workers", "a", {"zone": 1}) as a:
            watch = a.watch()
            assert await watch.__anext__() == ["a"]
            async with two.membership("workers", "b", {"zone": 2}) as b:
                assert await watch.__anext__() == ["a", "b"]
                assert dict(a.metadata()) == {"a": {"zone": 1}, "b": {"zone": 2}}
                async for members in b.watch():
                    if members == ["a", "b"]:
                        break
                assert all(a.owner_of(str(k)) == b.owner_of(str(k)) for k in range(100))
            assert await watch.__anext__() == ["a"]


async def test_membership_rejoins_after_losing_its_lease(
    pair: tuple[EtcdCoordinator, EtcdCoordinator], raw: EtcdClient
) -> None:
    one, two = pair
    key = one.prefix + "membership/g/m"
    events: list[str] = []
    with (
        telemetry.attached(
            "test-rejoin",
            "foundation.coordination.membership",
            lambda event, _measurements, meta: (
                events.append(event) if meta["member"] == "m" else None
            ),
        ),
        trio.fail_after(LIMIT),
    ):
        async with one.membership("g", "m") as m, two.membership("g", "observer") as observer:
            watch = observer.watch()
            while await watch.__anext__() != ["m", "observer"]:
                pass
            (kv,) = await keys_under(raw, key)
            await raw.lease_revoke(kv.lease)
            # It joins again with a new lease, by itself; the block goes on.
            while True:
                now = await keys_under(raw, key)
                if now and now[0].lease != kv.lease:
                    break
                await trio.sleep(0.01)
            while True:
                if observer.members() == m.members() == ["m", "observer"]:
                    break
                await trio.sleep(0.01)
        assert events == [
            "foundation.coordination.membership.join",
            "foundation.coordination.membership.lost",
            "foundation.coordination.membership.join",
            "foundation.coordination.membership.leave",
        ]
        assert await keys_under(raw, one.prefix + "membership/") == []


async def test_membership_waits_for_a_taken_id(
    pair: tuple[EtcdCoordinator, EtcdCoordinator], raw: EtcdClient
) -> None:
    one, _ = pair
    key = one.prefix + "membership/g/m"
    with trio.fail_after(LIMIT):
        # Someone else holds the id (a crashed member whose lease lives on).
        lease = await raw.lease_grant(30)
        await raw.put(key, '{"metadata":"old"}', lease=lease.id)
        joined = trio.Event()

        async def join() -> None:
            async with one.membership("g", "m", "new") as group:
                assert dict(group.metadata()) == {"m": "new"}
                joined.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join)
            with trio.move_on_after(0.5):
                await joined.wait()
            assert not joined.is_set()
            await raw.lease_revoke(lease.id)
            await joined.wait()
