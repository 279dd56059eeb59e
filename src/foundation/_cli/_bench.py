"""The backend comparison engine behind ``python -m foundation bench``.

It measures the registry's hot operations side by side in ONE process, so
drift and load hit every implementation alike (the method and the targets
are in ``docs/performance.rst``):

* prebuilt ``str`` names (as a service's names are) over 16 interned
  namespaces, shuffled access, every name hashed before timing;
* every implementation timed with the same plain ``for a, b in keys:`` loop
  over the same prebuilt list, and the bare loop over that list
  (``for a, b in keys: pass``) timed alongside and subtracted ("net");
* rounds interleaved: each round times every implementation of every
  operation once (in a rotated order) on a freshly shuffled access list, so
  drift hits all of them alike; a cell is the median over rounds of the
  per-round net (each round's value is itself a median of a few samples),
  and the spread is the min-max of the per-round nets;
* the garbage collector is off while timing (the tables are frozen out of
  it with :func:`gc.freeze`, so no collection walks them);
* memory per entry with :mod:`tracemalloc` (the native table allocates
  through ``PyMem_*``, which tracemalloc sees).

Implementations (columns):

``native`` / ``python``
    the public path: :class:`foundation.registry.Registry` with
    ``backend="native"``/``"python"`` (default partitions): lookups as users
    write them, ``registry.lookup(ns, name)`` (the attribute lookup on the
    registry included, not a method bound ahead of the loop), writes through
    its bound ``register_nowait``/... methods.
``dict``
    a plain dict keyed by ``(ns, name)`` tuples built per call, as an
    API-shaped ``f(ns, name)`` would: ``d.get((ns, name))``,
    ``d.setdefault((ns, name), v); d.pop((ns, name))``; for ``unregister_owner``
    a dict plus an ``owner -> [keys]`` index; for ``select`` a list
    comprehension over ``dict[(ns, name)] = (value, metadata)``.
``nested``
    the best plain-Python read layout, ``d[ns][name]`` (lookup hit only).

Use :func:`run` and :func:`format_table` (the CLI does), or ``asv`` can
call :func:`run` with ``ops=[...]`` and read the JSON-able result.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

__all__ = [
    "ALL_OPS",
    "FULL_SIZES",
    "IMPLS",
    "NAMESPACES",
    "QUICK_SIZES",
    "TARGETS",
    "check_targets",
    "format_table",
    "make_pairs",
    "make_registry",
    "native_status",
    "run",
]

#: Sizes of a full and of a ``--quick`` run.
FULL_SIZES: tuple[int, ...] = (1_000, 1_000_000)
QUICK_SIZES: tuple[int, ...] = (1_000, 100_000)

#: Operations in table order.
ALL_OPS: tuple[str, ...] = (
    "lookup_hit",
    "lookup_miss",
    "register_unregister",
    "unregister_owner",
    "select_scan",
    "select_indexed",
    "memory_no_metadata",
    "memory_2_keys",
)

#: Columns, in table order.
IMPLS: tuple[str, ...] = ("native", "python", "dict", "nested")

_OP_LABEL = {
    "lookup_hit": "lookup hit",
    "lookup_miss": "lookup miss (get)",
    "register_unregister": "register+unregister",
    "unregister_owner": "unregister_owner (10 keys)",
    "select_scan": "select eq (scan)",
    "select_indexed": "select eq (indexed)",
    "memory_no_metadata": "memory, no metadata",
    "memory_2_keys": "memory, 2-key metadata",
}

_OP_UNIT = {
    "unregister_owner": "ns/call",
    "select_scan": "ns/call",
    "select_indexed": "ns/call",
    "memory_no_metadata": "B/entry",
    "memory_2_keys": "B/entry",
}

#: What each column means, per operation (printed under the table, in the JSON).
_IMPL_NOTES = {
    "lookup_hit": {
        "native": "registry.lookup(ns, name) (attribute and call, as users write it)",
        "python": "registry.lookup(ns, name) (attribute and call, as users write it)",
        "dict": "d.get((ns, name))",
        "nested": "d[ns][name]",
    },
    "lookup_miss": {
        "native": "registry.get(ns, name)",
        "python": "registry.get(ns, name)",
        "dict": "d.get((ns, name))",
    },
    "register_unregister": {
        "native": "register_nowait(ns, name, v); unregister_nowait(ns, name)",
        "python": "register_nowait(ns, name, v); unregister_nowait(ns, name)",
        "dict": "d.setdefault((ns, name), v); d.pop((ns, name))",
    },
    "unregister_owner": {
        "native": "unregister_owner_nowait(owner), 10 keys each",
        "python": "unregister_owner_nowait(owner), 10 keys each",
        "dict": "for k in index.pop(owner): d.pop(k)",
    },
    "select_scan": {
        "native": "select(None, where={'tier': t}): 'tier' not indexed, 1% match",
        "python": "select(None, where={'tier': t}): 'tier' not indexed, 1% match",
        "dict": "[e for e in d.values() if e[1].get('tier') == t]",
    },
    "select_indexed": {
        "native": "Registry(indexes=('role',)).select(None, where={'role': r}), 1% match",
        "python": "Registry(indexes=('role',)).select(None, where={'role': r}), 1% match",
    },
    "memory_no_metadata": {
        "native": "register_nowait(ns, name, v)",
        "python": "register_nowait(ns, name, v)",
        "dict": "d[(ns, name)] = (v, dict({}))",
    },
    "memory_2_keys": {
        "native": "register_nowait(ns, name, v, {2 keys})",
        "python": "register_nowait(ns, name, v, {2 keys})",
        "dict": "d[(ns, name)] = (v, dict({2 keys}))",
    },
}

#: (op, numerator, denominator) ratios shown for every size.
_RATIOS: tuple[tuple[str, str], ...] = (
    ("native", "dict"),
    ("native", "nested"),
    ("native", "python"),
)

#: The targets of ``docs/performance.rst``: (op, ratio name, small-N bound, large-N bound).
#: "Small" is N < 1e5 ("at first"), "large" N >= 1e5 ("then"): from 1e5 on the
#: table no longer fits in cache, which is where the second bound applies.
TARGETS: tuple[tuple[str, str, float, float], ...] = (
    ("lookup_hit", "native/dict", 1.0, 0.6),
    ("lookup_hit", "native/nested", 1.0, 0.7),
    ("register_unregister", "native/python", 1 / 2, 1 / 3),
    ("memory_no_metadata", "native/python", 1.0, 1.0),
    ("memory_no_metadata", "native/dict", 1.2, 1.2),
    ("memory_2_keys", "native/python", 1.0, 1.0),
    ("memory_2_keys", "native/dict", 1.2, 1.2),
)
_LARGE = 100_000

#: 16 interned namespaces, as in the reference measurements.
NAMESPACES: tuple[str, ...] = tuple(sys.intern(f"ns{i:02d}") for i in range(16))
_ROLES: tuple[str, ...] = tuple(sys.intern(f"role{i:02d}") for i in range(100))
_TIERS: tuple[str, ...] = tuple(sys.intern(f"tier{i:02d}") for i in range(100))
_ZONES: tuple[str, ...] = tuple(sys.intern(z) for z in ("zone-a", "zone-b", "zone-c", "zone-d"))
_OWNER_KEYS = 10

Pair = tuple[str, str]
_T = TypeVar("_T")
Progress = Callable[[str], None]


class _Handle:
    """The registered value: one shared object, so no value allocation is timed."""

    __slots__ = ("node",)

    def __init__(self, node: str) -> None:
        self.node = node


# ---------------------------------------------------------------- timed loops
# Every timed body is compiled from one template, so every implementation runs
# the very same loop shape; all names are function locals (LOAD_FAST).
_BODIES = {
    "loop2": "for a, b in ks: pass",
    "call2": "for a, b in ks: f(a, b)",
    # as users write it: the attribute lookup on the registry, then the call
    "attr_lookup": "for a, b in ks: d.lookup(a, b)",
    "attr_get": "for a, b in ks: d.get(a, b)",
    "tuple": "for a, b in ks: f((a, b))",
    "nested": "for a, b in ks: d[a][b]",
    "cycle": "for a, b in ks:\n    f(a, b, v)\n    g(a, b)",
    "dcycle": "for a, b in ks:\n    f((a, b), v)\n    g((a, b))",
    "loop1": "for o in ks: pass",
    "call1": "for o in ks: f(o)",
    "owner_dict": "for o in ks:\n    for k in g(o):\n        f(k)",
    "select": "for c in ks: f(None, c)",
    "scan": "for c in ks: [e for e in g() if e[1].get('tier') == c]",
}

_Runner = Callable[[Sequence[Any], range, Any, Any, Any, Any], None]


def _compile(body: str) -> _Runner:
    inner = "\n".join("        " + line for line in body.splitlines())
    src = f"def run(ks, n, f, g, d, v):\n    for _ in n:\n{inner}\n"
    scope: dict[str, Any] = {}
    exec(compile(src, f"<bench:{body.splitlines()[0]}>", "exec"), scope)
    fn: _Runner = scope["run"]
    return fn


_RUN: dict[str, _Runner] = {name: _compile(body) for name, body in _BODIES.items()}


def _time_ns(
    body: str,
    ks: Sequence[Any],
    number: int,
    f: Any = None,
    g: Any = None,
    d: Any = None,
    v: Any = None,
) -> float:
    """One sample: ns per element of ``ks`` over ``number`` passes, GC off."""
    run = _RUN[body]
    passes = range(number)
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        run(ks, passes, f, g, d, v)
        t1 = time.perf_counter_ns()
    finally:
        if enabled:
            gc.enable()
    return (t1 - t0) / (number * len(ks))


def _median_of(samples: Iterable[float]) -> float:
    return float(statistics.median(list(samples)))


# ---------------------------------------------------------------- helpers
def make_pairs(n: int, tag: str) -> list[Pair]:
    """``n`` prebuilt ``(ns, name)`` pairs, names like ``live-proc-000000123``.

    Each name's ``str`` hash is computed here, as a long-lived service name's
    would be by the time it is looked up.
    """
    out: list[Pair] = []
    for i in range(n):
        name = f"{tag}-proc-{i:09d}"
        hash(name)
        out.append((NAMESPACES[i % len(NAMESPACES)], name))
    return out


def native_status() -> tuple[bool, str]:
    """(whether the native backend can be used here, a sentence saying why/why not)."""
    try:
        from ..registry import _compat
    except Exception as exc:  # a broken config must still print a table
        return False, f"foundation.registry failed to import: {type(exc).__name__}: {exc}"
    if _compat.NATIVE:
        return True, "native backend compiled and in use (foundation.registry.NATIVE = True)"
    if _compat.NO_EXTENSIONS:
        why = "FOUNDATION_NO_EXTENSIONS is set"
    elif not _compat.CPYTHON:
        why = f"the interpreter is {sys.implementation.name}, not CPython"
    else:
        why = "the extension foundation.registry._native is not compiled"
    return False, f"native backend unavailable ({why}); measuring python vs plain dicts only"


def make_registry(impl: str, indexes: Sequence[str] = ()) -> Any:
    """A :class:`foundation.registry.Registry` on backend ``impl``, default partitions."""
    from ..registry import Registry

    return Registry(backend=impl, indexes=tuple(indexes))


def _loadavg() -> float | None:
    """The 1-minute load average (other processes skew the timings), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _env(backends: Sequence[str]) -> dict[str, Any]:
    from .. import __version__

    native, why = native_status()
    info: dict[str, Any] = {
        "foundation": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gil_enabled": bool(getattr(sys, "_is_gil_enabled", lambda: True)()),
        "NATIVE": native,
        "native_status": why,
        "backends": list(backends),
    }
    try:
        reg = make_registry("python")
        info["partitions"] = reg.partitions
        reg.close()
    except Exception:  # informative only
        info["partitions"] = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


