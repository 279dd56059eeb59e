"""Conformance of local-only behaviours: any hashable key, any value, hostile
objects, and long random runs of the native table against the python twin.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from foundation import errors
from foundation.registry import NATIVE, Registry

pytestmark = pytest.mark.local_only


class Owner:
    """An owner token whose hash collides with every other Owner."""

    def __init__(self, tag: Any, *, explode: bool = False) -> None:
        self.tag = tag
        self.explode = explode

    def __hash__(self) -> int:
        return 777

    def __eq__(self, other: object) -> Any:
        if other is self:
            return True
        if self.explode or (isinstance(other, Owner) and other.explode):
            raise RuntimeError("owner eq exploded")
        return isinstance(other, Owner) and other.tag == self.tag

    def __repr__(self) -> str:
        return f"Owner({self.tag!r})"


async def test_owner_with_raising_eq(registry: Registry, ns: Any, snapshot: Any) -> None:
    bad = Owner("bad", explode=True)
    await registry.register(ns, "a", 1, owner=bad)
    before = snapshot(registry)
    good = Owner("good")
    # indexing the new entry under `good` must compare it with `bad`
    try:
        await registry.register(ns, "b", 2, owner=good)
    except errors.InvalidKey as exc:
        assert isinstance(exc.__cause__, RuntimeError)
        assert snapshot(registry) == before, "half-written after a failed owner index"
    else:
        assert registry.lookup_with_metadata(ns, "b").owner is good
        assert await registry.unregister_owner(good) == 1
        assert snapshot(registry) == before
    # the first owner's entries still go with it
    assert await registry.unregister_owner(bad) == 1
    assert registry.count() == 0


async def test_many_colliding_owners(registry: Registry, ns: Any) -> None:
    owners = [Owner(i) for i in range(50)]
    for i, owner in enumerate(owners):
        await registry.register(ns, i, i, owner=owner)
        await registry.join(ns, "g", i, owner=owner)
    for i in range(0, 50, 2):
        assert await registry.unregister_owner(Owner(i)) == 2
    assert sorted(registry.names(ns)) == list(range(1, 50, 2))
    assert [m.value for m in registry.members(ns, "g")] == list(range(1, 50, 2))


@pytest.mark.parametrize("indexes", [(), ("role",)], ids=["no-index", "indexed"])
async def test_unhashable_and_hostile_metadata_values(
    make_registry: Callable[..., Registry], ns: Any, indexes: tuple[str, ...]
) -> None:
    class NoEq:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("metadata value eq")

        __hash__ = None  # type: ignore[assignment]

    registry = make_registry(indexes=indexes)
    await registry.register(ns, "list", 1, {"role": ["db"]})
    await registry.register(ns, "dict", 2, {"role": {"k": "v"}})
    await registry.register(ns, "hostile", 3, {"role": NoEq()})
    await registry.register(ns, "plain", 4, {"role": "db"})
    assert [r.name for r in registry.select(ns, where={"role": "db"})] == ["plain"]
    assert [r.name for r in registry.select(ns, where={"role": ("eq", ["db"])})] == ["list"]
    assert [r.name for r in registry.select(ns, where={"role": {"k": "v"}})] == ["dict"]
    await registry.update_metadata(ns, "list", {"role": "db"})
    assert sorted(r.name for r in registry.select(ns, where={"role": "db"})) == ["list", "plain"]
    assert await registry.unregister(ns, "hostile")
    assert registry.count(ns) == 3


async def test_exotic_hashable_keys(registry: Registry) -> None:
    nan = float("nan")
    keys = [
        (frozenset({1, 2}), b"bytes"),
        (None, None),
        (1.5, (None, frozenset())),
        ("ns", nan),  # found by identity only, as in a dict
        (-1, "x"),
        (-2, "x"),  # hash(-1) == hash(-2) in CPython
        ("a", "b"),
        ("b", "a"),
    ]
    for i, (ns, name) in enumerate(keys):
        await registry.register(ns, name, i)
    for i, (ns, name) in enumerate(keys):
        assert registry.lookup(ns, name) == i
        [listed] = [n for n in registry.names(ns) if n is name or n == name]
        assert listed is name or type(listed) is type(name)
    assert registry.count() == len(keys)
    assert registry.get("ns", float("nan")) is None  # another nan is another key


async def test_none_namespace(registry: Registry) -> None:
    # None is a hashable namespace locally. count/registrations/select take
    # None as "all namespaces" (documented); names(ns) has no such form
    # (_backend.py: "unique names of ns"), so names(None) is namespace None's.
    await registry.register(None, "a", 1)
    await registry.register("x", "b", 2)
    assert registry.lookup(None, "a") == 1
    assert registry.names(None) == ["a"]
    assert registry.count() == 2


async def test_equal_keys_of_different_types(make_registry: Callable[..., Registry]) -> None:
    # 1, 1.0 and True are one dict key; every backend must agree with dict.
    registry = make_registry()
    await registry.register("ns", 1, "int")
    assert registry.lookup("ns", 1.0) == "int"
    assert registry.lookup("ns", True) == "int"
    with pytest.raises(errors.AlreadyRegistered):
        await registry.register("ns", True, "bool")
    [name] = registry.names("ns")
    assert type(name) is int  # returned exactly as first given


async def test_str_subclass_keys(registry: Registry) -> None:
    class Tag(str):
        pass

    class Weird(str):
        def __hash__(self) -> int:
            return 12345

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Weird) and str.__eq__(self, other)

    await registry.register("ns", Tag("a"), "tag")
    assert registry.lookup("ns", "a") == "tag"  # equal str, equal hash
    [name] = registry.names("ns")
    assert type(name) is Tag
    await registry.register("ns", Weird("w"), "weird")
    assert registry.get("ns", "w") is None  # Weird("w") != "w"
    assert registry.lookup("ns", Weird("w")) == "weird"


class SlowEqKey:
    """A key with distinct hashes but a Python __eq__, so a probe can switch threads."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return self.n * 1_000_003

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowEqKey) and other.n == self.n


