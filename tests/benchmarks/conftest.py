"""Shared tables for the pytest-benchmark suite (``tests/benchmarks``).

The tables are big and read-only for the benchmarks (a write benchmark puts
back what it changes), so one session-wide cache builds each of them once, on
first use: ``bench_tables.registry(n, "native")``, ``.dict(n)``, ``.nested(n)``,
``.select_registry(n, "python", indexed=True)``, ``.select_dict(n)``.

Names are prebuilt ``str`` (hashed once) over 16 interned namespaces, like
``foundation._cli._bench`` and the reference measurements; access lists are
shuffled with a fixed seed.

1e6 cases carry ``pytest.mark.slow``: deselect them with ``-m "not slow"``.
Building the 1e6 tables takes several seconds per implementation.
"""

from __future__ import annotations

import gc
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from foundation._cli._bench import NAMESPACES, make_pairs, make_registry
from foundation.registry import _compat

#: Keys per benchmarked call: every benchmark times a batch of this many ops.
BATCH = 1_000
ROLES = tuple(f"role{i:02d}" for i in range(100))


class Value:
    """The registered value: one shared object, so no value allocation is timed."""

    __slots__ = ()


VALUE = Value()


def require_impl(impl: str) -> None:
    """Skip a native case when the extension is not in use (fail under REQUIRE_EXTENSIONS)."""
    if impl != "native" or _compat.NATIVE:
        return
    why = "FOUNDATION_NO_EXTENSIONS is set" if _compat.NO_EXTENSIONS else "not compiled"
    if os.environ.get("FOUNDATION_REQUIRE_EXTENSIONS", "").strip().lower() in ("1", "true"):
        pytest.fail(f"native backend unavailable ({why}) but FOUNDATION_REQUIRE_EXTENSIONS=1")
    pytest.skip(f"native backend unavailable: {why}")


class BenchTables:
    """Lazily built, session-wide tables of N entries, shared by all benchmarks."""

    def __init__(self) -> None:
        self._pairs: dict[int, list[tuple[str, str]]] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._closers: list[Any] = []
        self.rnd = random.Random(12345)
        #: The value every table stores.
        self.value = VALUE
        #: 100 roles: each is the ``role`` of 1% of a select table's entries.
        self.roles = ROLES
        self.batch = BATCH
        self.require = require_impl

    def _build(self, key: tuple[Any, ...], build: Any) -> Any:
        if key not in self._cache:
            enabled = gc.isenabled()
            gc.disable()  # millions of container objects: no full collections while filling
            try:
                self._cache[key] = build()
            finally:
                if enabled:
                    gc.enable()
        return self._cache[key]

    def pairs(self, n: int) -> list[tuple[str, str]]:
        """The ``n`` stored ``(ns, name)`` pairs (in insertion order)."""
        if n not in self._pairs:
            self._pairs[n] = make_pairs(n, "live")
        return self._pairs[n]

    def hits(self, n: int) -> list[tuple[str, str]]:
        """``BATCH`` stored pairs in random order."""
        return self._build(("hits", n), lambda: self.rnd.sample(self.pairs(n), min(n, BATCH)))

    def misses(self, n: int) -> list[tuple[str, str]]:
        """``BATCH`` absent pairs in random order."""

        def build() -> list[tuple[str, str]]:
            out = make_pairs(BATCH, "miss")
            self.rnd.shuffle(out)
            return out

        return self._build(("misses", n), build)

    def fresh(self) -> list[tuple[str, str]]:
        """``BATCH`` pairs never stored anywhere (for register+unregister cycles)."""

        def build() -> list[tuple[str, str]]:
            out = make_pairs(BATCH, "new")
            self.rnd.shuffle(out)
            return out

        return self._build(("fresh",), build)

    def registry(self, n: int, impl: str) -> Any:
        """A Registry (default partitions) holding the ``n`` pairs, no metadata."""

        def build() -> Any:
            reg = make_registry(impl)
            f = reg.register_nowait
            for a, b in self.pairs(n):
                f(a, b, VALUE)
            self._closers.append(reg)
            return reg

        return self._build(("registry", n, impl), build)

    def dict(self, n: int) -> dict[tuple[str, str], Any]:
        """``{(ns, name): value}`` with its own key tuples."""
        return self._build(("dict", n), lambda: {(a, b): VALUE for a, b in self.pairs(n)})

    def nested(self, n: int) -> dict[str, dict[str, Any]]:
        """``{ns: {name: value}}``."""

        def build() -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {ns: {} for ns in NAMESPACES}
            for a, b in self.pairs(n):
                out[a][b] = VALUE
            return out

        return self._build(("nested", n), build)

    def metadata(self, i: int) -> dict[str, str]:
        """Metadata of the i-th pair of a select table: 1% share each role."""
        return {"role": ROLES[i % len(ROLES)], "zone": "zone-a"}

    def select_registry(self, n: int, impl: str, *, indexed: bool) -> Any:
        """A Registry of ``n`` entries with metadata; ``indexes=("role",)`` if ``indexed``."""

        def build() -> Any:
            reg = make_registry(impl, ("role",) if indexed else ())
            f = reg.register_nowait
            for i, (a, b) in enumerate(self.pairs(n)):
                f(a, b, VALUE, self.metadata(i))
            self._closers.append(reg)
            return reg

        return self._build(("select", n, impl, indexed), build)

    def select_dict(self, n: int) -> dict[tuple[str, str], tuple[Any, dict[str, str]]]:
        """``{(ns, name): (value, metadata)}`` for the plain-Python scan."""
        return self._build(
            ("select_dict", n),
            lambda: {(a, b): (VALUE, self.metadata(i)) for i, (a, b) in enumerate(self.pairs(n))},
        )

    def close(self) -> None:
        for reg in self._closers:
            reg.close()
        self._cache.clear()
        self._pairs.clear()


@pytest.fixture(scope="session")
def bench_tables() -> Iterator[BenchTables]:
    tables = BenchTables()
    yield tables
    tables.close()
