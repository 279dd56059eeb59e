"""Pub/sub and update_value across etcd registry instances.

Two "instances" are two ``open_registry(backend="etcd")`` on one prefix (two
clients, two leases, two local views), against the session's etcd member, on
the real clock with bounded waits. The conformance suite covers one instance.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registry, Subscription, open_registry

pytestmark = pytest.mark.etcd


@pytest.fixture
def open_instance(etcd_endpoints: list[str]) -> Callable[..., Any]:
    prefix = f"test/{uuid.uuid4().hex}/"

    def opener(**kwargs: Any) -> Any:
        options: dict[str, Any] = {
            "endpoints": etcd_endpoints,
            "prefix": prefix,
            "ttl": 10,
            "partitions": 2,
        }
        options.update(kwargs)
        return open_registry(backend="etcd", **options)

    return opener


async def receive(sub: Subscription, n: int) -> list[Any]:
    got = []
    with trio.fail_after(10):
        for _ in range(n):
            got.append(await sub.__anext__())
    return got


async def test_publish_reaches_every_instance_once(open_instance: Callable[..., Any]) -> None:
    async with (
        open_instance() as a,
        open_instance() as b,
        open_instance() as c,
        a.subscribe("ns", "news") as on_a,
        b.subscribe("ns", "news") as on_b,
        c.subscribe("ns", "other") as on_c,
    ):
        # a's count is its own subscribers; b's come by the watch
        for i in range(5):
            assert await a.publish("ns", "news", {"n": i, "by": "a"}) == 1
        assert await b.publish("ns", "news", "from b") == 1
        from_a = [{"n": i, "by": "a"} for i in range(5)]
        for sub in (on_a, on_b):
            got = await receive(sub, 6)
            # in publish order per publisher (the publishers interleave)
            assert [m for m in got if m != "from b"] == from_a
            assert got.count("from b") == 1
        await a.sync()
        await b.sync()
        await c.sync()
        # each exactly once: no echo of a's own messages, nothing for c's topic
        for sub in (on_a, on_b, on_c):
            with pytest.raises(trio.WouldBlock):
                sub.receive_nowait()


async def test_a_message_is_json_and_leaves_no_entry(open_instance: Callable[..., Any]) -> None:
    async with open_instance() as a, open_instance() as b:
        async with b.subscribe(("t", 1), "topic") as sub:
            await a.publish(("t", 1), "topic", {"tuple": (1, 2)})
            assert await receive(sub, 1) == [{"tuple": [1, 2]}]  # JSON round trip
        with pytest.raises(errors.InvalidValue):
            await a.publish("ns", "t", {1, 2})
        with pytest.raises(errors.InvalidKey):
            await a.publish("ns", 1.5, "not a portable topic")
        with pytest.raises(errors.InvalidKey):
            async with a.subscribe("ns", 1.5):
                pass  # pragma: no cover
        with pytest.raises(errors.BackendIsAsync):
            a.publish_nowait("ns", "t", 1)
        assert a.count() == 0
        assert a.registrations() == []


async def test_update_value_from_another_instance_keeps_owner_and_lease(
    open_instance: Callable[..., Any],
) -> None:
    async with open_instance() as a, open_instance() as b:
        a_reg: Registry = a
        await a_reg.register("ns", "w", 1, {"m": 1}, owner="o")
        await b.sync()
        reg = await b.update_value("ns", "w", 2, expect=1)
        assert (reg.value, dict(reg.metadata), reg.owner) == (2, {"m": 1}, "o")
        await a.sync()
        assert a.lookup("ns", "w") == 2
        # b's view is stale for a moment after a's write: etcd decides
        await a.update_value("ns", "w", 3)
        with pytest.raises(errors.ValueMismatch) as info:
            await b.update_value("ns", "w", 4, expect=2)
        assert info.value.actual == 3
        # still a's: its owner's end removes it, its lease holds it
        assert await a.unregister_owner("o") == 1
        await b.sync()
        assert ("ns", "w") not in b
