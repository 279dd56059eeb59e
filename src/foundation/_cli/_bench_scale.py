"""Scale measurements behind ``python -m foundation bench --scale``.

The main bench (:mod:`foundation._bench`) compares the backends at 1e3 and
1e6 entries. This module asks the other question of issue 6: does the cost
of one operation stay flat as a registry grows to 1e7 entries, and what does
an entry cost in memory there? It measures, per table size N (default 1e6
and 1e7, plus a small reference size, default 1e3, to read growth against):

* **build**: registering N entries into an empty registry, ns per entry
  net of the bare loop; one build per round up to 1e6 entries (below
  ``build_ops``, 2e5, that many entries' worth of consecutive builds, since
  one small build takes microseconds), a single one above (a 1e7 build is
  the run's largest cost; its cell has no spread);
* **lookup hit**: ``registry.lookup(ns, name)`` over a shuffled sample of
  stored keys, ns/op net of the bare loop. The sample holds up to
  ``lookup_keys`` (default 1e6) keys, so at N >= 1e6 its working set (slots,
  name objects) is far larger than the 32 MiB L3 of this machine and every
  lookup pays the cache misses a big registry really pays. A sample of 1e5
  keys repeated over many passes would partly live in L3 and flatter N=1e7;
* **register+unregister**: one ``register_nowait`` + ``unregister_nowait``
  cycle of a fresh key on the full table, ns per cycle;
* **memory**: bytes per entry. From 1e5 entries on this is the growth of the
  process RSS (``/proc/self/statm``) over the timed build, after a
  ``gc.collect()`` and ``malloc_trim(0)``, so freed heap left over from an
  earlier table cannot hide new allocations; below 1e5 (RSS moves by whole
  pages) it is :mod:`tracemalloc` on a separate build. tracemalloc at 1e7
  is not tolerable (it multiplies a build's time several times and holds
  ~100 bytes of trace per live block), hence RSS there; both methods count
  what building the table allocates, not the prebuilt name strings;
* **full GC pass**: the time of one ``gc.collect()`` over the table alone
  (everything that existed before its build is frozen out of the collector
  with :func:`gc.freeze` meanwhile). Not a per-operation cost, but it grows
  with N for every layout and is what a service with the GC enabled pays
  every so often; see :func:`run_scale` for how the tables differ.

Implementations (columns): ``native`` and ``python`` are
:class:`foundation.registry.Registry` on that backend (default partitions,
no metadata); ``dict`` is the plain-Python baseline
``d[(ns, name)] = (value, {})`` (its lookup is ``d.get((ns, name))``, its
register+unregister ``d.setdefault((ns, name), e); d.pop((ns, name))`` with
a shared entry ``e``, as in the main bench). The python backend at 1e7 is
built only if its build is predicted, from the previous size's rate, to
finish within ``python_budget_s`` (default 300 s), and is abandoned when it
overruns; the result says which.

Two more phases, each at a small and a large size:

* **groups**: one group with each of ``group_sizes`` (default 1e3 and 1e5)
  members: join per
  op, ``members()`` per call, a FIFO churn cycle (the oldest member leaves,
  a new one joins: a worker pool's steady state) per cycle, and leave per
  op; ``dict`` is ``g[value] = entry`` / ``list(g.values())`` / ``g.pop``.
* **select**: ``Registry(indexes=("role",))`` with metadata
  ``{"role", "tier", "zone"}`` at each of ``select_sizes`` (default 1e4 and
  1e6) entries: equality on the indexed ``role`` (1% match, and a "rare"
  role on one entry in 10,000), the same selectivity on the unindexed
  ``tier`` (a scan), and the plain-dict scan. The O(matches) check compares
  the indexed select with 100 matches among 1e6 entries against 100
  matches among 1e4 (should be about 1x), and 1% against the rare role at
  1e6 (at least the ratio of the match counts: 100 matches fetched again and
  again stay in L1/L2, 10,000 do not, so the work per match is the same but
  the time per match is not).

All timings run with the garbage collector off (as in the main bench),
rounds interleaved, the implementation order rotated per round; a cell is
the median over rounds. Absolute times drift by up to 1.5x between runs on
these shared 2-CPU machines; growth ratios within one run hold better.

What it showed (issue 6, CPython 3.11, 2 CPUs): callgrind instruction counts
per lookup, register+unregister cycle and build entry are the same at 1e3,
1e5 and 1e6 entries on every backend (native lookup 358, cycle ~1,900), so
the rise of their times with N is cache and TLB misses, not work; the one
algorithmic growth was in groups (a join after FIFO churn scanned the dead
front of a dict; fixed in ``_groups.py``). Not per-operation but growing
with N: a full GC pass walks the whole native table, which the collector
counts as one object (see :func:`run_scale`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import platform
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from ._bench import (
    _ROLES,
    _TIERS,
    _ZONES,
    NAMESPACES,
    _compile,
    _env,
    _grid,
    _Handle,
    _loadavg,
    _median_of,
    _Runner,
    make_pairs,
    make_registry,
    native_status,
)

__all__ = [
    "SCALE_BASELINE",
    "SCALE_SIZES",
    "TARGETS",
    "format_scale_table",
    "format_targets_table",
    "run_scale",
    "run_targets",
]

#: Default table sizes of ``--scale``.
SCALE_SIZES: tuple[int, ...] = (1_000_000, 10_000_000)
#: The small reference size that growth is read against.
SCALE_BASELINE = 1_000

Pair = tuple[str, str]
Progress = Callable[[str], None]

#: Below this many entries memory is measured with tracemalloc, from here on with RSS.
_RSS_MIN_N = 100_000
#: Up to this many entries the build is timed once per round (one build above).
_REBUILD_MAX_N = 1_000_000
#: Registrations per build chunk (the python budget is checked between chunks).
_CHUNK = 100_000
#: The rare role: one entry in this many carries it.
_RARE_EVERY = 10_000
_RARE = sys.intern("rare")
#: Rough bytes per entry while building, for the free-memory check (names included).
_EST_BYTES = {"native": 260, "python": 600, "dict": 500}

_BODIES = {
    "loop1": "for x in ks: pass",
    "loop2": "for a, b in ks: pass",
    "call2": "for a, b in ks: f(a, b)",
    "tuple": "for a, b in ks: f((a, b))",
    "fill": "for a, b in ks: f(a, b, v)",
    "dfill": "for a, b in ks: d[(a, b)] = (v, {})",
    "cycle": "for a, b in ks:\n    f(a, b, v)\n    g(a, b)",
    "dcycle": "for a, b in ks:\n    f((a, b), v)\n    g((a, b))",
    "gjoin": "for x in ks: f(d, v, x)",
    "djoin": "for x in ks: d[x] = v",
    "gleave": "for x in ks: f(d, v, x)",
    "dleave": "for x in ks: f(x)",
    "gmembers": "for x in ks: f(d, v)",
    "dmembers": "for x in ks: list(d.values())",
    "gchurn": "for a, b in ks:\n    g(d, v, a)\n    f(d, v, b)",
    "dchurn": "for a, b in ks:\n    g(a)\n    d[b] = v",
    "select": "for c in ks: f(None, c)",
    "scan": "for c in ks: [e for e in g() if e[1].get('tier') == c]",
    # the targets phase: calls as users write them
    "attr": "for a, b in ks: d.lookup(a, b)",
    "nested": "for a, b in ks: d[a][b]",
    "regs": "for x in ks: f(d)",
    "jlcycle": "for a, b in ks:\n    f(a, d, b)\n    g(a, d, b)",
}
_RUN: dict[str, _Runner] = {name: _compile(body) for name, body in _BODIES.items()}


def _time_ns(
    body: str,
    ks: Sequence[Any],
    number: int = 1,
    f: Any = None,
    g: Any = None,
    d: Any = None,
    v: Any = None,
) -> float:
    """ns per element of ``ks`` over ``number`` passes (the caller keeps the GC off)."""
    run = _RUN[body]
    t0 = time.perf_counter_ns()
    run(ks, range(number), f, g, d, v)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / (number * max(1, len(ks)))


# ---------------------------------------------------------------- memory helpers
def _rss_bytes() -> int | None:
    """Resident set size of this process (Linux ``/proc/self/statm``), or None."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _mem_available() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_libc: Any = None


