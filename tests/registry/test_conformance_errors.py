"""Conformance: error types, messages, closed registries, nothing half-written."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registration, Registry, open_registry


def test_error_tree() -> None:
    assert issubclass(errors.RegistryError, errors.FoundationError)
    assert issubclass(errors.AlreadyRegistered, ValueError)
    assert issubclass(errors.NotRegistered, LookupError)
    assert not issubclass(errors.NotRegistered, KeyError)
    assert issubclass(errors.InvalidKey, TypeError)
    assert issubclass(errors.InvalidMetadata, TypeError)
    assert issubclass(errors.InvalidQuery, ValueError)
    assert issubclass(errors.RegistryClosed, trio.ClosedResourceError)
    assert issubclass(errors.BackendIsAsync, trio.WouldBlock)
    assert issubclass(errors.BackendUnavailable, errors.RegistryError)
    assert issubclass(errors.WatchOverflow, errors.RegistryError)
    assert issubclass(errors.ConfigError, ValueError)
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.FoundationError)


async def test_not_registered_pickles(registry: Registry, ns: Any) -> None:
    with pytest.raises(errors.NotRegistered) as missing:
        registry.lookup(ns, "zz")
    clone = pickle.loads(pickle.dumps(missing.value))
    assert type(clone) is errors.NotRegistered
    assert clone.key == (ns, "zz")
    assert str(clone) == str(missing.value)


async def test_already_registered_carries_holder_and_pickles(registry: Registry, ns: Any) -> None:
    # errors.py: errors pass their data to Exception.__init__ "so they print
    # and pickle" (to a worker process, a log shipper), holder included.
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    with pytest.raises(errors.AlreadyRegistered) as taken:
        await registry.register(ns, "a", 2)
    err = taken.value
    assert "'o'" in str(err)  # the holder's owner helps debugging
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is errors.AlreadyRegistered
    assert clone.key == err.key
    assert str(clone) == str(err)
    assert clone.holder.value == 1
    assert clone.holder.owner == "o"
    assert dict(clone.holder.metadata) == {"m": 1}


async def test_messages_name_the_key(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "svc-name", 1)
    with pytest.raises(errors.AlreadyRegistered) as taken:
        await registry.register(ns, "svc-name", 2)
    with pytest.raises(errors.NotRegistered) as missing:
        registry.lookup(ns, "other-name")
    assert "svc-name" in str(taken.value)
    assert ns[1] in str(taken.value)
    assert "other-name" in str(missing.value)
    assert ns[1] in str(missing.value)


# -- closed registry ----------------------------------------------------------


async def test_closed_registry(registry: Registry, ns: Any) -> None:
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    await registry.join(ns, "g", "m", owner="o")
    registry.close()
    assert registry.closed
    for write in (
        registry.register(ns, "b", 2),
        registry.register(ns, "a", 1, {"m": 2}, owner="o"),
        registry.update_metadata(ns, "a", {"m": 3}),
        registry.join(ns, "g", "m2"),
        registry.register_many([(ns, "c", 3)]),
    ):
        with pytest.raises(errors.RegistryClosed) as info:
            await write
        assert isinstance(info.value, trio.ClosedResourceError)
        assert "closed" in str(info.value)
    # removal never raises on a closed registry
    assert await registry.unregister(ns, "a") is False
    assert await registry.leave(ns, "g", "m") is False
    assert await registry.unregister_owner("o") == 0
    # reads still answer from the last state
    assert registry.lookup(ns, "a") == 1
    assert registry.get(ns, "a") == 1
    assert dict(registry.metadata(ns, "a")) == {"m": 1}
    assert registry.names(ns) == ["a"]
    assert registry.count(ns) == 1 == len(registry)
    assert (ns, "a") in registry
    assert [m.value for m in registry.members(ns, "g")] == ["m"]
    assert registry.member_count(ns, "g") == 1
    assert registry.select(ns, where={"m": 1})[0].name == "a"
    assert registry.stats().closed is True
    assert isinstance(registry.health_check().ok, bool)


@pytest.mark.local_only(reason="_nowait writes are local-only")
async def test_closed_registry_nowait(registry: Registry, ns: Any) -> None:
    registry.register_nowait(ns, "a", 1, owner="o")
    registry.close()
    with pytest.raises(errors.RegistryClosed):
        registry.register_nowait(ns, "b", 2)
    with pytest.raises(errors.RegistryClosed):
        registry.update_metadata_nowait(ns, "a", {})
    with pytest.raises(errors.RegistryClosed):
        registry.join_nowait(ns, "g", 1)
    assert registry.unregister_nowait(ns, "a") is False
    assert registry.leave_nowait(ns, "g", 1) is False
    assert registry.unregister_owner_nowait("o") == 0
    assert registry.lookup(ns, "a") == 1


async def test_close_is_idempotent(registry: Registry) -> None:
    registry.close()
    registry.close()
    await registry.aclose()
    assert registry.closed


async def test_aclose_checkpoints(registry: Registry) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await registry.aclose()
    # closed even though the checkpoint was cancelled
    assert registry.closed


async def test_open_registry_closes_on_exit(
    backend_name: str, registry_options: dict[str, Any], ns: Any
) -> None:
    async with open_registry(backend=backend_name, partitions=2, **registry_options) as registry:
        assert isinstance(registry, Registry)
        assert registry.backend_name == backend_name
        assert registry.partitions == 2
        await registry.register(ns, "a", 1)
    assert registry.closed
    with pytest.raises(errors.RegistryClosed):
        await registry.register(ns, "b", 1)
    assert registry.lookup(ns, "a") == 1


async def test_open_registry_closes_on_error(
    backend_name: str, registry_options: dict[str, Any]
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with open_registry(backend=backend_name, **registry_options) as registry:
            raise Boom
    assert registry.closed


async def test_open_registry_indexes(
    backend_name: str, registry_options: dict[str, Any], ns: Any
) -> None:
    async with open_registry(
        backend=backend_name, indexes=("role",), **registry_options
    ) as registry:
        await registry.register(ns, "a", 1, {"role": "db"})
        assert [r.name for r in registry.select(ns, where={"role": "db"})] == ["a"]


# -- nothing half-written -----------------------------------------------------


async def test_failed_writes_leave_registry_unchanged(
    registry: Registry, ns: Any, snapshot: Any
) -> None:
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    await registry.join(ns, "g", "m", {"x": 1}, owner="o")
    before = snapshot(registry)
    failing = [
        (errors.AlreadyRegistered, registry.register(ns, "a", 2)),
        (errors.AlreadyRegistered, registry.register(ns, "a", 1, owner="p")),
        (errors.InvalidMetadata, registry.register(ns, "b", 1, ["no"])),  # type: ignore[arg-type]
        (errors.InvalidMetadata, registry.register(ns, "a", 1, "no", owner="o")),  # type: ignore[arg-type]
        (errors.InvalidMetadata, registry.update_metadata(ns, "a", 5)),  # type: ignore[arg-type]
        (errors.InvalidMetadata, registry.join(ns, "g", "m", [1])),  # type: ignore[arg-type]
        (errors.InvalidMetadata, registry.join(ns, "g", "new", 1.5)),  # type: ignore[arg-type]
        (errors.NotRegistered, registry.update_metadata(ns, "zz", {})),
    ]
    for exc_type, write in failing:
        with pytest.raises(exc_type):
            await write
        assert snapshot(registry) == before, exc_type


async def test_register_returns_registration_record(registry: Registry, ns: Any) -> None:
    reg = await registry.register(ns, "a", 1)
    assert reg == Registration(ns, "a", 1, reg.metadata, None)
    assert reg._fields == ("namespace", "name", "value", "metadata", "owner")


async def test_already_registered_says_who_holds_the_key(registry: Registry, ns: Any) -> None:
    # The message a person reads names the holder: its value, and unowned or
    # its owner (never "owner None", nor a bare token repr for the registry's
    # own scope owners).
    await registry.register(ns, "db", "tcp://db:5432")
    await registry.register(ns, "owned", "v", owner="svc-7")
    with pytest.raises(errors.AlreadyRegistered) as free:
        await registry.register(ns, "db", "tcp://elsewhere")
    with pytest.raises(errors.AlreadyRegistered) as owned:
        await registry.register(ns, "owned", "w")
    assert "held by value 'tcp://db:5432', unowned" in str(free.value)
    assert "None" not in str(free.value)
    assert "held by value 'v', owned by 'svc-7'" in str(owned.value)
    async with registry.registered(ns, "scoped", 3):
        with pytest.raises(errors.AlreadyRegistered) as scoped:
            await registry.register(ns, "scoped", 4)
    assert "held by value 3, owned by " in str(scoped.value)
    assert "registered() block" in str(scoped.value)
    assert "ScopeOwner" not in str(scoped.value)
