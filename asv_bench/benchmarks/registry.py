"""Registry hot paths on every local backend, beside plain-dict baselines.

Each ``time_*`` times a batch of ``BATCH`` operations over prebuilt ``str``
names in shuffled order (as ``python -m foundation bench`` does), so
per-operation cost is the reported time / ``BATCH``. The ``dict`` and
``nested`` params are the plain-Python baselines: ``d.get((ns, name))`` and
``d[ns][name]``. Lookups are timed as users write them,
``registry.lookup(ns, name)``, the attribute lookup on the registry
included. ``GarbageCollector`` and ``AllocationBeside`` time what a large
table costs the rest of a process: a full collection, and allocating while
the collector runs.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Any

from foundation._cli._bench import make_pairs
from foundation.registry import NATIVE, Registry

BATCH = 1_000
IMPLS = ["native", "python", "dict", "nested"]


class _Value:
    __slots__ = ()


VALUE = _Value()


def _skip_missing(impl: str) -> None:
    if impl == "native" and not NATIVE:
        raise NotImplementedError("native backend not built")  # asv: skipped


# asv runs setup() again before every sample; a 1e5-entry table is built once
# per process instead, and only by benchmarks that leave it as they found it.
_TABLES: dict[tuple[Any, ...], Any] = {}


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    if key not in _TABLES:
        enabled = gc.isenabled()
        gc.disable()  # no full collections while filling
        try:
            _TABLES[key] = build()
        finally:
            if enabled:
                gc.enable()
    return _TABLES[key]


def _build(impl: str, pairs: list[tuple[str, str]]) -> Any:
    if impl in ("native", "python"):
        registry = Registry(impl)
        for ns, name in pairs:
            registry.register_nowait(ns, name, VALUE)
        return registry
    if impl == "dict":
        return {(ns, name): VALUE for ns, name in pairs}
    nested: dict[str, dict[str, Any]] = {}
    for ns, name in pairs:
        nested.setdefault(ns, {})[name] = VALUE
    return nested


class Lookup:
    """A lookup hit and a miss, at 1e3 and 1e5 entries. ``time_hit`` looks
    names up with the very objects registered (as a constant is);
    ``time_hit_equal`` with equal names that are other objects (as a name
    read from a message is)."""

    params = (IMPLS, [1_000, 100_000])
    param_names = ("impl", "n")

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)
        # the names once per process: asv runs setup() before every sample,
        # and the hits must be the objects the table holds
        pairs = _cached(("pairs", n), lambda: make_pairs(n, "live"))
        rnd = random.Random(12345)
        self.hits = rnd.sample(pairs, min(n, BATCH))
        self.equal = [(a, b[:1] + b[1:]) for a, b in self.hits]
        for _, b in self.equal:
            hash(b)
        self.misses = make_pairs(BATCH, "miss")
        self.table = _cached(("lookup", impl, n), lambda: _build(impl, pairs))
        self.impl = impl

    def time_hit(self, impl: str, n: int) -> None:
        self._hits(impl, self.hits)

    def time_hit_equal(self, impl: str, n: int) -> None:
        self._hits(impl, self.equal)

    def _hits(self, impl: str, hits: list[tuple[str, str]]) -> None:
        if impl in ("native", "python"):
            registry = self.table
            for a, b in hits:
                registry.lookup(a, b)
        elif impl == "dict":
            g = self.table.get
            for a, b in hits:
                g((a, b))
        else:
            d = self.table
            for a, b in hits:
                d[a][b]

    def time_miss(self, impl: str, n: int) -> None:
        misses = self.misses
        if impl in ("native", "python"):
            registry = self.table
            for a, b in misses:
                registry.get(a, b)
        elif impl == "dict":
            g2 = self.table.get
            for a, b in misses:
                g2((a, b))
        else:
            d = self.table
            for a, b in misses:
                inner = d.get(a)
                if inner is not None:
                    inner.get(b)


class RegisterCycle:
    """``register_nowait`` + ``unregister_nowait`` of fresh names (dict: setdefault + pop)."""

    params = (["native", "python", "dict"],)
    param_names = ("impl",)

    def setup(self, impl: str) -> None:
        _skip_missing(impl)
        self.fresh = make_pairs(BATCH, "new")
        self.table = _build(impl, make_pairs(1_000, "live"))

    def teardown(self, impl: str) -> None:
        if impl != "dict":
            self.table.close()

    def time_cycle(self, impl: str) -> None:
        fresh = self.fresh
        if impl == "dict":
            d = self.table
            for a, b in fresh:
                d.setdefault((a, b), VALUE)
                d.pop((a, b))
        else:
            reg, unreg = self.table.register_nowait, self.table.unregister_nowait
            for a, b in fresh:
                reg(a, b, VALUE)
                unreg(a, b)


class GroupCycle:
    """``join_nowait`` + ``leave_nowait`` of fresh members of one group, beside
    ``register_nowait`` + ``unregister_nowait`` of fresh names in the same
    registry (the target: join+leave within 2x of register+unregister)."""

    params = (["native", "python"],)
    param_names = ("impl",)

    def setup(self, impl: str) -> None:
        _skip_missing(impl)
        self.fresh = make_pairs(BATCH, "new")
        self.table = _build(impl, make_pairs(1_000, "live"))
        for i in range(100):
            self.table.join_nowait("ns00", "workers", f"member-{i}")

    def teardown(self, impl: str) -> None:
        self.table.close()

    def time_join_leave(self, impl: str) -> None:
        join, leave = self.table.join_nowait, self.table.leave_nowait
        for a, b in self.fresh:
            join(a, "workers", b)
            leave(a, "workers", b)

    def time_register_unregister(self, impl: str) -> None:
        reg, unreg = self.table.register_nowait, self.table.unregister_nowait
        for a, b in self.fresh:
            reg(a, b, VALUE)
            unreg(a, b)


class _Service:
    """A GC-tracked value, one per entry."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def _gc_table(impl: str, n: int, values: str) -> Any:
    """n entries: distinct GC-tracked values, or str values with 2-key metadata
    (the dict: ``d[(ns, name)] = (value, dict(metadata))``)."""
    pairs = make_pairs(n, "gc")

    def build() -> Any:
        if values == "tracked":
            vals: list[Any] = [_Service(i) for i in range(n)]
            mds: list[dict[str, str]] | None = None
        else:
            vals = [f"value-{i}" for i in range(n)]
            mds = [{"role": f"role{i % 100}", "zone": f"zone-{i % 4}"} for i in range(n)]
        if impl == "dict":
            if mds is None:
                return {k: v for k, v in zip(pairs, vals, strict=True)}
            return {k: (v, dict(m)) for k, v, m in zip(pairs, vals, mds, strict=True)}
        registry = Registry(impl)
        f = registry.register_nowait
        for i, (a, b) in enumerate(pairs):
            f(a, b, vals[i], None if mds is None else mds[i])
        return registry

    return _cached(("gc", impl, n, values), build)


