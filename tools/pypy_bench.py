#!/usr/bin/env python3
"""Pure twin layout vs the C core through cffi, side by side (PyPy and CPython).

Which registry table should PyPy use: the pure-Python twin's dicts (what
``FOUNDATION_NO_EXTENSIONS=1`` and PyPy run today), or the C core of the
native backend reached through cffi (``tools/cffi/cffi_table.py``;
the Cython binding is CPython-only)? This measures both in one process:

* ``twin``: a faithful copy of ``_python.PythonBackend``'s data layout and of
  its ``get`` / ``register`` / ``unregister`` code paths (``partitions``
  shards, each a dict ``(ns, name) -> Registration`` plus a namespace index, an
  owner index and an RLock taken by writes; hit/miss/write counters, metadata
  copy, owner check). It is re-implemented here because ``_python.py`` and
  the rest of ``foundation`` need Python >= 3.11 and PyPy's 3.9 cannot import
  them; keep the two in step.
* ``cffi``: ``cffi_table.CffiTable`` (hash and shard as the native backend,
  one foreign call per probe, Python-side equality on CANDIDATE), with the
  same RLock around each write (the core is not thread-safe by itself).
  Reads take no lock on either side.

Operations, at 1e3 and 1e5 entries: lookup hit (with the very key objects that
were stored, and with equal copies: a CANDIDATE for the C core), lookup
miss, and one register + unregister cycle. One more row, "lookup hit, cffi
locked", times the cffi lookups under an RLock (the twin's unlocked): cffi
releases the GIL around every C call, so a thread-safe backend over the
core must lock its reads too, which the twin's dict reads need not. Rounds alternate the two sides
(and their order); each side's figure is the median over rounds, in ns per
operation. On PyPy the first rounds are JIT warm-up and are not counted.

Runs on CPython >= 3.9 and PyPy3.9 with cffi (built into PyPy). Usage::

    pypy3 tools/pypy_bench.py [--rounds 15] [--ops 200000] [--build-dir DIR]

``tools/pypy_bench.sh`` installs Debian's pypy3 and runs this under both.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(ROOT, "tools", "cffi")


def _load_cffi_table() -> Any:
    # by path: a tool of the checkout, and the foundation package needs Python >= 3.11
    spec = importlib.util.spec_from_file_location(
        "cffi_table", os.path.join(HARNESS, "cffi_table.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError("cannot load tools/cffi/cffi_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- the twin
# A copy of the parts of _python.py / _keys.py / _types.py that lookups and
# register/unregister run (no metadata index, no listeners, no groups: the
# backend skips them when unused).


class Registration(NamedTuple):
    namespace: Any
    name: Any
    value: Any
    metadata: Any
    owner: Any


EMPTY_METADATA: Any = MappingProxyType({})
_new_registration = functools.partial(tuple.__new__, Registration)


class NotRegistered(LookupError):
    pass


class AlreadyRegistered(Exception):
    pass


def copy_metadata(metadata: Any) -> Any:
    if metadata is None:
        return EMPTY_METADATA
    copied = dict(metadata)
    return MappingProxyType(copied) if copied else EMPTY_METADATA


def check_owner(owner: object) -> None:
    hash(owner)


def same_value(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def same_owner(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return same_value(a, b)


class _NoListeners:
    subscriptions: tuple[Any, ...] = ()


class _Shard:
    __slots__ = ("by_ns", "by_owner", "lock", "table")

    def __init__(self) -> None:
        self.table: dict[Any, Any] = {}
        self.by_ns: dict[Any, dict[Any, Any]] = {}
        self.by_owner: dict[Any, dict[Any, None]] = {}
        self.lock = threading.RLock()


class Twin:
    """PythonBackend's table layout and read/write paths."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._index = None
        self._shards = tuple(_Shard() for _ in range(partitions))
        self._tables = tuple(s.table for s in self._shards)
        self._n = partitions
        self._listeners = _NoListeners()
        self._closed = False
        self._hits = 0
        self._misses = 0
        self._writes = 0
        self._conflicts = 0

    def get(self, ns: Any, name: Any, default: Any = None) -> Any:
        key = (ns, name)
        try:
            reg = self._tables[hash(key) % self._n].get(key)
        except Exception as exc:
            raise ValueError(key) from exc
        if reg is None:
            self._misses += 1
            return default
        self._hits += 1
        return reg.value

    def _shard(self, ns: Any, name: Any) -> tuple[Any, _Shard]:
        key = (ns, name)
        try:
            return key, self._shards[hash(key) % self._n]
        except Exception as exc:
            raise ValueError(key) from exc

    def register(
        self, ns: Any, name: Any, value: Any, metadata: Any = None, *, owner: Any = None
    ) -> Any:
        if self._closed:
            raise RuntimeError("closed")
        md = copy_metadata(metadata)
        check_owner(owner)
        key, shard = self._shard(ns, name)
        new = _new_registration((ns, name, value, md, owner))
        table = shard.table
        with shard.lock:
            while True:
                if self._closed:
                    raise RuntimeError("closed")
                try:
                    if owner is not None:
                        shard.by_owner.get(owner)
                    current = table.setdefault(key, new)
                except Exception as exc:
                    raise ValueError(key) from exc
                if current is new:
                    shard.by_ns.setdefault(ns, {})[name] = new
                    if owner is not None:
                        shard.by_owner.setdefault(owner, {})[key] = None
                    reg = new
                    break
                same = same_value(current.value, value) and same_owner(current.owner, owner)
                moved = table.get(key) is not current  # (a variable: no mypy narrowing)
                if moved:
                    continue
                if not same:
                    self._conflicts += 1
                    raise AlreadyRegistered(key)
                reg = Registration(
                    current.namespace, current.name, current.value, md, current.owner
                )
                table[key] = reg
                shard.by_ns[current.namespace][current.name] = reg
                break
            self._writes += 1
        if self._listeners.subscriptions:
            pass
        return reg

    def _drop(self, shard: _Shard, key: Any, reg: Any, *, owner_too: bool) -> None:
        names = shard.by_ns.get(reg.namespace)
        if names is not None:
            names.pop(reg.name, None)
            if not names:
                del shard.by_ns[reg.namespace]
        if owner_too and reg.owner is not None:
            keys = shard.by_owner.get(reg.owner)
            if keys is not None:
                keys.pop(key, None)
                if not keys:
                    del shard.by_owner[reg.owner]

    def unregister(self, ns: Any, name: Any) -> bool:
        key, shard = self._shard(ns, name)
        with shard.lock:
            if self._closed:
                return False
            try:
                reg = shard.table.pop(key, None)
            except Exception as exc:
                raise ValueError(key) from exc
            if reg is None:
                return False
            self._drop(shard, key, reg, owner_too=True)
            self._writes += 1
        if self._listeners.subscriptions:
            pass
        return True


