"""Registry hot paths on every local backend, beside plain-dict baselines.

Each ``time_*`` times a batch of ``BATCH`` operations over prebuilt ``str``
names in shuffled order (as ``python -m foundation bench`` does), so
per-operation cost is the reported time / ``BATCH``. The ``dict`` and
``nested`` params are the baselines of ``docs/performance.rst``: ``d.get((ns, name))``
and ``d[ns][name]``.
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
    """A lookup hit and a miss, at 1e3 and 1e5 entries."""

    params = (IMPLS, [1_000, 100_000])
    param_names = ("impl", "n")

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)
        pairs = make_pairs(n, "live")
        rnd = random.Random(12345)
        self.hits = rnd.sample(pairs, min(n, BATCH))
        self.misses = make_pairs(BATCH, "miss")
        self.table = _cached(("lookup", impl, n), lambda: _build(impl, pairs))
        self.impl = impl

    def time_hit(self, impl: str, n: int) -> None:
        hits = self.hits
        if impl in ("native", "python"):
            f = self.table.lookup
            for a, b in hits:
                f(a, b)
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
            g = self.table.get
            for a, b in misses:
                g(a, b)
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
            # the baseline of docs/performance.rst: dict[(ns, name)] = (value, metadata copy)
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
