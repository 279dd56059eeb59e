"""Conformance: pub/sub over a registry (``subscribe`` / ``publish``) and ``dispatch``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registration, Registry, Subscription


async def drain(sub: Subscription, n: int) -> list[Any]:
    got = []
    with trio.fail_after(10):
        for _ in range(n):
            got.append(await sub.__anext__())
    return got


def nothing_buffered(sub: Subscription) -> bool:
    try:
        sub.receive_nowait()
    except trio.WouldBlock:
        return True
    return False


async def test_each_subscriber_gets_each_message_once_in_order(registry: Registry, ns: Any) -> None:
    async with (
        registry.subscribe(ns, "news") as a,
        registry.subscribe(ns, "news") as b,
        registry.subscribe(ns, "other") as other,
    ):
        for i in range(5):
            assert await registry.publish(ns, "news", {"n": i}) == 2
        assert await registry.publish((ns, "elsewhere"), "news", "x") == 0
        assert await drain(a, 5) == [{"n": i} for i in range(5)]
        assert await drain(b, 5) == [{"n": i} for i in range(5)]
        assert nothing_buffered(a)
        assert nothing_buffered(other)


async def test_no_replay_and_nothing_after_the_block(registry: Registry, ns: Any) -> None:
    assert await registry.publish(ns, "t", "early") == 0  # nobody listens: gone
    async with registry.subscribe(ns, "t") as sub:
        assert nothing_buffered(sub)
        assert await registry.publish(ns, "t", "now") == 1
        assert await drain(sub, 1) == ["now"]
    assert await registry.publish(ns, "t", "late") == 0


async def test_a_slow_subscriber_never_blocks_the_publisher(registry: Registry, ns: Any) -> None:
    async with (
        registry.subscribe(ns, "t", max_buffer=2) as slow,
        registry.subscribe(ns, "t", max_buffer=100) as fast,
    ):
        taken = []
        with trio.fail_after(10):
            for i in range(5):
                taken.append(await registry.publish(ns, "t", i))
        assert taken == [2, 2, 1, 1, 1]
        assert slow.dropped == 3
        assert fast.dropped == 0
        assert registry.stats().dropped_messages == 3
        # the oldest were kept; the buffer takes more once drained
        assert await drain(slow, 2) == [0, 1]
        assert await drain(fast, 5) == [0, 1, 2, 3, 4]
        assert await registry.publish(ns, "t", 5) == 2
        assert await drain(slow, 1) == [5]
    assert registry.stats().dropped_messages == 3  # still counted after the block


async def test_a_waiting_subscriber_wakes(registry: Registry, ns: Any) -> None:
    got: list[Any] = []
    async with registry.subscribe(ns, "t") as sub:

        async def consume() -> None:
            async for message in sub:
                got.append(message)
                if message == "stop":
                    return

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                await trio.testing.wait_all_tasks_blocked()
                await registry.publish(ns, "t", [1, "a"])
                await registry.publish(ns, "t", "stop")
    assert got == [[1, "a"], "stop"]


async def test_close_ends_subscriptions_and_refuses_more(registry: Registry, ns: Any) -> None:
    async with registry.subscribe(ns, "t") as sub:
        await registry.publish(ns, "t", 1)
        registry.close()
        assert [m async for m in sub] == [1]  # what was buffered, then the end
    with pytest.raises(errors.RegistryClosed):
        await registry.publish(ns, "t", 2)
    with pytest.raises(errors.RegistryClosed):
        async with registry.subscribe(ns, "t"):
            pass  # pragma: no cover


async def test_bad_input(registry: Registry, ns: Any) -> None:
    with pytest.raises(errors.InvalidKey):
        await registry.publish(ns, ["unhashable"], 1)
    with pytest.raises(errors.InvalidKey):
        async with registry.subscribe({"un": "hashable"}, "t"):
            pass  # pragma: no cover
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(errors.ConfigError):
            async with registry.subscribe(ns, "t", max_buffer=bad):
                pass  # pragma: no cover


async def test_publish_cancelled_before_it_runs_delivers_nothing(
    registry: Registry, ns: Any
) -> None:
    async with registry.subscribe(ns, "t") as sub:
        with trio.CancelScope() as scope:
            scope.cancel()
            await registry.publish(ns, "t", "never")
        assert scope.cancelled_caught
        await registry.publish(ns, "t", "marker")
        assert await drain(sub, 1) == ["marker"]


async def test_subscriptions_write_nothing(registry: Registry, ns: Any) -> None:
    async with registry.subscribe(ns, "t"):
        await registry.publish(ns, "t", 1)
        assert registry.count() == 0
        assert registry.members(ns, "t") == []
        assert registry.stats().memberships == 0


@pytest.mark.local_only
async def test_any_message_locally_and_publish_nowait(
    make_registry: Callable[..., Registry],
) -> None:
    registry = make_registry()
    thing = object()
    async with registry.subscribe("ns", "t") as sub:
        assert registry.publish_nowait("ns", "t", thing) == 1
        assert (await drain(sub, 1))[0] is thing  # as published: the object itself
    registry.close()
    with pytest.raises(errors.RegistryClosed):
        registry.publish_nowait("ns", "t", 1)


@pytest.mark.local_only
async def test_publish_from_a_thread(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    async with registry.subscribe("ns", "t") as sub:
        sent = await trio.to_thread.run_sync(
            lambda: [registry.publish_nowait("ns", "t", i) for i in range(20)]
        )
        assert sent == [1] * 20
        assert await drain(sub, 20) == list(range(20))


# ---------------------------------------------------------------- dispatch


async def test_dispatch_calls_each_member_in_join_order(registry: Registry, ns: Any) -> None:
    for value in ("a", "b", "c"):
        await registry.join(ns, "workers", value, {"v": value})
    await registry.join(ns, "others", "x")
    calls: list[tuple[Any, ...]] = []

    def record(reg: Registration, *args: Any) -> None:
        calls.append((reg.name, reg.value, dict(reg.metadata), args))

    assert registry.dispatch(ns, "workers", record, 1, "two") == 3
    assert calls == [
        ("workers", "a", {"v": "a"}, (1, "two")),
        ("workers", "b", {"v": "b"}, (1, "two")),
        ("workers", "c", {"v": "c"}, (1, "two")),
    ]
    assert registry.dispatch(ns, "nobody", record) == 0


async def test_dispatch_runs_everyone_before_an_error_propagates(
    registry: Registry, ns: Any
) -> None:
    for value in ("a", "b", "c"):
        await registry.join(ns, "g", value)
    seen: list[Any] = []

    def one_fails(reg: Registration) -> None:
        seen.append(reg.value)
        if reg.value == "b":
            raise KeyError("b failed")

    with pytest.raises(KeyError, match="b failed"):
        registry.dispatch(ns, "g", one_fails)
    assert seen == ["a", "b", "c"]

    def two_fail(reg: Registration) -> None:
        if reg.value != "b":
            raise ValueError(reg.value)

    with pytest.raises(ExceptionGroup) as info:
        registry.dispatch(ns, "g", two_fail)
    assert [str(e) for e in info.value.exceptions] == ["a", "c"]
    assert "2 of 3" in str(info.value)


async def test_dispatch_bad_input(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "a")
    with pytest.raises(errors.ConfigError):
        registry.dispatch(ns, "g", "not callable")  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidKey):
        registry.dispatch(ns, ["unhashable"], print)
    registry.close()
    assert registry.dispatch(ns, "g", lambda reg: None) == 1  # reads answer after close
