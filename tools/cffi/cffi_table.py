"""A thin cffi binding of the C core (csrc/fdn_table.[ch]): a small sharded table.

Not a registry backend: this is the C core reached through cffi, for PyPy
(where the Cython extension cannot be used) and for differential fuzzing of
the core on CPython (tests/native/test_cffi_core.py). It lives beside the
fuzzer, outside the installed package, and builds from the checkout's
``csrc/``. It offers only
``insert`` / ``get`` / ``delete`` / ``remove_owner`` over ``partitions``
shards, hashing and sharding exactly as ``_native.pyx`` does.

Python objects in C: the core stores opaque pointers and compares them by
identity. Here every object is named by its ``id()`` (PyPy's ``id()`` can be
negative or wider than 64 bits for ints and floats, which then get a private
token instead), and a slot's value is the id of a per-entry list
``[ns, name, value, meta, owner, pointers, keepalive]`` held in the
``_entries`` dict (id -> entry), which keeps every stored object alive. The
key objects of the namespace and owner index lists are pinned in ``_pins``
(refcounted by pointer) for as long as the core holds them. On a CANDIDATE
probe (same hash, other pointer) equality is decided here, in Python
(``stored is key or stored == key``, as the Cython binding's ``fdn_eq``),
and the shard's ``version`` is re-checked afterwards: an ``__eq__`` that
changed the shard restarts the probe. A lookup, insert or delete that meets
no CANDIDATE is one foreign call.

Not thread-safe (and cffi releases the GIL around each call): serialise the
calls on one table, as the core requires.

Runs on CPython >= 3.9 and on PyPy3.9 (Debian's pypy3 7.3.11, cffi built
in). It must not import the rest of ``foundation`` (which needs Python 3.11),
so it loads its builder, ``fdn_cffi_build.py``, by path; load this module by path
too (``tools/pypy_bench.py`` and the tests do)::

    spec = importlib.util.spec_from_file_location("cffi_table", "tools/cffi/cffi_table.py")
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["CffiTable", "default_build_dir", "load"]

_LIM = 1 << 63

# fdn_probe() results and fdn_shard_insert() flags (fdn_table.h; checked by load())
_MISS, _HIT, _CANDIDATE = 0, 1, 2
_CREATED_NS, _CREATED_OWN = 1, 2

# fields of an entry list
_NS, _NAME, _VALUE, _META, _OWNER, _PTRS, _KEEP = range(7)

# the identity given to lookups of keys whose id() does not fit a pointer:
# the id of an object that lives forever and is never stored, so it never HITs
_NO_ID_HOLDER = object()
_NO_ID = id(_NO_ID_HOLDER)

_MODULE = "_fdn_cffi"
_loaded: dict[str, Any] = {}


def default_build_dir() -> str:
    """Where :func:`load` builds by default: ``$FDN_CFFI_BUILD_DIR``, else a
    per-interpreter directory under ``$XDG_CACHE_HOME`` (``~/.cache``)."""
    env = os.environ.get("FDN_CFFI_BUILD_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = sys.implementation.cache_tag or sys.implementation.name
    return os.path.join(base, "trio-foundation", "fdn_cffi-" + tag)


def _import_path(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {name} from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load(build_dir: str | None = None, *, verbose: bool = False) -> Any:
    """Build ``_fdn_cffi`` into ``build_dir`` if needed, import it, and install
    the core's allocator (a counting one with failure injection, through
    ``fdn_set_allocator``). Returns the module (``.ffi``, ``.lib``).

    Once imported, the same module is returned whatever ``build_dir`` says
    (an extension module cannot be loaded twice in one process).
    """
    mod = _loaded.get(_MODULE)
    if mod is not None:
        return mod
    mod = sys.modules.get(_MODULE)
    if mod is None:
        here = os.path.dirname(os.path.abspath(__file__))
        builder = _import_path("fdn_cffi_build", os.path.join(here, "fdn_cffi_build.py"))
        path = builder.build(build_dir or default_build_dir(), verbose=verbose)
        mod = _import_path(_MODULE, path)
        sys.modules[_MODULE] = mod
    ffi, lib = mod.ffi, mod.lib
    if (lib.FDN_MISS, lib.FDN_HIT, lib.FDN_CANDIDATE, lib.FDN_CREATED_NS, lib.FDN_CREATED_OWN) != (
        _MISS,
        _HIT,
        _CANDIDATE,
        _CREATED_NS,
        _CREATED_OWN,
    ):
        raise ImportError("the constants of fdn_table.h changed")
    alloc = ffi.new(
        "fdn_allocator *",
        [
            ffi.addressof(lib, "fdn_cffi_malloc"),
            ffi.addressof(lib, "fdn_cffi_calloc"),
            ffi.addressof(lib, "fdn_cffi_free"),
        ],
    )
    # before any table exists: the core copies the struct
    lib.fdn_set_allocator(alloc)
    # the shard array a closed table reads from (always empty)
    empty = lib.fdn_cffi_shards_new(1)
    if empty == ffi.NULL:
        raise MemoryError()
    _loaded["empty"] = empty
    _loaded[_MODULE] = mod
    return mod


def _lookup_id(obj: Any) -> int:
    """The pointer a lookup probes with: ``id(obj)`` if it fits."""
    i = id(obj)
    return i if -_LIM <= i < _LIM else _NO_ID


def _stored_id(obj: Any) -> tuple[int, Any]:
    """(pointer, keepalive) to store for ``obj``: its ``id()`` when that fits
    a non-NULL pointer, else the id of a fresh holder object (kept alive with
    the entry), so a PyPy value-identity int/float never aliases another."""
    i = id(obj)
    if i != 0 and -_LIM <= i < _LIM:
        return i, None
    holder = object()
    return id(holder), holder


def _pin(pins: dict[int, list[Any]], p: int, obj: Any, keep: Any) -> None:
    pin = pins.get(p)
    if pin is None:
        pins[p] = [obj, 1, keep]
    else:
        pin[1] += 1


def _unpin(pins: dict[int, list[Any]], p: int) -> None:
    pin = pins[p]
    pin[1] -= 1
    if pin[1] == 0:
        del pins[p]


class CffiTable:
    """``(ns, name) -> value`` in the C core, reached through cffi.

    Args:
        partitions: number of shards (>= 1); a key's shard is picked from the
            high bits of its hash, as in the native backend.
        module: the ``_fdn_cffi`` module from :func:`load` (default: load it
            from :func:`default_build_dir`).

    Raises:
        MemoryError: the core could not allocate the shards.
    """

    __slots__ = (
        "__weakref__",
        "_cget",
        "_created",
        "_entries",
        "_ffi",
        "_lib",
        "_n",
        "_out",
        "_pins",
        "_res",
        "_ress",
        "_seq",
        "_sh",
    )

    def __init__(self, partitions: int = 1, module: Any = None) -> None:
        if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be an int >= 1, not {partitions!r}")
        mod = module if module is not None else load()
        ffi, lib = mod.ffi, mod.lib
        self._ffi = ffi
        self._lib = lib
        sh = lib.fdn_cffi_shards_new(partitions)
        if sh == ffi.NULL:
            raise MemoryError()
        # entry id -> entry: the stored entries (and through them their objects)
        self._entries: dict[int, list[Any]] = {}
        # pointer -> [object, refcount, keepalive]: the index lists' keys
        self._pins: dict[int, list[Any]] = {}
        self._n = partitions
        # The C memory is freed when the last reference to the shard array
        # goes, and the Python objects it names live until then: an operation
        # in progress (in a key's __eq__) when close() runs stays safe.
        self._sh = ffi.gc(
            sh, _Free(lib.fdn_cffi_shards_free, partitions, self._entries, self._pins)
        )
        self._res = ffi.new("fdn_cffi_res *")  # get()'s fast path only
        self._ress: list[Any] = []  # free result structs for the other paths
        self._out = ffi.new("fdn_cffi_removed *")  # delete()'s fast path only
        self._created = ffi.new("int *")
        self._seq = ffi.new("uint64_t *")
        self._cget = lib.fdn_cffi_get

    def __repr__(self) -> str:
        return f"<CffiTable partitions={self._n} count={len(self)}>"

    # ------------------------------------------------------------ probing

    def _find(
        self,
        sh: Any,
        n: int,
        entries: dict[int, list[Any]],
        ns: Any,
        name: Any,
        h1: int,
        h2: int,
        r: Any,
        started: bool = False,
    ) -> bool:
        """Probe for (ns, name) into ``r`` (a result struct the caller owns;
        ``started``: it already holds a first probe's CANDIDATE): True if
        found (``r.shard``, ``r.pos``, ``r.value`` say where).

        An ``__eq__`` may re-enter the table; if the shard changed meanwhile
        the probe restarts, as in the Cython binding.
        """
        a = _lookup_id(ns)
        b = _lookup_id(name)
        cnext = self._lib.fdn_cffi_next
        kind: int = r.kind if started else -1
        while True:
            if kind < 0:
                self._cget(sh, n, h1, h2, a, b, r)
                kind = r.kind
            while kind == _CANDIDATE:
                entry = entries[r.value]
                sn = entry[_NS]
                sm = entry[_NAME]
                eq = (sn is ns or sn == ns) and (sm is name or sm == name)
                kind = cnext(sh, a, b, 1 if eq else 0, r)
            if kind >= 0:
                return kind == _HIT

    def _find_list(
        self, sh: Any, shard: int, which: int, hk: int, key: Any, pins: Any, r: Any
    ) -> bool | None:
        """Probe shard's namespace (``which`` 0) or owner (1) index for
        ``key``: True found (``r.value`` is the list), False absent, None if
        the shard changed since ``r.version`` was recorded (restart)."""
        lib = self._lib
        k = _lookup_id(key)
        kind: int = lib.fdn_cffi_list_get(sh, shard, which, hk, k, r)
        while kind == _CANDIDATE:
            stored = pins[r.key][0]
            eq = stored is key or stored == key
            kind = lib.fdn_cffi_list_next(sh, which, k, 1 if eq else 0, r)
        if kind < 0:
            return None
        return kind == _HIT

    def _get_res(self) -> Any:
        ress = self._ress
        return ress.pop() if ress else self._ffi.new("fdn_cffi_res *")

    # ------------------------------------------------------------ reads

    def get(self, ns: Any, name: Any, default: Any = None) -> Any:
        """The value under ``(ns, name)``, or ``default``."""
        h1 = hash(ns)
        h2 = hash(name)
        r = self._res
        try:
            p = self._cget(self._sh, self._n, h1, h2, id(ns), id(name), r)
        except OverflowError:  # a PyPy id() wider than a pointer
            p = self._cget(self._sh, self._n, h1, h2, _lookup_id(ns), _lookup_id(name), r)
        if p:
            return self._entries[p][_VALUE]
        if r.kind == _MISS:
            return default
        # a CANDIDATE: same hash, other objects. Keep this result struct and
        # give the fast path a fresh one (an __eq__ may call get() again).
        self._res = self._get_res()
        entries = self._entries
        try:
            if self._find(self._sh, self._n, entries, ns, name, h1, h2, r, True):
                return entries[r.value][_VALUE]
            return default
        finally:
            self._ress.append(r)

    def entry(self, ns: Any, name: Any) -> tuple[Any, Any, Any] | None:
        """``(value, meta, owner)`` under ``(ns, name)``, or None."""
        entries = self._entries
        r = self._get_res()
        try:
            if not self._find(self._sh, self._n, entries, ns, name, hash(ns), hash(name), r):
                return None
            e = entries[r.value]
            return e[_VALUE], e[_META], e[_OWNER]
        finally:
            self._ress.append(r)

    def lookup(self, ns: Any, name: Any) -> Any:
        """The value under ``(ns, name)``.

        Raises:
            KeyError: nothing is stored there.
        """
        found = self.entry(ns, name)
        if found is None:
            raise KeyError((ns, name))
        return found[0]

    def __contains__(self, key: tuple[Any, Any]) -> bool:
        ns, name = key
        return self.entry(ns, name) is not None

    def __len__(self) -> int:
        sh = self._sh
        return sum(sh[k].main.used for k in range(self._n))

    def items(self) -> Iterator[tuple[tuple[Any, Any], tuple[Any, Any, Any]]]:
        """``((ns, name), (value, meta, owner))`` of every entry, shard by
        shard in slot order (a snapshot read from the C tables)."""
        ffi = self._ffi
        entries = self._entries
        out = []
        for k in range(self._n):
            t = self._sh[k].main
            for i in range(t.mask + 1):
                e = t.slots[i]
                if e.a != ffi.NULL:
                    x = entries[int(ffi.cast("intptr_t", e.value))]
                    out.append(((x[_NS], x[_NAME]), (x[_VALUE], x[_META], x[_OWNER])))
        return iter(out)

    # ------------------------------------------------------------ writes

    def insert(self, ns: Any, name: Any, value: Any, meta: Any = None, owner: Any = None) -> bool:
        """Store ``value`` under ``(ns, name)`` unless something is there.

        ``owner`` None: unowned. Returns True if inserted, False if the key
        was present (nothing changes then).

        Raises:
            MemoryError: the core could not allocate; the table is unchanged.
            RuntimeError: the table is closed.
        """
        sh, n, entries, pins = self._sh, self._n, self._entries, self._pins
        if n == 0:
            raise RuntimeError("table closed")
        h1 = hash(ns)
        h2 = hash(name)
        ho = 0 if owner is None else hash(owner)
        pa, ka = _stored_id(ns)
        pb, kb = _stored_id(name)
        pm, km = _stored_id(meta)
        po, ko = _stored_id(owner) if owner is not None else (0, None)
        keep = None
        if ka is not None or kb is not None or km is not None or ko is not None:
            keep = (ka, kb, km, ko)
        entry = [ns, name, value, meta, owner, (pa, pb, pm, po), keep]
        pe = id(entry)
        # Root the entry and pin ns / owner as the keys of lists the insert
        # may create *before* it, so a __del__ run by a GC pass in between
        # (which may re-enter the table) never sees a half-done insert; the
        # pins the insert did not need are dropped after it.
        entries[pe] = entry
        _pin(pins, pa, ns, ka)
        if owner is not None:
            _pin(pins, po, owner, ko)
        created = self._created
        rc = self._lib.fdn_cffi_insert_fast(
            sh, n, h1, h2, pa, pb, pe, pm, ho, po, self._seq, created
        )
        c = created[0] if rc == 0 else 0
        if rc == -3:  # a CANDIDATE: equality in Python
            rc, c = self._insert_slow(sh, n, entries, pins, entry, pe, h1, h2, ho)
        if not c & _CREATED_NS:
            _unpin(pins, pa)
        if owner is not None and not c & _CREATED_OWN:
            _unpin(pins, po)
        if rc == 0:
            return True
        del entries[pe]
        if rc == -1:
            raise MemoryError()
        return False

    def _insert_slow(
        self,
        sh: Any,
        n: int,
        entries: dict[int, list[Any]],
        pins: dict[int, list[Any]],
        entry: list[Any],
        pe: int,
        h1: int,
        h2: int,
        ho: int,
    ) -> tuple[int, int]:
        """insert() past a CANDIDATE: (0 inserted, 1 present or -1 no memory;
        the FDN_CREATED_* flags)."""
        ns, name, _, _, owner, (pa, pb, pm, po), _ = entry
        lib, null = self._lib, 0
        r = self._get_res()
        try:
            while True:
                if self._find(sh, n, entries, ns, name, h1, h2, r):
                    return 1, 0
                shard, h, ver = r.shard, r.h, r.version
                found = self._find_list(sh, shard, 0, h1, ns, pins, r)
                if found is None or r.version != ver:
                    continue
                nh, nsl = r.h, (r.value if found else null)
                oh, ownl = 0, null
                if owner is not None:
                    found = self._find_list(sh, shard, 1, ho, owner, pins, r)
                    if found is None or r.version != ver:
                        continue
                    oh, ownl = r.h, (r.value if found else null)
                rc: int = lib.fdn_cffi_insert(
                    sh, shard, ver, h, pa, pb, pe, pm, nh, nsl, po, oh, ownl,
                    self._seq, self._created,
                )  # fmt: skip
                if rc != -2:
                    return rc, (self._created[0] if rc == 0 else 0)
        finally:
            self._ress.append(r)

    def _release(self, out: Any, entries: dict[int, list[Any]], pins: Any) -> list[Any]:
        """Drop what the table held for a removed entry; returns the entry.

        Reads ``out`` before anything is dropped: dropping may run a
        ``__del__`` that deletes again (and reuses ``out``)."""
        value, ns_key, own_key = out.value, out.ns_key, out.own_key
        entry = entries.pop(value)
        if ns_key:
            _unpin(pins, ns_key)
        if own_key:
            _unpin(pins, own_key)
        return entry

    def delete(self, ns: Any, name: Any) -> bool:
        """Remove ``(ns, name)``; True if it was there. Never fails for lack
        of memory (the core then skips shrinking)."""
        sh, n, entries, pins = self._sh, self._n, self._entries, self._pins
        h1 = hash(ns)
        h2 = hash(name)
        out = self._out
        try:
            rc = self._lib.fdn_cffi_delete_fast(sh, n, h1, h2, id(ns), id(name), out)
        except OverflowError:  # a PyPy id() wider than a pointer
            rc = -3
        if rc == 1:
            return False
        if rc == -3:  # a CANDIDATE: equality in Python
            out = self._ffi.new("fdn_cffi_removed *")
            r = self._get_res()
            try:
                while True:
                    if not self._find(sh, n, entries, ns, name, h1, h2, r):
                        return False
                    if self._lib.fdn_cffi_remove(sh, r, out) == 0:
                        break
            finally:
                self._ress.append(r)
        # the table is consistent: now Python code may run (read out first:
        # releasing may run a __del__ that deletes again)
        self._release(out, entries, pins)
        return True

    def remove_owner(self, owner: Any) -> int:
        """Remove every entry of ``owner`` (None owns nothing); returns how
        many. Each shard's entries are removed in one C call."""
        if owner is None:
            return 0
        sh, n, entries, pins = self._sh, self._n, self._entries, self._pins
        ffi, lib = self._ffi, self._lib
        ho = hash(owner)
        total = 0
        r = self._get_res()
        try:
            for k in range(n):
                while True:
                    found = self._find_list(sh, k, 1, ho, owner, pins, r)
                    if found is None:
                        continue
                    if not found:
                        break
                    outs = ffi.new("fdn_cffi_removed[]", r.count)
                    removed = lib.fdn_cffi_remove_list(sh, r, outs, r.count)
                    if removed < 0:
                        continue  # allocating ran code that changed the shard
                    for i in range(removed):
                        self._release(outs + i, entries, pins)
                    total += removed
                    break
        finally:
            self._ress.append(r)
        return total

    def close(self) -> None:
        """Drop the C tables (freed once no operation in progress holds
        them); the table then reads as empty and refuses inserts.
        Idempotent."""
        if self._n == 0:
            return
        self._sh = _loaded["empty"]
        self._n = 0
        self._entries = {}
        self._pins = {}

    # ------------------------------------------------------------ checks

    def shard_info(self) -> list[dict[str, Any]]:
        """Per shard: (capacity, used) of main / ns / own, and the versions."""
        out = []
        for k in range(self._n):
            s = self._sh[k]
            out.append(
                {
                    "main": (s.main.mask + 1, s.main.used),
                    "ns": (s.ns.mask + 1, s.ns.used),
                    "own": (s.own.mask + 1, s.own.used),
                    "version": s.version,
                    "table_versions": (s.main.version, s.ns.version, s.own.version),
                }
            )
        return out

    def expected_blocks(self) -> int:
        """How many blocks the core's allocator should hold for this table:
        per shard 8 arrays (main slots and records, ns, own, the group index,
        member slots and records, the order vector; this binding traces no
        references, so no refs vector), plus one record per entry and one
        list per namespace / owner of each shard."""
        total = 0
        for k in range(self._n):
            s = self._sh[k]
            total += 8 + s.main.used + s.ns.used + s.own.used
        return total

    def check(self) -> None:
        """Walk the C structures and raise AssertionError on any broken
        invariant: table load and capacity, the linear-probing invariant (no
        empty slot between a key's home and its slot), stored hashes and
        shards, record back-pointers, index lists (links, counts, order,
        keys), and the Python-side roots and pins. For tests."""
        ffi, lib = self._ffi, self._lib
        n_lists = 0
        n_entries = 0
        for k in range(self._n):
            s = self._sh + k
            n_entries += s.main.used
            slots_by_rec = {}
            by_ns: dict[int, list[Any]] = {}
            by_own: dict[int, list[Any]] = {}
            t = s.main
            _check_table(ffi, t, with_recs=True)
            for i in range(t.mask + 1):
                e = t.slots[i]
                if e.a == ffi.NULL:
                    continue
                pe = int(ffi.cast("intptr_t", e.value))
                _expect(pe in self._entries, "entry not rooted")
                entry = self._entries[pe]
                _expect(id(entry) == pe, "entry id")
                pa, pb, pm, po = entry[_PTRS]
                _expect(int(ffi.cast("intptr_t", e.a)) == pa, "slot ns pointer")
                _expect(int(ffi.cast("intptr_t", e.b)) == pb, "slot name pointer")
                h = lib.fdn_mix2(
                    hash(entry[_NS]) & 0xFFFFFFFFFFFFFFFF, hash(entry[_NAME]) & 0xFFFFFFFFFFFFFFFF
                )
                _expect(e.hash == h, "stored hash")
                _expect(lib.fdn_shard_of(h, self._n) == k, "entry in the wrong shard")
                rec = t.recs[i]
                _expect(rec.slot == i, "record slot back-pointer")
                _expect(int(ffi.cast("intptr_t", rec.meta)) == pm, "record meta pointer")
                owned = rec.seq & lib.FDN_F_OWNED
                _expect(bool(owned) == (entry[_OWNER] is not None), "owned bit")
                if owned:
                    _expect(int(ffi.cast("intptr_t", rec.owner)) == po, "record owner")
                    by_own.setdefault(int(ffi.cast("intptr_t", rec.own_list)), []).append(rec)
                by_ns.setdefault(int(ffi.cast("intptr_t", rec.ns_list)), []).append(rec)
                slots_by_rec[int(ffi.cast("intptr_t", rec))] = entry
            for table, groups, field, key_of in (
                (s.ns, by_ns, "ns", _NS),
                (s.own, by_own, "own", _OWNER),
            ):
                _check_table(ffi, table, with_recs=False)
                seen = set()
                for i in range(table.mask + 1):
                    e = table.slots[i]
                    if e.a == ffi.NULL:
                        continue
                    n_lists += 1
                    lst = ffi.cast("fdn_list *", e.value)
                    addr = int(ffi.cast("intptr_t", lst))
                    seen.add(addr)
                    key_ptr = int(ffi.cast("intptr_t", e.a))
                    _expect(e.b == ffi.NULL, "index slot b")
                    _expect(lst.key == e.a and lst.hash == e.hash, "list key/hash")
                    _expect(key_ptr in self._pins, "list key not pinned")
                    key = self._pins[key_ptr][0]
                    _expect(e.hash == lib.fdn_mix1(hash(key) & 0xFFFFFFFFFFFFFFFF), "index hash")
                    recs = groups.get(addr, [])
                    _expect(lst.count == len(recs) > 0, f"{field} list count")
                    # walk the links: every member once, in insertion order
                    walked = []
                    prev = ffi.NULL
                    r = lst.first
                    while r != ffi.NULL:
                        _expect(getattr(r, field + "_prev") == prev, f"{field} prev link")
                        walked.append(r)
                        prev = r
                        r = getattr(r, field + "_next")
                    _expect(lst.last == prev, f"{field} list last")
                    _expect(
                        sorted(int(ffi.cast("intptr_t", x)) for x in walked)
                        == sorted(int(ffi.cast("intptr_t", x)) for x in recs),
                        f"{field} list members",
                    )
                    seqs = [x.seq >> lib.FDN_SEQ_SHIFT for x in walked]
                    _expect(seqs == sorted(seqs), f"{field} list order")
                    for x in walked:
                        member = slots_by_rec[int(ffi.cast("intptr_t", x))]
                        mk = member[key_of]
                        _expect(mk is key or mk == key, f"{field} list member key")
                _expect(seen == set(groups), f"{field} lists vs records")
            _check_order(ffi, lib, s.order, slots_by_rec)
        _expect(len(self._entries) == n_entries, "rooted entries")
        _expect(sum(p[1] for p in self._pins.values()) == n_lists, "pin counts")


def _check_order(ffi: Any, lib: Any, o: Any, recs: dict[int, Any]) -> None:
    """The shard's order vector: every name once, at its record's ``ord``,
    in insertion order, holes counted, the end marker after the last."""
    _expect(o.v != ffi.NULL, "order vector missing")
    _expect(o.n < o.cap, "order vector capacity")
    _expect(o.v[o.n] == ffi.addressof(lib.fdn_order_end), "order end marker")
    _expect(o.n == 0 or o.v[o.n - 1] != ffi.NULL, "order trailing hole")
    live = []
    for i in range(o.n):
        r = o.v[i]
        if r == ffi.NULL:
            continue
        _expect(r.ord == i, "order index back-pointer")
        live.append(r)
    _expect(o.n - len(live) == o.holes, "order holes count")
    _expect(
        sorted(int(ffi.cast("intptr_t", r)) for r in live) == sorted(recs),
        "order vector vs records",
    )
    seqs = [r.seq >> lib.FDN_SEQ_SHIFT for r in live]
    _expect(seqs == sorted(seqs), "order vector order")


def _expect(cond: Any, what: str) -> None:
    if not cond:
        raise AssertionError("fdn core invariant broken: " + what)


def _check_table(ffi: Any, t: Any, *, with_recs: bool) -> None:
    cap = t.mask + 1
    _expect(cap >= 8 and cap & (cap - 1) == 0, "capacity a power of two >= 8")
    _expect(t.used * 3 <= cap * 2, "load <= 2/3")
    used = 0
    for i in range(cap):
        e = t.slots[i]
        occupied = e.a != ffi.NULL
        if with_recs:
            _expect((t.recs[i] != ffi.NULL) == occupied, "record iff occupied")
        if not occupied:
            continue
        used += 1
        # linear probing: no hole between the key's home slot and its slot
        j = e.hash & t.mask
        while j != i:
            _expect(t.slots[j].a != ffi.NULL, "hole on a probe path")
            j = (j + 1) & t.mask
    _expect(used == t.used, "used count")


class _Free:
    """ffi.gc destructor of a table's shard array; holds the Python objects
    its pointers refer to until the C memory goes."""

    __slots__ = ("free", "keep", "n")

    def __init__(self, free: Any, n: int, *keep: Any) -> None:
        self.free = free
        self.n = n
        self.keep = keep

    def __call__(self, sh: Any) -> None:
        self.free(sh, self.n)
        self.keep = ()
