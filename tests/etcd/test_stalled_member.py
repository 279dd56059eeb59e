"""A stalled member (SIGSTOP: it accepts connections, never answers) with quorum intact.

The regression: the first endpoint of the client stalled and the single
attempt of each call took the call's whole budget, so failover never ran; the
lease was lost after ~12 s and a lock holder got ``LockLost`` after 5.5 s.
Each attempt now has its own deadline well inside the call's, and streams
(watch, lease keepalive) notice silence and move to another member.

Real clock, three real members; the stalled member is always resumed.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from foundation.coordination import open_etcd_coordinator
from foundation.etcd import open_etcd_client

pytestmark = [pytest.mark.etcd, pytest.mark.etcd_cluster]

#: How long the member stays stalled while the client keeps working.
STALL = 15.0
TIMEOUT = 5.0


async def test_a_stalled_first_member_costs_the_client_nothing(etcd_cluster: Any) -> None:
    # Stall a follower: the cluster stays healthy (leader and quorum intact).
    leader = await trio.to_thread.run_sync(etcd_cluster.wait_for_leader)
    stalled = next(i for i in range(len(etcd_cluster.members)) if i != leader)
    first = etcd_cluster.endpoints[stalled]
    endpoints = [first, *(e for e in etcd_cluster.endpoints if e != first)]
    p = f"stall/{uuid.uuid4().hex}/"
    seen: list[bytes] = []
    expected = [10**9]  # how many events to wait for (known once the writes end)
    slowest = 0.0
    with trio.fail_after(STALL + 60):
        async with (
            open_etcd_client(endpoints, timeout=TIMEOUT) as etcd,
            open_etcd_coordinator(endpoints, prefix=p + "coord/", ttl=5, timeout=TIMEOUT) as coord,
        ):
            start = (await etcd.put(p + "w/start", "0")).header.revision
            assert etcd.current_endpoint == first  # the member about to stall serves now
            async with (
                etcd.lease(5) as lease,
                coord.lock("held") as held,
                etcd.watch(p + "w/", prefix=True, start_revision=start + 1) as events,
                trio.open_nursery() as nursery,
            ):
                lock_key = await etcd.lock(p + "lock", lease.id)

                all_seen = trio.Event()

                async def collect() -> None:
                    async for response in events:
                        seen.extend(ev.kv.value for ev in response.events)
                        if len(seen) >= expected[0]:
                            all_seen.set()

                nursery.start_soon(collect)
                etcd_cluster.pause(stalled)
                try:
                    written: list[bytes] = []
                    until = trio.current_time() + STALL
                    i = 0
                    while trio.current_time() < until:
                        began = trio.current_time()
                        value = str(i).encode()
                        await etcd.put(f"{p}w/{i}", value)
                        kv = await etcd.get(f"{p}w/{i}")
                        assert kv is not None
                        assert kv.value == value
                        slowest = max(slowest, trio.current_time() - began)
                        written.append(value)
                        i += 1
                        await trio.sleep(0.25)
                    assert etcd.current_endpoint != first
                    # The lease lived through it, so did both locks...
                    assert lease.alive, lease.error
                    assert lease.expires_at > trio.current_time()
                    holder = await etcd.get(lock_key)
                    assert holder is not None
                    assert holder.lease == lease.id
                    assert not held.lost, held.reason
                    # ... and the watch delivered every write, in order.
                    expected[0] = len(written)
                    if len(seen) >= len(written):
                        all_seen.set()
                    with trio.fail_after(10):
                        await all_seen.wait()
                    assert seen == written
                finally:
                    etcd_cluster.resume(stalled)
                nursery.cancel_scope.cancel()
    # Every put+get pair finished well inside one call's timeout.
    assert slowest < TIMEOUT
