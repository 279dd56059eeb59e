"""Conformance: owners and ``unregister_owner``."""

from __future__ import annotations

from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry


async def test_owner_recorded(registry: Registry, ns: Any) -> None:
    reg = await registry.register(ns, "a", 1, owner=("node", 7))
    assert reg.owner == ("node", 7)
    assert registry.lookup_with_metadata(ns, "a").owner == ("node", 7)
    assert registry.registrations(ns)[0].owner == ("node", 7)
    unowned = await registry.register(ns, "b", 2)
    assert unowned.owner is None


async def test_unregister_owner_counts_and_removes(registry: Registry, ns: Any) -> None:
    other_ns = (ns, "other")
    for i in range(5):
        await registry.register(ns, f"mine{i}", i, owner="me")
    await registry.register(other_ns, "mine-elsewhere", 0, owner="me")
    await registry.register(ns, "yours", 0, owner="you")
    await registry.register(ns, "nobody", 0)
    await registry.join(ns, "g", "m1", owner="me")
    await registry.join(ns, "g", "m2", owner="you")
    await registry.join(other_ns, "h", "m3", owner="me")

    assert await registry.unregister_owner("me") == 5 + 1 + 2
    assert sorted(registry.names(ns)) == ["nobody", "yours"]
    assert registry.names(other_ns) == []
    assert [m.value for m in registry.members(ns, "g")] == ["m2"]
    assert registry.members(other_ns, "h") == []
    assert registry.member_count(other_ns, "h") == 0
    assert registry.count() == 2
    # idempotent
    assert await registry.unregister_owner("me") == 0
    # the others are untouched
    assert registry.lookup_with_metadata(ns, "yours").owner == "you"
    assert await registry.unregister_owner("you") == 2
    assert registry.names(ns) == ["nobody"]


async def test_unregister_owner_unknown(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, owner="x")
    assert await registry.unregister_owner("never-used") == 0
    assert await registry.unregister_owner(("x",)) == 0  # tuple ("x",) is not "x"
    assert registry.count(ns) == 1


async def test_unregister_owner_after_partial_unregister(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, owner="o")
    await registry.register(ns, "b", 2, owner="o")
    await registry.join(ns, "g", "v", owner="o")
    assert await registry.unregister(ns, "a")
    assert await registry.leave(ns, "g", "v")
    assert await registry.unregister_owner("o") == 1
    assert registry.count(ns) == 0


async def test_owner_survives_update_metadata(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, {"v": 1}, owner="o")
    await registry.update_metadata(ns, "a", {"v": 2})
    assert registry.lookup_with_metadata(ns, "a").owner == "o"
    assert await registry.unregister_owner("o") == 1
    assert (ns, "a") not in registry


async def test_name_reusable_by_new_owner(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "svc", "v1", owner="gen1")
    with pytest.raises(errors.AlreadyRegistered):
        await registry.register(ns, "svc", "v2", owner="gen2")
    assert await registry.unregister_owner("gen1") == 1
    reg = await registry.register(ns, "svc", "v2", owner="gen2")
    assert reg.owner == "gen2"
    assert registry.lookup(ns, "svc") == "v2"
    # the old owner no longer owns it
    assert await registry.unregister_owner("gen1") == 0
    assert registry.lookup(ns, "svc") == "v2"


@pytest.mark.parametrize("owner", ["s", 0, -1, ("a", 1), ("nested", ("t", 2))])
async def test_portable_owners(registry: Registry, ns: Any, owner: Any) -> None:
    await registry.register(ns, "a", 1, owner=owner)
    await registry.join(ns, "g", 1, owner=owner)
    assert registry.lookup_with_metadata(ns, "a").owner == owner
    assert await registry.unregister_owner(owner) == 2


async def test_equal_owners_are_the_same_owner(registry: Registry, ns: Any) -> None:
    # owners compare by ==, as dict keys do (1 and 1 built separately, equal tuples)
    owner_a = ("worker", 10**20)
    owner_b = ("worker", int("1" + "0" * 20))
    assert owner_a == owner_b
    assert owner_a is not owner_b
    await registry.register(ns, "a", "v", {"n": 1}, owner=owner_a)
    reg = await registry.register(ns, "a", "v", {"n": 2}, owner=owner_b)
    assert dict(reg.metadata) == {"n": 2}
    assert await registry.unregister_owner(owner_b) == 1


async def test_unregister_owner_many(registry: Registry, ns: Any) -> None:
    for i in range(2000):
        await registry.register(ns, i, i, owner=i % 3)
    assert await registry.unregister_owner(1) == 667
    assert registry.count(ns) == 2000 - 667
    assert all(r.owner != 1 for r in registry.registrations(ns))
    assert sorted(registry.names(ns)) == [i for i in range(2000) if i % 3 != 1]
