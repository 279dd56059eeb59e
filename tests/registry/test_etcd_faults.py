"""The etcd registry when members fail: a three-member cluster on loopback.

Real clock, bounded waits. Each test gets a fresh cluster (``etcd_cluster``)
and kills or stops members itself.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from foundation import errors, open_registry

pytestmark = [pytest.mark.etcd, pytest.mark.etcd_cluster]


async def test_one_member_down_writes_and_reads_go_on(etcd_cluster: Any) -> None:
    async with (
        open_registry(backend="etcd", endpoints=etcd_cluster.endpoints, prefix="f/", ttl=10) as a,
        open_registry(backend="etcd", endpoints=etcd_cluster.endpoints, prefix="f/", ttl=10) as b,
    ):
        await a.register("svc", "before", 1)
        # kill a member that neither client is talking to
        used = {
            a.backend.health_check().details.get("endpoint"),
            b.backend.health_check().details.get("endpoint"),
        }
        spare = next(i for i, e in enumerate(etcd_cluster.endpoints) if e not in used)
        etcd_cluster.kill(spare)
        with trio.fail_after(20):
            await a.register("svc", "after", 2)
            await b.sync()
        assert b.lookup("svc", "after") == 2
        assert b.lookup("svc", "before") == 1
        with pytest.raises(errors.AlreadyRegistered):
            await b.register("svc", "after", 3)


async def test_current_endpoint_killed_the_registry_fails_over(etcd_cluster: Any) -> None:
    async with (
        open_registry(backend="etcd", endpoints=etcd_cluster.endpoints, prefix="f/", ttl=10) as a,
        open_registry(backend="etcd", endpoints=etcd_cluster.endpoints, prefix="f/", ttl=10) as b,
    ):
        first = a.backend.health_check().details["endpoint"]
        etcd_cluster.kill(etcd_cluster.endpoints.index(first))
        with trio.fail_after(30):
            await a.register("svc", "x", "v")  # goes to another member
            assert a.backend.health_check().details["endpoint"] != first
            # the watch of each registry moved too: b sees a's write
            await b.sync()
        assert b.lookup("svc", "x") == "v"
        with trio.fail_after(30):
            await b.register("svc", "y", "w")
            async with a.watch("svc") as events:
                await b.unregister("svc", "y")
                async for event in events:
                    # a's view may still be catching up with the registration
                    # of y (its watch just moved); wait for the unregistration.
                    if event.registration.name == "y" and event.kind == "unregistered":
                        break
        assert ("svc", "y") not in a


async def test_all_members_down_unavailable_then_recovers(etcd_cluster: Any) -> None:
    async with open_registry(
        backend="etcd", endpoints=etcd_cluster.endpoints, prefix="f/", ttl=30, timeout=2
    ) as a:
        await a.register("svc", "kept", 1)
        etcd_cluster.stop()
        start = trio.current_time()
        with pytest.raises(errors.EtcdUnavailable):
            await a.register("svc", "lost", 2)
        assert trio.current_time() - start < 10  # bounded by the timeout (plus failover)
        assert a.lookup("svc", "kept") == 1  # reads keep answering from the local view
        assert ("svc", "lost") not in a
        assert not a.health_check().ok
        for i in range(len(etcd_cluster.endpoints)):
            etcd_cluster.restart(i)
        with trio.fail_after(60):
            while True:
                try:
                    await a.register("svc", "back", 3)
                    break
                except errors.EtcdUnavailable:
                    await trio.sleep(0.5)
            await a.sync()
            while not a.health_check().ok:  # noqa: ASYNC110 -- polling a sync status, no event
                await trio.sleep(0.2)
        assert a.lookup("svc", "back") == 3
        assert a.lookup("svc", "kept") == 1  # the lease outlived the outage (TTL 30 s)