class GarbageCollector:
    """One full ``gc.collect()`` with a table of n entries alive (the target:
    native no slower than the dict holding the same data)."""

    params = (["native", "dict"], ["tracked", "str_md"], [10_000, 1_000_000])
    param_names = ("impl", "values", "n")
    timeout = 300.0

    def setup(self, impl: str, values: str, n: int) -> None:
        _skip_missing(impl)
        self.table = _gc_table(impl, n, values)
        gc.collect()  # the first pass also untracks what can be

    def time_full_collection(self, impl: str, values: str, n: int) -> None:
        gc.collect()


class AllocationBeside:
    """Allocating (and keeping) 300k small lists with the collector on, beside
    a table of n entries: the generational collections it sets off (the
    target: native within 1.2x of the dict)."""

    params = (["native", "dict"], ["tracked", "str_md"], [10_000, 1_000_000])
    param_names = ("impl", "values", "n")
    timeout = 300.0

    def setup(self, impl: str, values: str, n: int) -> None:
        _skip_missing(impl)
        self.table = _gc_table(impl, n, values)
        self.was = gc.isenabled()
        gc.enable()
        gc.collect()

    def teardown(self, impl: str, values: str, n: int) -> None:
        if not self.was:
            gc.disable()

    def time_allocate_300k_lists(self, impl: str, values: str, n: int) -> None:
        kept = [[] for _ in range(300_000)]
        del kept


class UnregisterOwner:
    """``unregister_owner`` of 10 entries among n: O(10), not O(n)."""

    params = (["native", "python"], [1_000, 100_000])
    param_names = ("impl", "n")

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)
        # each call registers and removes the same 10 entries: the table is reusable
        self.table = _cached(("owner", impl, n), lambda: _build(impl, make_pairs(n, "live")))
        self.owned = make_pairs(10, "owned")

    def time_unregister_owner(self, impl: str, n: int) -> None:
        reg = self.table.register_nowait
        for a, b in self.owned:
            reg(a, b, VALUE, owner="worker")
        self.table.unregister_owner_nowait("worker")


class Memory:
    """Memory per registration (tracemalloc sees the native table: PyMem allocator)."""

    params = (["native", "python", "dict"],)
    param_names = ("impl",)
    unit = "bytes"

    def setup(self, impl: str) -> None:
        _skip_missing(impl)

    def track_bytes_per_entry(self, impl: str) -> float:
        import tracemalloc

        pairs = make_pairs(10_000, "mem")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        if impl == "dict":
            # the baseline: dict[(ns, name)] = (value, its own metadata copy)
            table = {(ns, name): (VALUE, {}) for ns, name in pairs}
        else:
            table = _build(impl, pairs)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        if impl != "dict":
            table.close()
        return (after - before) / len(pairs)

    track_bytes_per_entry.unit = "bytes"  # type: ignore[attr-defined]

    def peakmem_registry_10k(self, impl: str) -> None:
        table = _build(impl, make_pairs(10_000, "peak"))
        if impl != "dict":
            table.close()
