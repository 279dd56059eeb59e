"""The native table and the garbage collector.

The table shows the collector only the objects that can take part in a
reference cycle (see csrc/fdn_python.h): not str, int, None or tuples of
such, nor the registry's own metadata copies that hold only such. These
tests check both halves of that: every object that could close a cycle
through the table is shown (so the cycle is collected), and a table of
plain names and values shows nothing (so a full collection does not walk
it).
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from foundation.registry import Registry

try:
    from foundation.registry._native import NativeBackend
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(
        f"the native registry is not built ({exc}); run 'python setup.py build_ext --inplace'",
        allow_module_level=True,
    )

pytestmark = pytest.mark.native


class Service:
    """A value that refers back to its registry (the cycle under test)."""

    def __init__(self, registry: Any = None) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return "Service()"


class Token:
    """A hashable GC-tracked key or owner that refers back to its registry."""

    def __init__(self, tag: str, registry: Any = None) -> None:
        self.tag = tag
        self.registry = registry

    def __hash__(self) -> int:
        return hash(self.tag)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and other.tag == self.tag


def traced(b: NativeBackend) -> list[Any]:
    return b._traced()


def test_plain_table_shows_the_collector_nothing() -> None:
    b = NativeBackend(partitions=3)
    for i in range(200):
        b.register(
            f"ns{i % 4}",
            f"name-{i}",
            f"value-{i}",
            {"role": "db", "i": i},
            owner=None if i % 2 else f"owner-{i % 5}",
        )
        b.register(("test", i % 3), i, i * 2.5, owner=(f"o-{i % 7}", i % 2))
        b.join("ns", "group", f"member-{i}", {"k": (1, "two")}, owner=f"owner-{i % 5}")
    assert traced(b) == []
    for info in b._shard_info():
        assert info["refs"] == (0, 0)
    # what tp_traverse visits: the backend's own few attributes, no entry
    referents = gc.get_referents(b)
    assert len(referents) < 10
    assert not any(isinstance(o, (str, int, float)) for o in referents)


def test_gc_tracked_value_into_a_plain_table() -> None:
    """A plain table shows nothing; a GC-tracked value registered into it is
    shown (and a cycle through it collected); once it leaves, nothing again."""
    b = NativeBackend(partitions=2)
    for i in range(100):
        b.register("ns", f"n{i}", f"v{i}")
    assert traced(b) == []
    svc = Service()
    b.register("ns", "svc", svc, {"role": "db"})
    assert traced(b) == [svc]
    assert svc in gc.get_referents(b)
    b.unregister("ns", "svc")
    assert traced(b) == []
    # and the cycle: value -> registry -> value
    reg = Registry(backend="native", partitions=2)
    for i in range(100):
        reg.register_nowait("ns", f"n{i}", f"v{i}")
    svc = Service(reg)
    reg.register_nowait("ns", "svc", svc)
    gone_reg, gone_svc = weakref.ref(reg), weakref.ref(svc)
    del reg, svc
    gc.collect()
    assert gone_reg() is None
    assert gone_svc() is None


def _cycle_collected(build: Callable[[Registry], None]) -> None:
    reg = Registry(backend="native", partitions=3)
    build(reg)
    gone = weakref.ref(reg)
    del reg
    gc.collect()
    assert gone() is None


def test_every_kind_of_reference_closes_a_cycle() -> None:
    """Through a value, metadata, an owner, a namespace, a name, a group
    member, a group key: each alone is enough to keep the cycle visible."""
    _cycle_collected(lambda r: r.register_nowait("ns", "a", Service(r)))
    _cycle_collected(lambda r: r.register_nowait("ns", "a", 1, {"svc": Service(r)}))
    _cycle_collected(lambda r: r.register_nowait("ns", "a", 1, {"deep": ("x", [r])}))
    _cycle_collected(lambda r: r.register_nowait("ns", "a", 1, owner=Token("o", r)))
    _cycle_collected(lambda r: r.register_nowait(Token("ns", r), "a", 1))
    _cycle_collected(lambda r: r.register_nowait("ns", Token("a", r), 1))
    _cycle_collected(lambda r: r.register_nowait(("t", Token("x", r)), "a", 1))
    _cycle_collected(lambda r: r.join_nowait("ns", "g", Service(r)))
    _cycle_collected(lambda r: r.join_nowait("ns", "g", [r]))  # unhashable: a loose member
    _cycle_collected(lambda r: r.join_nowait("ns", "g", 1, {"svc": Service(r)}))
    _cycle_collected(lambda r: r.join_nowait("ns", "g", 1, owner=Token("o", r)))
    _cycle_collected(lambda r: r.join_nowait(Token("ns", r), "g", 1))
    _cycle_collected(lambda r: r.join_nowait("ns", Token("g", r), 1))


def test_metadata_updates_follow_what_is_traced() -> None:
    b = NativeBackend(partitions=1)
    b.register("ns", "a", "v", {"role": "db"})
    assert traced(b) == []
    held: list[Any] = []
    b.update_metadata("ns", "a", {"held": held})
    assert [dict(m) for m in traced(b)] == [{"held": held}]
    b.update_metadata("ns", "a", {"role": "web"})
    assert traced(b) == []
    # a re-registration replaces the metadata too
    b.register("ns", "a", "v", {"held": held})
    assert len(traced(b)) == 1
    b.join("ns", "g", "m", {"held": held})
    b.join("ns", "g", "m", {"plain": 1})
    assert len(traced(b)) == 1
    owner = Token("o")
    b.join("ns", "g", "m", {"held": held}, owner=owner)
    # the name's metadata; the member's metadata and owner; the owner list's key
    shown = traced(b)
    assert len(shown) == 4
    assert [o for o in shown if o is owner] == [owner, owner]


def test_traced_references_stay_exact_through_churn() -> None:
    """Removals leave holes that are compacted away; the traced set is
    always exactly the live GC-tracked objects, in registration order."""
    b = NativeBackend(partitions=2)
    live: dict[int, Service] = {}
    for i in range(3000):
        svc = Service()
        b.register("ns", i, svc)
        live[i] = svc
        if i % 3:
            b.unregister("ns", i - 1 if i % 2 else i)
            live.pop(i - 1 if i % 2 else i, None)
    want = [svc for _, svc in sorted(live.items())]
    got = traced(b)
    assert sorted(map(id, got)) == sorted(map(id, want))
    for info in b._shard_info():
        used, holes = info["refs"]
        assert holes * 2 <= used + 64  # compacted as they grew
    for i in list(live):
        b.unregister("ns", i)
    assert traced(b) == []
    assert all(info["refs"] == (0, 0) for info in b._shard_info())


def test_unregister_owner_releases_traced_owner() -> None:
    b = NativeBackend(partitions=2)
    owner = Token("o")
    for i in range(20):
        b.register("ns", i, i, owner=owner)
        b.join("ns", "g", i, owner=owner)
    assert owner in traced(b)
    assert b.unregister_owner(owner) == 40
    assert traced(b) == []


def test_the_collector_walks_values_in_registration_order() -> None:
    """Under a GIL every partition files its traced references in one
    vector, so the collector reaches the values in the order they were
    registered, whatever partition each key hashes to. (Reached partition
    by partition, they would end up in that order in the collector's own
    list, and every later pass over the list would stride through memory.)
    On a free-threaded build each partition keeps its own vector."""
    b = NativeBackend(partitions=8)
    values = [Service() for _ in range(400)]
    for i, value in enumerate(values):
        b.register(f"ns{i % 5}", f"svc-{i}", value)
    for i in range(0, 400, 3):
        assert b.unregister(f"ns{i % 5}", f"svc-{i}")
    kept = [v for i, v in enumerate(values) if i % 3]
    shown = [x for x in traced(b) if isinstance(x, Service)]
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if gil:
        assert shown == kept
        assert all(s["refs_shared"] for s in b._shard_info())
    else:
        assert sorted(map(id, shown)) == sorted(map(id, kept))
    b.close()
