"""Records the etcd coordinator cannot read: a typed error for that name, nothing else hurt.

A foreign writer (``etcdctl put``) can put a JSON value nested hundreds of
levels deep where the coordinator keeps a counter or a lock holder's entry.
The call that must read that record raises
:class:`~foundation.errors.MalformedRecord` (a ``FoundationError``, never
RecursionError); other names keep working. The coordinator never writes
such a record itself.

Real clock, the session's etcd member, a prefix per test.
"""

from __future__ import annotations

import uuid

import pytest
import trio

from foundation import errors
from foundation.coordination import open_etcd_coordinator
from foundation.etcd import open_etcd_client

pytestmark = pytest.mark.etcd

DEEP = 600


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("depth", [DEEP, 5000])
async def test_counter_with_a_deep_record_raises_typed_others_unaffected(
    etcd_endpoints: list[str], depth: int
) -> None:
    prefix = f"test/{uuid.uuid4().hex}/"
    with trio.fail_after(30):
        async with (
            open_etcd_client(etcd_endpoints) as etcd,
            open_etcd_coordinator(etcd_endpoints, prefix=prefix, ttl=5) as coord,
        ):
            await etcd.put(prefix + "counter/bad", nested(depth))
            with pytest.raises(errors.MalformedRecord, match="nested deeper") as caught:
                await coord.counter("bad").get()
            assert isinstance(caught.value, errors.FoundationError)
            with pytest.raises(errors.MalformedRecord):
                await coord.counter("bad").add(1)
            assert await coord.counter("good").add(2) == 2
            assert await coord.counter("good").get() == 2
            # the bad record was left as it was (never overwritten)
            kv = await etcd.get(prefix + "counter/bad")
            assert kv is not None
            assert kv.value == nested(depth).encode()


async def test_lock_status_with_a_deep_holder_raises_typed_others_unaffected(
    etcd_endpoints: list[str],
) -> None:
    prefix = f"test/{uuid.uuid4().hex}/"
    with trio.fail_after(30):
        async with (
            open_etcd_client(etcd_endpoints) as etcd,
            open_etcd_coordinator(etcd_endpoints, prefix=prefix, ttl=5) as coord,
            etcd.lease(10) as lease,
        ):
            # The holder of "bad" (lowest create revision) is a foreign key.
            await etcd.put(prefix + f"bad/{lease.id:x}", nested(DEEP, '"h"'), lease=lease.id)
            with pytest.raises(errors.MalformedRecord):
                await coord.lock_status("bad")
            async with coord.lock("good", holder="me"):
                status = await coord.lock_status("good")
                assert status is not None
                assert status.holder == "me"
            assert await coord.lock_status("good") is None


async def test_the_coordinator_never_writes_what_it_cannot_read(
    etcd_endpoints: list[str],
) -> None:
    prefix = f"test/{uuid.uuid4().hex}/"
    too_deep: object = 1
    for _ in range(70):
        too_deep = [too_deep]
    with trio.fail_after(30):
        async with open_etcd_coordinator(etcd_endpoints, prefix=prefix, ttl=5) as coord:
            with pytest.raises(TypeError, match="nested deeper"):
                await coord.agree("deep", too_deep)
            assert await coord.agree("flat", [[1]]) == [[1]]
