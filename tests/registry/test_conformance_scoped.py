"""Conformance: ``registered()`` blocks and ``wait_for()``.

The timing tests run on ``registry_clock``: an autojump clock on local
backends, the real clock on etcd, where ``scaled()`` shortens the waits.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import Registration, Registry

# -- registered() -------------------------------------------------------------


async def test_registered_normal_exit(registry: Registry, ns: Any) -> None:
    async with registry.registered(ns, "svc", {"port": 1}, {"role": "db"}) as reg:
        assert isinstance(reg, Registration)
        assert reg.owner is not None
        assert reg.value == {"port": 1}
        assert dict(reg.metadata) == {"role": "db"}
        assert registry.lookup(ns, "svc") == {"port": 1}
        assert registry.lookup_with_metadata(ns, "svc").owner == reg.owner
    assert (ns, "svc") not in registry
    assert registry.count() == 0


async def test_registered_owner_is_fresh(registry: Registry, ns: Any) -> None:
    async with registry.registered(ns, "a", 1) as a, registry.registered(ns, "b", 2) as b:
        assert a.owner is not None
        assert b.owner is not None
        assert a.owner != b.owner
        assert a.owner not in ("a", "b", 1, 2, ns)
        # the token keys the owner table: it is hashable
        hash(a.owner)
    assert registry.count(ns) == 0


async def test_registered_removes_everything_of_its_owner(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "outside", 0, owner="someone")
    async with registry.registered(ns, "main", 1) as reg:
        await registry.register(ns, "extra", 2, owner=reg.owner)
        await registry.join(ns, "group", "m", owner=reg.owner)
        await registry.join(ns, "group", "other")
        assert registry.count(ns) == 3
    assert registry.names(ns) == ["outside"]
    assert [m.value for m in registry.members(ns, "group")] == ["other"]


async def test_registered_error_propagates_as_itself(registry: Registry, ns: Any) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom) as info:
        async with registry.registered(ns, "svc", 1):
            assert (ns, "svc") in registry
            raise Boom("inside")
    assert type(info.value) is Boom
    assert not isinstance(info.value, BaseExceptionGroup)
    assert (ns, "svc") not in registry


async def test_registered_cancellation(registry: Registry, ns: Any) -> None:
    with trio.CancelScope() as scope:
        async with registry.registered(ns, "svc", 1):
            assert (ns, "svc") in registry
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert (ns, "svc") not in registry


async def test_registered_cancelled_from_outside(registry: Registry, ns: Any) -> None:
    entered = trio.Event()

    async def holder() -> None:
        async with registry.registered(ns, "svc", 1):
            entered.set()
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await entered.wait()
        assert (ns, "svc") in registry
        nursery.cancel_scope.cancel()
    assert (ns, "svc") not in registry


async def test_registered_entering_a_cancelled_scope(registry: Registry, ns: Any) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        async with registry.registered(ns, "svc", 1):
            pytest.fail("entered a registered() block in a cancelled scope")  # pragma: no cover
    assert scope.cancelled_caught
    assert (ns, "svc") not in registry


async def test_registered_conflict(registry: Registry, ns: Any, snapshot: Any) -> None:
    await registry.register(ns, "svc", "holder", owner="h")
    before = snapshot(registry)
    with pytest.raises(errors.AlreadyRegistered) as info:
        async with registry.registered(ns, "svc", "challenger"):
            pytest.fail("entered despite the conflict")  # pragma: no cover
    assert info.value.holder.value == "holder"
    assert snapshot(registry) == before


async def test_registered_block_removed_its_entry_itself(registry: Registry, ns: Any) -> None:
    async with registry.registered(ns, "svc", 1):
        assert await registry.unregister(ns, "svc")
        await registry.register(ns, "svc", 2, owner="someone-else")
    # exit removes only the block's own entries
    assert registry.lookup(ns, "svc") == 2


# -- wait_for() ---------------------------------------------------------------


def scaled(clock: trio.testing.MockClock | None, seconds: float) -> float:
    """``seconds`` on a mock clock; a fiftieth of it on the real clock."""
    return seconds if clock is not None else seconds / 50


def elapsed_ok(clock: trio.testing.MockClock | None, elapsed: float, seconds: float) -> bool:
    """Exactly ``seconds`` of mock time, or at least the scaled wait on the real clock."""
    if clock is not None:
        return elapsed == pytest.approx(seconds)
    return elapsed >= scaled(clock, seconds)


async def test_wait_for_present_returns_at_once(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    start = trio.current_time()
    with trio.fail_after(5):
        reg = await registry.wait_for(ns, "a")
    if registry_clock is not None:
        assert trio.current_time() == start
    assert reg == Registration(ns, "a", 1, reg.metadata, "o")
    assert dict(reg.metadata) == {"m": 1}


async def test_wait_for_blocks_until_registered(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    result: list[Registration] = []

    async def waiter() -> None:
        result.append(await registry.wait_for(ns, "late"))

    start = trio.current_time()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(scaled(registry_clock, 5))
            assert result == []
            await registry.register(ns, "other", 0)  # another key: keeps waiting
            await registry.register((ns, "x"), "late", 0)  # another namespace: keeps waiting
            await registry.join(ns, "late", "member")  # a group of that name: keeps waiting
            await trio.sleep(scaled(registry_clock, 5))
            assert result == []
            await registry.register(ns, "late", "here", {"m": 2}, owner="o")
    assert elapsed_ok(registry_clock, trio.current_time() - start, 10)
    [reg] = result
    assert (reg.namespace, reg.name, reg.value, reg.owner) == (ns, "late", "here", "o")
    assert dict(reg.metadata) == {"m": 2}


async def test_wait_for_many_waiters(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    got: list[Any] = []

    async def waiter() -> None:
        got.append((await registry.wait_for(ns, "k")).value)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(waiter)
            await trio.sleep(scaled(registry_clock, 1))
            await registry.register(ns, "k", "v")
    assert got == ["v"] * 10


async def test_wait_for_timeout(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    start = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(scaled(registry_clock, 3)):
            await registry.wait_for(ns, "never")
    assert elapsed_ok(registry_clock, trio.current_time() - start, 3)
    # a later registration is harmless, and a new wait works
    await registry.register(ns, "never", 1)
    assert (await registry.wait_for(ns, "never")).value == 1


async def test_wait_for_cancelled_scope(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.wait_for(ns, "a")
        pytest.fail("wait_for did not checkpoint")  # pragma: no cover
    assert scope.cancelled_caught


@pytest.mark.local_only(reason="_nowait writes are local-only")
async def test_wait_for_registration_from_a_thread(registry: Registry, ns: Any) -> None:
    result: list[Registration] = []

    async def waiter() -> None:
        result.append(await registry.wait_for(ns, "threaded"))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await trio.to_thread.run_sync(registry.register_nowait, ns, "threaded", 42)
    assert [r.value for r in result] == [42]


@pytest.mark.local_only(reason="_nowait writes are local-only")
async def test_wait_for_thread_registers_while_waiter_starts(registry: Registry, ns: Any) -> None:
    # No gap between looking and waiting: a registration landing from a
    # thread while wait_for sets up is never missed.
    with trio.fail_after(20):
        for i in range(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    trio.to_thread.run_sync, registry.register_nowait, ns, ("k", i), i
                )
                reg = await registry.wait_for(ns, ("k", i))
                assert reg.value == i


async def test_wait_for_closed_while_waiting(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    errors_seen: list[BaseException] = []

    async def waiter() -> None:
        try:
            await registry.wait_for(ns, "never")
        except errors.RegistryClosed as exc:
            errors_seen.append(exc)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.sleep(scaled(registry_clock, 1))
            registry.close()
    assert len(errors_seen) == 2
    assert all(isinstance(e, trio.ClosedResourceError) for e in errors_seen)


async def test_wait_for_on_closed_registry(registry: Registry, ns: Any) -> None:
    registry.close()
    with trio.fail_after(5), pytest.raises(errors.RegistryClosed):
        await registry.wait_for(ns, "never")


async def test_wait_for_wakes_on_reregistration_after_unregister(
    registry: Registry, ns: Any, registry_clock: trio.testing.MockClock | None
) -> None:
    await registry.register(ns, "a", 1)
    await registry.unregister(ns, "a")
    result: list[Any] = []

    async def waiter() -> None:
        result.append((await registry.wait_for(ns, "a")).value)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(scaled(registry_clock, 1))
            await registry.register(ns, "a", 2)
    assert result == [2]
