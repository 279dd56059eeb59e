"""Conformance: ``migrate()`` between the local backends, without loss."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import Registry
from foundation.registry._python import PythonBackend

PAIRS = [
    pytest.param(("python", "native"), marks=pytest.mark.native, id="python-to-native"),
    pytest.param(("native", "python"), marks=pytest.mark.native, id="native-to-python"),
    pytest.param(("python", "python"), id="python-to-python"),
    pytest.param(("native", "native"), marks=pytest.mark.native, id="native-to-native"),
]


async def populate(registry: Registry, ns: Any) -> None:
    for i in range(300):
        await registry.register(ns, i, {"i": i}, {"role": "db" if i % 2 else "web"}, owner=i % 5)
    await registry.register((ns, "b"), ("tuple", 1), "t")
    await registry.register((ns, "b"), "unowned", None, {"nested": {"a": [1, 2]}})
    for i in range(20):
        await registry.join(ns, "g", f"m{i}", {"i": i}, owner=i % 5)
    await registry.join((ns, "b"), "g2", "solo")


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest, require: Any) -> tuple[str, str]:
    src, dst = request.param
    require(src)
    require(dst)
    return src, dst


async def test_migrate_keeps_everything(pair: tuple[str, str], ns: Any, snapshot: Any) -> None:
    src, dst = pair
    async with _open(src, indexes=("role",)) as registry:
        await populate(registry, ns)
        before = snapshot(registry)
        members_before = [(m.value, dict(m.metadata), m.owner) for m in registry.members(ns, "g")]
        old = registry.backend
        await registry.migrate(dst)
        assert registry.backend_name == dst
        assert registry.backend is not old
        assert snapshot(registry) == before
        # group join order kept
        assert [
            (m.value, dict(m.metadata), m.owner) for m in registry.members(ns, "g")
        ] == members_before
        # key types kept
        assert registry.lookup((ns, "b"), ("tuple", 1)) == "t"
        assert all(type(n) is int for n in registry.names(ns))
        # indexes still answer
        assert len(registry.select(ns, where={"role": "db"})) == 150
        # owners kept: unregister_owner still finds names and memberships
        assert await registry.unregister_owner(3) == 60 + 4
        assert registry.count(ns) == 240
        # reads and writes go to the new backend
        await registry.register(ns, "after", 1)
        assert registry.lookup(ns, "after") == 1
        registry.register_nowait(ns, "after2", 2)
        assert registry.backend.lookup(ns, "after2") == 2
        # the old backend is closed
        assert old.closed
        with pytest.raises(errors.RegistryClosed):
            old.register(ns, "late", 1)


async def test_watch_and_wait_for_survive_migrate(pair: tuple[str, str], ns: Any) -> None:
    src, dst = pair
    async with _open(src) as registry:
        result: list[Any] = []

        async def waiter() -> None:
            result.append((await registry.wait_for(ns, "later")).value)

        with trio.fail_after(5):
            async with registry.watch(ns) as events, trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                await registry.register(ns, "before", 1)
                await registry.migrate(dst)
                await registry.register(ns, "later", 2)
                await registry.unregister(ns, "before")
                got = [await events.__anext__() for _ in range(3)]
        assert [(str(ev.kind), ev.name) for ev in got] == [
            ("registered", "before"),
            ("registered", "later"),
            ("unregistered", "before"),
        ]
        assert result == [2]


async def test_migrate_to_backend_instance(
    backend_name: str, registry_options: dict[str, Any], ns: Any, snapshot: Any
) -> None:
    async with _open(backend_name, **registry_options) as registry:
        await populate(registry, ns)
        before = snapshot(registry)
        target = PythonBackend(4)
        await registry.migrate(target)
        assert registry.backend is target
        assert registry.backend_name == "python"
        assert snapshot(registry) == before


async def test_migrate_to_non_empty_backend_refused(
    backend_name: str, registry_options: dict[str, Any], ns: Any, snapshot: Any
) -> None:
    async with _open(backend_name, **registry_options) as registry:
        await populate(registry, ns)
        before = snapshot(registry)
        old = registry.backend
        target = PythonBackend(4)
        target.register(ns, "squatter", 1)
        with pytest.raises(errors.ConfigError):
            await registry.migrate(target)
        assert registry.backend is old
        assert snapshot(registry) == before
        assert target.lookup(ns, "squatter") == 1
        assert target.count() == 1


async def test_migrate_unknown_backend(
    backend_name: str, registry_options: dict[str, Any], ns: Any, snapshot: Any
) -> None:
    async with _open(backend_name, **registry_options) as registry:
        await registry.register(ns, "a", 1)
        before = snapshot(registry)
        with pytest.raises(errors.ConfigError):
            await registry.migrate("bogus")
        assert registry.backend_name == backend_name
        assert snapshot(registry) == before


async def test_migrate_closed_registry(backend_name: str, registry_options: dict[str, Any]) -> None:
    async with _open(backend_name, **registry_options) as registry:
        registry.close()
        with pytest.raises(errors.RegistryClosed):
            await registry.migrate("python")


async def test_migrate_cancelled_does_nothing(
    backend_name: str, registry_options: dict[str, Any], ns: Any
) -> None:
    async with _open(backend_name, **registry_options) as registry:
        await registry.register(ns, "a", 1)
        old = registry.backend
        with trio.CancelScope() as scope:
            scope.cancel()
            await registry.migrate("python")
        assert scope.cancelled_caught
        assert registry.backend is old
        assert not old.closed


async def test_migrate_empty_registry(pair: tuple[str, str]) -> None:
    src, dst = pair
    async with _open(src) as registry:
        await registry.migrate(dst)
        assert registry.backend_name == dst
        assert registry.count() == 0


async def test_migrate_back_and_forth(pair: tuple[str, str], ns: Any, snapshot: Any) -> None:
    src, dst = pair
    async with _open(src) as registry:
        await populate(registry, ns)
        before = snapshot(registry)
        for target in (dst, src, dst):
            await registry.migrate(target)
            assert registry.backend_name == target
            assert snapshot(registry) == before


def _open(backend: str, **kwargs: Any) -> Any:
    from foundation.registry import open_registry

    return open_registry(backend=backend, partitions=4, **kwargs)
