"""pytest-benchmark suite: the registry backends against plain dicts.

Every benchmark times a batch of ``BATCH`` (1,000) operations on prebuilt,
shuffled keys, with the same plain ``for`` loop for every implementation, so
ns/op = reported time / 1,000. ``benchmark.group`` puts native, python,
dict, nested (and the bare ``loop``, to subtract) of one operation and size
side by side::

    python -m pytest tests/benchmarks --benchmark-enable -m "benchmark and not slow"
    python -m pytest tests/benchmarks --benchmark-enable -m benchmark   # with 1e6

In the normal test run (``--benchmark-disable``) each body runs once as a
plain test. ``python -m foundation bench`` gives the interleaved, net-of-loop
comparison table; this suite is the quick local view and the history
(``--benchmark-autosave``/``--benchmark-compare``).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from foundation._cli._bench import make_pairs, make_registry

pytestmark = pytest.mark.benchmark(disable_gc=True, warmup=True)

SIZES = [
    pytest.param(1_000, id="1e3"),
    pytest.param(1_000_000, id="1e6", marks=pytest.mark.slow),
]

Pairs = list[tuple[str, str]]


# The timed loops: one shape per call signature, names all local.
def loop_bare(ks: Pairs) -> None:
    for _a, _b in ks:
        pass


def loop_call(ks: Pairs, f: Callable[[str, str], Any]) -> None:
    for a, b in ks:
        f(a, b)


def loop_attr_lookup(ks: Pairs, registry: Any) -> None:
    for a, b in ks:
        registry.lookup(a, b)


def loop_tuple(ks: Pairs, f: Callable[[tuple[str, str]], Any]) -> None:
    for a, b in ks:
        f((a, b))


def loop_nested(ks: Pairs, d: dict[str, dict[str, Any]]) -> None:
    for a, b in ks:
        d[a][b]


def loop_cycle(ks: Pairs, f: Callable[..., Any], g: Callable[..., Any], v: Any) -> None:
    for a, b in ks:
        f(a, b, v)
        g(a, b)


def loop_dict_cycle(ks: Pairs, f: Callable[..., Any], g: Callable[..., Any], v: Any) -> None:
    for a, b in ks:
        f((a, b), v)
        g((a, b))


def loop_owner(owners: list[str], f: Callable[[str], Any]) -> None:
    for o in owners:
        f(o)


def loop_owner_dict(
    owners: list[str], pop_index: Callable[[str], Any], pop: Callable[[Any], Any]
) -> None:
    for o in owners:
        for k in pop_index(o):
            pop(k)


# ---------------------------------------------------------------- lookups
@pytest.mark.parametrize("impl", ["native", "python", "dict", "nested", "loop"])
@pytest.mark.parametrize("n", SIZES)
def test_lookup_hit(benchmark: Any, bench_tables: Any, n: int, impl: str) -> None:
    bench_tables.require(impl)
    keys = bench_tables.hits(n)
    value = bench_tables.value
    benchmark.group = f"lookup_hit N={n:,} (x{len(keys)} per call)"
    benchmark.extra_info["ops_per_call"] = len(keys)
    if impl in ("native", "python"):
        # as users call it: the attribute lookup on the registry included
        registry = bench_tables.registry(n, impl)
        assert all(registry.lookup(a, b) is value for a, b in keys)
        benchmark(loop_attr_lookup, keys, registry)
    elif impl == "dict":
        d = bench_tables.dict(n)
        assert all(d.get((a, b)) is value for a, b in keys)
        benchmark(loop_tuple, keys, d.get)
    elif impl == "nested":
        nested = bench_tables.nested(n)
        assert all(nested[a][b] is value for a, b in keys)
        benchmark(loop_nested, keys, nested)
    else:
        benchmark(loop_bare, keys)


@pytest.mark.parametrize("impl", ["native", "python", "dict", "loop"])
@pytest.mark.parametrize("n", SIZES)
def test_lookup_miss(benchmark: Any, bench_tables: Any, n: int, impl: str) -> None:
    bench_tables.require(impl)
    keys = bench_tables.misses(n)
    benchmark.group = f"lookup_miss N={n:,} (x{len(keys)} per call)"
    benchmark.extra_info["ops_per_call"] = len(keys)
    if impl in ("native", "python"):
        get = bench_tables.registry(n, impl).get
        assert all(get(a, b) is None for a, b in keys)
        benchmark(loop_call, keys, get)
    elif impl == "dict":
        d = bench_tables.dict(n)
        assert all(d.get((a, b)) is None for a, b in keys)
        benchmark(loop_tuple, keys, d.get)
    else:
        benchmark(loop_bare, keys)


# ---------------------------------------------------------------- writes
@pytest.mark.parametrize("impl", ["native", "python", "dict", "loop"])
@pytest.mark.parametrize("n", SIZES)
def test_register_unregister(benchmark: Any, bench_tables: Any, n: int, impl: str) -> None:
    bench_tables.require(impl)
    keys = bench_tables.fresh()
    value = bench_tables.value
    benchmark.group = f"register+unregister N={n:,} (x{len(keys)} per call)"
    benchmark.extra_info["ops_per_call"] = len(keys)
    if impl in ("native", "python"):
        reg = bench_tables.registry(n, impl)
        benchmark(loop_cycle, keys, reg.register_nowait, reg.unregister_nowait, value)
        assert len(reg) == n
        assert reg.get(*keys[0]) is None
    elif impl == "dict":
        d = bench_tables.dict(n)
        benchmark(loop_dict_cycle, keys, d.setdefault, d.pop, value)
        assert len(d) == n
    else:
        benchmark(loop_bare, keys)


_OWNERS = 100
_OWNED = 10


@pytest.mark.parametrize("impl", ["native", "python", "dict"])
@pytest.mark.parametrize("n", SIZES)
def test_unregister_owner(benchmark: Any, bench_tables: Any, n: int, impl: str) -> None:
    """``unregister_owner`` of 10 keys each, for 100 owners, in a table of n: O(k)."""
    bench_tables.require(impl)
    owners = [f"owner-{i:04d}" for i in range(_OWNERS)]
    owned = {o: make_pairs(_OWNED, f"own-{i:04d}") for i, o in enumerate(owners)}
    bench_tables.rnd.shuffle(owners)
    value = bench_tables.value
    benchmark.group = f"unregister_owner N={n:,} ({_OWNERS} owners x {_OWNED} keys per call)"
    benchmark.extra_info["calls_per_round"] = _OWNERS
    benchmark.extra_info["keys_per_owner"] = _OWNED
    rounds = 20
    if impl in ("native", "python"):
        reg = bench_tables.registry(n, impl)
        register = reg.register_nowait

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            for o, keys in owned.items():
                for a, b in keys:
                    register(a, b, value, owner=o)
            return (owners, reg.unregister_owner_nowait), {}

        benchmark.pedantic(loop_owner, setup=setup, rounds=rounds)
        assert len(reg) == n
    else:
        d = bench_tables.dict(n)

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            index: dict[str, list[tuple[str, str]]] = {}
            for o, keys in owned.items():
                lst = index[o] = []
                for a, b in keys:
                    key = (a, b)
                    d[key] = value
                    lst.append(key)
            return (owners, index.pop, d.pop), {}

        benchmark.pedantic(loop_owner_dict, setup=setup, rounds=rounds)
        assert len(d) == n


# ---------------------------------------------------------------- select
@pytest.mark.parametrize(
    ("impl", "indexed"),
    [
        pytest.param("native", False, id="native"),
        pytest.param("python", False, id="python"),
        pytest.param("dict", False, id="dict"),
        pytest.param("native", True, id="native-indexed"),
        pytest.param("python", True, id="python-indexed"),
    ],
)
@pytest.mark.parametrize("n", SIZES)
def test_select_eq(benchmark: Any, bench_tables: Any, n: int, impl: str, indexed: bool) -> None:
    """``select(None, where={"role": r})`` over n entries, 1% matching."""
    bench_tables.require(impl)
    role = bench_tables.roles[7]
    expected = len(range(7, n, len(bench_tables.roles)))
    kind = "indexed" if indexed else "scan"
    benchmark.group = f"select_{kind} N={n:,} ({expected} matches)"
    if impl == "dict":
        values = bench_tables.select_dict(n).values

        def scan() -> list[Any]:
            return [t for t in values() if t[1].get("role") == role]

        target: Callable[[], list[Any]] = scan
    else:
        select = bench_tables.select_registry(n, impl, indexed=indexed).select
        where = {"role": role}

        def target() -> list[Any]:
            return select(None, where)  # type: ignore[no-any-return]

    if n >= 1_000_000 and not indexed:
        found = benchmark.pedantic(target, rounds=3)  # seconds per call on the python twin
    else:
        found = benchmark(target)
    assert len(found) == expected


# ---------------------------------------------------------------- memory + fill
_MEMORY_MAX_N = 100_000


def _fill(impl: str, keys: Pairs, value: Any, md: dict[str, str] | None) -> Any:
    if impl == "dict":
        src = md if md is not None else {}
        return {(a, b): (value, dict(src)) for a, b in keys}
    reg = make_registry(impl)
    f = reg.register_nowait
    for a, b in keys:
        f(a, b, value, md)
    return reg


@pytest.mark.parametrize("metadata", ["no-metadata", "2-keys"])
@pytest.mark.parametrize("impl", ["native", "python", "dict"])
@pytest.mark.parametrize("n", SIZES)
def test_fill_and_memory(
    benchmark: Any, bench_tables: Any, n: int, impl: str, metadata: str
) -> None:
    """Time filling a fresh table to n entries; tracemalloc bytes/entry in extra_info.

    Memory is measured at ``min(n, 100_000)`` entries (``bytes_per_entry_at_n``).

    dict is ``d[(ns, name)] = (value, dict(metadata))`` (its own metadata copy,
    as the registries keep theirs).
    """
    bench_tables.require(impl)
    md = {"role": "db", "zone": "zone-a"} if metadata == "2-keys" else None
    keys = bench_tables.pairs(n)
    value = bench_tables.value
    # tracemalloc slows every allocation down a lot; bytes per entry barely
    # move past 1e5 entries, so the memory part stops there.
    n_mem = min(n, _MEMORY_MAX_N)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = _fill(impl, keys[:n_mem], value, md)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / n_mem
    finally:
        tracemalloc.stop()
    assert len(table) == n_mem
    if impl != "dict":
        table.close()
    del table
    benchmark.group = f"fill+memory N={n:,} {metadata}"
    benchmark.extra_info["bytes_per_entry"] = round(per_entry, 1)
    benchmark.extra_info["bytes_per_entry_at_n"] = n_mem
    benchmark.extra_info["ops_per_call"] = n

    def teardown(*_args: Any) -> None:
        gc.collect()

    rounds = 1 if n >= 1_000_000 else 5
    benchmark.pedantic(_fill, args=(impl, keys, value, md), teardown=teardown, rounds=rounds)
