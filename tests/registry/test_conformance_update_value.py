"""Conformance: ``update_value`` (replace a value in place, compare-and-set with ``expect=``)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import MISSING, Registry, RegistryEvent


async def test_replaces_the_value_and_keeps_owner_and_metadata(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "w", "idle", {"zone": "a"}, owner="o")
    reg = await registry.update_value(ns, "w", "busy")
    assert (reg.namespace, reg.name, reg.value, dict(reg.metadata), reg.owner) == (
        ns,
        "w",
        "busy",
        {"zone": "a"},
        "o",
    )
    assert registry.lookup(ns, "w") == "busy"
    assert registry.lookup_with_metadata(ns, "w") == reg
    assert dict(registry.metadata(ns, "w")) == {"zone": "a"}
    # still the owner's: its end removes it
    assert await registry.unregister_owner("o") == 1
    assert (ns, "w") not in registry


async def test_expect_is_a_compare_and_set(
    registry: Registry, ns: Any, snapshot: Callable[[Registry], dict[str, Any]]
) -> None:
    await registry.register(ns, "w", "idle", {"n": 1})
    reg = await registry.update_value(ns, "w", "busy", expect="idle")
    assert reg.value == "busy"
    before = snapshot(registry)
    with pytest.raises(errors.ValueMismatch) as info:
        await registry.update_value(ns, "w", "done", expect="idle")
    assert info.value.key == (ns, "w")
    assert info.value.expected == "idle"
    assert info.value.actual == "busy"
    assert "read it again" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert snapshot(registry) == before  # nothing written
    # expect=None compares with None (only MISSING means "no expectation")
    with pytest.raises(errors.ValueMismatch):
        await registry.update_value(ns, "w", "done", expect=None)
    await registry.update_value(ns, "w", None)
    assert (await registry.update_value(ns, "w", 0, expect=None)).value == 0
    # equal, not identical, values match
    await registry.update_value(ns, "w", [1, {"a": 2}])
    assert (await registry.update_value(ns, "w", "x", expect=[1, {"a": 2}])).value == "x"


async def test_absent_name_is_not_registered(
    registry: Registry, ns: Any, snapshot: Callable[[Registry], dict[str, Any]]
) -> None:
    await registry.join(ns, "g", "member")  # groups are their own key space
    before = snapshot(registry)
    with pytest.raises(errors.NotRegistered) as info:
        await registry.update_value(ns, "nobody", 1)
    assert info.value.key == (ns, "nobody")
    with pytest.raises(errors.NotRegistered):
        await registry.update_value(ns, "nobody", 1, expect=0)
    with pytest.raises(errors.NotRegistered):
        await registry.update_value(ns, "g", 1)
    assert snapshot(registry) == before


async def test_emits_one_updated_event_replaced(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "w", 1, {"m": True}, owner="o")
    async with registry.watch(ns) as events:
        await registry.update_value(ns, "w", 2)
        await registry.update_value(ns, "w", 3, expect=2)
        with pytest.raises(errors.ValueMismatch):
            await registry.update_value(ns, "w", 4, expect=2)  # refused: no event
        await registry.register(ns, "marker", 0)
        got = []
        with trio.fail_after(5):
            while len(got) < 3:
                got.append(await events.__anext__())
    assert [(ev.kind, ev.value, ev.reason) for ev in got] == [
        ("updated", 2, "replaced"),
        ("updated", 3, "replaced"),
        ("registered", 0, "explicit"),
    ]
    assert dict(got[0].metadata) == {"m": True}
    assert got[0].owner == "o"


async def test_keeps_the_registration_order(registry: Registry, ns: Any) -> None:
    for name in ("a", "b", "c"):
        await registry.register(ns, name, name)
    await registry.update_value(ns, "a", "A")
    assert [(r.name, r.value) for r in registry.registrations(ns)] == [
        ("a", "A"),
        ("b", "b"),
        ("c", "c"),
    ]


async def test_bad_input_and_closed(
    registry: Registry, ns: Any, snapshot: Callable[[Registry], dict[str, Any]]
) -> None:
    await registry.register(ns, "w", 1)
    before = snapshot(registry)
    with pytest.raises(errors.InvalidKey):
        await registry.update_value(["unhashable"], "w", 2)
    with pytest.raises(errors.InvalidKey):
        await registry.update_value(ns, {"un": "hashable"}, 2)
    assert snapshot(registry) == before
    registry.close()
    with pytest.raises(errors.RegistryClosed):
        await registry.update_value(ns, "w", 2)
    assert registry.lookup(ns, "w") == 1


async def test_cancelled_before_it_runs_writes_nothing(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "w", 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.update_value(ns, "w", 2)
    assert scope.cancelled_caught
    assert registry.lookup(ns, "w") == 1


async def test_racing_compare_and_set_loses_no_increment(registry: Registry, ns: Any) -> None:
    """Tasks increment a counter by CAS; a lost race retries with the value reported."""
    await registry.register(ns, "counter", 0)
    per_task, tasks = 5, 6
    mismatches = 0

    async def incrementer() -> None:
        nonlocal mismatches
        current = registry.lookup(ns, "counter")
        done = 0
        while done < per_task:
            try:
                await registry.update_value(ns, "counter", current + 1, expect=current)
            except errors.ValueMismatch as exc:
                mismatches += 1
                current = exc.actual
                continue
            current += 1
            done += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(incrementer)
    await registry.sync()
    assert registry.lookup(ns, "counter") == per_task * tasks


def test_missing_is_a_public_singleton() -> None:
    assert repr(MISSING) == "MISSING"
    assert str(MISSING) == "MISSING"
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert MISSING != None  # noqa: E711 -- None is a value to compare with, MISSING is not


@pytest.mark.local_only
def test_update_value_nowait(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry()
    registry.register_nowait("ns", "w", 1, {"k": "v"}, owner="o")
    events: list[RegistryEvent] = []
    registry.backend.subscribe(events.append)
    reg = registry.update_value_nowait("ns", "w", 2)
    assert (reg.value, dict(reg.metadata), reg.owner) == (2, {"k": "v"}, "o")
    assert registry.update_value_nowait("ns", "w", 3, expect=2).value == 3
    with pytest.raises(errors.ValueMismatch):
        registry.update_value_nowait("ns", "w", 4, expect=2)
    assert [(e.kind, e.value, e.reason) for e in events] == [
        ("updated", 2, "replaced"),
        ("updated", 3, "replaced"),
    ]


@pytest.mark.local_only
async def test_any_value_locally_and_identity_expect(registry: Registry) -> None:
    class Unequal:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing me")

        __hash__ = object.__hash__

    odd = Unequal()
    await registry.register("ns", "w", odd)
    # identity matches without calling __eq__; a raising __eq__ is "not equal"
    reg = await registry.update_value("ns", "w", object, expect=odd)
    assert reg.value is object
    await registry.update_value("ns", "w", odd)
    with pytest.raises(errors.ValueMismatch):
        await registry.update_value("ns", "w", 1, expect=Unequal())
    assert registry.lookup("ns", "w") is odd


@pytest.mark.local_only
async def test_update_value_from_threads_is_atomic(make_registry: Callable[..., Registry]) -> None:
    registry = make_registry(partitions=2)
    registry.register_nowait("ns", "counter", 0)

    def work() -> int:
        lost = 0
        done = 0
        while done < 200:
            current = registry.lookup("ns", "counter")
            try:
                registry.update_value_nowait("ns", "counter", current + 1, expect=current)
            except errors.ValueMismatch:
                lost += 1
                continue
            done += 1
        return lost

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(trio.to_thread.run_sync, work)
    assert registry.lookup("ns", "counter") == 800