class _Cell:
    """Per-round raw timings of one (op, N, impl) and of the matching bare loop."""

    def __init__(self) -> None:
        self.raw: list[float] = []
        self.base: list[float] = []

    def add(self, raw: float, base: float) -> None:
        self.raw.append(raw)
        self.base.append(base)

    def summary(self) -> dict[str, Any]:
        nets = [r - b for r, b in zip(self.raw, self.base, strict=True)]
        return {
            "net": _median_of(nets),
            "min": min(nets),
            "max": max(nets),
            "raw": _median_of(self.raw),
            "loop": _median_of(self.base),
            "per_round": [round(x, 2) for x in nets],
        }


class _Plan:
    """How much work one sample does: passes and samples per round."""

    def __init__(self, n: int, quick: bool) -> None:
        self.lookup_keys = min(n, 100_000)
        target_ops = 30_000 if quick else 100_000
        self.lookup_number = max(1, math.ceil(target_ops / self.lookup_keys))
        self.cycle_keys = 5_000 if quick else 10_000
        self.cycle_number = 2 if quick else 3
        self.owners = 100 if quick else 300
        self.repeat = 3 if quick or n >= 1_000_000 else 5
        self.select_target_s = 0.01 if quick else 0.03


# ---------------------------------------------------------------- one size
class _SizeRun:
    def __init__(
        self,
        n: int,
        rounds: int,
        quick: bool,
        ops: Sequence[str],
        backends: Sequence[str],
        seed: int,
        progress: Progress,
    ) -> None:
        self.n = n
        self.rounds = rounds
        self.ops = ops
        self.backends = list(backends)
        self.plan = _Plan(n, quick)
        self.rnd = random.Random(seed * 1_000_003 + n)
        self.progress = progress
        self.cells: dict[str, dict[str, _Cell]] = {}
        self.value = _Handle("n1")

    def _cell(self, op: str, impl: str) -> _Cell:
        return self.cells.setdefault(op, {}).setdefault(impl, _Cell())

    def _say(self, what: str, rnd: int | None = None) -> None:
        where = f"N={self.n:,}" + (f" round {rnd + 1}/{self.rounds}" if rnd is not None else "")
        self.progress(f"{where}: {what}")

    @staticmethod
    def _rotate(items: Sequence[_T], r: int) -> list[_T]:
        k = r % len(items) if items else 0
        return list(items[k:]) + list(items[:k])

    # -- phase 1: lookups, cycles, owners on tables without metadata ---------
    def phase_tables(self) -> None:
        wanted = {"lookup_hit", "lookup_miss", "register_unregister", "unregister_owner"}
        ops = [op for op in self.ops if op in wanted]
        if not ops:
            return
        n, v, plan = self.n, self.value, self.plan
        self._say("building tables")
        pairs = make_pairs(n, "live")
        regs: dict[str, Any] = {}
        for impl in self.backends:
            reg = make_registry(impl)
            f = reg.register_nowait
            for a, b in pairs:
                f(a, b, v)
            regs[impl] = reg
        d: dict[Pair, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for a, b in pairs:
            d[(a, b)] = v
            nested.setdefault(a, {})[b] = v
        miss = make_pairs(plan.lookup_keys, "miss")
        fresh = make_pairs(plan.cycle_keys, "new")
        owners = [f"owner-{i:06d}" for i in range(plan.owners)]
        for o in owners:
            hash(o)
        owned = {
            o: [
                (NAMESPACES[(i * _OWNER_KEYS + j) % len(NAMESPACES)], f"own-{i:06d}-{j:02d}")
                for j in range(_OWNER_KEYS)
            ]
            for i, o in enumerate(owners)
        }
        for keys in owned.values():
            for _, b in keys:
                hash(b)
        gc.collect()
        gc.freeze()
        try:
            for r in range(self.rounds):
                impls = self._rotate(self.backends, r)
                if "lookup_hit" in ops:
                    self._say("lookup hit", r)
                    hit = self.rnd.sample(pairs, plan.lookup_keys)
                    self._lookup_round(
                        "lookup_hit",
                        hit,
                        [(i, "attr_lookup", None, regs[i]) for i in impls]
                        + [("dict", "tuple", d.get, None), ("nested", "nested", None, nested)],
                        r,
                    )
                if "lookup_miss" in ops:
                    self._say("lookup miss", r)
                    self.rnd.shuffle(miss)
                    self._lookup_round(
                        "lookup_miss",
                        miss,
                        [(i, "attr_get", None, regs[i]) for i in impls]
                        + [("dict", "tuple", d.get, None)],
                        r,
                    )
                if "register_unregister" in ops:
                    self._say("register+unregister", r)
                    self.rnd.shuffle(fresh)
                    self._cycle_round(fresh, impls, regs, d, r)
                if "unregister_owner" in ops:
                    self._say("unregister_owner", r)
                    self.rnd.shuffle(owners)
                    self._owner_round(owners, owned, impls, regs, d, r)
        finally:
            gc.unfreeze()
            for reg in regs.values():
                reg.close()
            del regs, d, nested, pairs
            gc.collect()

    def _lookup_round(
        self, op: str, keys: list[Pair], entries: list[tuple[str, str, Any, Any]], r: int
    ) -> None:
        number = self.plan.lookup_number
        order = self._rotate(entries, r)
        samples: dict[str, list[float]] = {e[0]: [] for e in entries}
        bases: list[float] = []
        for _ in range(self.plan.repeat):
            bases.append(_time_ns("loop2", keys, number))
            for impl, body, f, d in order:
                samples[impl].append(_time_ns(body, keys, number, f=f, d=d))
        base = _median_of(bases)
        for impl, vals in samples.items():
            self._cell(op, impl).add(_median_of(vals), base)

    def _cycle_round(
        self, keys: list[Pair], impls: list[str], regs: dict[str, Any], d: dict[Pair, Any], r: int
    ) -> None:
        v, number = self.value, self.plan.cycle_number
        entries: list[tuple[str, str, Any, Any]] = [
            (i, "cycle", regs[i].register_nowait, regs[i].unregister_nowait) for i in impls
        ]
        entries.append(("dict", "dcycle", d.setdefault, d.pop))
        order = self._rotate(entries, r)
        samples: dict[str, list[float]] = {e[0]: [] for e in entries}
        bases: list[float] = []
        for _ in range(self.plan.repeat):
            bases.append(_time_ns("loop2", keys, number))
            for impl, body, f, g in order:
                samples[impl].append(_time_ns(body, keys, number, f=f, g=g, v=v))
        base = _median_of(bases)
        for impl, vals in samples.items():
            self._cell("register_unregister", impl).add(_median_of(vals), base)

    def _owner_round(
        self,
        owners: list[str],
        owned: dict[str, list[Pair]],
        impls: list[str],
        regs: dict[str, Any],
        d: dict[Pair, Any],
        r: int,
    ) -> None:
        v = self.value
        order = self._rotate([*impls, "dict"], r)
        samples: dict[str, list[float]] = {i: [] for i in order}
        bases: list[float] = []
        for _ in range(self.plan.repeat):
            bases.append(_time_ns("loop1", owners, 1))
            for impl in order:
                if impl == "dict":
                    index: dict[str, list[Pair]] = {}
                    for o, keys in owned.items():
                        lst = []
                        for a, b in keys:
                            key = (a, b)
                            d[key] = v
                            lst.append(key)
                        index[o] = lst
                    samples[impl].append(_time_ns("owner_dict", owners, 1, f=d.pop, g=index.pop))
                else:
                    reg = regs[impl]
                    f = reg.register_nowait
                    for o, keys in owned.items():
                        for a, b in keys:
                            f(a, b, v, owner=o)
                    samples[impl].append(
                        _time_ns("call1", owners, 1, f=reg.unregister_owner_nowait)
                    )
                    if len(reg) != self.n:
                        raise RuntimeError(
                            f"unregister_owner on {impl} left {len(reg) - self.n} owned entries"
                        )
        base = _median_of(bases)
        for impl, vals in samples.items():
            self._cell("unregister_owner", impl).add(_median_of(vals), base)

    # -- phase 2: select on tables with metadata -----------------------------
    def phase_select(self) -> None:
        """``select`` with one equality criterion, 1% of N matching.

        One registry per backend with ``indexes=("role",)``, metadata
        ``{"role": r, "tier": t, "zone": z}`` (100 roles, 100 tiers): the
        indexed select asks for a role, the scan for a tier (not indexed,
        so the backend walks every entry, as without ``indexes=``).
        """
        ops = [op for op in self.ops if op in ("select_scan", "select_indexed")]
        if not ops:
            return
        n, v = self.n, self.value
        self._say("building select tables")
        pairs = make_pairs(n, "sel")
        mds = [
            {
                "role": _ROLES[i % len(_ROLES)],
                "tier": _TIERS[(i // len(_ROLES)) % len(_TIERS)],
                "zone": _ZONES[i % len(_ZONES)],
            }
            for i in range(n)
        ]
        regs: dict[str, Any] = {}
        for impl in self.backends:
            reg = make_registry(impl, ("role",))
            f = reg.register_nowait
            for (a, b), md in zip(pairs, mds, strict=True):
                f(a, b, v, md)
            regs[impl] = reg
        d: dict[Pair, tuple[Any, dict[str, str]]] = {}
        if "select_scan" in ops:
            for (a, b), md in zip(pairs, mds, strict=True):
                d[(a, b)] = (v, dict(md))
        del mds
        gc.collect()
        gc.freeze()
        numbers: dict[tuple[str, str], int] = {}
        repeats: dict[tuple[str, str], int] = {}
        want = self.plan.select_target_s * 1e9
        try:
            for r in range(self.rounds):
                for op in ops:
                    self._say(op.replace("_", " "), r)
                    k = self.rnd.randrange(len(_ROLES))
                    if op == "select_scan":
                        field, crit = "tier", _TIERS[k]
                    else:
                        field, crit = "role", _ROLES[k]
                    where = {field: crit}
                    entries: list[tuple[str, str, Any, Any, Any]] = [
                        (i, "select", regs[i].select, None, where)
                        for i in self._rotate(self.backends, r)
                    ]
                    if op == "select_scan":
                        entries.append(("dict", "scan", None, d.values, crit))
                    samples: dict[str, list[float]] = {e[0]: [] for e in entries}
                    bases: list[float] = []
                    for rep in range(self.plan.repeat):
                        for impl, body, f, g, c in entries:
                            key = (op, impl)
                            if key not in numbers:
                                one = _time_ns(body, [c], 1, f=f, g=g)
                                numbers[key] = max(1, min(1000, int(want / max(one, 1.0))))
                                # calls of a quarter second or more: one sample per round
                                repeats[key] = 1 if one >= 2.5e8 else self.plan.repeat
                            if rep >= repeats[key]:
                                continue
                            ks = [c] * numbers[key]
                            samples[impl].append(_time_ns(body, ks, 1, f=f, g=g))
                            bases.append(_time_ns("loop1", ks, 1))
                    base = _median_of(bases)
                    for impl, vals in samples.items():
                        self._cell(op, impl).add(_median_of(vals), base)
        finally:
            gc.unfreeze()
            for reg in regs.values():
                reg.close()
            del regs, d, pairs
            gc.collect()

    # -- phase 3: memory -----------------------------------------------------
    def phase_memory(self, n: int) -> dict[str, dict[str, float]]:
        """tracemalloc bytes per entry of filling each table to ``n`` entries."""
        out: dict[str, dict[str, float]] = {}
        for op in self.ops:
            if not op.startswith("memory_"):
                continue
            self.progress(f"N={n:,}: {op.replace('_', ' ')}")
            md: dict[str, str] | None = (
                {"role": _ROLES[1], "zone": _ZONES[1]} if op == "memory_2_keys" else None
            )
            out[op] = {}
            pairs = make_pairs(n, "mem")
            for impl in [*self.backends, "dict"]:
                out[op][impl] = round(_bytes_per_entry(impl, pairs, self.value, md), 1)
            del pairs
        return out

    def result(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for op in self.ops:
            impls: dict[str, Any] = {}
            for impl in IMPLS:
                cell = self.cells.get(op, {}).get(impl)
                if cell is not None:
                    impls[impl] = cell.summary()
            if impls:
                rows.append(_row(op, self.n, impls))
        return rows

    def memory_rows(self, n: int) -> list[dict[str, Any]]:
        memory = self.phase_memory(n)
        return [
            _row(op, n, {impl: {"net": b} for impl, b in per.items()}) for op, per in memory.items()
        ]


def _row(op: str, n: int, impls: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for a, b in _RATIOS:
        if a in impls and b in impls:
            na, nb = impls[a]["net"], impls[b]["net"]
            value = na / nb if nb > 0 else None
            entry: dict[str, Any] = {"value": value}
            ra, rb = impls[a].get("per_round"), impls[b].get("per_round")
            if ra and rb:
                per = [x / y for x, y in zip(ra, rb, strict=True) if y > 0]
                if per:
                    entry["min"], entry["max"] = min(per), max(per)
            ratios[f"{a}/{b}"] = entry
    return {
        "op": op,
        "label": _OP_LABEL[op],
        "n": n,
        "unit": _OP_UNIT.get(op, "ns/op"),
        "impls": impls,
        "ratios": ratios,
        "notes": {k: v for k, v in _IMPL_NOTES[op].items() if k in impls},
    }


def _bytes_per_entry(impl: str, pairs: list[Pair], value: Any, md: dict[str, str] | None) -> float:
    """tracemalloc bytes per entry of building a table of ``pairs`` (names prebuilt)."""
    n = len(pairs)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if impl == "dict":
            src: dict[str, str] = md if md is not None else {}
            d: dict[Pair, tuple[Any, dict[str, str]]] = {}
            for a, b in pairs:
                d[(a, b)] = (value, dict(src))
            after = tracemalloc.get_traced_memory()[0]
            del d
        else:
            reg = make_registry(impl)
            f = reg.register_nowait
            for a, b in pairs:
                f(a, b, value, md)
            after = tracemalloc.get_traced_memory()[0]
            reg.close()
            del reg, f
    finally:
        tracemalloc.stop()
        gc.collect()
    return (after - before) / n


# ---------------------------------------------------------------- public API
def run(
    sizes: Sequence[int] = FULL_SIZES,
    rounds: int = 5,
    *,
    quick: bool = False,
    ops: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    select_max_n: int = 100_000,
    memory_max_n: int = 100_000,
) -> dict[str, Any]:
    """Measure ``ops`` at every size in ``sizes`` and return a JSON-able dict.

    Args:
        sizes: table sizes N (entries in the table under test).
        rounds: interleaved rounds per size (the spread is over rounds).
        quick: fewer operations per sample and 3 samples per round.
        ops: subset of :data:`ALL_OPS` (default: all).
        backends: registry backends to compare; default ``native`` (when
            available) and ``python``.
        seed: seed of the access-order shuffles.
        progress: called with a short status line as the run advances.
        select_max_n: ``select`` is measured at ``min(N, select_max_n)``
            entries, once per distinct size (a scan of 1e6 entries takes
            seconds per call and filling the metadata tables a minute).
        memory_max_n: memory is measured at ``min(N, memory_max_n)`` entries
            (tracemalloc makes a 1e6 fill take about a minute per variant;
            bytes per entry barely move past 1e5), once per distinct size.

    Returns:
        ``{"env": ..., "config": ..., "results": [row, ...], "targets": [...],
        "wall_s": ...}``; a row is ``{"op", "label", "n", "unit", "impls":
        {impl: {"net", "min", "max", "raw", "loop", "per_round"}}, "ratios":
        {"native/dict": {"value", "min", "max"}, ...}, "notes"}`` (memory rows
        carry only ``net``, in bytes per entry).
    """
    t0 = time.perf_counter()
    selected = list(ALL_OPS if ops is None else ops)
    unknown = [op for op in selected if op not in ALL_OPS]
    if unknown:
        raise ValueError(f"unknown benchmark operation(s) {unknown}; choose from {list(ALL_OPS)}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, not {rounds}")
    bad = [n for n in sizes if n < 1]
    if bad:
        raise ValueError(f"sizes must be >= 1, not {bad}")
    if backends is None:
        native, _ = native_status()
        backends = ["native", "python"] if native else ["python"]
    say: Progress = progress if progress is not None else (lambda _msg: None)
    env = _env(backends)
    results: list[dict[str, Any]] = []
    memory_done: set[int] = set()
    select_done: set[int] = set()
    load_start = _loadavg()
    was_enabled = gc.isenabled()
    gc.disable()  # building millions of entries with GC on costs many full collections
    try:
        for n in sizes:
            t_n = time.perf_counter()
            size_run = _SizeRun(n, rounds, quick, selected, backends, seed, say)
            size_run.phase_tables()
            results.extend(size_run.result())
            n_sel = min(n, select_max_n)
            if n_sel not in select_done:
                select_done.add(n_sel)
                sel_run = _SizeRun(n_sel, rounds, quick, selected, backends, seed, say)
                sel_run.phase_select()
                results.extend(sel_run.result())
            n_mem = min(n, memory_max_n)
            if n_mem not in memory_done:
                memory_done.add(n_mem)
                results.extend(size_run.memory_rows(n_mem))
            say(f"N={n:,}: done in {time.perf_counter() - t_n:.1f}s")
    finally:
        if was_enabled:
            gc.enable()
    order = {op: i for i, op in enumerate(ALL_OPS)}
    results.sort(key=lambda row: (order[row["op"]], row["n"]))
    out: dict[str, Any] = {
        "env": env,
        "config": {
            "sizes": list(sizes),
            "rounds": rounds,
            "select_max_n": select_max_n,
            "memory_max_n": memory_max_n,
            "quick": quick,
            "ops": selected,
            "seed": seed,
            "method": (
                "prebuilt str names over 16 namespaces, shuffled access; same for-loop"
                " shape for every implementation; net = median over rounds of"
                " (per-round median sample - bare loop over the same list); spread ="
                " min-max of per-round nets; GC off while timing; memory = tracemalloc"
                " bytes per entry of building the table, at min(N, memory_max_n)"
            ),
        },
        "results": results,
    }
    env["loadavg_start"] = load_start
    env["loadavg_end"] = _loadavg()
    out["targets"] = check_targets(out)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets (:data:`TARGETS`) against the measured ratios (one entry per row and target)."""
    checks: list[dict[str, Any]] = []
    rows = result["results"]
    for op, ratio, small, large in TARGETS:
        for row in rows:
            if row["op"] != op or ratio not in row["ratios"]:
                continue
            value = row["ratios"][ratio]["value"]
            bound = large if row["n"] >= _LARGE else small
            checks.append(
                {
                    "op": op,
                    "n": row["n"],
                    "ratio": ratio,
                    "value": value,
                    "target": f"<= {bound:.2f}",
                    "ok": value is not None and value <= bound,
                }
            )
    # unregister_owner must cost O(k): per call, the largest table may not be
    # much slower than the smallest (O(n) would be ~N_max/N_min times slower).
    owner_rows = sorted((r for r in rows if r["op"] == "unregister_owner"), key=lambda r: r["n"])
    if len(owner_rows) >= 2:
        lo, hi = owner_rows[0], owner_rows[-1]
        for impl in ("native", "python"):
            if impl in lo["impls"] and impl in hi["impls"]:
                a, b = lo["impls"][impl]["net"], hi["impls"][impl]["net"]
                value = b / a if a > 0 else None
                checks.append(
                    {
                        "op": "unregister_owner",
                        "n": hi["n"],
                        "ratio": f"{impl}: N={hi['n']:,} / N={lo['n']:,} per call",
                        "value": value,
                        "target": f"<= 5.00 (O(n) would be ~{hi['n'] / lo['n']:,.0f}x)",
                        "ok": value is not None and value <= 5.0,
                    }
                )
    return checks


# ---------------------------------------------------------------- formatting
def _fmt_value(v: float, unit: str) -> str:
    if unit == "B/entry":
        return f"{v:.0f}"
    if abs(v) >= 1e9:
        return f"{v / 1e9:.2f}s"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}ms"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}us"
    return f"{v:.0f}"


def _fmt_cell(cell: dict[str, Any] | None, unit: str) -> str:
    if cell is None:
        return "-"
    text = _fmt_value(cell["net"], unit)
    if "min" in cell:
        text += f" [{_fmt_value(cell['min'], unit)}-{_fmt_value(cell['max'], unit)}]"
    return text


def _fmt_ratio(entry: dict[str, Any] | None) -> str:
    if entry is None or entry.get("value") is None:
        return "-"
    text = f"{entry['value']:.2f}"
    if "min" in entry:
        text += f" [{entry['min']:.2f}-{entry['max']:.2f}]"
    return text


def _load_warning(env: dict[str, Any]) -> str:
    loads = [x for x in (env.get("loadavg_start"), env.get("loadavg_end")) if x is not None]
    cpus = env.get("cpu_count") or 1
    if loads and max(loads) > max(1.0, 0.5 * cpus):
        return ": other processes were busy, expect inflated absolute times (ratios hold better)"
    return ""


def _grid(table: list[list[str]]) -> list[str]:
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    lines: list[str] = []
    for k, r in enumerate(table):
        parts = [r[c].ljust(widths[c]) if c == 0 else r[c].rjust(widths[c]) for c in range(len(r))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_table(result: dict[str, Any]) -> str:
    """The human report: times per operation, then ratios against the targets."""
    env = result["env"]
    rows = result["results"]
    impls = [i for i in IMPLS if any(i in r["impls"] for r in rows)]
    ratios = [f"{a}/{b}" for a, b in _RATIOS if any(f"{a}/{b}" in r["ratios"] for r in rows)]
    checks = {(c["op"], c["n"], c["ratio"]): c for c in result.get("targets") or []}
    lines = [
        f"foundation {env['foundation']}, CPython {env['python']}"
        f" ({env.get('cpu', platform.machine())}, {env['cpu_count']} cpus),"
        f" partitions={env.get('partitions')}",
        f"foundation.registry.NATIVE = {env['NATIVE']}: {env['native_status']}",
        f"compared: {', '.join(env['backends'])} (Registry facade) vs plain dicts;"
        f" rounds={result['config']['rounds']},"
        f" sizes={', '.join(f'{n:,}' for n in result['config']['sizes'])}",
        f"load average (1 min) at start {env.get('loadavg_start')}, at end"
        f" {env.get('loadavg_end')}{_load_warning(env)}",
        "",
        "Time: median net of the bare loop [min-max over rounds]"
        " (us = microseconds, ms = milliseconds, s = seconds)",
    ]
    table = [["operation", "N", "unit", *impls]]
    for row in rows:
        cells = [row["label"], f"{row['n']:,}", row["unit"]]
        cells += [_fmt_cell(row["impls"].get(i), row["unit"]) for i in impls]
        table.append(cells)
    lines += _grid(table)
    if ratios:
        lines += [
            "",
            "Ratios: median [min-max of per-round ratios]; targets as in docs/performance.rst",
        ]
        table = [["operation", "N", *ratios]]
        for row in rows:
            if not row["ratios"]:
                continue
            cells = [row["label"], f"{row['n']:,}"]
            for name in ratios:
                text = _fmt_ratio(row["ratios"].get(name))
                check = checks.get((row["op"], row["n"], name))
                if check is not None:
                    text += f" {'ok' if check['ok'] else 'MISS'} {check['target'].replace(' ', '')}"
                cells.append(text)
            table.append(cells)
        lines += _grid(table)
    lines += ["", "Columns:"]
    seen: set[str] = set()
    for row in rows:
        if row["op"] not in seen:
            seen.add(row["op"])
            notes = "; ".join(f"{k}: {v}" for k, v in row["notes"].items())
            lines.append(f"  {row['label']}: {notes}")
    all_checks = result.get("targets") or []
    if all_checks:
        missed = [c for c in all_checks if not c["ok"]]
        lines += [
            "",
            f"Targets: {len(all_checks) - len(missed)}/{len(all_checks)} met"
            " (N >= 1e5 uses the 'then' bound)",
        ]
        for c in all_checks:
            if c["op"] == "unregister_owner" or not c["ok"]:
                value = "n/a" if c["value"] is None else f"{c['value']:.2f}"
                mark = "ok  " if c["ok"] else "MISS"
                lines.append(
                    f"  {mark} {c['op']} N={c['n']:,} {c['ratio']} = {value} (target {c['target']})"
                )
    lines += ["", f"wall time {result.get('wall_s', 0)}s"]
    return "\n".join(lines)
