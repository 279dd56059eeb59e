"""Conformance: register, lookups, unregister, update_metadata, register_many.

Runs on every backend (``backend_name``), with portable keys and JSON values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import Health, Registration, Registry, RegistryStats


async def test_register_returns_registration(registry: Registry, ns: Any) -> None:
    reg = await registry.register(ns, "db", {"host": "h", "port": 5432}, {"role": "primary"})
    assert isinstance(reg, Registration)
    assert reg.namespace == ns
    assert reg.name == "db"
    assert reg.value == {"host": "h", "port": 5432}
    assert dict(reg.metadata) == {"role": "primary"}
    assert reg.owner is None


async def test_reads_after_register(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, {"k": "v"}, owner="o")
    assert registry.lookup(ns, "a") == 1
    assert registry.get(ns, "a") == 1
    assert registry.get(ns, "a", "dflt") == 1
    full = registry.lookup_with_metadata(ns, "a")
    assert full == Registration(ns, "a", 1, full.metadata, "o")
    assert dict(full.metadata) == {"k": "v"}
    assert dict(registry.metadata(ns, "a")) == {"k": "v"}
    assert (ns, "a") in registry
    assert (ns, "b") not in registry
    assert registry.names(ns) == ["a"]
    assert registry.count(ns) == 1
    assert len(registry) == registry.count() == 1
    [listed] = registry.registrations(ns)
    assert listed.value == 1
    assert listed.owner == "o"
    assert dict(listed.metadata) == {"k": "v"}
    assert [r.name for r in registry.registrations()] == ["a"]


async def test_absent_key(registry: Registry, ns: Any) -> None:
    assert registry.get(ns, "nope") is None
    assert registry.get(ns, "nope", 42) == 42
    assert registry.get(ns, "nope", default=42) == 42
    for read in (registry.lookup, registry.lookup_with_metadata, registry.metadata):
        with pytest.raises(errors.NotRegistered) as info:
            read(ns, "nope")
        assert info.value.key == (ns, "nope")
        assert "nope" in str(info.value)
    assert registry.names(ns) == []
    assert registry.registrations(ns) == []
    assert registry.count(ns) == 0


async def test_not_registered_is_lookup_error_not_key_error(registry: Registry, ns: Any) -> None:
    with pytest.raises(LookupError) as info:
        registry.lookup(ns, "missing")
    assert isinstance(info.value, errors.NotRegistered)
    assert not isinstance(info.value, KeyError)
    assert isinstance(info.value, errors.RegistryError)


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("plain", "name"),
        (("test", "3f2a"), 7),
        (0, ("a", 1, ("b", 2))),
        ((), ""),
        (("nested", ("deep", 1)), -12345678901234567890),
    ],
)
async def test_keys_returned_exactly_as_given(
    registry: Registry, namespace: Any, name: Any
) -> None:
    await registry.register(namespace, name, "v")
    [reg] = registry.registrations(namespace)
    assert reg.namespace == namespace
    assert type(reg.namespace) is type(namespace)
    assert reg.name == name
    assert type(reg.name) is type(name)
    [listed] = registry.names(namespace)
    assert listed == name
    assert type(listed) is type(name)
    got = registry.lookup_with_metadata(namespace, name)
    assert type(got.namespace) is type(namespace)
    assert type(got.name) is type(name)
    assert registry.lookup(namespace, name) == "v"


async def test_distinct_keys_do_not_collide(registry: Registry, ns: Any) -> None:
    # Keys that are easy to confuse in a naive encoding: tuple vs its parts,
    # int vs str, name in one ns vs another.
    await registry.register(ns, "1", "str-one")
    await registry.register(ns, 1, "int-one")
    await registry.register(ns, ("1",), "tuple-one")
    await registry.register((ns, "x"), "1", "other-ns")
    assert registry.lookup(ns, "1") == "str-one"
    assert registry.lookup(ns, 1) == "int-one"
    assert registry.lookup(ns, ("1",)) == "tuple-one"
    assert registry.lookup((ns, "x"), "1") == "other-ns"
    assert sorted(map(repr, registry.names(ns))) == sorted(map(repr, ["1", 1, ("1",)]))
    assert registry.count(ns) == 3
    assert registry.count((ns, "x")) == 1


@pytest.mark.parametrize(
    "value", [None, 0, 1.5, "s", [1, 2, {"a": None}], {"nested": {"x": [True, False]}}]
)
async def test_json_values_round_trip(registry: Registry, ns: Any, value: Any) -> None:
    await registry.register(ns, "k", value)
    assert registry.lookup(ns, "k") == value
    # a stored None value is found, not mistaken for absence
    assert (ns, "k") in registry
    assert registry.get(ns, "k", "absent") == value


async def test_unregister(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1)
    await registry.register(ns, "b", 2)
    assert await registry.unregister(ns, "a") is True
    assert await registry.unregister(ns, "a") is False
    assert await registry.unregister(ns, "never") is False
    assert (ns, "a") not in registry
    with pytest.raises(errors.NotRegistered):
        registry.lookup(ns, "a")
    assert registry.names(ns) == ["b"]
    assert registry.count(ns) == 1
    # the name is free again
    await registry.register(ns, "a", "new", owner="someone")
    assert registry.lookup_with_metadata(ns, "a").owner == "someone"


async def test_update_metadata_replaces(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, {"x": 1, "y": 2}, owner="o")
    reg = await registry.update_metadata(ns, "a", {"z": 3})
    assert isinstance(reg, Registration)
    assert dict(reg.metadata) == {"z": 3}
    assert reg.value == 1
    assert reg.owner == "o"
    assert reg.name == "a"
    assert reg.namespace == ns
    assert dict(registry.metadata(ns, "a")) == {"z": 3}  # replaced, not merged
    reg = await registry.update_metadata(ns, "a", None)
    assert dict(reg.metadata) == {}
    assert dict(registry.metadata(ns, "a")) == {}
    assert registry.lookup_with_metadata(ns, "a").owner == "o"


async def test_update_metadata_absent(registry: Registry, ns: Any, snapshot: Any) -> None:
    before = snapshot(registry)
    with pytest.raises(errors.NotRegistered) as info:
        await registry.update_metadata(ns, "ghost", {"a": 1})
    assert info.value.key == (ns, "ghost")
    assert "ghost" in str(info.value)
    assert snapshot(registry) == before


async def test_metadata_defaults_to_empty_mapping(registry: Registry, ns: Any) -> None:
    reg = await registry.register(ns, "a", 1)
    assert isinstance(reg.metadata, Mapping)
    assert dict(reg.metadata) == {}
    assert dict(registry.metadata(ns, "a")) == {}
    reg = await registry.register(ns, "b", 1, {})
    assert dict(reg.metadata) == {}


async def test_metadata_is_read_only_copy(registry: Registry, ns: Any) -> None:
    given = {"role": "db", "tags": ["a"]}
    reg = await registry.register(ns, "a", 1, given)
    given["role"] = "changed"
    given["new"] = True
    assert dict(registry.metadata(ns, "a")) == {"role": "db", "tags": ["a"]}
    assert dict(reg.metadata) == {"role": "db", "tags": ["a"]}
    for view in (
        reg.metadata,
        registry.metadata(ns, "a"),
        registry.lookup_with_metadata(ns, "a").metadata,
        registry.registrations(ns)[0].metadata,
    ):
        with pytest.raises(TypeError):
            view["role"] = "x"  # type: ignore[index]
        with pytest.raises(TypeError):
            del view["role"]  # type: ignore[attr-defined]
    # update_metadata copies too
    newer = {"role": "cache"}
    await registry.update_metadata(ns, "a", newer)
    newer["role"] = "mutated"
    assert dict(registry.metadata(ns, "a")) == {"role": "cache"}


async def test_reregister_same_value_same_owner_updates_metadata(
    registry: Registry, ns: Any
) -> None:
    await registry.register(ns, "a", {"v": 1}, {"gen": 1})
    # an equal (not identical) value counts as the same value
    reg = await registry.register(ns, "a", {"v": 1}, {"gen": 2})
    assert dict(reg.metadata) == {"gen": 2}
    assert dict(registry.metadata(ns, "a")) == {"gen": 2}
    assert registry.count(ns) == 1

    await registry.register(ns, "b", "x", {"gen": 1}, owner=("svc", 1))
    reg = await registry.register(ns, "b", "x", {"gen": 2}, owner=("svc", 1))
    assert dict(reg.metadata) == {"gen": 2}
    assert reg.owner == ("svc", 1)
    assert registry.count(ns) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # (value, owner) of the holder, then of the challenger
        (("v", None), ("v", "other")),  # same value, other owner
        (("v", "me"), ("v", None)),  # None equals only None
        (("v", "me"), ("v", "you")),
        (("v", None), ("w", None)),  # other value, same (no) owner
        (("v", "me"), ("w", "me")),
    ],
)
async def test_conflicting_register(
    registry: Registry, ns: Any, snapshot: Any, first: Any, second: Any
) -> None:
    holder = await registry.register(ns, "svc", first[0], {"m": 1}, owner=first[1])
    before = snapshot(registry)
    with pytest.raises(errors.AlreadyRegistered) as info:
        await registry.register(ns, "svc", second[0], {"m": 2}, owner=second[1])
    err = info.value
    assert isinstance(err, ValueError)
    assert err.key == (ns, "svc")
    assert isinstance(err.holder, Registration)
    assert err.holder.value == holder.value
    assert err.holder.owner == holder.owner
    assert dict(err.holder.metadata) == {"m": 1}
    assert "svc" in str(err)
    assert snapshot(registry) == before


@pytest.mark.local_only(reason="no _nowait writes on an async backend")
async def test_register_nowait_conflict_same_as_async(registry: Registry, ns: Any) -> None:
    registry.register_nowait(ns, "a", 1)
    with pytest.raises(errors.AlreadyRegistered):
        registry.register_nowait(ns, "a", 2)
    assert registry.lookup(ns, "a") == 1


async def test_racing_register_exactly_one_wins(registry: Registry, ns: Any) -> None:
    winners: list[int] = []
    losers: list[errors.AlreadyRegistered] = []

    async def contender(i: int) -> None:
        await trio.lowlevel.checkpoint()
        try:
            await registry.register(ns, "leader", i, owner=("task", i))
        except errors.AlreadyRegistered as exc:
            losers.append(exc)
        else:
            winners.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(contender, i)
    assert len(winners) == 1
    assert len(losers) == 49
    [winner] = winners
    assert registry.lookup(ns, "leader") == winner
    assert registry.lookup_with_metadata(ns, "leader").owner == ("task", winner)
    for exc in losers:
        assert exc.key == (ns, "leader")
        assert exc.holder.value == winner
    assert registry.count(ns) == 1


# -- async writes checkpoint ------------------------------------------------

_WRITES = ["register", "unregister", "update_metadata", "unregister_owner", "join", "leave"]


def _call_write(registry: Registry, ns: Any, op: str) -> Any:
    if op == "register":
        return registry.register(ns, "new", 1, owner="own")
    if op == "unregister":
        return registry.unregister(ns, "existing")
    if op == "update_metadata":
        return registry.update_metadata(ns, "existing", {"changed": True})
    if op == "unregister_owner":
        return registry.unregister_owner("own")
    if op == "join":
        return registry.join(ns, "group", "new-member", owner="own")
    if op == "leave":
        return registry.leave(ns, "group", "member")
    if op == "register_many":
        return registry.register_many([(ns, "m1", 1), (ns, "m2", 2)], owner="own")
    raise AssertionError(op)


async def _seed(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "existing", 0, {"orig": True}, owner="own")
    await registry.join(ns, "group", "member", owner="own")


@pytest.mark.parametrize("op", [*_WRITES, "register_many"])
async def test_cancelled_write_writes_nothing(
    registry: Registry, ns: Any, snapshot: Any, op: str
) -> None:
    await _seed(registry, ns)
    before = snapshot(registry)
    with trio.CancelScope() as scope:
        scope.cancel()
        await _call_write(registry, ns, op)
        pytest.fail("a write in a cancelled scope returned")  # pragma: no cover
    assert scope.cancelled_caught
    assert snapshot(registry) == before


@pytest.mark.parametrize("op", [*_WRITES, "register_many"])
async def test_completed_write_never_reports_cancelled(
    registry: Registry, ns: Any, snapshot: Any, op: str
) -> None:
    # The canceller becomes runnable before the write starts; Trio runs it
    # at the write's yield or right after the write returns (the order inside
    # a batch is random), so repeat to exercise both orders.
    for attempt in range(12):
        sub = (ns, attempt)
        await _seed(registry, sub)
        before = snapshot(registry)
        completed = False
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_now, scope)
                await _call_write(registry, sub, op)
                completed = True
                await trio.sleep_forever()  # the cancellation lands here at the latest
        assert scope.cancelled_caught
        after = snapshot(registry)
        if completed:
            assert after != before, f"{op}() returned but wrote nothing"
        else:
            assert after == before, "a write that reported Cancelled changed the registry"
        if not registry.backend.is_async:
            # a local write is applied before its only yield
            assert completed, f"{op}() reported Cancelled although it had been applied"


async def _cancel_now(scope: trio.CancelScope) -> None:
    scope.cancel()


@pytest.mark.parametrize("op", [*_WRITES, "register_many"])
async def test_write_is_a_checkpoint(registry: Registry, ns: Any, op: str) -> None:
    # Every async write yields, even when it succeeds at once (Trio rule).
    await _seed(registry, ns)
    with trio.testing.assert_checkpoints():
        await _call_write(registry, ns, op)


async def test_sync_is_a_checkpoint(registry: Registry) -> None:
    await registry.sync()
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.sync()
    assert scope.cancelled_caught


# -- register_many ------------------------------------------------------------


async def test_register_many_per_item_results(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "taken", "holder")
    results = await registry.register_many(
        [
            (ns, "a", 1),
            (ns, "taken", "challenger"),
            (ns, "b", 2, {"role": "db"}),
            (ns, "c", 3, ["not", "a", "mapping"]),
            (ns, "d", 4),
        ],
        owner="batch",
    )
    assert len(results) == 5
    a, taken, b, bad, d = results
    assert isinstance(a, Registration)
    assert a.value == 1
    assert a.owner == "batch"
    assert isinstance(taken, errors.AlreadyRegistered)
    assert taken.key == (ns, "taken")
    assert isinstance(b, Registration)
    assert dict(b.metadata) == {"role": "db"}
    assert isinstance(bad, errors.InvalidMetadata)
    assert isinstance(d, Registration)
    assert registry.lookup(ns, "taken") == "holder"
    assert (ns, "c") not in registry
    assert sorted(registry.names(ns)) == ["a", "b", "d", "taken"]
    assert registry.lookup_with_metadata(ns, "d").owner == "batch"
    assert await registry.unregister_owner("batch") == 3


async def test_register_many_duplicate_inside_batch(registry: Registry, ns: Any) -> None:
    first, second, same = await registry.register_many(
        [(ns, "x", 1), (ns, "x", 2), (ns, "x", 1, {"again": True})]
    )
    assert isinstance(first, Registration)
    assert isinstance(second, errors.AlreadyRegistered)
    assert isinstance(same, Registration)  # same value, same owner: an update
    assert registry.lookup(ns, "x") == 1
    assert dict(registry.metadata(ns, "x")) == {"again": True}


async def test_register_many_empty(registry: Registry) -> None:
    assert await registry.register_many([]) == []


async def test_register_many_accepts_any_iterable(registry: Registry, ns: Any) -> None:
    results = await registry.register_many((ns, f"n{i}", i) for i in range(10))
    assert all(isinstance(r, Registration) for r in results)
    assert registry.count(ns) == 10


# -- admin ------------------------------------------------------------------


async def test_stats(registry: Registry, backend_name: str, ns: Any) -> None:
    await registry.register(ns, "a", 1)
    await registry.register(ns, "b", 2)
    await registry.register((ns, 2), "c", 3)
    await registry.join(ns, "g", "m")
    registry.lookup(ns, "a")
    registry.get(ns, "zz")
    with pytest.raises(errors.AlreadyRegistered):
        await registry.register(ns, "a", 99)
    stats = registry.stats()
    assert isinstance(stats, RegistryStats)
    assert stats.backend == backend_name
    assert stats.partitions == 4
    assert stats.registrations == 3
    assert stats.memberships == 1
    assert stats.namespaces == 2
    assert stats.hits >= 1
    assert stats.misses >= 1
    assert stats.writes >= 4
    assert stats.conflicts == 1
    assert stats.closed is False
    with pytest.raises(AttributeError):
        stats.hits = 0  # type: ignore[misc]  # frozen record


async def test_health_check(registry: Registry, backend_name: str) -> None:
    health = registry.health_check()
    assert isinstance(health, Health)
    assert health.ok is True
    assert health.backend == backend_name


async def test_backend_name_and_partitions(registry: Registry, backend_name: str) -> None:
    assert registry.backend_name == backend_name
    assert registry.partitions == 4


async def test_len_and_count_across_namespaces(registry: Registry, ns: Any) -> None:
    for i in range(5):
        await registry.register((ns, "one"), i, i)
    for i in range(3):
        await registry.register((ns, "two"), i, i)
    assert registry.count((ns, "one")) == 5
    assert registry.count((ns, "two")) == 3
    assert registry.count() == len(registry) == 8
    assert len(registry.registrations()) == 8
    assert sorted(registry.names((ns, "one"))) == [0, 1, 2, 3, 4]


async def test_many_keys(registry: Registry, ns: Any) -> None:
    # enough entries to force every table to grow a few times
    n = 5000
    results = await registry.register_many([(ns, ("k", i), i) for i in range(n)])
    assert all(isinstance(r, Registration) for r in results)
    assert registry.count(ns) == n
    for i in range(0, n, 97):
        assert registry.lookup(ns, ("k", i)) == i
    for i in range(0, n, 2):
        assert await registry.unregister(ns, ("k", i))
    assert registry.count(ns) == n // 2
    assert sorted(k[1] for k in registry.names(ns)) == list(range(1, n, 2))
    for i in range(0, n, 2):
        assert registry.get(ns, ("k", i)) is None