def _trim() -> None:
    """Collect garbage and hand free heap back to the OS (glibc ``malloc_trim``).

    Without the trim, memory freed by an earlier table stays in the heap and a
    new table reuses it without the RSS growing, so an RSS delta would miss it.
    """
    global _libc
    gc.collect()
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    trim = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim is not None:
        trim(0)


def _gc_full_ms() -> float:
    """Milliseconds of one full collection (the second of two: the first also untracks)."""
    gc.collect()
    t0 = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t0) * 1e3


def _tracemalloc_bytes(impl: str, pairs: list[Pair], value: Any) -> float:
    """tracemalloc bytes per entry of building ``impl`` with ``pairs`` (names prebuilt).

    A full collection first also empties CPython's free lists (tuples, dicts):
    memory reused from them was allocated before tracing started and would
    not be counted, so warm free lists (after the timed builds) made a table
    of 1e3 entries look up to a third smaller than it is.
    """
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = _new_table(impl)
        _fill(impl, table, pairs, value, None)
        after = tracemalloc.get_traced_memory()[0]
        _close(table)
        del table
    finally:
        tracemalloc.stop()
    return (after - before) / max(1, len(pairs))


# ---------------------------------------------------------------- tables
def _new_table(impl: str, indexes: Sequence[str] = ()) -> Any:
    if impl == "dict":
        return {}
    return make_registry(impl, indexes)


def _close(table: Any) -> None:
    if not isinstance(table, dict):
        table.close()


def _fill(
    impl: str, table: Any, pairs: list[Pair], value: Any, deadline: float | None
) -> tuple[int, float]:
    """Register ``pairs`` in chunks; stop early past ``deadline`` (perf_counter).

    Returns (entries registered, seconds spent).
    """
    body, f, d = ("dfill", None, table) if impl == "dict" else ("fill", table.register_nowait, None)
    run = _RUN[body]
    done = 0
    t0 = time.perf_counter()
    for start in range(0, len(pairs), _CHUNK):
        chunk = pairs[start : start + _CHUNK]
        run(chunk, range(1), f, None, d, value)
        done += len(chunk)
        if deadline is not None and time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - t0


def _fresh_tuples(pairs: Sequence[Pair]) -> list[Pair]:
    """New tuples in list order, so the bare loop walks memory sequentially.

    The name strings stay where they are (scattered, as a service's are);
    only the loop's own tuples are made compact.
    """
    return [(a, b) for a, b in pairs]


def _rotate(items: Sequence[str], r: int) -> list[str]:
    k = r % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def _cell(raws: list[float], bases: list[float]) -> dict[str, Any]:
    """Summary of per-round (raw, bare-loop) pairs: median net and spread."""
    nets = [r - b for r, b in zip(raws, bases, strict=True)]
    return {
        "net": _median_of(nets),
        "min": min(nets),
        "max": max(nets),
        "raw": _median_of(raws),
        "loop": _median_of(bases),
        "per_round": [round(x, 2) for x in nets],
    }


class _Config:
    """The knobs of one :func:`run_scale` call."""

    def __init__(
        self,
        rounds: int,
        backends: list[str],
        lookup_keys: int,
        cycle_keys: int,
        build_ops: int,
        python_budget_s: float,
        seed: int,
        progress: Progress,
    ) -> None:
        self.rounds = rounds
        self.backends = backends
        self.impls = [*backends, "dict"]
        self.lookup_keys = lookup_keys
        self.cycle_keys = cycle_keys
        self.build_ops = build_ops
        self.python_budget_s = python_budget_s
        self.rnd = random.Random(seed)
        self.say = progress
        self.value = _Handle("n1")
        #: the python backend's last measured build rate (s per entry)
        self.python_rate: float | None = None


