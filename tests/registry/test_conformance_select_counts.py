"""Conformance: ``count_select`` and ``unregister_select``.

Elixir's ``Registry.count_select`` and ``Registry.unregister_match``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registry, RegistryEvent

CRITERIA: list[dict[str, Any]] = [
    {},
    {"role": "db"},
    {"role": "db", "load": ("lt", 5)},
    {"load": ("gte", 3)},
    {"zone": ("in", ["a", "c"])},
    {"net.dc": "x"},
    {"missing": 1},
    {"role": ("neq", "db")},
]


async def fill(registry: Registry, ns: Any) -> None:
    for i in range(30):
        metadata = {
            "role": "db" if i % 3 == 0 else "web",
            "load": i % 7,
            "zone": "abc"[i % 3],
            "net": {"dc": "xy"[i % 2]},
        }
        await registry.register(ns, f"n{i:02d}", i, metadata, owner="o" if i % 2 else None)
    await registry.join(ns, "n00", "member", {"role": "db"})  # groups are not selected
    await registry.register((ns, "elsewhere"), "e", 0, {"role": "db", "load": 1})


@pytest.mark.parametrize("where", CRITERIA)
async def test_count_select_agrees_with_select(
    new_registry: Callable[..., Any], ns: Any, where: dict[str, Any]
) -> None:
    registry: Registry = await new_registry(indexes=("role",))
    await fill(registry, ns)
    assert registry.count_select(ns, where=where) == len(registry.select(ns, where=where))
    assert registry.count_select(None, where=where) == len(registry.select(None, where=where))
    odd = registry.count_select(ns, where=where, predicate=lambda r: r.value % 2 == 1)
    assert odd == len(registry.select(ns, where=where, predicate=lambda r: r.value % 2 == 1))


async def test_count_select_edge_cases(registry: Registry, ns: Any) -> None:
    assert registry.count_select(ns) == 0
    assert registry.count_select(ns, where={"a": 1}) == 0
    await registry.register(ns, "a", 1, {"a": 1})
    assert registry.count_select(ns) == 1
    assert registry.count_select(ns, {"a": 1}) == 1  # where may be positional
    with pytest.raises(errors.InvalidQuery):
        registry.count_select(ns, where={"a": ("near", 1)})
    with pytest.raises(errors.InvalidQuery):
        registry.count_select(ns, where=["a"])  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidQuery):
        registry.count_select(ns, predicate=42)  # type: ignore[arg-type]
    registry.close()
    assert registry.count_select(ns) == 1  # reads answer after close


@pytest.mark.parametrize("where", CRITERIA)
async def test_unregister_select_removes_exactly_the_matches(
    new_registry: Callable[..., Any], ns: Any, where: dict[str, Any]
) -> None:
    registry: Registry = await new_registry(indexes=("role",))
    await fill(registry, ns)
    matches = {r.name for r in registry.select(ns, where=where)}
    everything = {r.name for r in registry.registrations(ns)}
    async with registry.watch(ns) as events:
        removed = await registry.unregister_select(ns, where=where)
        got: list[RegistryEvent] = []
        with trio.fail_after(10):
            while len(got) < removed:
                got.append(await events.__anext__())
    assert removed == len(matches)
    assert {r.name for r in registry.registrations(ns)} == everything - matches
    assert sorted(e.name for e in got) == sorted(matches)
    assert {(str(e.kind), e.reason) for e in got} <= {("unregistered", "explicit")}
    assert registry.count_select(ns, where=where) == 0
    # the group and the other namespace are untouched
    assert [m.value for m in registry.members(ns, "n00")] == ["member"]
    assert registry.lookup((ns, "elsewhere"), "e") == 0


async def test_unregister_select_across_namespaces_and_with_a_predicate(
    registry: Registry, ns: Any
) -> None:
    await fill(registry, ns)
    before = registry.count()
    n = await registry.unregister_select(
        None, where={"role": "db"}, predicate=lambda r: r.value != 0
    )
    assert n == 9  # the db names n03, n06 ... n27; n00 and elsewhere/e have value 0
    assert registry.count() == before - n
    assert (ns, "n00") in registry
    assert registry.lookup((ns, "elsewhere"), "e") == 0


async def test_unregister_select_many(registry: Registry, ns: Any) -> None:
    """More matches than one etcd txn holds (128)."""
    await registry.register_many([(ns, i, i, {"even": i % 2 == 0}) for i in range(400)])
    assert await registry.unregister_select(ns, where={"even": True}) == 200
    assert sorted(registry.names(ns)) == list(range(1, 400, 2))
    assert await registry.unregister_select(ns, where={"even": True}) == 0


async def test_unregister_select_bad_input_and_closed(
    registry: Registry, ns: Any, snapshot: Callable[[Registry], dict[str, Any]]
) -> None:
    await fill(registry, ns)
    before = snapshot(registry)
    with pytest.raises(errors.InvalidQuery):
        await registry.unregister_select(ns, where={"role": ("like", "d%")})
    with pytest.raises(errors.InvalidQuery):
        await registry.unregister_select(ns, where="role=db")  # type: ignore[arg-type]
    assert snapshot(registry) == before  # nothing removed
    registry.close()
    with pytest.raises(errors.RegistryClosed):
        await registry.unregister_select(ns, where={"role": "db"})


async def test_unregister_select_cancelled_before_it_runs_removes_nothing(
    registry: Registry, ns: Any
) -> None:
    await fill(registry, ns)
    count = registry.count(ns)
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.unregister_select(ns)
    assert scope.cancelled_caught
    assert registry.count(ns) == count
