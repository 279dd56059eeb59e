"""The facade itself: backend choice, configuration errors, bound reads."""

from __future__ import annotations

import os
from typing import Any

import pytest

from foundation import errors
from foundation.registry import NATIVE, EtcdBackend, Registry, _compat, open_registry
from foundation.registry._python import PythonBackend

READS = [
    "lookup",
    "get",
    "lookup_with_metadata",
    "metadata",
    "names",
    "registrations",
    "count",
    "members",
    "member_count",
]
NOWAIT = [
    "register_nowait",
    "unregister_nowait",
    "update_metadata_nowait",
    "unregister_owner_nowait",
    "join_nowait",
    "leave_nowait",
]


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOUNDATION_BACKEND", raising=False)


def test_auto_backend() -> None:
    registry = Registry()
    try:
        assert registry.backend_name == ("native" if NATIVE else "python")
        assert registry.partitions == (os.cpu_count() or 1)
    finally:
        registry.close()


def test_auto_honours_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOUNDATION_BACKEND", "python")
    registry = Registry(backend="auto")
    assert registry.backend_name == "python"
    registry.close()
    monkeypatch.setenv("FOUNDATION_BACKEND", "bogus")
    with pytest.raises(errors.ConfigError) as info:
        Registry(backend="auto")
    assert "FOUNDATION_BACKEND" in str(info.value)


async def test_explicit_backends(backend_name: str, registry_options: dict[str, Any]) -> None:
    async with open_registry(backend=backend_name, partitions=3, **registry_options) as registry:
        assert registry.backend_name == backend_name
        assert registry.backend.name == backend_name
        assert registry.partitions == 3
        assert not registry.closed
        assert backend_name in repr(registry)
    assert registry.closed


def test_native_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "NATIVE", False)
    with pytest.raises(errors.BackendUnavailable) as info:
        Registry(backend="native")
    assert isinstance(info.value, ImportError)
    assert "python" in str(info.value)  # says what to use instead
    registry = Registry(backend="auto")
    assert registry.backend_name == "python"
    registry.close()


@pytest.mark.parametrize("bad", ["bogus", "", "Native!", 42, None, object()])
def test_unknown_backend(bad: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        Registry(backend=bad)
    assert isinstance(info.value, ValueError)
    assert "python" in str(info.value)


def test_etcd_needs_open_registry() -> None:
    with pytest.raises(errors.ConfigError) as info:
        Registry(backend="etcd")
    assert "open_registry" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "4", True])
async def test_bad_partitions(
    backend_name: str, registry_options: dict[str, Any], bad: Any
) -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with open_registry(backend=backend_name, partitions=bad, **registry_options):
            pass  # pragma: no cover
    assert "partitions" in str(info.value)


@pytest.mark.parametrize("bad", [("",), (1,), "role"])
async def test_bad_indexes(backend_name: str, registry_options: dict[str, Any], bad: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with open_registry(backend=backend_name, indexes=bad, **registry_options):
            pass  # pragma: no cover
    assert "index" in str(info.value)


def test_backend_instance() -> None:
    backend = PythonBackend(2)
    registry = Registry(backend=backend)
    assert registry.backend is backend
    assert registry.backend_name == "python"
    registry.register_nowait("ns", "a", 1)
    assert backend.lookup("ns", "a") == 1
    registry.close()
    assert backend.closed


def _read_table(registry: Registry) -> Any:
    """What the reads are bound to: the backend, or on etcd its local read table."""
    backend = registry.backend
    return backend.read_table if isinstance(backend, EtcdBackend) else backend


# lookup() and get() are C methods of the Registry class itself when the
# extension is built (see foundation.registry._facade), the other reads the
# backend's own bound methods.
FRONT = {"lookup", "get"} if _compat.NATIVE else set()


async def test_reads_are_the_backends_own_methods(
    backend_name: str, registry_options: dict[str, Any]
) -> None:
    # No Python wrapper frame on the read path (on etcd: the methods of its
    # local table, native when built)
    async with open_registry(backend=backend_name, **registry_options) as registry:
        table = _read_table(registry)
        for name in READS:
            method = getattr(registry, name)
            if name in FRONT:
                # a C method (no frame) whose answers are the table's
                assert type(method) is type(len), name
                assert getattr(method, "__self__", None) is registry, name
                assert name not in vars(registry), name
                continue
            assert getattr(method, "__self__", None) is table, name
        await registry.register("ns", "front", 7)
        assert registry.lookup("ns", "front") == table.lookup("ns", "front") == 7
        assert registry.get("ns", "absent", 8) == table.get("ns", "absent", 8) == 8
        for name in NOWAIT:
            method = getattr(registry, name)
            assert getattr(method, "__self__", None) is registry.backend, name
        if backend_name == "etcd":
            assert table.name == ("native" if NATIVE else "python")


async def test_single_partition(backend_name: str, registry_options: dict[str, Any]) -> None:
    async with open_registry(backend=backend_name, partitions=1, **registry_options) as registry:
        await registry.register_many([("ns", i, i) for i in range(100)])
        assert registry.count() == 100
        assert registry.stats().partitions == 1


@pytest.mark.local_only
def test_arbitrary_hashable_keys_locally(backend_name: str) -> None:
    registry = Registry(backend=backend_name)
    try:
        ns = frozenset({"a", "b"})
        name = (1.5, None, b"bytes")
        value = object()
        registry.register_nowait(ns, name, value)
        assert registry.lookup(frozenset({"b", "a"}), (1.5, None, b"bytes")) is value
        [reg] = registry.registrations(ns)
        assert reg.namespace is ns
        assert reg.name is name
        assert registry.names(ns) == [name]
    finally:
        registry.close()


@pytest.mark.local_only
def test_non_json_values_locally(backend_name: str) -> None:
    registry = Registry(backend=backend_name)
    try:

        class Service:
            pass

        svc = Service()
        registry.register_nowait("ns", "svc", svc, {"callback": print, "when": {1, 2}})
        assert registry.lookup("ns", "svc") is svc
        assert registry.metadata("ns", "svc")["callback"] is print
        # identical unhashable value: a re-registration, not a conflict
        arr = [1, 2]
        registry.register_nowait("ns", "arr", arr)
        registry.register_nowait("ns", "arr", arr, {"again": 1})
        assert registry.metadata("ns", "arr")["again"] == 1
    finally:
        registry.close()


@pytest.mark.local_only
def test_value_with_hostile_eq_is_not_the_same(backend_name: str) -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    registry = Registry(backend=backend_name)
    try:
        h = Hostile()
        registry.register_nowait("ns", "h", h)
        registry.register_nowait("ns", "h", h, {"same": True})  # identical: fine
        with pytest.raises(errors.AlreadyRegistered):
            registry.register_nowait("ns", "h", Hostile())
        registry.join_nowait("ns", "g", h)
        registry.join_nowait("ns", "g", Hostile())
        assert registry.member_count("ns", "g") == 2
    finally:
        registry.close()


async def test_contains_needs_a_pair(backend_name: str, registry_options: dict[str, Any]) -> None:
    async with open_registry(backend=backend_name, **registry_options) as registry:
        await registry.register("ns", "a", 1)
        assert ("ns", "a") in registry
        for bad in ("ns", ("ns",), ("ns", "a", "x")):
            with pytest.raises(errors.InvalidKey):
                _ = bad in registry
