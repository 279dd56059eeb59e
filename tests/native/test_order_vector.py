"""The native table's order vector: every name in registration order, read
by ``registrations()`` and ``select()`` of every namespace at once.

Under a GIL every partition files its names in one shared vector (a read is
one pass, no merge); on a free-threaded build each partition has its own.
Either way the reads answer in registration order, holes left by removals
are squeezed out once they are half the vector, and the vector's memory is
given back as the table shrinks.
"""

from __future__ import annotations

import gc
import random
import sys
import weakref
from typing import Any

import pytest

from foundation.registry import Registry

try:
    from foundation.registry import _native  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(
        f"the native registry is not built ({exc}); run 'python setup.py build_ext --inplace'",
        allow_module_level=True,
    )

pytestmark = pytest.mark.native

GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


def _info(registry: Registry) -> list[dict[str, Any]]:
    return registry._backend._shard_info()  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_reads_of_every_namespace_in_registration_order(partitions: int) -> None:
    registry = Registry(backend="native", partitions=partitions)
    twin = Registry(backend="python", partitions=partitions)
    rnd = random.Random(partitions)
    live: list[tuple[str, int]] = []
    for step in range(3000):
        if live and rnd.random() < 0.4:
            key = live.pop(rnd.randrange(len(live)))
            for r in (registry, twin):
                assert r.unregister_nowait(*key)
        else:
            key = (f"ns{rnd.randrange(7)}", step)
            md = {"even": step % 2 == 0}
            for r in (registry, twin):
                r.register_nowait(*key, step, md)
            live.append(key)
        if step % 500 == 0:
            got = [(r.namespace, r.name) for r in registry.registrations()]
            assert got == [(r.namespace, r.name) for r in twin.registrations()]
    assert [(r.namespace, r.name) for r in registry.registrations()] == live
    assert registry.select(None, where={"even": True}) == twin.select(None, where={"even": True})
    info = _info(registry)
    assert all(s["order_shared"] is GIL for s in info)
    # the vector(s) hold every name once, plus holes below the compaction bound
    vectors = [info[0]["order"]] if GIL else [s["order"] for s in info]
    assert sum(n - holes for n, holes, _ in vectors) == len(live)
    for n, holes, cap in vectors:
        assert holes < 64 or holes * 2 < n
        assert n < cap


def test_the_vector_shrinks_with_the_table() -> None:
    registry = Registry(backend="native", partitions=4)
    keys = [("ns", i) for i in range(20_000)]
    for key in keys:
        registry.register_nowait(*key, 1)
    big = sum(s["order"][2] for s in _info(registry)) // (1 if not GIL else 4)
    for key in keys[:19_900]:
        assert registry.unregister_nowait(*key)
    small = sum(s["order"][2] for s in _info(registry)) // (1 if not GIL else 4)
    assert small * 16 <= big
    assert [r.name for r in registry.registrations()] == [k[1] for k in keys[19_900:]]


def test_a_table_in_a_collected_cycle_is_freed() -> None:
    """The collector clears a table in a cycle (tp_clear swaps in fresh
    shards and a fresh shared vector, then frees the old ones, which still
    hold names), then frees it."""

    class Holder:
        registry: Registry

    holder = Holder()
    registry = Registry(backend="native", partitions=3)
    holder.registry = registry
    for i in range(300):
        registry.register_nowait(f"ns{i % 5}", i, holder)  # value -> registry -> value
    for i in range(0, 300, 3):
        registry.unregister_nowait(f"ns{i % 5}", i)
    gone = weakref.ref(registry._backend)  # type: ignore[attr-defined]
    del registry, holder
    gc.collect()
    assert gone() is None
