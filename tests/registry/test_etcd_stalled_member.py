"""An etcd registry whose first member stalls (SIGSTOP) while quorum holds: nothing lost.

The regression (the registry side of a stalled member): with the client's
first endpoint stopped (it accepts TCP, never answers) the single attempt of
each call took the call's whole budget, the lease was lost after ~12 s,
re-granting failed against the same member and the registry closed itself
at ~38 s (RegistryClosed from then on). Now every attempt has its own
deadline, the watch and the keepalive move to another member, and the
registry keeps registering with its lease and its health intact.

Real clock, three real members; the stalled member is always resumed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from foundation.registry import open_registry

pytestmark = [pytest.mark.etcd, pytest.mark.etcd_cluster]

#: How long the member stays stalled while the registry keeps working.
STALL = 15.0
TIMEOUT = 5.0


async def test_a_stalled_first_member_costs_the_registry_nothing(etcd_cluster: Any) -> None:
    leader = await trio.to_thread.run_sync(etcd_cluster.wait_for_leader)
    stalled = next(i for i in range(len(etcd_cluster.members)) if i != leader)
    first = etcd_cluster.endpoints[stalled]
    endpoints = [first, *(e for e in etcd_cluster.endpoints if e != first)]
    prefix = f"stall/{uuid.uuid4().hex}/"
    options: dict[str, Any] = {
        "endpoints": endpoints,
        "prefix": prefix,
        "ttl": 5,
        "timeout": TIMEOUT,
    }
    slowest = 0.0
    unhealthy: list[str] = []
    with trio.fail_after(STALL + 60):
        async with (
            open_registry(backend="etcd", **options) as a,
            open_registry(backend="etcd", **options) as b,
        ):
            await a.register("svc", "before", 0)
            await b.sync()
            lease = a.backend.lease_id
            assert a.health_check().details["endpoint"] == first
            seen: list[str] = []
            async with b.watch("svc") as events, trio.open_nursery() as nursery:

                async def collect() -> None:
                    async for event in events:
                        if event.kind == "registered":
                            seen.append(event.registration.name)

                nursery.start_soon(collect)
                etcd_cluster.pause(stalled)
                try:
                    written: list[str] = []
                    until = trio.current_time() + STALL
                    i = 0
                    while trio.current_time() < until:
                        began = trio.current_time()
                        name = f"n{i}"
                        await a.register("svc", name, i)
                        assert a.lookup("svc", name) == i
                        slowest = max(slowest, trio.current_time() - began)
                        written.append(name)
                        health = a.health_check()
                        if not health.ok:
                            unhealthy.append(health.detail)
                        i += 1
                        await trio.sleep(0.25)
                    # The lease lived through it ...
                    assert a.backend.lease_id == lease
                    assert a.health_check().details["lease_losses"] == 0
                    assert not a.closed
                    # ... both views are whole again after a sync ...
                    with trio.fail_after(3 * TIMEOUT):
                        await a.sync()
                        await b.sync()
                    for registry in (a, b):
                        assert sorted(registry.names("svc")) == sorted(["before", *written])
                        health = registry.health_check()
                        assert health.ok, health.detail
                        assert health.details["endpoint"] != first
                    # ... and b's watch delivered every write, in order.
                    with trio.fail_after(10):
                        while len(seen) < len(written):  # noqa: ASYNC110 -- a view, not an event
                            await trio.sleep(0.05)
                    assert seen == written
                finally:
                    etcd_cluster.resume(stalled)
                nursery.cancel_scope.cancel()
    assert unhealthy == []
    # Every register finished well inside one call's timeout.
    assert slowest < TIMEOUT
