"""Conformance: ``watch()`` events (order, filters, initial, overflow, close)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import EventKind, Registration, Registry, RegistryEvent


async def collect(events: Any, n: int) -> list[RegistryEvent]:
    got = []
    with trio.fail_after(5):
        for _ in range(n):
            got.append(await events.__anext__())
    return got


async def assert_nothing_more(events: Any) -> None:
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(0.05) as scope:
        ev = await events.__anext__()
        pytest.fail(f"unexpected event {ev!r}")
    assert scope.cancelled_caught


def summary(events: list[RegistryEvent]) -> list[tuple[str, Any, Any, Any]]:
    return [(str(ev.kind), ev.name, ev.value, ev.owner) for ev in events]


async def test_event_order_for_a_sequence_of_writes(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        await registry.register(ns, "a", 1, {"v": 1}, owner="o")
        await registry.update_metadata(ns, "a", {"v": 2})
        await registry.register(ns, "a", 1, {"v": 3}, owner="o")  # re-register: updated
        with pytest.raises(errors.AlreadyRegistered):
            await registry.register(ns, "a", 2)  # refused: no event
        await registry.register(ns, "b", 2)
        await registry.unregister(ns, "a")
        await registry.unregister(ns, "a")  # absent: no event
        await registry.join(ns, "g", "m1", owner="o")
        await registry.join(ns, "g", "m1", {"again": True}, owner="o")
        await registry.leave(ns, "g", "m1")
        await registry.leave(ns, "g", "m1")  # absent: no event
        await registry.register(ns, "c", 3, owner="o")
        await registry.join(ns, "g", "m2", owner="o")
        await registry.unregister_owner("o")
        got = await collect(events, 12)
        await assert_nothing_more(events)
    kinds = [ev.kind for ev in got]
    assert kinds[:9] == [
        "registered",
        "updated",
        "updated",
        "registered",
        "unregistered",
        "joined",
        "updated",
        "left",
        "registered",
    ]
    assert kinds[9] == "joined"
    # unregister_owner: one event per removed entry (their order is free)
    assert sorted(map(str, kinds[10:])) == ["left", "unregistered"]
    assert [dict(ev.metadata) for ev in got[:3]] == [{"v": 1}, {"v": 2}, {"v": 3}]
    assert got[4].name == "a"
    assert got[4].value == 1
    assert got[5].name == "g"
    assert got[5].value == "m1"
    assert dict(got[6].metadata) == {"again": True}


async def test_unregister_owner_emits_one_event_per_entry(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, owner="o")
    await registry.register(ns, "b", 2, owner="o")
    await registry.join(ns, "g", "m", owner="o")
    async with registry.watch(ns) as events:
        assert await registry.unregister_owner("o") == 3
        got = await collect(events, 3)
        await assert_nothing_more(events)
    assert sorted((str(ev.kind), ev.name) for ev in got) == [
        ("left", "g"),
        ("unregistered", "a"),
        ("unregistered", "b"),
    ]


async def test_event_fields(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        await registry.register(ns, "a", {"v": 1}, {"m": 1}, owner="o")
        [ev] = await collect(events, 1)
    assert isinstance(ev, RegistryEvent)
    assert ev.kind == "registered"
    assert ev.kind is EventKind.REGISTERED
    assert isinstance(ev.kind, str)
    assert isinstance(ev.registration, Registration)
    assert ev.namespace == ns
    assert ev.name == "a"
    assert ev.value == {"v": 1}
    assert dict(ev.metadata) == {"m": 1}
    assert ev.owner == "o"


def test_event_kind_values() -> None:
    assert {str(k) for k in EventKind} == {
        "registered",
        "updated",
        "unregistered",
        "joined",
        "left",
    }
    assert EventKind("left") is EventKind.LEFT
    assert EventKind.UPDATED == "updated"


async def test_namespace_filter(registry: Registry, ns: Any) -> None:
    other = (ns, "other")
    async with registry.watch(ns) as mine, registry.watch() as everything:
        await registry.register(other, "x", 1)
        await registry.register(ns, "y", 2)
        await registry.join(other, "g", 1)
        await registry.join(ns, "g", 2)
        got = await collect(mine, 2)
        await assert_nothing_more(mine)
        all_events = await collect(everything, 4)
        await assert_nothing_more(everything)
    assert summary(got) == [("registered", "y", 2, None), ("joined", "g", 2, None)]
    assert [(ev.namespace, ev.name) for ev in all_events] == [
        (other, "x"),
        (ns, "y"),
        (other, "g"),
        (ns, "g"),
    ]


async def test_initial(registry: Registry, ns: Any) -> None:
    other = (ns, "other")
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    await registry.register(ns, "b", 2)
    await registry.register(other, "c", 3)
    async with registry.watch(ns, initial=True) as events:
        first = await collect(events, 2)
        await registry.register(ns, "d", 4)
        [live] = await collect(events, 1)
        await assert_nothing_more(events)
    assert all(ev.kind == "registered" for ev in first)
    assert sorted((ev.name, ev.value, ev.owner) for ev in first) == [
        ("a", 1, "o"),
        ("b", 2, None),
    ]
    assert live.name == "d"
    async with registry.watch(initial=True) as events:
        everything = await collect(events, 4)
        await assert_nothing_more(events)
    assert sorted(ev.name for ev in everything) == ["a", "b", "c", "d"]


async def test_initial_false_sees_no_past(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1)
    async with registry.watch(ns) as events:
        await assert_nothing_more(events)


async def test_several_watchers_see_the_same(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as w1, registry.watch(ns) as w2:
        for i in range(5):
            await registry.register(ns, i, i)
        a = await collect(w1, 5)
        b = await collect(w2, 5)
    assert summary(a) == summary(b) == [("registered", i, i, None) for i in range(5)]


async def test_watch_in_a_task(registry: Registry, ns: Any) -> None:
    received: list[RegistryEvent] = []

    async def consumer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with registry.watch(ns) as events:
            task_status.started()
            async for ev in events:
                received.append(ev)
                if ev.kind == "unregistered":
                    return

    async with trio.open_nursery() as nursery:
        await nursery.start(consumer)
        await registry.register(ns, "a", 1)
        await registry.update_metadata(ns, "a", {"x": 1})
        await registry.unregister(ns, "a")
    assert [str(ev.kind) for ev in received] == ["registered", "updated", "unregistered"]


async def test_overflow(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns, max_buffer=3) as events:
        for i in range(5):
            await registry.register(ns, i, i)
        got = []
        with pytest.raises(errors.WatchOverflow) as info:
            async for ev in events:
                got.append(ev)
    assert [ev.name for ev in got] == [0, 1, 2]
    assert info.value.max_buffer == 3
    assert "3" in str(info.value)
    # the registry itself is unaffected
    assert registry.count(ns) == 5


async def test_no_overflow_at_exactly_max_buffer(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns, max_buffer=3) as events:
        for i in range(3):
            await registry.register(ns, i, i)
        got = await collect(events, 3)
        await registry.register(ns, 3, 3)
        got += await collect(events, 1)
    assert [ev.name for ev in got] == [0, 1, 2, 3]


async def test_overflow_with_initial(registry: Registry, ns: Any) -> None:
    for i in range(4):
        await registry.register(ns, i, i)
    async with registry.watch(ns, initial=True, max_buffer=2) as events:
        with pytest.raises(errors.WatchOverflow):
            for _ in range(10):
                await events.__anext__()


async def test_close_ends_iteration(registry: Registry, ns: Any) -> None:
    got: list[RegistryEvent] = []
    ended = trio.Event()

    async def consumer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with registry.watch(ns) as events:
            task_status.started()
            async for ev in events:
                got.append(ev)
        ended.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(consumer)
            await registry.register(ns, "a", 1)
            await trio.testing.wait_all_tasks_blocked()
            registry.close()
            await ended.wait()
    assert [ev.name for ev in got] == ["a"]


async def test_close_delivers_buffered_events_first(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        await registry.register(ns, "a", 1)
        await registry.register(ns, "b", 2)
        registry.close()
        got = [ev async for ev in events]
    assert [ev.name for ev in got] == ["a", "b"]


async def test_watch_on_closed_registry_ends_at_once(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1)
    registry.close()
    with trio.fail_after(5):
        async with registry.watch(ns) as events:
            assert [ev async for ev in events] == []
        async with registry.watch(ns, initial=True) as events:
            assert [ev.name async for ev in events] == ["a"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", None, True])
async def test_max_buffer_must_be_positive_int(registry: Registry, bad: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with registry.watch(max_buffer=bad):
            pass  # pragma: no cover
    assert isinstance(info.value, ValueError)
    assert "max_buffer" in str(info.value)


async def test_events_after_watch_exit_are_not_buffered(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        pass
    await registry.register(ns, "a", 1)  # must not fail or leak into the closed watch
    with trio.move_on_after(0.05):
        await events.__anext__()


async def test_cancelled_consumer(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        with trio.CancelScope() as scope:
            scope.cancel()
            await events.__anext__()
        assert scope.cancelled_caught
        # the watch still works after a cancelled wait
        await registry.register(ns, "a", 1)
        [ev] = await collect(events, 1)
        assert ev.name == "a"


@pytest.mark.local_only(reason="_nowait writes are local-only")
async def test_events_from_other_threads(registry: Registry, ns: Any) -> None:
    async with registry.watch(ns) as events:
        for i in range(20):
            await trio.to_thread.run_sync(registry.register_nowait, ns, i, i)
        got = await collect(events, 20)
    assert [ev.name for ev in got] == list(range(20))