# ---------------------------------------------------------------- loops
# Each (side, operation) gets a code object of its own, so PyPy's JIT traces
# each loop for one callee only.

_LOOPS = {
    ("twin", "get"): """
def loop(keys, t, lock, owner):
    get = t.get
    for ns, name in keys:
        get(ns, name)
""",
    ("cffi", "get"): """
def loop(keys, t, lock, owner):
    get = t.get
    for ns, name in keys:
        get(ns, name)
""",
    ("twin", "get_locked"): """
def loop(keys, t, lock, owner):
    get = t.get
    for ns, name in keys:
        get(ns, name)
""",
    ("cffi", "get_locked"): """
def loop(keys, t, lock, owner):
    get = t.get
    for ns, name in keys:
        with lock:
            get(ns, name)
""",
    ("twin", "cycle"): """
def loop(keys, t, lock, owner):
    register = t.register
    unregister = t.unregister
    for ns, name in keys:
        register(ns, name, name, None, owner=owner)
        unregister(ns, name)
""",
    ("cffi", "cycle"): """
def loop(keys, t, lock, owner):
    insert = t.insert
    delete = t.delete
    for ns, name in keys:
        with lock:
            insert(ns, name, name, None, owner)
        with lock:
            delete(ns, name)
""",
}


def _make_loop(side: str, op: str, tag: str) -> Callable[..., None]:
    scope: dict[str, Any] = {}
    exec(compile(_LOOPS[(side, op)], f"<{side} {op} {tag}>", "exec"), scope)
    loop: Callable[..., None] = scope["loop"]
    return loop


# ---------------------------------------------------------------- the run


def _fmt_n(n: int) -> str:
    return f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else str(n)