def test_reads_during_resizes_from_threads(backend_name: str) -> None:
    """Readers must always find stable keys while writers grow and shrink the table."""
    registry = Registry(backend=backend_name, partitions=2)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        stable = [SlowEqKey(i) for i in range(200)]
        for key in stable:
            registry.register_nowait("ns", key, key.n)
        stop = threading.Event()
        problems: list[str] = []

        def reader() -> None:
            while not stop.is_set():
                for key in stable:
                    if registry.get("ns", SlowEqKey(key.n)) != key.n:
                        problems.append(f"lost {key.n}")
                        return

        def writer(base: int) -> None:
            for _round in range(2):
                for i in range(3000):
                    registry.register_nowait("ns", SlowEqKey(base + i), i)
                for i in range(3000):
                    registry.unregister_nowait("ns", SlowEqKey(base + i))

        readers = [threading.Thread(target=reader) for _ in range(3)]
        writers = [threading.Thread(target=writer, args=(10_000 * (w + 1),)) for w in range(3)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join(60)
        stop.set()
        for t in readers:
            t.join(60)
        assert problems == []
        assert registry.count() == 200
        assert sorted(k.n for k in registry.names("ns")) == list(range(200))
    finally:
        sys.setswitchinterval(old_interval)
        registry.close()


# -- long random runs: native against python --------------------------------------


def _random_op(rnd: random.Random) -> tuple[Any, ...]:
    ns = rnd.choice(["n0", "n1", ("n", 2), 3])
    name = rnd.choice([rnd.randrange(400), f"s{rnd.randrange(400)}", ("t", rnd.randrange(50))])
    value = rnd.randrange(3)
    owner = rnd.choice([None, "o1", "o2", ("o", 3), 4])
    md = rnd.choice([None, {}, {"role": rnd.choice(["db", "web"]), "load": rnd.randrange(5)}])
    r = rnd.random()
    if r < 0.40:
        return ("register", ns, name, value, md, owner)
    if r < 0.65:
        return ("unregister", ns, name)
    if r < 0.72:
        return ("update_metadata", ns, name, md)
    if r < 0.74:
        return ("unregister_owner", owner)
    if r < 0.90:
        return ("join", ns, rnd.choice(["g", "h"]), rnd.randrange(30), md, owner)
    return ("leave", ns, rnd.choice(["g", "h"]), rnd.randrange(30))


def _apply(registry: Registry, op: tuple[Any, ...]) -> Any:
    kind, *args = op
    try:
        if kind in ("register", "join"):
            ns, name, value, md, owner = args
            fn = registry.register_nowait if kind == "register" else registry.join_nowait
            r = fn(ns, name, value, md, owner=owner)
            return (r.namespace, r.name, r.value, dict(r.metadata), r.owner)
        if kind == "update_metadata":
            r = registry.update_metadata_nowait(*args)
            return (r.namespace, r.name, r.value, dict(r.metadata), r.owner)
        return getattr(registry, f"{kind}_nowait")(*args)
    except errors.RegistryError as exc:
        return (type(exc).__name__, getattr(exc, "key", None))


def _reads(registry: Registry) -> Any:
    out: dict[str, Any] = {
        "count": registry.count(),
        "all": sorted(
            repr((r.namespace, r.name, r.value, dict(r.metadata), r.owner))
            for r in registry.registrations()
        ),
        "select": sorted(
            repr((r.namespace, r.name))
            for r in registry.select(None, where={"role": "db", "load": ("lt", 3)})
        ),
    }
    for ns in ["n0", "n1", ("n", 2), 3]:
        out[f"names {ns!r}"] = sorted(map(repr, registry.names(ns)))
        out[f"count {ns!r}"] = registry.count(ns)
        for group in ("g", "h"):
            out[f"members {ns!r} {group}"] = [
                (m.value, dict(m.metadata), m.owner) for m in registry.members(ns, group)
            ]
    return out


@pytest.mark.native
@pytest.mark.skipif(not NATIVE, reason="native backend not built or disabled")
@pytest.mark.parametrize("seed", range(5))
def test_long_random_run_native_vs_python(seed: int) -> None:
    rnd = random.Random(seed)
    native = Registry(backend="native", partitions=3, indexes=("role",))
    python = Registry(backend="python", partitions=5)
    try:
        for step in range(15_000):
            op = _random_op(rnd)
            assert _apply(native, op) == _apply(python, op), (step, op)
            if step % 2500 == 0:
                assert _reads(native) == _reads(python), step
            key = (op[1], op[2]) if op[0] in ("register", "unregister") else None
            if key is not None:
                assert native.get(*key, "-") == python.get(*key, "-")
        assert _reads(native) == _reads(python)
        assert native.stats().registrations == python.stats().registrations
        assert native.stats().memberships == python.stats().memberships
    finally:
        native.close()
        python.close()
