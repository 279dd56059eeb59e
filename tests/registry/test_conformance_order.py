"""Conformance: reads answer in registration (join) order, on every backend.

``registrations()``, ``select()``, ``names()``, ``members()`` and
``memberships()`` list entries in the order they were written, across
namespaces and partitions, whatever the partition count: a re-registration
or a metadata update keeps an entry's place, an entry registered again after
an unregister goes to the end.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from foundation.registry import Registry, RegistryEvent


def _names(regs: list[Any]) -> list[Any]:
    return [(r.namespace, r.name) for r in regs]


@pytest.mark.parametrize("partitions", [1, 3, 8])
async def test_registrations_in_registration_order(
    new_registry: Callable[..., Any], ns: Any, partitions: int
) -> None:
    registry: Registry = await new_registry(partitions=partitions, indexes=("role",))
    spaces = [(ns, "a"), (ns, "b"), (ns, "c")]
    rnd = random.Random(partitions)
    order: list[tuple[Any, str]] = []
    for i in range(60):
        space = rnd.choice(spaces)
        name = f"n{i:03d}"
        await registry.register(space, name, i, {"role": "db" if i % 3 else "web", "i": i})
        order.append((space, name))
    # a re-registration (same value, new metadata) and an update keep their place
    await registry.register(order[5][0], order[5][1], 5, {"role": "db", "i": 5, "again": 1})
    await registry.update_metadata(order[7][0], order[7][1], {"role": "db", "i": 7})
    # an unregister + register goes to the end
    await registry.unregister(*order[3])
    await registry.register(order[3][0], order[3][1], 3, {"role": "web", "i": 3})
    order.append(order.pop(3))

    everything = registry.registrations()
    assert _names([r for r in everything if r.namespace in spaces]) == order
    for space in spaces:
        mine = [k for k in order if k[0] == space]
        assert _names(registry.registrations(space)) == mine
        assert [(space, n) for n in registry.names(space)] == mine
        # unindexed select (a scan) and indexed select (the role index)
        dbs = [r.name for r in registry.registrations(space) if r.metadata["role"] == "db"]
        assert [r.name for r in registry.select(space, where={"role": "db"})] == dbs
        assert [r.name for r in registry.select(space, where={"i": ("gte", 0)})] == [
            k[1] for k in mine
        ]
        assert [r.name for r in registry.select(space, predicate=lambda r: r.value % 2 == 0)] == [
            r.name for r in registry.registrations(space) if r.value % 2 == 0
        ]
    all_db = [k for k in order if registry.metadata(*k)["role"] == "db"]
    selected = [r for r in registry.select(None, where={"role": "db"}) if r.namespace in spaces]
    assert _names(selected) == all_db
    scanned = [r for r in registry.select(None, where={"i": ("lt", 1000)}) if r.namespace in spaces]
    assert _names(scanned) == order


@pytest.mark.parametrize("partitions", [1, 3, 8])
async def test_members_in_join_order(
    new_registry: Callable[..., Any], ns: Any, partitions: int
) -> None:
    registry: Registry = await new_registry(partitions=partitions)
    rnd = random.Random(partitions)
    groups = ["g1", "g2", "g3"]
    joined: list[tuple[str, str]] = []
    for i in range(40):
        group = rnd.choice(groups)
        await registry.join(ns, group, f"m{i:03d}", {"i": i})
        joined.append((group, f"m{i:03d}"))
    # joining again updates in place; leaving and joining goes to the end
    await registry.join(ns, joined[2][0], joined[2][1], {"again": True})
    await registry.leave(ns, *joined[4])
    await registry.join(ns, *joined[4])
    joined.append(joined.pop(4))
    for group in groups:
        assert [m.value for m in registry.members(ns, group)] == [
            v for g, v in joined if g == group
        ]
    mine = [(m.name, m.value) for m in registry.backend.memberships(ns)]
    assert mine == joined


@pytest.mark.local_only
@pytest.mark.parametrize("partitions", [1, 2, 5])
def test_unregister_owner_reports_in_write_order(
    make_registry: Callable[..., Registry], partitions: int
) -> None:
    registry = make_registry(partitions=partitions)
    events: list[RegistryEvent] = []
    registry.backend.subscribe(events.append)
    written: list[tuple[str, Any, Any]] = []
    for i in range(30):
        if i % 3 == 0:
            registry.join_nowait("ns", f"g{i % 2}", i, owner="o")
            written.append(("left", f"g{i % 2}", i))
        else:
            registry.register_nowait(f"ns{i % 4}", f"n{i}", i, owner="o")
            written.append(("unregistered", f"n{i}", i))
    registry.register_nowait("ns", "unowned", -1)
    events.clear()
    assert registry.unregister_owner_nowait("o") == 30
    assert [(e.kind, e.registration.name, e.registration.value) for e in events] == written
    assert registry.count() == 1