def bench_size(
    n: int, cffi_table: Any, mod: Any, args: argparse.Namespace, rng: random.Random
) -> list[tuple[str, float, float]]:
    namespaces = [f"ns{i}" for i in range(16)]
    owners = [f"owner{i}" for i in range(64)]
    keys = [(namespaces[i % 16], f"name{i}") for i in range(n)]
    twin = Twin(args.partitions)
    core = cffi_table.CffiTable(args.partitions, mod)
    for i, (ns, name) in enumerate(keys):
        twin.register(ns, name, i, None, owner=owners[i % 64])
        if not core.insert(ns, name, i, None, owners[i % 64]):
            raise SystemExit("cffi insert failed")

    ops = args.ops
    hits = [keys[rng.randrange(n)] for _ in range(ops)]
    # equal, not identical: new str objects for every key
    copies = [("".join(["ns", ns[2:]]), "".join(["name", name[4:]])) for ns, name in hits]
    misses = [(namespaces[i % 16], f"missing{i}") for i in range(ops)]
    cycle_ops = max(ops // 4, 1000)
    cycle = [(namespaces[i % 16], f"new{i}") for i in range(cycle_ops)]

    for ns, name in hits[:1000] + copies[:1000]:
        want = int(name[4:])
        if twin.get(ns, name) != want or core.get(ns, name) != want:
            raise SystemExit(f"wrong answer for {(ns, name)!r}")
    for ns, name in misses[:1000]:
        if twin.get(ns, name) is not None or core.get(ns, name) is not None:
            raise SystemExit(f"false hit for {(ns, name)!r}")

    sides = {"twin": twin, "cffi": core}
    lock = threading.RLock()
    rows = []
    for label, op, work in (
        ("lookup hit", "get", hits),
        ("lookup hit, equal copy", "get", copies),
        ("lookup miss", "get", misses),
        ("lookup hit, cffi locked", "get_locked", hits),
        ("register+unregister", "cycle", cycle),
    ):
        loops = {side: _make_loop(side, op, label) for side in sides}
        times: dict[str, list[float]] = {side: [] for side in sides}
        order = list(sides)
        for r in range(args.warmup + args.rounds):
            order.reverse()  # alternate who goes first
            for side in order:
                gc.collect()
                t0 = time.perf_counter_ns()
                loops[side](work, sides[side], lock, "cycle-owner")
                dt = time.perf_counter_ns() - t0
                if r >= args.warmup:
                    times[side].append(dt / len(work))
        rows.append((label, statistics.median(times["twin"]), statistics.median(times["cffi"])))
        if len(core) != n or sum(len(t) for t in twin._tables) != n:
            raise SystemExit("entry count changed")
    core.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,100000", help="comma-separated entry counts")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds per side")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed rounds (default: 5 on PyPy, 1 else)"
    )
    p.add_argument("--ops", type=int, default=200_000, help="lookups per round")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--build-dir", default=None, help="where to build _fdn_cffi")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    pypy = platform.python_implementation() == "PyPy"
    if args.warmup is None:
        args.warmup = 5 if pypy else 1

    cffi_table = _load_cffi_table()
    mod = cffi_table.load(args.build_dir)
    import cffi  # type: ignore[import-untyped,unused-ignore]

    impl = platform.python_implementation()
    version = sys.version.split()[0]
    if pypy:
        version += " (PyPy " + ".".join(map(str, sys.pypy_version_info[:3])) + ")"  # type: ignore[attr-defined,unused-ignore]
    print(
        f"# {impl} {version}, cffi {cffi.__version__}, partitions={args.partitions}, "
        f"rounds={args.rounds} (+{args.warmup} warm-up), {args.ops} lookups per round, "
        "median ns/op"
    )
    print(
        f"{'entries':>7}  {'operation':<24} {'twin ns/op':>10} {'cffi ns/op':>10} {'cffi/twin':>9}"
    )
    rng = random.Random(args.seed)
    for n in (int(s) for s in args.sizes.split(",")):
        for label, twin_ns, cffi_ns in bench_size(n, cffi_table, mod, args, rng):
            print(
                f"{_fmt_n(n):>7}  {label:<24} {twin_ns:>10.1f} {cffi_ns:>10.1f} "
                f"{cffi_ns / twin_ns:>8.2f}x",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