# ---------------------------------------------------------------- registrations
def _size_phase(n: int, cfg: _Config) -> dict[str, Any]:
    """Build each table at N, then time lookups and cycles on all of them."""
    say, v = cfg.say, cfg.value
    say(f"N={n:,}: making {n:,} names")
    pairs = make_pairs(n, "live")
    build_loop = _loop_over(pairs)
    tables: dict[str, Any] = {}
    out: dict[str, Any] = {"n": n, "impls": {}, "skipped": {}}
    measure_gc = n >= _RSS_MIN_N
    # a small table fills in microseconds: time enough fills to be measurable
    fills = max(1, cfg.build_ops // n)
    table: Any = None
    for impl in cfg.impls:
        skip = _skip_reason(impl, n, cfg)
        if skip is not None:
            out["skipped"][impl] = skip
            say(f"N={n:,}: {impl} skipped: {skip}")
            continue
        say(f"N={n:,}: building {impl}")
        builds: list[float] = []
        rss0 = rss1 = None
        for rep in range(cfg.rounds if n <= _REBUILD_MAX_N else 1):
            if rep:
                say(f"N={n:,}: building {impl} again ({rep + 1}/{cfg.rounds})")
                _close(table)
                table = None
            if n >= _RSS_MIN_N:
                _trim()
            if measure_gc and rep == 0:
                gc.freeze()  # the next full collection walks only what this build adds
            rss0 = _rss_bytes() if rep == 0 else rss0
            seconds = 0.0
            for fill in range(fills):
                if fill:
                    _close(table)
                table = _new_table(impl)
                deadline = None
                if impl == "python":
                    deadline = time.perf_counter() + cfg.python_budget_s
                done, took = _fill(impl, table, pairs, v, deadline)
                seconds += took
            rss1 = _rss_bytes() if rep == 0 else rss1
            if done < n:
                break
            builds.append(seconds / fills)
        if done < n:
            gc.unfreeze()
            reason = (
                f"build abandoned after {done:,} of {n:,} entries in {seconds:.0f}s"
                f" (budget {cfg.python_budget_s:.0f}s)"
            )
            out["skipped"][impl] = reason
            say(f"N={n:,}: {impl} {reason}")
            _close(table)
            table = None
            _trim()
            continue
        if impl == "python":
            cfg.python_rate = min(builds) / n
        per_entry = [b * 1e9 / n for b in builds]
        cell: dict[str, Any] = {
            "build": _cell(per_entry, [build_loop] * len(per_entry)),
            "build_s": round(_median_of(builds), 2),
        }
        if n >= _RSS_MIN_N and rss0 is not None and rss1 is not None:
            cell["memory"] = {"net": (rss1 - rss0) / n, "method": "rss"}
        else:
            say(f"N={n:,}: {impl} memory (tracemalloc)")
            cell["memory"] = {
                "net": _tracemalloc_bytes(impl, pairs, v),
                "method": "tracemalloc",
            }
        if measure_gc:
            cell["gc_full_ms"] = {"net": _gc_full_ms()}
            gc.unfreeze()
        tables[impl] = table
        out["impls"][impl] = cell
        table = None
    if tables:
        _time_ops(n, pairs, tables, out, cfg)
    for t in tables.values():
        _close(t)
    tables.clear()
    del pairs
    if n >= _RSS_MIN_N:
        _trim()
    return out


def _loop_over(pairs: list[Pair]) -> float:
    """ns per entry of the bare loop over ``pairs`` in build chunks."""
    run = _RUN["loop2"]
    t0 = time.perf_counter_ns()
    for start in range(0, len(pairs), _CHUNK):
        run(pairs[start : start + _CHUNK], range(1), None, None, None, None)
    return (time.perf_counter_ns() - t0) / max(1, len(pairs))


def _skip_reason(impl: str, n: int, cfg: _Config) -> str | None:
    """Why ``impl`` is not built at ``n`` (budget, free memory), or None."""
    if impl == "python" and cfg.python_rate is not None:
        predicted = cfg.python_rate * n
        if predicted > cfg.python_budget_s:
            return (
                f"predicted build {predicted:.0f}s (from the previous size's rate)"
                f" exceeds the {cfg.python_budget_s:.0f}s budget"
            )
    available = _mem_available()
    need = _EST_BYTES[impl] * n
    if available is not None and need > 0.8 * available:
        return f"needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
    return None


def _time_ops(
    n: int, pairs: list[Pair], tables: dict[str, Any], out: dict[str, Any], cfg: _Config
) -> None:
    """Lookup hits and register+unregister cycles, interleaved over rounds."""
    say, v = cfg.say, cfg.value
    sample = cfg.rnd.sample(pairs, min(n, cfg.lookup_keys))
    number = max(1, math.ceil(cfg.lookup_keys / len(sample)))
    fresh = make_pairs(cfg.cycle_keys, "new")
    entry: tuple[Any, dict[str, Any]] = (v, {})
    impls = list(tables)
    raw: dict[tuple[str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}
    for r in range(cfg.rounds):
        say(f"N={n:,} round {r + 1}/{cfg.rounds}: lookup hit")
        cfg.rnd.shuffle(sample)
        ks = _fresh_tuples(sample)
        for impl in _rotate(impls, r):
            t = tables[impl]
            loop = _time_ns("loop2", ks, number)
            if impl == "dict":
                value = _time_ns("tuple", ks, number, f=t.get)
            else:
                value = _time_ns("call2", ks, number, f=t.lookup)
            raw.setdefault(("lookup_hit", impl), []).append(value)
            base.setdefault(("lookup_hit", impl), []).append(loop)
        del ks
        say(f"N={n:,} round {r + 1}/{cfg.rounds}: register+unregister")
        cfg.rnd.shuffle(fresh)
        ks = _fresh_tuples(fresh)
        for impl in _rotate(impls, r):
            t = tables[impl]
            loop = _time_ns("loop2", ks)
            if impl == "dict":
                value = _time_ns("dcycle", ks, f=t.setdefault, g=t.pop, v=entry)
            else:
                value = _time_ns("cycle", ks, f=t.register_nowait, g=t.unregister_nowait, v=v)
            raw.setdefault(("register_unregister", impl), []).append(value)
            base.setdefault(("register_unregister", impl), []).append(loop)
        del ks
    for (op, impl), raws in raw.items():
        out["impls"][impl][op] = _cell(raws, base[(op, impl)])
    for impl, t in tables.items():
        if len(t) != n:
            raise RuntimeError(f"{impl} holds {len(t):,} entries after the cycles, not {n:,}")
    out["lookup_keys"] = len(sample)
    out["lookup_passes"] = number
    out["cycle_keys"] = len(fresh)


# ---------------------------------------------------------------- groups
def _group_phase(size: int, cfg: _Config) -> dict[str, Any]:
    """One group of ``size`` members per implementation: join, members, churn, leave."""
    say = cfg.say
    ns, group = NAMESPACES[0], sys.intern("workers")
    members = [f"member-{i:09d}" for i in range(size)]
    newcomers = [f"newcomer-{i:09d}" for i in range(size)]
    for s in (*members, *newcomers):
        hash(s)
    entry: tuple[Any, dict[str, Any]] = (cfg.value, {})
    calls = max(10, 1_000_000 // size)
    tables = {impl: _new_table(impl) for impl in cfg.impls}
    raw: dict[tuple[str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}

    def add(op: str, impl: str, value: float, loop: float) -> None:
        raw.setdefault((op, impl), []).append(value)
        base.setdefault((op, impl), []).append(loop)

    for r in range(cfg.rounds):
        say(f"group of {size:,} round {r + 1}/{cfg.rounds}")
        cfg.rnd.shuffle(members)
        cfg.rnd.shuffle(newcomers)
        churn = list(zip(members, newcomers, strict=True))
        leaving = list(newcomers)
        cfg.rnd.shuffle(leaving)
        dummies = [None] * calls
        for impl in _rotate(cfg.impls, r):
            t = tables[impl]
            if impl == "dict":
                d: dict[str, Any] = t
                add(
                    "join",
                    impl,
                    _time_ns("djoin", members, d=d, v=entry),
                    _time_ns("loop1", members),
                )
                add("members", impl, _time_ns("dmembers", dummies, d=d), _time_ns("loop1", dummies))
                add(
                    "churn",
                    impl,
                    _time_ns("dchurn", churn, g=d.pop, d=d, v=entry),
                    _time_ns("loop2", churn),
                )
                add("leave", impl, _time_ns("dleave", leaving, f=d.pop), _time_ns("loop1", leaving))
                left = len(d)
            else:
                add(
                    "join",
                    impl,
                    _time_ns("gjoin", members, f=t.join_nowait, d=ns, v=group),
                    _time_ns("loop1", members),
                )
                if t.member_count(ns, group) != size:
                    raise RuntimeError(f"{impl}: group has {t.member_count(ns, group)} members")
                add(
                    "members",
                    impl,
                    _time_ns("gmembers", dummies, f=t.members, d=ns, v=group),
                    _time_ns("loop1", dummies),
                )
                add(
                    "churn",
                    impl,
                    _time_ns("gchurn", churn, f=t.join_nowait, g=t.leave_nowait, d=ns, v=group),
                    _time_ns("loop2", churn),
                )
                add(
                    "leave",
                    impl,
                    _time_ns("gleave", leaving, f=t.leave_nowait, d=ns, v=group),
                    _time_ns("loop1", leaving),
                )
                left = t.member_count(ns, group)
            if left:
                raise RuntimeError(f"{impl}: {left} members left after leaving them all")
    for t in tables.values():
        _close(t)
    result: dict[str, Any] = {"size": size, "members_calls": calls, "impls": {}}
    for (op, impl), raws in raw.items():
        result["impls"].setdefault(impl, {})[op] = _cell(raws, base[(op, impl)])
    return result


# ---------------------------------------------------------------- select
def _select_metadata(i: int) -> dict[str, str]:
    role = _RARE if i % _RARE_EVERY == 0 else _ROLES[i % len(_ROLES)]
    return {
        "role": role,
        "tier": _TIERS[(i // len(_ROLES)) % len(_TIERS)],
        "zone": _ZONES[i % len(_ZONES)],
    }


def _select_phase(n: int, cfg: _Config, target_s: float) -> dict[str, Any]:
    """Indexed (1% and rare) and unindexed (1%) equality selects over ``n`` entries."""
    say, v = cfg.say, cfg.value
    say(f"select N={n:,}: building")
    pairs = make_pairs(n, "sel")
    regs: dict[str, Any] = {}
    f: Any
    for impl in cfg.backends:
        reg = make_registry(impl, ("role",))
        add = reg.register_nowait
        for i, (a, b) in enumerate(pairs):
            add(a, b, v, _select_metadata(i))
        regs[impl] = reg
    d = {(a, b): (v, _select_metadata(i)) for i, (a, b) in enumerate(pairs)}
    del pairs
    queries = ("indexed_1pct", "indexed_rare", "scan_1pct")
    raw: dict[tuple[str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}
    matches: dict[tuple[str, str], list[int]] = {}
    numbers: dict[tuple[str, str], int] = {}
    for r in range(cfg.rounds):
        k = 1 + cfg.rnd.randrange(len(_ROLES) - 1)  # role00 lost its rare entries
        tier = k % max(1, min(len(_TIERS), math.ceil(n / len(_ROLES))))  # one that exists
        where = {
            "indexed_1pct": {"role": _ROLES[k]},
            "indexed_rare": {"role": _RARE},
            "scan_1pct": {"tier": _TIERS[tier]},
        }
        for q in queries:
            say(f"select N={n:,} round {r + 1}/{cfg.rounds}: {q}")
            impls = _rotate([*cfg.backends, "dict"] if q == "scan_1pct" else cfg.backends, r)
            for impl in impls:
                g: Any
                c: Any
                if impl == "dict":
                    body, f, g, c = "scan", None, d.values, _TIERS[tier]
                    found = len([e for e in d.values() if e[1].get("tier") == c])
                else:
                    body, f, g, c = "select", regs[impl].select, None, where[q]
                    found = len(f(None, c))
                key = (q, impl)
                if key not in numbers:
                    one = _time_ns(body, [c], f=f, g=g)
                    numbers[key] = max(1, min(2000, int(target_s * 1e9 / max(one, 1.0))))
                ks = [c] * numbers[key]
                raw.setdefault(key, []).append(_time_ns(body, ks, f=f, g=g))
                base.setdefault(key, []).append(_time_ns("loop1", ks))
                matches.setdefault(key, []).append(found)
    for reg in regs.values():
        reg.close()
    result: dict[str, Any] = {"n": n, "queries": {}}
    for (q, impl), raws in raw.items():
        cell = _cell(raws, base[(q, impl)])
        cell["matches"] = int(_median_of(matches[(q, impl)]))
        cell["calls_per_sample"] = numbers[(q, impl)]
        cell["ns_per_match"] = cell["net"] / cell["matches"] if cell["matches"] else None
        result["queries"].setdefault(q, {})[impl] = cell
    return result


def _select_checks(small: dict[str, Any] | None, large: dict[str, Any]) -> list[dict[str, Any]]:
    """O(matches) checks of the indexed select (see the module docstring)."""
    checks: list[dict[str, Any]] = []
    lq = large["queries"]
    for impl in lq.get("indexed_rare", {}):
        rare = lq["indexed_rare"][impl]
        pct = lq["indexed_1pct"][impl]
        scan = lq["scan_1pct"][impl]
        if rare["net"] > 0 and rare["matches"]:
            checks.append(
                {
                    "impl": impl,
                    "check": f"indexed 1% / rare at N={large['n']:,}",
                    "value": pct["net"] / rare["net"],
                    "expect": f">= ~{pct['matches'] / rare['matches']:.0f}"
                    f" (= {pct['matches']:,} / {rare['matches']:,} matches; more once the"
                    " larger result no longer fits in cache); ~1 would mean O(N)",
                }
            )
        if pct["net"] > 0:
            checks.append(
                {
                    "impl": impl,
                    "check": f"scan / indexed, 1% at N={large['n']:,}",
                    "value": scan["net"] / pct["net"],
                    "expect": "> 1 (the index must beat the scan)",
                }
            )
        if small is None:
            continue
        sq = small["queries"]
        same = sq.get("indexed_1pct", {}).get(impl)
        if same is not None and same["net"] > 0 and same["matches"] == rare["matches"]:
            checks.append(
                {
                    "impl": impl,
                    "check": (f"{rare['matches']:,} matches: N={large['n']:,} / N={small['n']:,}"),
                    "value": rare["net"] / same["net"],
                    "expect": f"~1 if O(matches); ~{large['n'] / small['n']:.0f} if O(N)",
                }
            )
    return checks


# ---------------------------------------------------------------- targets
#: The at-scale targets (performance issue 18), in table order: (id, what,
#: unit, ratio name, bound). Each is measured side by side in one run.
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("gc_tracked", "full gc.collect() extra, GC-tracked values", "ms", "native/dict", 1.0),
    ("gc_str_md", "full gc.collect() extra, str values + 2-key metadata", "ms", "native/dict", 1.0),
    (
        "gc_only_holder",
        "full gc.collect() extra, tracked values held by it alone",
        "ms",
        "native/dict",
        1.0,
    ),
    (
        "alloc_tracked",
        "allocate 300k lists beside the table (tracked values)",
        "ms",
        "native/dict",
        1.2,
    ),
    (
        "alloc_str_md",
        "allocate 300k lists beside the table (str + metadata)",
        "ms",
        "native/dict",
        1.2,
    ),
    ("select_scan", "unindexed select(None, where=) 1%", "ms/call", "native/dict", 1.0),
    ("registrations_ns", "registrations(ns), GC on", "ms/call", "native/python", 1.0),
    ("registrations_ns_gc_off", "registrations(ns), GC off", "ms/call", "native/python", 1.0),
    ("join_leave", "join+leave / register+unregister (native)", "ns/cycle", "native", 2.0),
    (
        "python_cycle",
        "python register+unregister / dict setdefault+pop",
        "ns/cycle",
        "python/dict",
        4.0,
    ),
    (
        "lookup_small_nested",
        "registry.lookup(ns, name) at 1e3 / d[ns][name]",
        "ns/op",
        "native/nested",
        1.0,
    ),
    (
        "lookup_small_equal",
        "same, names equal to the stored, not the same objects",
        "ns/op",
        "native/nested",
        1.0,
    ),
    (
        "lookup_large_nested",
        "registry.lookup(ns, name) at N / d[ns][name]",
        "ns/op",
        "native/nested",
        0.7,
    ),
    (
        "lookup_large_dict",
        "registry.lookup(ns, name) at N / d.get((ns, name))",
        "ns/op",
        "native/dict",
        0.6,
    ),
)

#: Lists allocated by the allocation rows (kept until the sample ends).
_ALLOC_LISTS = 300_000


class _Service:
    """A GC-tracked value (one per entry in the tracked-values rows)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n


def _gc_ms(samples: int = 7) -> float:
    """ms of a full collection: the fastest of ``samples`` (after one that
    settles the heap). The least disturbed sample: the extra time a table
    costs is the difference of two such times, and a median of a few
    collections on a busy machine swings by more than that difference."""
    gc.collect()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def _alloc_ms(samples: int = 3) -> float:
    """Median ms of allocating (and keeping) 300k small lists with the
    collector on, each sample from a fresh collection."""
    times = []
    was = gc.isenabled()
    gc.enable()
    try:
        for _ in range(samples):
            gc.collect()
            t0 = time.perf_counter()
            kept: list[list[Any]] = [[] for _ in range(_ALLOC_LISTS)]
            times.append((time.perf_counter() - t0) * 1e3)
            del kept
    finally:
        if not was:
            gc.disable()
    return _median_of(times)


def _build_gc_table(
    impl: str, pairs: list[Pair], values: list[Any], mds: list[dict[str, str]] | None
) -> Any:
    was = gc.isenabled()
    gc.disable()
    try:
        if impl == "dict":
            if mds is None:
                return {(a, b): v for (a, b), v in zip(pairs, values, strict=True)}
            return {(a, b): (v, dict(m)) for (a, b), v, m in zip(pairs, values, mds, strict=True)}
        reg = make_registry(impl)
        f = reg.register_nowait
        if mds is None:
            for (a, b), v in zip(pairs, values, strict=True):
                f(a, b, v)
        else:
            for (a, b), v, m in zip(pairs, values, mds, strict=True):
                f(a, b, v, m)
        return reg
    finally:
        if was:
            gc.enable()


def _paired(raw: dict[str, list[float]], a: str, b: str) -> float | None:
    """The median over rounds of raw[a] / raw[b] in the same round: each
    round's pair ran side by side, so load that hit one hit the other."""
    ratios = [x / y for x, y in zip(raw[a], raw[b], strict=True) if y > 0]
    return _median_of(ratios) if ratios else None


def _ratio_row(
    tid: str, values: dict[str, float], ratio: float | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec = next(t for t in TARGETS if t[0] == tid)
    row: dict[str, Any] = {
        "id": tid,
        "label": spec[1],
        "unit": spec[2],
        "ratio_name": spec[3],
        "target": spec[4],
        "values": values,
        "ratio": ratio,
        "ok": ratio is not None and ratio <= spec[4],
    }
    if extra:
        row.update(extra)
    return row


def _gc_rows(n: int, cfg: _Config, native: bool) -> tuple[list[dict[str, Any]], Any, list[Pair]]:
    """The GC and allocation rows at n entries; returns the last native table
    built (tracked values) and its pairs for the lookup rows."""
    say = cfg.say
    rows: list[dict[str, Any]] = []
    impls = ["native", "dict"] if native else ["dict"]
    pairs = make_pairs(n, "gc")
    keep: Any = None
    for variant in ("tracked", "str_md"):
        say(f"targets: {variant} values, N={n:,}")
        if variant == "tracked":
            values: list[Any] = [_Service(i) for i in range(n)]
            mds = None
        else:
            values = [f"value-{i:09d}" for i in range(n)]
            mds = [
                {"role": _ROLES[i % len(_ROLES)], "zone": _ZONES[i % len(_ZONES)]} for i in range(n)
            ]
        extra: dict[str, list[float]] = {i: [] for i in impls}
        alloc: dict[str, list[float]] = {i: [] for i in impls}
        for r in range(cfg.rounds):
            for impl in _rotate(impls, r):
                say(f"targets: {variant} round {r + 1}/{cfg.rounds}: {impl}")
                table = _build_gc_table(impl, pairs, values, mds)
                with_table = _gc_ms()
                alloc[impl].append(_alloc_ms())
                if impl == "native" and variant == "tracked" and r == cfg.rounds - 1:
                    keep = table
                _close(table)
                del table
                without = _gc_ms()
                extra[impl].append(with_table - without)
        med = {i: _median_of(v) for i, v in extra.items()}
        amed = {i: _median_of(v) for i, v in alloc.items()}
        # (an extra time is a difference, near zero: the ratio of the medians)
        gc_ratio = med["native"] / med["dict"] if native and med["dict"] > 0 else None
        alloc_ratio = _paired(alloc, "native", "dict") if native else None
        spread = {i: [round(x, 1) for x in v] for i, v in extra.items()}
        rows.append(_ratio_row(f"gc_{variant}", med, gc_ratio, {"per_round": spread, "n": n}))
        rows.append(
            _ratio_row(
                f"alloc_{variant}",
                amed,
                alloc_ratio,
                {"per_round": {i: [round(x, 1) for x in v] for i, v in alloc.items()}, "n": n},
            )
        )
        del values, mds
    rows.append(_only_holder_row(n, pairs, cfg, impls, native))
    return rows, keep, pairs


def _only_holder_row(
    n: int, pairs: list[Pair], cfg: _Config, impls: list[str], native: bool
) -> dict[str, Any]:
    """A full collection's extra time when the table is the only holder of
    its GC-tracked values, made just before it (as services are, then
    registered): the collector first meets each value before the table, and
    moves it back when the table's traverse reaches it, in that order."""
    extra: dict[str, list[float]] = {i: [] for i in impls}
    for r in range(cfg.rounds):
        for impl in _rotate(impls, r):
            cfg.say(f"targets: values held by the table alone, round {r + 1}: {impl}")
            base = _gc_ms()
            table = _build_gc_table(impl, pairs, [_Service(i) for i in range(n)], None)
            with_table = _gc_ms()
            _close(table)
            del table
            extra[impl].append(with_table - base)
    med = {i: _median_of(v) for i, v in extra.items()}
    ratio = med["native"] / med["dict"] if native and med["dict"] > 0 else None
    spread = {i: [round(x, 1) for x in v] for i, v in extra.items()}
    return _ratio_row("gc_only_holder", med, ratio, {"per_round": spread, "n": n})


def _scan_rows(n: int, cfg: _Config, backends: list[str]) -> list[dict[str, Any]]:
    """Unindexed select, registrations(ns) and the write cycles at n entries."""
    say, v = cfg.say, cfg.value
    rows: list[dict[str, Any]] = []
    say(f"targets: select/registrations tables, N={n:,}")
    pairs = make_pairs(n, "scan")
    regs = {}
    for impl in backends:
        reg = _build_gc_table(impl, pairs, [v] * n, [_select_metadata(i) for i in range(n)])
        regs[impl] = reg
    d = {(a, b): (v, _select_metadata(i)) for i, (a, b) in enumerate(pairs)}
    single = {}
    for impl in backends:
        reg = make_registry(impl)
        f = reg.register_nowait
        for _, b in pairs:
            f("one", b, v)
        single[impl] = reg
    # -- unindexed select, 1%: native vs the comprehension a user would write
    raw: dict[str, list[float]] = {i: [] for i in [*backends, "dict"]}
    for r in range(cfg.rounds):
        tier = _TIERS[1 + r % (len(_TIERS) - 1)]
        want = len([e for e in d.values() if e[1].get("tier") == tier])
        for impl in _rotate([*backends, "dict"], r):
            if impl == "dict":
                ms = _time_ns("scan", [tier] * 10, g=d.values) / 1e6
            else:
                got = regs[impl].select(None, where={"tier": tier})
                if len(got) != want:
                    raise RuntimeError(f"{impl} select found {len(got)}, the dict {want}")
                ms = _time_ns("select", [{"tier": tier}] * 10, f=regs[impl].select) / 1e6
            raw[impl].append(ms)
    med = {i: _median_of(x) for i, x in raw.items()}
    rows.append(
        _ratio_row(
            "select_scan",
            med,
            _paired(raw, "native", "dict") if "native" in raw else None,
            {"n": n, "matches": n // 100},
        )
    )
    # -- registrations(ns) of a namespace of n entries, GC on and off
    for tid, gc_on in (("registrations_ns", True), ("registrations_ns_gc_off", False)):
        raw = {i: [] for i in backends}
        for r in range(cfg.rounds):
            for impl in _rotate(backends, r):
                f = single[impl].registrations
                was = gc.isenabled()
                if gc_on:
                    gc.enable()
                try:
                    ms = _time_ns("regs", [None] * 3, f=f, d="one") / 1e6
                finally:
                    if not was:
                        gc.disable()
                raw[impl].append(ms)
        med = {i: _median_of(x) for i, x in raw.items()}
        ok = "native" in raw and "python" in raw
        rows.append(
            _ratio_row(tid, med, _paired(raw, "native", "python") if ok else None, {"n": n})
        )
    # -- write cycles: join+leave against register+unregister (native), and
    # the python twin against a dict
    fresh = make_pairs(min(n, cfg.cycle_keys), "cyc")
    dd: dict[Any, Any] = dict.fromkeys(pairs, v)
    entry: tuple[Any, dict[str, Any]] = (v, {})
    cyc: dict[str, list[float]] = {}
    for r in range(cfg.rounds):
        cfg.rnd.shuffle(fresh)
        ks = _fresh_tuples(fresh)
        loop = _time_ns("loop2", ks)
        for impl in _rotate(backends, r):
            reg = single[impl]
            cyc.setdefault(f"{impl} register+unregister", []).append(
                _time_ns("cycle", ks, f=reg.register_nowait, g=reg.unregister_nowait, v=v) - loop
            )
            cyc.setdefault(f"{impl} join+leave", []).append(
                _time_ns("jlcycle", ks, f=reg.join_nowait, g=reg.leave_nowait, d="workers") - loop
            )
        cyc.setdefault("dict setdefault+pop", []).append(
            _time_ns("dcycle", ks, f=dd.setdefault, g=dd.pop, v=entry) - loop
        )
    cmed = {k: _median_of(x) for k, x in cyc.items()}
    if "native" in backends:
        rows.append(
            _ratio_row(
                "join_leave",
                {k: cmed[k] for k in ("native join+leave", "native register+unregister")},
                _paired(cyc, "native join+leave", "native register+unregister"),
                {"n": n},
            )
        )
    if "python" in backends:
        rows.append(
            _ratio_row(
                "python_cycle",
                {k: cmed[k] for k in ("python register+unregister", "dict setdefault+pop")},
                _paired(cyc, "python register+unregister", "dict setdefault+pop"),
                {"n": n, "also": {k: round(x) for k, x in cmed.items()}},
            )
        )
    for reg in (*regs.values(), *single.values()):
        reg.close()
    return rows


def _equal_names(pairs: list[Pair]) -> list[Pair]:
    """The pairs with each name rebuilt: an equal str, another object, its
    hash computed (the namespace stays the same object, as a constant)."""
    out = []
    for a, b in pairs:
        c = b[:1] + b[1:]
        if c != b or c is b:
            raise RuntimeError(f"could not rebuild the name {b!r} as another object")
        hash(c)
        out.append((a, c))
    return out


def _lookup_rows(
    small_n: int, large: Any, large_pairs: list[Pair], cfg: _Config
) -> list[dict[str, Any]]:
    """registry.lookup(ns, name) as users call it, against a nested dict and
    dict.get((ns, name)), at small_n and on the large table."""
    say = cfg.say
    rows: list[dict[str, Any]] = []
    for tag, n, reg, pairs in (("small", small_n, None, None), ("large", 0, large, large_pairs)):
        if tag == "large" and reg is None:
            continue
        if reg is None:
            pairs = make_pairs(n, "look")
            reg = _build_gc_table("native", pairs, [cfg.value] * n, None)
        assert pairs is not None
        n = len(pairs)
        say(f"targets: lookups at N={n:,}")
        # the baselines hold the table's own values (on the large table one
        # object per entry: a lookup returns it, so each pays that miss)
        nested: dict[str, dict[str, Any]] = {}
        flat: dict[Pair, Any] = {}
        for a, b in pairs:
            value = reg.lookup(a, b)
            nested.setdefault(a, {})[b] = value
            flat[(a, b)] = value
        sample = cfg.rnd.sample(pairs, min(n, cfg.lookup_keys))
        number = max(1, math.ceil(min(cfg.lookup_keys, 300_000) / len(sample)))
        raw: dict[str, list[float]] = {"native": [], "nested": [], "dict": []}
        # names equal to the stored ones but other objects (as a name read
        # from a message is), hashed like them
        equal = _equal_names(sample) if tag == "small" else []
        raw_eq: dict[str, list[float]] = {"native": [], "nested": []}
        for r in range(cfg.rounds):
            cfg.rnd.shuffle(sample)
            ks = _fresh_tuples(sample)
            loop = _time_ns("loop2", ks, number)
            for impl in _rotate(list(raw), r):
                if impl == "native":
                    t = _time_ns("attr", ks, number, d=reg)
                elif impl == "nested":
                    t = _time_ns("nested", ks, number, d=nested)
                else:
                    t = _time_ns("tuple", ks, number, f=flat.get)
                raw[impl].append(t - loop)
            if equal:
                cfg.rnd.shuffle(equal)
                for impl in _rotate(list(raw_eq), r):
                    body, d = ("attr", reg) if impl == "native" else ("nested", nested)
                    raw_eq[impl].append(_time_ns(body, equal, number, d=d) - loop)
        med = {i: _median_of(x) for i, x in raw.items()}
        rows.append(
            _ratio_row(f"lookup_{tag}_nested", med, _paired(raw, "native", "nested"), {"n": n})
        )
        if equal:
            med_eq = {i: _median_of(x) for i, x in raw_eq.items()}
            rows.append(
                _ratio_row(
                    "lookup_small_equal", med_eq, _paired(raw_eq, "native", "nested"), {"n": n}
                )
            )
        if tag == "large":
            rows.append(
                _ratio_row("lookup_large_dict", med, _paired(raw, "native", "dict"), {"n": n})
            )
        if tag == "small":
            _close(reg)
    return rows


def run_targets(
    *,
    gc_n: int = 1_000_000,
    scan_n: int = 100_000,
    small_n: int = 1_000,
    rounds: int = 3,
    backends: Sequence[str] | None = None,
    lookup_keys: int = 1_000_000,
    cycle_keys: int = 100_000,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The at-scale targets (:data:`TARGETS`), side by side in one run.

    * GC rows: the time of a full ``gc.collect()`` with the table alive minus
      without it (its values alive either way; each the fastest of 7), at
      ``gc_n`` entries whose
      values are distinct GC-tracked objects, or distinct str with 2-key
      metadata (the dict: ``d[(ns, name)] = (value, dict(metadata))``); the
      same with the table the only holder of its values (made just before
      it); and the time to allocate (and keep) 300k small lists with the
      collector on beside it, each sample from a fresh collection;
    * at ``scan_n`` entries: an unindexed ``select(None, where={"tier": t})``
      (1%) against ``[e for e in d.values() if e[1].get("tier") == t]``;
      ``registrations(ns)`` of a namespace of ``scan_n`` entries, with the
      collector on (what a service pays) and off; join+leave against
      register+unregister of fresh names on the same registry, and the
      python twin's register+unregister against a dict's setdefault+pop;
    * ``registry.lookup(ns, name)``, the attribute lookup and call as users
      write it, against ``d[ns][name]`` and ``d.get((ns, name))`` at
      ``small_n`` and on the ``gc_n`` table (shuffled, net of the bare loop).

    Medians over ``rounds`` interleaved rounds (order rotated). Returns
    ``{"env", "config", "rows": [...], "wall_s"}``; each row has the
    per-implementation values, the ratio, its bound and ``ok``.
    """
    t0 = time.perf_counter()
    native, _ = native_status()
    if backends is None:
        backends = ["native", "python"] if native else ["python"]
    say: Progress = progress if progress is not None else (lambda _msg: None)
    cfg = _Config(rounds, list(backends), lookup_keys, cycle_keys, 0, 0.0, seed, say)
    env = _env(backends)
    env["loadavg_start"] = _loadavg()
    was = gc.isenabled()
    gc.disable()
    try:
        rows, large, large_pairs = _gc_rows(gc_n, cfg, "native" in backends)
        rows += _scan_rows(scan_n, cfg, list(backends))
        if "native" in backends:
            rows += _lookup_rows(small_n, large, large_pairs, cfg)
        if large is not None:
            _close(large)
    finally:
        if was:
            gc.enable()
    env["loadavg_end"] = _loadavg()
    order = {t[0]: k for k, t in enumerate(TARGETS)}
    rows.sort(key=lambda row: order[row["id"]])
    return {
        "env": env,
        "config": {
            "gc_n": gc_n,
            "scan_n": scan_n,
            "small_n": small_n,
            "rounds": rounds,
            "backends": list(backends),
            "seed": seed,
        },
        "rows": rows,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def format_targets_table(result: dict[str, Any]) -> str:
    """The human report of :func:`run_targets`."""
    env, cfg = result["env"], result["config"]
    lines = [
        f"At-scale targets: CPython {env['python']} ({env['cpu_count']} cpus),"
        f" partitions={env.get('partitions')}; GC rows at N={cfg['gc_n']:,}, scans at"
        f" N={cfg['scan_n']:,}; medians of {cfg['rounds']} interleaved rounds (a ratio:"
        " of the per-round ratios; of the GC rows' medians);"
        f" load average {env.get('loadavg_start')} -> {env.get('loadavg_end')}",
    ]
    table = [["measure", "unit", "values", "ratio", "target", ""]]
    for row in result["rows"]:
        vals = ", ".join(f"{k} {_fmt_target(v)}" for k, v in row["values"].items())
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        table.append(
            [
                row["label"],
                row["unit"],
                vals,
                f"{row['ratio_name']} {ratio}",
                f"<= {row['target']:.1f}",
                "ok" if row["ok"] else "MISS",
            ]
        )
    lines += _grid(table)
    met = sum(1 for row in result["rows"] if row["ok"])
    lines.append(f"targets met: {met}/{len(result['rows'])}; wall time {result['wall_s']}s")
    return "\n".join(lines)


def _fmt_target(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


# ---------------------------------------------------------------- public API
def run_scale(
    sizes: Sequence[int] = SCALE_SIZES,
    *,
    baseline_n: int = SCALE_BASELINE,
    rounds: int = 3,
    backends: Sequence[str] | None = None,
    lookup_keys: int = 1_000_000,
    cycle_keys: int = 100_000,
    build_ops: int = 200_000,
    python_budget_s: float = 300.0,
    group_sizes: Sequence[int] = (1_000, 100_000),
    select_sizes: Sequence[int] = (10_000, 1_000_000),
    select_target_s: float = 0.05,
    seed: int = 0,
    progress: Progress | None = None,
    targets: bool = True,
    targets_gc_n: int = 1_000_000,
    targets_scan_n: int = 100_000,
) -> dict[str, Any]:
    """Measure per-operation cost and memory as the registry grows; JSON-able result.

    Args:
        sizes: table sizes N (besides ``baseline_n``).
        baseline_n: the reference size growth is read against (0: none).
        rounds: interleaved rounds (medians and spreads are over rounds).
        backends: registry backends (default: native when built, and python).
        lookup_keys: keys (and ops per sample) of the lookup sample.
        cycle_keys: fresh keys of the register+unregister sample.
        build_ops: a table smaller than this is filled ``build_ops // N``
            times per timed build (one fill of 1e3 entries is too short to time).
        python_budget_s: the python backend's build budget per size.
        group_sizes: members of the one group, per group measurement.
        select_sizes: entries of the select registries (the largest is the
            one checked for O(matches) against the smallest).
        select_target_s: seconds per select sample (more calls for fast ones).
        seed: seed of every shuffle.
        progress: called with a short status line as the run advances.
        targets: also run :func:`run_targets` (the at-scale targets).
        targets_gc_n: its table size for the GC and large lookup rows.
        targets_scan_n: its table size for the select, registrations and
            write-cycle rows.

    Returns:
        ``{"env", "config", "sizes": [per size], "growth": [...], "groups":
        [...], "select": [...], "select_checks": [...], "targets": {...} or
        None, "wall_s"}``.

    On the full GC pass: the python backend stores a tracked Registration
    tuple per entry, and the dict a tracked entry tuple, so a full collection
    visits millions of objects; the native table is one tracked object whose
    ``tp_traverse`` visits every entry's key, name, value, metadata and owner.
    The cost per pass is of the same order, but CPython starts a full
    collection only when the objects that survived since the last one exceed
    25% of the long-lived objects: millions of tracked entries make that
    rare, while the native table counts as one object, so its O(N) passes
    come as often as the rest of the heap grows by a quarter.
    """
    t0 = time.perf_counter()
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, not {rounds}")
    bad = [n for n in (*sizes, *group_sizes, *select_sizes) if n < 1]
    if bad or baseline_n < 0:
        raise ValueError(f"sizes must be >= 1 (baseline >= 0), not {bad or baseline_n}")
    if backends is None:
        native, _ = native_status()
        backends = ["native", "python"] if native else ["python"]
    say: Progress = progress if progress is not None else (lambda _msg: None)
    cfg = _Config(
        rounds, list(backends), lookup_keys, cycle_keys, build_ops, python_budget_s, seed, say
    )
    all_sizes = sorted({*([baseline_n] if baseline_n else []), *sizes})
    env = _env(backends)
    env["loadavg_start"] = _loadavg()
    env["mem_available_gib"] = round((_mem_available() or 0) / 2**30, 1)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        per_size = []
        for n in all_sizes:
            t_n = time.perf_counter()
            per_size.append(_size_phase(n, cfg))
            say(f"N={n:,}: done in {time.perf_counter() - t_n:.0f}s")
        groups = [_group_phase(size, cfg) for size in sorted(set(group_sizes))]
        select = [_select_phase(n, cfg, select_target_s) for n in sorted(set(select_sizes))]
    finally:
        if was_enabled:
            gc.enable()
    env["loadavg_end"] = _loadavg()
    result: dict[str, Any] = {
        "env": env,
        "config": {
            "sizes": list(all_sizes),
            "baseline_n": baseline_n,
            "rounds": rounds,
            "backends": list(backends),
            "lookup_keys": lookup_keys,
            "cycle_keys": cycle_keys,
            "build_ops": build_ops,
            "python_budget_s": python_budget_s,
            "group_sizes": sorted(set(group_sizes)),
            "select_sizes": sorted(set(select_sizes)),
            "seed": seed,
            "method": (
                "GC off while timing; rounds interleaved, order rotated; net = median over"
                " rounds of (sample - bare loop over the same list); lookups over a shuffled"
                f" sample of up to {lookup_keys:,} stored keys; build = one fill per round up to"
                f" N={_REBUILD_MAX_N:,}, one above;"
                f" memory = RSS growth over the build from N={_RSS_MIN_N:,} on (after"
                " gc.collect + malloc_trim), tracemalloc below"
            ),
        },
        "sizes": per_size,
        "growth": _growth(per_size, baseline_n),
        "groups": groups,
        "select": select,
        "select_checks": (
            _select_checks(select[0] if len(select) > 1 else None, select[-1]) if select else []
        ),
        "targets": None,
    }
    if targets:
        result["targets"] = run_targets(
            gc_n=targets_gc_n,
            scan_n=targets_scan_n,
            small_n=baseline_n or SCALE_BASELINE,
            rounds=rounds,
            backends=backends,
            lookup_keys=lookup_keys,
            cycle_keys=cycle_keys,
            seed=seed,
            progress=say,
        )
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def _growth(per_size: list[dict[str, Any]], baseline_n: int) -> list[dict[str, Any]]:
    """Per-op cost at each N relative to the baseline size (1.00 = flat)."""
    if not baseline_n:
        return []
    ref = next((s for s in per_size if s["n"] == baseline_n), None)
    if ref is None:
        return []
    rows: list[dict[str, Any]] = []
    for s in per_size:
        if s["n"] == baseline_n:
            continue
        for op in ("build", "lookup_hit", "register_unregister"):
            ratios: dict[str, float | None] = {}
            for impl, cell in s["impls"].items():
                r_cell = ref["impls"].get(impl, {}).get(op)
                if r_cell is None or op not in cell:
                    continue
                a, b = cell[op]["net"], r_cell["net"]
                ratios[impl] = a / b if b > 0 else None
            rows.append({"op": op, "n": s["n"], "vs_n": baseline_n, "ratios": ratios})
    return rows


# ---------------------------------------------------------------- formatting
def _fmt_ns(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1e9:
        return f"{v / 1e9:.2f}s"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}ms"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}us"
    return f"{v:.0f}"


def _fmt_spread(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    text = _fmt_ns(cell["net"])
    if "min" in cell and cell["min"] != cell["max"]:
        text += f" [{_fmt_ns(cell['min'])}-{_fmt_ns(cell['max'])}]"
    return text


_SIZE_ROWS = (
    ("build", "build (register N into empty)", "ns/entry"),
    ("lookup_hit", "lookup hit", "ns/op"),
    ("register_unregister", "register+unregister", "ns/cycle"),
    ("memory", "memory", "B/entry"),
    ("gc_full_ms", "full gc.collect() share", "ms"),
)

_GROUP_ROWS = (
    ("join", "join", "ns/op"),
    ("members", "members()", "ns/call"),
    ("churn", "FIFO churn (leave oldest + join)", "ns/cycle"),
    ("leave", "leave", "ns/op"),
)

_QUERY_LABEL = {
    "indexed_1pct": "indexed eq role, 1%",
    "indexed_rare": "indexed eq role, rare",
    "scan_1pct": "scan eq tier (not indexed), 1%",
}


def format_scale_table(result: dict[str, Any]) -> str:
    """The human report of :func:`run_scale`."""
    env, cfg = result["env"], result["config"]
    impls = [*cfg["backends"], "dict"]
    lines = [
        f"foundation {env['foundation']}, CPython {env['python']}"
        f" ({env.get('cpu', platform.machine())}, {env['cpu_count']} cpus),"
        f" partitions={env.get('partitions')}, MemAvailable {env.get('mem_available_gib')} GiB",
        f"foundation.registry.NATIVE = {env['NATIVE']}: {env['native_status']}",
        f"rounds={cfg['rounds']}, sizes={', '.join(f'{n:,}' for n in cfg['sizes'])};"
        f" load average (1 min) {env.get('loadavg_start')} -> {env.get('loadavg_end')}",
        "",
        "Registrations: median net of the bare loop [min-max over rounds]; memory: B/entry"
        " (rss = RSS growth over the build, tm = tracemalloc)",
    ]
    table = [["measure", "N", "unit", *impls, "native/dict"]]
    for s in result["sizes"]:
        for key, label, unit in _SIZE_ROWS:
            row = [label, f"{s['n']:,}", unit]
            values: dict[str, float] = {}
            for impl in impls:
                cell = s["impls"].get(impl, {}).get(key)
                if impl in s.get("skipped", {}):
                    row.append("skipped")
                elif cell is None:
                    row.append("-")
                elif key == "memory":
                    row.append(f"{cell['net']:.0f} ({'rss' if cell['method'] == 'rss' else 'tm'})")
                    values[impl] = cell["net"]
                elif key == "gc_full_ms":
                    row.append(f"{cell['net']:.0f}")
                    values[impl] = cell["net"]
                else:
                    row.append(_fmt_spread(cell))
                    values[impl] = cell["net"]
            if all(row[3 + i] == "-" for i in range(len(impls))):
                continue
            nd = values.get("native"), values.get("dict")
            row.append(f"{nd[0] / nd[1]:.2f}" if nd[0] is not None and nd[1] else "-")
            table.append(row)
    lines += _grid(table)
    skipped = [(s["n"], i, why) for s in result["sizes"] for i, why in s["skipped"].items()]
    for n, impl, why in skipped:
        lines.append(f"  {impl} at N={n:,} skipped: {why}")
    if result["growth"]:
        lines += [
            "",
            f"Growth: per-op cost at N / at N={cfg['baseline_n']:,} (1.00 = flat;"
            " cache and TLB misses alone explain some rise)",
        ]
        table = [["measure", "N", *impls]]
        for g in result["growth"]:
            label = next(lbl for k, lbl, _ in _SIZE_ROWS if k == g["op"])
            row = [label, f"{g['n']:,}"]
            for impl in impls:
                ratio = g["ratios"].get(impl)
                row.append("-" if ratio is None else f"{ratio:.2f}")
            table.append(row)
        lines += _grid(table)
    if result["groups"]:
        lines += ["", "One group: median net of the bare loop [min-max over rounds]"]
        table = [["measure", "members", "unit", *impls]]
        for g in result["groups"]:
            for key, label, unit in _GROUP_ROWS:
                row = [label, f"{g['size']:,}", unit]
                row += [_fmt_spread(g["impls"].get(i, {}).get(key)) for i in impls]
                table.append(row)
        lines += _grid(table)
    if result["select"]:
        lines += ["", "select(None, where=...): ns per call [min-max over rounds], matches"]
        table = [["query", "N", "matches", *impls, "native ns/match"]]
        for s in result["select"]:
            for q, per in s["queries"].items():
                first = next(iter(per.values()))
                row = [_QUERY_LABEL[q], f"{s['n']:,}", f"{first['matches']:,}"]
                row += [_fmt_spread(per.get(i)) for i in impls]
                nat = per.get("native")
                per_match = None if nat is None else nat.get("ns_per_match")
                row.append("-" if per_match is None else f"{per_match:.0f}")
                table.append(row)
        lines += _grid(table)
        for c in result["select_checks"]:
            lines.append(f"  {c['impl']}: {c['check']} = {c['value']:.2f} (expect {c['expect']})")
    if result.get("targets"):
        lines += ["", format_targets_table(result["targets"])]
    lines += ["", f"wall time {result['wall_s']}s"]
    return "\n".join(lines)
