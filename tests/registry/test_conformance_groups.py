"""Conformance: groups (duplicate keys: join, leave, members)."""

from __future__ import annotations

from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registration, Registry


async def test_join_and_members_in_join_order(registry: Registry, ns: Any) -> None:
    values = ["c", "a", "b", 3, {"x": 1}, [1, 2]]
    for i, value in enumerate(values):
        reg = await registry.join(ns, "workers", value, {"i": i}, owner=("o", i))
        assert isinstance(reg, Registration)
        assert reg.namespace == ns
        assert reg.name == "workers"
        assert reg.value == value
        assert dict(reg.metadata) == {"i": i}
        assert reg.owner == ("o", i)
    members = registry.members(ns, "workers")
    assert [m.value for m in members] == values
    assert [dict(m.metadata) for m in members] == [{"i": i} for i in range(len(values))]
    assert all(m.namespace == ns and m.name == "workers" for m in members)
    assert registry.member_count(ns, "workers") == len(values)


async def test_join_again_updates_metadata(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "a", {"v": 1})
    await registry.join(ns, "g", "b")
    reg = await registry.join(ns, "g", "a", {"v": 2})
    assert dict(reg.metadata) == {"v": 2}
    assert registry.member_count(ns, "g") == 2
    by_value = {m.value: m for m in registry.members(ns, "g")}
    assert dict(by_value["a"].metadata) == {"v": 2}
    # equal (not identical) values are the same member
    await registry.join(ns, "g", {"k": [1]}, {"v": 1})
    await registry.join(ns, "g", {"k": [1]}, {"v": 3})
    assert registry.member_count(ns, "g") == 3


async def test_leave(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "a")
    await registry.join(ns, "g", "b")
    await registry.join(ns, "g", "c")
    assert await registry.leave(ns, "g", "b") is True
    assert await registry.leave(ns, "g", "b") is False
    assert await registry.leave(ns, "g", "never") is False
    assert await registry.leave(ns, "no-such-group", "a") is False
    assert [m.value for m in registry.members(ns, "g")] == ["a", "c"]
    assert registry.member_count(ns, "g") == 2
    assert await registry.leave(ns, "g", "a")
    assert await registry.leave(ns, "g", "c")
    assert registry.members(ns, "g") == []
    assert registry.member_count(ns, "g") == 0


async def test_empty_group(registry: Registry, ns: Any) -> None:
    assert registry.members(ns, "nothing") == []
    assert registry.member_count(ns, "nothing") == 0


async def test_groups_are_their_own_key_space(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "shared", "member")
    assert registry.names(ns) == []
    assert registry.count(ns) == 0
    assert registry.count() == 0
    assert len(registry) == 0
    assert (ns, "shared") not in registry
    assert registry.registrations(ns) == []
    with pytest.raises(errors.NotRegistered):
        registry.lookup(ns, "shared")
    # a unique name with the same key does not conflict with the group
    await registry.register(ns, "shared", "unique")
    assert registry.lookup(ns, "shared") == "unique"
    assert [m.value for m in registry.members(ns, "shared")] == ["member"]
    assert await registry.unregister(ns, "shared")
    assert [m.value for m in registry.members(ns, "shared")] == ["member"]
    assert await registry.leave(ns, "shared", "member")
    assert (ns, "shared") not in registry
    assert registry.member_count(ns, "shared") == 0


async def test_groups_separate_by_namespace_and_name(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g1", "v")
    await registry.join(ns, "g2", "v")
    await registry.join((ns, "x"), "g1", "v")
    assert registry.member_count(ns, "g1") == 1
    assert registry.member_count(ns, "g2") == 1
    assert registry.member_count((ns, "x"), "g1") == 1
    assert await registry.leave(ns, "g1", "v")
    assert registry.member_count(ns, "g2") == 1
    assert registry.member_count((ns, "x"), "g1") == 1


async def test_same_value_different_owners_is_one_member(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "v", owner="first")
    reg = await registry.join(ns, "g", "v", owner="second")
    assert registry.member_count(ns, "g") == 1
    assert reg.owner == "second"
    # joining again replaced the owner too
    assert await registry.unregister_owner("first") == 0
    assert await registry.unregister_owner("second") == 1
    assert registry.member_count(ns, "g") == 0


async def test_unregister_owner_removes_memberships(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "a", owner="o")
    await registry.join(ns, "g", "b", owner="p")
    await registry.join(ns, "h", "a", owner="o")
    assert await registry.unregister_owner("o") == 2
    assert [m.value for m in registry.members(ns, "g")] == ["b"]
    assert registry.member_count(ns, "h") == 0


async def test_large_group(registry: Registry, ns: Any) -> None:
    for i in range(1000):
        await registry.join(ns, "big", i, owner=i % 2)
    assert registry.member_count(ns, "big") == 1000
    assert [m.value for m in registry.members(ns, "big")] == list(range(1000))
    for i in range(0, 1000, 3):
        assert await registry.leave(ns, "big", i)
    assert [m.value for m in registry.members(ns, "big")] == [i for i in range(1000) if i % 3]
    assert await registry.unregister_owner(0) == len(
        [i for i in range(1000) if i % 3 and not i % 2]
    )
    assert [m.value for m in registry.members(ns, "big")] == [
        i for i in range(1000) if i % 3 and i % 2
    ]
