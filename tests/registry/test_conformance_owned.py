"""Conformance: ``owned(owner)``, the reverse lookup (Elixir's ``Registry.keys/2``)."""

from __future__ import annotations

from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry


def summary(regs: list[Any]) -> list[tuple[Any, Any, Any]]:
    return [(r.namespace, r.name, r.value) for r in regs]


async def test_names_and_memberships_in_write_order(registry: Registry, ns: Any) -> None:
    other = (ns, "other")
    await registry.register(ns, "a", 1, owner="o")
    await registry.join(ns, "g", "m1", owner="o")
    await registry.register(other, "b", 2, owner="o")
    await registry.register(ns, "theirs", 0, owner="p")
    await registry.join(other, "h", "m2", owner="o")
    await registry.register(ns, "c", 3, owner="o")
    await registry.join(ns, "g", "m3", owner="p")
    assert summary(registry.owned("o")) == [
        (ns, "a", 1),
        (ns, "g", "m1"),
        (other, "b", 2),
        (other, "h", "m2"),
        (ns, "c", 3),
    ]
    assert summary(registry.owned("p")) == [(ns, "theirs", 0), (ns, "g", "m3")]
    assert all(r.owner == "o" for r in registry.owned("o"))
    # the metadata and owner are the registrations' own
    reg = registry.owned("o")[0]
    assert reg == registry.lookup_with_metadata(ns, "a")


async def test_follows_removals_updates_and_reregistration(registry: Registry, ns: Any) -> None:
    for name in ("a", "b", "c"):
        await registry.register(ns, name, name, {"v": 0}, owner="o")
    await registry.update_metadata(ns, "a", {"v": 1})  # keeps its place
    await registry.update_value(ns, "b", "B")  # keeps its place
    await registry.unregister(ns, "c")
    await registry.register(ns, "c", "c", owner="o")  # again: at the end
    assert summary(registry.owned("o")) == [(ns, "a", "a"), (ns, "b", "B"), (ns, "c", "c")]
    assert dict(registry.owned("o")[0].metadata) == {"v": 1}
    await registry.unregister(ns, "a")
    assert [r.name for r in registry.owned("o")] == ["b", "c"]
    assert await registry.unregister_owner("o") == 2
    assert registry.owned("o") == []


async def test_none_and_unknown_owners(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "unowned", 1)
    await registry.join(ns, "g", "m")
    assert registry.owned(None) == []
    assert registry.owned("never-used") == []
    assert registry.owned(("o",)) == []


async def test_equal_owners_are_one_owner(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, owner=("worker", 10**20))
    assert [r.name for r in registry.owned(("worker", int("1" + "0" * 20)))] == ["a"]


async def test_a_rejoin_moves_a_member_to_its_new_owner(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "m", owner="o")
    await registry.join(ns, "g", "m", {"again": True}, owner="p")
    assert registry.owned("o") == []
    assert summary(registry.owned("p")) == [(ns, "g", "m")]


async def test_unhashable_owner_is_invalid_key(registry: Registry) -> None:
    with pytest.raises(errors.InvalidKey):
        registry.owned(["not", "hashable"])


async def test_many_owners_each_sees_only_its_own(registry: Registry, ns: Any) -> None:
    for i in range(300):
        await registry.register(ns, i, i, owner=i % 7)
    for owner in range(7):
        assert [r.name for r in registry.owned(owner)] == [i for i in range(300) if i % 7 == owner]


async def test_answers_after_close(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, owner="o")
    registry.close()
    assert [r.name for r in registry.owned("o")] == ["a"]
