# cython: language_level=3, freethreading_compatible=True, binding=False
"""The native registry backend: a Cython binding over the C table in csrc/.

Layout (see csrc/fdn_table.h): ``partitions`` shards, each an open-addressing
table of 32-byte slots ``{hash, ns, name, value}`` plus a per-entry record
(metadata, owner, index links), a namespace index and an owner index.
``(ns, name)`` is hashed as two objects (no tuple is built; a str's cached
hash is read directly) and combined by a multiply-xorshift mixer whose high
bits pick the shard and low bits the slot.

Concurrency: any Python call (a key's ``__eq__``, ``same_value``, a DECREF
that runs ``__del__``, an allocation that runs the GC) can switch threads or
re-enter the registry. So keys are hashed before a shard is touched; after
every Python call made while probing, the shard's ``version`` is re-checked
and the probe restarts if it moved (as CPython's dict does); every mutation
is applied with no Python call in between; references to removed objects are
dropped only once the table is consistent. On free-threaded builds each
shard's reads and writes run in a critical section on the shard's lock
object (a no-op under the GIL, where reads take no lock).

The pure-Python twin (``_python.py``) is the typed reference; both raise the
same ``foundation.errors`` classes and share the ``_keys``/``_events``/
``_groups``/``_query``/``_mdindex`` helpers.
"""

cimport cython
from cpython.list cimport PyList_New
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uint64_t
from libc.stdlib cimport qsort

import os
import threading

from foundation.errors import (
    AlreadyRegistered,
    ConfigError,
    InvalidKey,
    NotRegistered,
    RegistryClosed,
)
from foundation.registry._events import Listeners
from foundation.registry._groups import GroupTable
from foundation.registry._keys import (
    check_owner,
    copy_metadata,
    invalid_key,
    same_owner,
    same_value,
)
from foundation.registry._mdindex import MetadataIndex
from foundation.registry._types import (
    EMPTY_METADATA,
    EventKind,
    Health,
    Registration,
    RegistryEvent,
    RegistryStats,
)

__all__ = ["NativeBackend"]

fdn_use_python_allocator()

cdef object _EMPTY = EMPTY_METADATA
cdef PyTypeObject *_REG_T = <PyTypeObject *>Registration
cdef PyTypeObject *_EVENT_T = <PyTypeObject *>RegistryEvent
cdef object _REGISTERED = EventKind.REGISTERED
cdef object _UPDATED = EventKind.UPDATED
cdef object _UNREGISTERED = EventKind.UNREGISTERED


# ---------------------------------------------------------------- helpers

# what NativeBackend._value returns on a miss
cdef object _MISSING = object()

cdef int _raise_key(object ns, object name) except -1:
    """Raise the pending hash/``__eq__`` error of key (ns, name) as InvalidKey."""
    cdef PyObject *p = fdn_fetch_exception()
    if p == NULL:
        raise SystemError("foundation: key error without an exception")
    exc = <object>p
    fdn_decref(p)
    if not isinstance(exc, Exception):
        raise exc  # KeyboardInterrupt, trio.Cancelled: never wrapped
    raise invalid_key(ns, name, exc) from exc


cdef inline int _key_hash(object ns, object name, uint64_t *out) except -1:
    """The combined hash of key (ns, name), built from the two objects'
    own (cached, for str) hashes: no key tuple is ever made. A failing
    __hash__ is raised as InvalidKey."""
    cdef Py_hash_t h1 = fdn_hash(<PyObject *>ns)
    cdef Py_hash_t h2
    if h1 == -1:
        _raise_key(ns, name)
    h2 = fdn_hash(<PyObject *>name)
    if h2 == -1:
        _raise_key(ns, name)
    out[0] = fdn_mix2(<uint64_t>h1, <uint64_t>h2)
    return 0


cdef int _raise_owner(object owner) except -1:
    """Raise the pending hash error of ``owner`` as InvalidKey(owner, ...)."""
    cdef PyObject *p = fdn_fetch_exception()
    if p == NULL:
        raise SystemError("foundation: owner error without an exception")
    exc = <object>p
    fdn_decref(p)
    if not isinstance(exc, Exception):
        raise exc
    check_owner(owner)  # raises the shared message, from its own error
    raise InvalidKey(
        owner, f"owner must be hashable; hashing it raised {type(exc).__name__}: {exc}"
    ) from exc


cdef inline object _reg(object ns, object name, object value, object md, object owner):
    return fdn_make_record5(_REG_T, ns, name, value, md, owner)


cdef inline object _event(object kind, object reg):
    return fdn_make_record2(_EVENT_T, kind, reg)


cdef struct _item:
    uint64_t seq
    PyObject *p[5]   # ns, name, value, metadata, owner (Py_None if unowned)


cdef struct _buf:
    _item *items
    size_t n
    size_t cap


cdef int _grow(void **items, size_t *cap, size_t need, size_t size) except -1:
    """Make room for ``need`` items of ``size`` bytes (doubling, from 16)."""
    cdef size_t c
    cdef void *p
    if need <= cap[0]:
        return 0
    c = cap[0] * 2 if cap[0] else 16
    if c < need:
        c = need
    p = PyMem_Realloc(items[0], c * size)
    if p == NULL:
        raise MemoryError()
    items[0] = p
    cap[0] = c
    return 0


cdef inline int _buf_reserve(_buf *b, size_t extra) except -1:
    return _grow(<void **>&b.items, &b.cap, b.n + extra, sizeof(_item))


cdef void _buf_release(_buf *b, bint full) noexcept:
    cdef size_t i
    cdef int k
    for i in range(b.n):
        # XDECREF: a select scan empties the items it drops or moves
        if full:
            for k in range(5):
                fdn_xdecref(b.items[i].p[k])
        else:
            fdn_xdecref(b.items[i].p[1])
    PyMem_Free(b.items)
    b.items = NULL
    b.n = b.cap = 0


# What a select scan holds of an entry while its metadata is tested: no
# reference to its key or value, so entries that do not match stay untouched.
cdef struct _light:
    size_t slot
    PyObject *meta
    bint hit


cdef struct _lbuf:
    _light *items
    size_t n
    size_t cap


cdef inline int _lbuf_reserve(_lbuf *b, size_t extra) except -1:
    return _grow(<void **>&b.items, &b.cap, b.n + extra, sizeof(_light))


cdef inline void _lbuf_add(_lbuf *b, fdn_rec *rec) noexcept:
    """Append ``rec`` (room reserved) with a new reference to its metadata."""
    cdef _light *it = &b.items[b.n]
    it.slot = rec.slot
    it.meta = <PyObject *>rec.meta
    it.hit = False
    fdn_incref(it.meta)
    b.n += 1


cdef void _lbuf_clear(_lbuf *b) noexcept:
    """Drop the metadata references (may run __del__); keep the memory."""
    cdef size_t i, n = b.n
    b.n = 0
    for i in range(n):
        fdn_decref(b.items[i].meta)


cdef int _cmp_items(const void *x, const void *y) noexcept nogil:
    cdef uint64_t a = (<const _item *>x).seq
    cdef uint64_t b = (<const _item *>y).seq
    return (a > b) - (a < b)


cdef list _registrations_of(_buf *b, bint mixed):
    """The full items of ``b`` as a list of Registrations; ``mixed``: they
    came from several shards, so sort them into registration order first."""
    cdef size_t i
    cdef list out
    cdef _item *it
    if mixed:
        qsort(b.items, b.n, sizeof(_item), _cmp_items)
    out = PyList_New(b.n)
    for i in range(b.n):
        it = &b.items[i]
        reg = _reg(<object>it.p[0], <object>it.p[1], <object>it.p[2],
                   <object>it.p[3], <object>it.p[4])
        fdn_incref(<PyObject *>reg)  # the list's own reference
        fdn_list_set_item(out, i, <PyObject *>reg)
    return out


cdef inline void _take(_buf *b, fdn_shard *s, fdn_rec *rec, bint full) noexcept:
    """Append entry ``rec`` to ``b`` (room reserved), with new references."""
    cdef fdn_slot *e = &s.main.slots[rec.slot]
    cdef _item *it = &b.items[b.n]
    cdef PyObject *owner
    it.seq = rec.seq >> 1
    it.p[1] = <PyObject *>e.b
    fdn_incref(it.p[1])
    if full:
        owner = <PyObject *>FDN_REC_OWNER(rec)
        if owner == NULL:
            owner = <PyObject *>None
        it.p[0] = <PyObject *>e.a
        it.p[2] = <PyObject *>e.value
        it.p[3] = <PyObject *>rec.meta
        it.p[4] = owner
        fdn_incref(it.p[0])
        fdn_incref(it.p[2])
        fdn_incref(it.p[3])
        fdn_incref(it.p[4])
    b.n += 1


cdef void _free_shards(fdn_shard *sh, size_t n) noexcept:
    """Drop every reference the shards hold, then free their C memory."""
    cdef size_t k, i
    cdef fdn_shard *s
    cdef fdn_rec *rec
    for k in range(n):
        s = &sh[k]
        if s.main.slots != NULL:
            for i in range(s.main.mask + 1):
                if s.main.slots[i].a == NULL:
                    continue
                rec = s.main.recs[i]
                fdn_decref(<PyObject *>s.main.slots[i].a)
                fdn_decref(<PyObject *>s.main.slots[i].b)
                fdn_decref(<PyObject *>s.main.slots[i].value)
                fdn_decref(<PyObject *>rec.meta)
                if FDN_REC_OWNED(rec):
                    fdn_decref(<PyObject *>rec.owner)
        _drop_keys(&s.ns)
        _drop_keys(&s.own)
        fdn_shard_free(s)
    PyMem_Free(sh)


cdef void _drop_keys(fdn_table *t) noexcept:
    """Release the references an index table's lists hold on their keys."""
    cdef size_t i
    if t.slots == NULL:
        return
    for i in range(t.mask + 1):
        if t.slots[i].a != NULL:
            fdn_decref(<PyObject *>t.slots[i].a)


@cython.final
cdef class _ShardLock:
    """The object a shard's critical section locks (free-threaded builds)."""


def _inject_alloc_failure(Py_ssize_t after):
    """Test hook: make the table allocation after ``after`` more fail
    (-1 disarms). Not part of the API."""
    fdn_inject_alloc_failure(after)


def _check_partitions(partitions):
    if partitions is None:
        return os.cpu_count() or 1
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ConfigError(
            f"partitions must be an int >= 1 (or None for os.cpu_count()), not {partitions!r}"
        )
    return partitions


# ---------------------------------------------------------------- backend

@cython.final
cdef class NativeBackend:
    """Sharded in-process registry table in C.

    See :mod:`foundation.registry._backend` for the contract every method
    follows; the facade binds its reads and ``*_nowait`` writes straight to
    these methods.

    Args:
        partitions: number of shards; default ``os.cpu_count()``.
        indexes: top-level metadata fields to index, so equality ``select``
            on them costs O(matches).

    Raises:
        ConfigError: ``partitions`` is not an int >= 1, or an index field is
            not a non-empty str.
    """

    cdef fdn_shard *_sh
    cdef PyObject **_locks      # borrowed from _lock_objs
    cdef size_t _n
    cdef uint64_t _seq
    cdef bint _closed
    cdef Py_ssize_t _nsubs      # live subscriptions: writes build events only if > 0
    cdef Py_ssize_t _group_writes
    cdef readonly Py_ssize_t partitions
    cdef tuple _lock_objs
    cdef object _listeners
    cdef object _groups
    cdef object _index
    cdef object _index_lock
    cdef object __weakref__

    name = "native"
    is_async = False

    def __cinit__(self, partitions=None, indexes=()):
        cdef size_t i, n
        n = _check_partitions(partitions)
        self._index = MetadataIndex(indexes) if indexes else None
        self._index_lock = threading.RLock() if indexes else None
        self._listeners = Listeners()
        self._groups = GroupTable(self._listeners.notify)
        self._lock_objs = tuple([_ShardLock() for _ in range(n)])
        self._locks = <PyObject **>PyMem_Calloc(n, sizeof(PyObject *))
        self._sh = <fdn_shard *>PyMem_Calloc(n, sizeof(fdn_shard))
        if self._locks == NULL or self._sh == NULL:
            raise MemoryError()
        for i in range(n):
            self._locks[i] = <PyObject *>self._lock_objs[i]
            if fdn_shard_init(&self._sh[i]) < 0:
                raise MemoryError()
            self._n = i + 1
        self.partitions = n

    def __dealloc__(self):
        cdef fdn_shard *sh = self._sh
        cdef size_t n = self._n
        self._sh = NULL
        self._n = 0
        PyMem_Free(self._locks)
        self._locks = NULL
        if sh != NULL:
            _free_shards(sh, n)

    cdef int _clear(self) except -1:
        """tp_clear: drop every entry (the GC found the backend in a cycle)."""
        cdef fdn_shard *fresh
        cdef fdn_shard *old = self._sh
        cdef size_t k, i, n = self._n
        if old == NULL:
            return 0
        fresh = <fdn_shard *>PyMem_Calloc(n, sizeof(fdn_shard))
        if fresh == NULL:
            raise MemoryError()
        for k in range(n):
            if fdn_shard_init(&fresh[k]) < 0:
                for i in range(k):
                    fdn_shard_free(&fresh[i])
                PyMem_Free(fresh)
                raise MemoryError()
        self._sh = fresh  # consistent (empty) before any DECREF runs code
        _free_shards(old, n)
        return 0


    def __repr__(self):
        state = "closed" if self._closed else "open"
        return f"<NativeBackend partitions={self.partitions} count={self.count()} {state}>"

    @property
    def closed(self):
        """True once :meth:`close` was called."""
        return self._closed

    # ------------------------------------------------------------ probing

    cdef inline int _find(self, fdn_shard *s, uint64_t h, object ns, object name,
                          size_t *pos) noexcept:
        """Locate (ns, name) in the shard: 1 found (slot in *pos), 0 absent,
        -1 with an exception set (a key's ``__eq__`` raised).

        Restarts whenever an ``__eq__`` call let the shard change.
        """
        cdef uint64_t ver
        cdef int r
        cdef fdn_slot *e
        while True:
            ver = s.version
            pos[0] = <size_t>h & s.main.mask
            while True:
                r = fdn_probe(&s.main, h, <PyObject *>ns, <PyObject *>name, pos)
                if r != FDN_CANDIDATE:
                    return r
                e = &s.main.slots[pos[0]]
                r = fdn_pair_eq(<PyObject *>e.a, <PyObject *>e.b,
                                <PyObject *>ns, <PyObject *>name)
                if r < 0:
                    return -1
                if s.version != ver:
                    break  # the table moved under the __eq__: probe again
                if r:
                    return 1
                pos[0] = (pos[0] + 1) & s.main.mask

    cdef inline int _find_list(self, fdn_shard *s, fdn_table *t, uint64_t h,
                               object key, uint64_t ver, fdn_list **out) noexcept:
        """Find key's list in index table t: 1 found, 0 absent, 2 the shard
        changed since ``ver`` (restart), -1 with an exception set."""
        cdef size_t pos = <size_t>h & t.mask
        cdef int r
        while True:
            r = fdn_probe(t, h, <PyObject *>key, NULL, &pos)
            if r == FDN_HIT:
                out[0] = <fdn_list *>t.slots[pos].value
                return 1
            if r == FDN_MISS:
                return 0
            r = fdn_eq(<PyObject *>t.slots[pos].a, <PyObject *>key)
            if r < 0:
                return -1
            if s.version != ver:
                return 2
            if r:
                out[0] = <fdn_list *>t.slots[pos].value
                return 1
            pos = (pos + 1) & t.mask

    cdef inline fdn_shard *_shard(self, uint64_t h, size_t *idx) noexcept:
        idx[0] = fdn_shard_of(h, self._n)
        return &self._sh[idx[0]]

    # ------------------------------------------------------------ reads

    cdef inline object _value(self, object ns, object name):
        """The value under (ns, name), or _MISSING; counts the hit or miss.

        The one read path of lookup() and get(); inlined into both (the class
        is final), so neither pays a call for sharing it.
        """
        cdef uint64_t h
        cdef size_t idx, pos
        cdef fdn_shard *s
        cdef int r
        _key_hash(ns, name, &h)
        s = self._shard(h, &idx)
        if not FDN_FREETHREADED:
            # the hot path: under the GIL a probe that calls no Python code
            # is atomic, so it needs no lock (not even the no-op one)
            pos = <size_t>h & s.main.mask
            if fdn_probe(&s.main, h, <PyObject *>ns, <PyObject *>name, &pos) == FDN_HIT:
                s.hits += 1
                return <object>s.main.slots[pos].value
        with cython.critical_section(<object>self._locks[idx]):
            pos = <size_t>h & s.main.mask
            r = fdn_probe(&s.main, h, <PyObject *>ns, <PyObject *>name, &pos)
            if r == FDN_HIT:
                s.hits += 1
                return <object>s.main.slots[pos].value
            if r == FDN_CANDIDATE:
                r = self._find(s, h, ns, name, &pos)
                if r == 1:
                    s.hits += 1
                    return <object>s.main.slots[pos].value
                if r < 0:
                    _raise_key(ns, name)
            s.misses += 1
        return _MISSING

    def lookup(self, ns, name):
        """Return the value registered under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        cdef object v = self._value(ns, name)
        if v is _MISSING:
            raise NotRegistered((ns, name))
        return v

    def get(self, ns, name, default=None):
        """Return the value under ``(ns, name)``, or ``default``.

        Raises:
            InvalidKey: the key cannot be hashed or compared.
        """
        cdef object v = self._value(ns, name)
        return default if v is _MISSING else v

    def contains(self, ns, name):
        """True if ``(ns, name)`` is registered (a unique name, not a group)."""
        cdef uint64_t h
        cdef size_t idx, pos
        cdef fdn_shard *s
        cdef int r
        _key_hash(ns, name, &h)
        s = self._shard(h, &idx)
        with cython.critical_section(<object>self._locks[idx]):
            r = self._find(s, h, ns, name, &pos)
            if r < 0:
                _raise_key(ns, name)
        return r == 1

    cdef object _registration(self, object ns, object name, bint missing_raises):
        """The live Registration of (ns, name); None (or NotRegistered) if absent."""
        cdef uint64_t h
        cdef size_t idx, pos
        cdef fdn_shard *s
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef int r
        _key_hash(ns, name, &h)
        s = self._shard(h, &idx)
        with cython.critical_section(<object>self._locks[idx]):
            r = self._find(s, h, ns, name, &pos)
            if r < 0:
                _raise_key(ns, name)
            if r == 1:
                e = &s.main.slots[pos]
                rec = s.main.recs[pos]
                # strong references first: building the tuple may run the GC
                a = <object>e.a
                b = <object>e.b
                v = <object>e.value
                m = <object>rec.meta
                o = <object>rec.owner if FDN_REC_OWNED(rec) else None
        if r == 1:
            return _reg(a, b, v, m, o)
        if missing_raises:
            raise NotRegistered((ns, name))
        return None

    def lookup_with_metadata(self, ns, name):
        """Return the whole :class:`Registration` under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._registration(ns, name, True)

    def metadata(self, ns, name):
        """Return the read-only metadata under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._registration(ns, name, True)[3]

    cdef int _gather(self, object ns, _buf *b, bint full, bint *mixed,
                     bint all_ns) except -1:
        """Append every entry of ``ns`` (all_ns: of every namespace; None is
        otherwise a namespace like any other) to ``b`` with new
        references; each shard is read atomically. *mixed: entries came from
        more than one shard (so they need sorting into registration order)."""
        cdef Py_hash_t hn = 0
        cdef uint64_t nh = 0, ver
        cdef size_t k, i, shards = 0
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef fdn_rec *rec
        cdef int r
        if not all_ns:
            hn = fdn_hash(<PyObject *>ns)
            if hn == -1:
                _raise_key(ns, None)
            nh = fdn_mix1(<uint64_t>hn)
        for k in range(self._n):
            s = &self._sh[k]
            with cython.critical_section(<object>self._locks[k]):
                if all_ns:
                    if s.main.used:
                        shards += 1
                        _buf_reserve(b, s.main.used)
                        for i in range(s.main.mask + 1):
                            rec = s.main.recs[i]
                            if rec != NULL:
                                _take(b, s, rec, full)
                else:
                    while True:
                        ver = s.version
                        r = self._find_list(s, &s.ns, nh, ns, ver, &l)
                        if r < 0:
                            _raise_key(ns, None)
                        if r != 2:
                            break
                    if r == 1:
                        shards += 1
                        _buf_reserve(b, l.count)
                        rec = l.first
                        while rec != NULL:
                            _take(b, s, rec, full)
                            rec = rec.ns_next
        mixed[0] = shards > 1
        return 0

    def names(self, ns):
        """The unique names registered in ``ns`` (groups excluded), in
        registration order; O(partitions + entries of ns)."""
        cdef _buf b
        cdef bint mixed = False
        cdef size_t i
        cdef list out
        b.items = NULL
        b.n = b.cap = 0
        try:
            self._gather(ns, &b, False, &mixed, False)
            if mixed:
                qsort(b.items, b.n, sizeof(_item), _cmp_items)
            out = PyList_New(b.n)
            for i in range(b.n):
                fdn_incref(b.items[i].p[1])  # the list's own reference
                fdn_list_set_item(out, i, b.items[i].p[1])
        finally:
            _buf_release(&b, False)
        return out

    def registrations(self, ns=None):
        """Every registration of ``ns`` (``None``: of every namespace), in
        registration order."""
        cdef _buf b
        cdef bint mixed = False
        cdef size_t i
        cdef list out
        cdef _item *it
        b.items = NULL
        b.n = b.cap = 0
        try:
            self._gather(ns, &b, True, &mixed, ns is None)
            out = _registrations_of(&b, mixed)
        finally:
            _buf_release(&b, True)
        return out

    def list_all(self):
        """Every registration (the seed system's callback name)."""
        return self.registrations(None)

    def count(self, ns=None):
        """How many unique names ``ns`` has (``None``: all namespaces)."""
        cdef Py_hash_t hn
        cdef uint64_t nh, ver
        cdef size_t k, total = 0
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef int r
        if ns is None:
            for k in range(self._n):
                total += self._sh[k].main.used
            return total
        hn = fdn_hash(<PyObject *>ns)
        if hn == -1:
            _raise_key(ns, None)
        nh = fdn_mix1(<uint64_t>hn)
        for k in range(self._n):
            s = &self._sh[k]
            with cython.critical_section(<object>self._locks[k]):
                while True:
                    ver = s.version
                    r = self._find_list(s, &s.ns, nh, ns, ver, &l)
                    if r < 0:
                        _raise_key(ns, None)
                    if r != 2:
                        break
                if r == 1:
                    total += l.count
        return total

    def __len__(self):
        cdef size_t k, total = 0
        for k in range(self._n):
            total += self._sh[k].main.used
        return total

    def select(self, ns, query):
        """Registrations of ``ns`` (``None``: all) whose metadata matches ``query``.

        Uses a metadata index when ``query`` tests an indexed field for
        equality (O(matches)); otherwise scans the namespace. Exceptions from
        the query's predicate propagate.
        """
        if self._index is not None:
            keys = self._index.candidates(ns, query)
            if keys is not None:
                out = []
                for kns, kname in keys:
                    reg = self._registration(kns, kname, False)
                    if reg is not None and query.matches(reg):
                        out.append(reg)
                return out
        if query.predicate is not None:
            return [reg for reg in self.registrations(ns) if query.matches(reg)]
        return self._scan(ns, query.metadata_matches)

    cdef list _scan(self, object ns, object matches):
        """The registrations of ``ns`` whose metadata passes ``matches``, in
        registration order, touching only the metadata of entries that do
        not match.

        Shard by shard: take the slot, seq and a reference to the metadata of
        each entry (under the shard's lock), test them (Python code, no
        lock), then, if the shard did not change meanwhile, take the whole
        entries of the matches from their slots. A shard that changed is
        read again; after a few tries the query falls back to
        :meth:`_scan_full`, which holds references to every entry.
        """
        cdef _buf b
        cdef _lbuf lb
        cdef bint all_ns = ns is None
        cdef bint done
        cdef size_t k, i, shards = 0, before
        cdef uint64_t ver
        cdef int tries
        cdef fdn_shard *s
        cdef list out
        cdef _item *it
        b.items = NULL
        b.n = b.cap = 0
        lb.items = NULL
        lb.n = lb.cap = 0
        try:
            for k in range(self._n):
                s = &self._sh[k]
                tries = 0
                while True:
                    tries += 1
                    if tries > 3:
                        return self._scan_full(ns, matches)
                    with cython.critical_section(<object>self._locks[k]):
                        ver = self._gather_light(s, ns, all_ns, &lb)
                    for i in range(lb.n):
                        lb.items[i].hit = bool(matches(<object>lb.items[i].meta))
                    done = False
                    before = b.n
                    with cython.critical_section(<object>self._locks[k]):
                        if s.version == ver:
                            done = True
                            for i in range(lb.n):
                                if lb.items[i].hit:
                                    _buf_reserve(&b, 1)
                                    _take(&b, s, s.main.recs[lb.items[i].slot], True)
                    _lbuf_clear(&lb)
                    if done:
                        if b.n > before:
                            shards += 1
                        break
            out = _registrations_of(&b, shards > 1)
        finally:
            _lbuf_clear(&lb)
            PyMem_Free(lb.items)
            _buf_release(&b, True)
        return out

    cdef uint64_t _gather_light(self, fdn_shard *s, object ns, bint all_ns,
                                _lbuf *lb) except? 0:
        """Append (slot, seq, new metadata reference) of every entry of
        ``ns`` in shard ``s`` to ``lb``; returns the shard version they were
        read at. The caller holds the shard's lock."""
        cdef Py_hash_t hn
        cdef uint64_t ver
        cdef size_t i
        cdef fdn_list *l
        cdef fdn_rec *rec
        cdef int r
        if all_ns:
            # namespace by namespace, each in registration order: records
            # allocated one after another sit together in memory, where a
            # walk of the slots (hash order) would jump to a new line each time
            ver = s.version
            _lbuf_reserve(lb, s.main.used)
            for i in range(s.ns.mask + 1):
                if s.ns.slots[i].a == NULL:
                    continue
                rec = (<fdn_list *>s.ns.slots[i].value).first
                while rec != NULL:
                    _lbuf_add(lb, rec)
                    rec = rec.ns_next
            return ver
        hn = fdn_hash(<PyObject *>ns)
        if hn == -1:
            _raise_key(ns, None)
        while True:
            ver = s.version
            r = self._find_list(s, &s.ns, fdn_mix1(<uint64_t>hn), ns, ver, &l)
            if r < 0:
                _raise_key(ns, None)
            if r != 2:
                break
        ver = s.version  # an __eq__ above may have run: read it once settled
        if r == 1:
            _lbuf_reserve(lb, l.count)
            rec = l.first
            while rec != NULL:
                _lbuf_add(lb, rec)
                rec = rec.ns_next
        return ver

    cdef list _scan_full(self, object ns, object matches):
        """The registrations of ``ns`` whose metadata passes ``matches``, in
        registration order. Tests the stored metadata before anything is
        built, so a 1% query over 1e5 entries builds 1e3 registrations, not
        1e5."""
        cdef _buf b
        cdef bint mixed = False
        cdef size_t i, j = 0
        cdef int k
        cdef list out
        cdef _item *it
        b.items = NULL
        b.n = b.cap = 0
        try:
            self._gather(ns, &b, True, &mixed, ns is None)
            for i in range(b.n):
                it = &b.items[i]
                if matches(<object>it.p[3]):
                    if j != i:
                        b.items[j] = it[0]
                        for k in range(5):
                            it.p[k] = NULL  # moved: _buf_release skips it
                    j += 1
                else:
                    for k in range(5):
                        fdn_xdecref(it.p[k])
                        it.p[k] = NULL
            b.n = j
            out = _registrations_of(&b, mixed)
        finally:
            _buf_release(&b, True)
        return out

    def members(self, ns, group):
        """The members of group ``(ns, group)``, in join order."""
        return self._groups.members(ns, group)

    def member_count(self, ns, group):
        """How many members group ``(ns, group)`` has."""
        return self._groups.member_count(ns, group)

    def memberships(self, ns=None):
        """Every group membership of ``ns`` (``None``: all); used by ``migrate``."""
        return self._groups.all(ns)

    # ------------------------------------------------------------ writes

    def register(self, ns, name, value, metadata=None, *, owner=None):
        """Register ``value`` under ``(ns, name)``; atomic check-and-insert.

        Re-registering the same value (``is``/``==``) by the same owner
        replaces the metadata (an ``updated`` event); the stored key, value
        and owner stay as first registered.

        Returns:
            The registration now stored.

        Raises:
            AlreadyRegistered: another value or owner holds the key.
            InvalidKey: the key or the owner cannot be hashed or compared.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        cdef Py_hash_t h1, h2, ho = 0
        if self._closed:
            raise RegistryClosed()
        # None is by far the common case: skip the helper call for it
        md = _EMPTY if metadata is None else copy_metadata(metadata)
        if owner is not None:
            ho = fdn_hash(<PyObject *>owner)
            if ho == -1:
                _raise_owner(owner)
        h1 = fdn_hash(<PyObject *>ns)
        if h1 == -1:
            _raise_key(ns, name)
        h2 = fdn_hash(<PyObject *>name)
        if h2 == -1:
            _raise_key(ns, name)
        if self._index is None:
            return self._register(ns, name, value, md, owner, <uint64_t>h1,
                                  <uint64_t>h2, <uint64_t>ho)
        with self._index_lock:
            return self._register(ns, name, value, md, owner, <uint64_t>h1,
                                  <uint64_t>h2, <uint64_t>ho)

    cdef object _register(self, object ns, object name, object value, object md,
                          object owner, uint64_t h1, uint64_t h2, uint64_t ho):
        cdef uint64_t h = fdn_mix2(h1, h2)
        cdef uint64_t ver, seq
        cdef uint64_t nh = fdn_mix1(h1)
        cdef uint64_t oh = fdn_mix1(ho)
        cdef size_t idx, pos
        cdef fdn_shard *s = self._shard(h, &idx)
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef fdn_list *nsl
        cdef fdn_list *ownl
        cdef PyObject *old_md = NULL
        cdef int r, created = 0
        cdef bint same
        cdef object reg
        cdef object kind
        cur_ns = cur_name = cur_value = cur_owner = None
        with cython.critical_section(<object>self._locks[idx]):
            while True:
                # drop what a previous pass held *before* probing: the last
                # reference to a value removed meanwhile may run __del__,
                # which must not happen between the probe and the write
                cur_ns = cur_name = cur_value = cur_owner = None
                if self._closed:
                    raise RegistryClosed()
                r = self._find(s, h, ns, name, &pos)
                if r < 0:
                    _raise_key(ns, name)
                ver = s.version
                if r == 1:
                    e = &s.main.slots[pos]
                    rec = s.main.recs[pos]
                    cur_ns = <object>e.a
                    cur_name = <object>e.b
                    cur_value = <object>e.value
                    cur_owner = <object>rec.owner if FDN_REC_OWNED(rec) else None
                    same = ((cur_value is value or same_value(cur_value, value))
                            and (cur_owner is owner or same_owner(cur_owner, owner)))
                    if s.version != ver:
                        continue  # an __eq__ re-entered and changed the shard
                    if not same:
                        s.conflicts += 1
                        cur_md = <object>s.main.recs[pos].meta
                        raise AlreadyRegistered(
                            (ns, name), _reg(cur_ns, cur_name, cur_value, cur_md, cur_owner)
                        )
                    fdn_incref(<PyObject *>md)
                    old_md = <PyObject *>fdn_shard_set_meta(s, pos, <void *>md)
                    break
                nsl = NULL
                r = self._find_list(s, &s.ns, nh, ns, ver, &nsl)
                if r < 0:
                    _raise_key(ns, name)
                if r == 2:
                    continue
                ownl = NULL
                if owner is not None:
                    r = self._find_list(s, &s.own, oh, owner, ver, &ownl)
                    if r < 0:
                        _raise_key(ns, name)
                    if r == 2:
                        continue
                seq = fdn_next_seq(&self._seq)
                if fdn_shard_insert(s, h, <PyObject *>ns, <PyObject *>name,
                                    <PyObject *>value, <PyObject *>md, nh, nsl,
                                    <PyObject *>owner if owner is not None else NULL,
                                    oh, ownl, seq, &created) < 0:
                    raise MemoryError()
                fdn_incref(<PyObject *>ns)
                fdn_incref(<PyObject *>name)
                fdn_incref(<PyObject *>value)
                fdn_incref(<PyObject *>md)
                if owner is not None:
                    fdn_incref(<PyObject *>owner)
                    if created & FDN_CREATED_OWN:
                        fdn_incref(<PyObject *>owner)
                if created & FDN_CREATED_NS:
                    fdn_incref(<PyObject *>ns)
                break
            s.writes += 1
        # the table is consistent: now Python code may run
        if old_md != NULL:
            kind = _UPDATED
            old = <object>old_md
            fdn_decref(old_md)
            reg = _reg(cur_ns, cur_name, cur_value, md, cur_owner)
            if self._index is not None:
                self._index.remove(cur_ns, cur_name, old)
                self._index.add(cur_ns, cur_name, md)
        else:
            kind = _REGISTERED
            reg = _reg(ns, name, value, md, owner)
            if self._index is not None:
                self._index.add(ns, name, md)
        if self._nsubs > 0:
            self._listeners.notify(_event(kind, reg))
        return reg

    def unregister(self, ns, name):
        """Remove ``(ns, name)``.

        Returns:
            True if it was registered; False if absent or closed.

        Raises:
            InvalidKey: the key cannot be hashed or compared (only then).
        """
        cdef uint64_t h
        _key_hash(ns, name, &h)
        if self._closed:
            return False
        if self._index is None:
            return self._unregister(ns, name, h)
        with self._index_lock:
            return self._unregister(ns, name, h)

    cdef object _unregister(self, object ns, object name, uint64_t h):
        cdef size_t idx, pos
        cdef fdn_shard *s = self._shard(h, &idx)
        cdef fdn_removed out
        cdef int r
        with cython.critical_section(<object>self._locks[idx]):
            if self._closed:
                return False
            r = self._find(s, h, ns, name, &pos)
            if r < 0:
                _raise_key(ns, name)
            if r == 0:
                return False
            fdn_shard_remove_at(s, pos, &out)
            s.writes += 1
        if self._nsubs > 0 or self._index is not None:
            self._released(&out, 1)
        else:
            # fast path: nobody to tell, just drop the table's references
            fdn_decref(<PyObject *>out.ns)
            fdn_decref(<PyObject *>out.name)
            fdn_decref(<PyObject *>out.value)
            fdn_decref(<PyObject *>out.meta)
            if out.owner != NULL:
                fdn_decref(<PyObject *>out.owner)
            if out.ns_key != NULL:
                fdn_decref(<PyObject *>out.ns_key)
            if out.own_key != NULL:
                fdn_decref(<PyObject *>out.own_key)
        return True

    cdef int _released(self, fdn_removed *outs, size_t n) except -1:
        """Take over the references of removed entries, update the metadata
        index, emit one ``unregistered`` event each, then drop them."""
        cdef size_t i
        cdef fdn_removed *o
        regs = []
        for i in range(n):
            # steal every reference into Python locals first, so an error
            # below (or in a listener) still releases all of them
            o = &outs[i]
            e_ns = <object>o.ns
            fdn_decref(<PyObject *>o.ns)
            e_name = <object>o.name
            fdn_decref(<PyObject *>o.name)
            e_value = <object>o.value
            fdn_decref(<PyObject *>o.value)
            e_md = <object>o.meta
            fdn_decref(<PyObject *>o.meta)
            if o.owner != NULL:
                e_owner = <object>o.owner
                fdn_decref(<PyObject *>o.owner)
            else:
                e_owner = None
            if o.ns_key != NULL:
                fdn_decref(<PyObject *>o.ns_key)
            if o.own_key != NULL:
                fdn_decref(<PyObject *>o.own_key)
            regs.append(_reg(e_ns, e_name, e_value, e_md, e_owner))
        if self._index is not None:
            for reg in regs:
                self._index.remove(reg[0], reg[1], reg[3])
        if self._nsubs > 0:
            for reg in regs:
                self._listeners.notify(_event(_UNREGISTERED, reg))
        return 0

    def update_metadata(self, ns, name, metadata):
        """Replace (not merge) the metadata of ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        cdef Py_hash_t h1, h2
        if self._closed:
            raise RegistryClosed()
        md = copy_metadata(metadata)
        h1 = fdn_hash(<PyObject *>ns)
        if h1 == -1:
            _raise_key(ns, name)
        h2 = fdn_hash(<PyObject *>name)
        if h2 == -1:
            _raise_key(ns, name)
        if self._index is None:
            return self._update(ns, name, md, fdn_mix2(<uint64_t>h1, <uint64_t>h2))
        with self._index_lock:
            return self._update(ns, name, md, fdn_mix2(<uint64_t>h1, <uint64_t>h2))

    cdef object _update(self, object ns, object name, object md, uint64_t h):
        cdef size_t idx, pos
        cdef fdn_shard *s = self._shard(h, &idx)
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef PyObject *old_md
        cdef int r
        with cython.critical_section(<object>self._locks[idx]):
            if self._closed:
                raise RegistryClosed()
            r = self._find(s, h, ns, name, &pos)
            if r < 0:
                _raise_key(ns, name)
            if r == 0:
                raise NotRegistered((ns, name))
            e = &s.main.slots[pos]
            rec = s.main.recs[pos]
            cur_ns = <object>e.a
            cur_name = <object>e.b
            cur_value = <object>e.value
            cur_owner = <object>rec.owner if FDN_REC_OWNED(rec) else None
            fdn_incref(<PyObject *>md)
            old_md = <PyObject *>fdn_shard_set_meta(s, pos, <void *>md)
            s.writes += 1
        old = <object>old_md
        fdn_decref(old_md)
        reg = _reg(cur_ns, cur_name, cur_value, md, cur_owner)
        if self._index is not None:
            self._index.remove(cur_ns, cur_name, old)
            self._index.add(cur_ns, cur_name, md)
        if self._nsubs > 0:
            self._listeners.notify(_event(_UPDATED, reg))
        return reg

    def unregister_owner(self, owner):
        """Remove every registration and membership of ``owner``.

        O(partitions + its entries). ``owner=None`` removes nothing: unowned
        entries belong to no one. One event per removed entry.

        Returns:
            How many entries were removed (0 when closed).

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        cdef Py_hash_t ho
        cdef size_t total = 0
        check_owner(owner)
        if owner is None or self._closed:
            return 0
        ho = fdn_hash(<PyObject *>owner)
        if ho == -1:
            _raise_owner(owner)
        if self._index is None:
            total = self._unregister_owner(owner, fdn_mix1(<uint64_t>ho))
        else:
            with self._index_lock:
                total = self._unregister_owner(owner, fdn_mix1(<uint64_t>ho))
        left = self._groups.unregister_owner(owner)
        self._group_writes += left
        return total + left

    cdef size_t _unregister_owner(self, object owner, uint64_t oh) except? 0:
        cdef size_t k, i, cnt, total = 0
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef fdn_removed *outs
        cdef uint64_t ver
        cdef int r
        for k in range(self._n):
            s = &self._sh[k]
            if s.own.used == 0:
                continue
            outs = NULL
            cnt = 0
            with cython.critical_section(<object>self._locks[k]):
                if self._closed:
                    break
                while True:
                    ver = s.version
                    r = self._find_list(s, &s.own, oh, owner, ver, &l)
                    if r < 0:
                        # an owner whose __eq__ raises owns nothing here
                        # (as in the python twin)
                        fdn_xdecref(fdn_fetch_exception())
                        r = 0
                    if r != 2:
                        break
                if r == 1:
                    cnt = l.count
                    outs = <fdn_removed *>PyMem_Calloc(cnt, sizeof(fdn_removed))
                    if outs == NULL:
                        raise MemoryError()
                    # all k removals with no Python call in between
                    for i in range(cnt):
                        fdn_shard_remove_at(s, l.first.slot, &outs[i])
                    s.writes += cnt
            if outs != NULL:
                try:
                    self._released(outs, cnt)
                finally:
                    PyMem_Free(outs)
                total += cnt
        return total

    def join(self, ns, group, value, metadata=None, *, owner=None):
        """Add ``value`` to group ``(ns, group)`` (or update it if a member).

        Raises:
            InvalidKey: the group key or the owner cannot be hashed.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        if self._closed:
            raise RegistryClosed()
        md = copy_metadata(metadata)
        check_owner(owner)
        reg = self._groups.join(ns, group, value, md, owner)
        self._group_writes += 1
        return reg

    def leave(self, ns, group, value):
        """Remove ``value`` from group ``(ns, group)``.

        Returns:
            True if it was a member; False if not, or when closed.

        Raises:
            InvalidKey: the group key cannot be hashed or compared.
        """
        left = self._groups.leave(ns, group, value)
        if left:
            self._group_writes += 1
        return left

    # ------------------------------------------------------------ events, admin

    def subscribe(self, listener):
        """Call ``listener(event)`` after each write; returns an unsubscribe."""
        unsub = self._listeners.add(listener)
        with cython.critical_section(self):
            self._nsubs += 1
        done = []

        def unsubscribe():
            unsub()
            with cython.critical_section(self):
                if not done:
                    done.append(True)
                    self._nsubs -= 1

        return unsubscribe

    def stats(self):
        """A snapshot of the counters (hits/misses may undercount under threads)."""
        cdef size_t k, i
        cdef fdn_shard *s
        cdef uint64_t hits = 0, misses = 0, writes = 0, conflicts = 0, ver
        namespaces = set()
        for k in range(self._n):
            s = &self._sh[k]
            with cython.critical_section(<object>self._locks[k]):
                hits += s.hits
                misses += s.misses
                writes += s.writes
                conflicts += s.conflicts
                while True:
                    # an append may run the GC, hence code that changes the
                    # shard: re-check the version before touching it again
                    nss = []  # (drops the last pass's list before reading ver)
                    ver = s.version
                    for i in range(s.ns.mask + 1):
                        if s.ns.slots[i].a != NULL:
                            nss.append(<object>s.ns.slots[i].a)
                            if s.version != ver:
                                break
                    if s.version == ver:
                        break
            namespaces.update(nss)
        namespaces |= self._groups.namespaces()
        return RegistryStats(
            backend="native",
            partitions=self.partitions,
            registrations=len(self),
            memberships=self._groups.count(),
            namespaces=len(namespaces),
            hits=hits,
            misses=misses,
            writes=writes + <uint64_t>self._group_writes,
            conflicts=conflicts,
            closed=self._closed,
        )

    def health_check(self):
        """Healthy while open; a closed backend reports ``ok=False``."""
        if self._closed:
            return Health(ok=False, backend="native", detail="closed")
        return Health(
            ok=True,
            backend="native",
            detail=f"{len(self)} registrations in {self.partitions} partitions",
        )

    def _shard_info(self):
        """Test hook: per shard, (capacity, used) of the main, namespace and
        owner tables, and the shard version. Not part of the API."""
        cdef size_t k
        cdef fdn_shard *s
        out = []
        for k in range(self._n):
            s = &self._sh[k]
            out.append({
                "main": (s.main.mask + 1, s.main.used),
                "ns": (s.ns.mask + 1, s.ns.used),
                "own": (s.own.mask + 1, s.own.used),
                "version": s.version,
            })
        return out

    def close(self):
        """Refuse further writes; idempotent. Reads keep the last state.

        Returns once writes already inside a shard's critical section have
        finished (free-threaded builds; under the GIL there are none).
        """
        cdef size_t k
        self._closed = True
        self._groups.close()
        for k in range(self._n):
            with cython.critical_section(<object>self._locks[k]):
                pass


# The GC must see the references held in the C table: a value that refers to
# its registry (a service holding the registry) would otherwise leak.
cdef fdn_traverseproc _base_traverse = (<fdn_type *>NativeBackend).tp_traverse
cdef fdn_inquiry _base_clear = (<fdn_type *>NativeBackend).tp_clear


cdef int _gc_traverse(PyObject *o, fdn_visitproc visit, void *arg) noexcept:
    cdef NativeBackend self = <NativeBackend>o
    cdef int r = fdn_traverse_shards(self._sh, self._n, visit, arg)
    if r:
        return r
    return _base_traverse(o, visit, arg) if _base_traverse != NULL else 0


cdef int _gc_clear(PyObject *o) noexcept:
    cdef NativeBackend self = <NativeBackend>o
    try:
        self._clear()
    except MemoryError:
        pass  # keep the entries; the cycle stays uncollected
    return _base_clear(o) if _base_clear != NULL else 0


(<fdn_type *>NativeBackend).tp_traverse = _gc_traverse
(<fdn_type *>NativeBackend).tp_clear = _gc_clear


# lookup() and get() are most of what a registry does; their def wrappers
# (generic argument parsing, a reference taken on each argument) cost as much
# as the probe itself. So each gets a METH_FASTCALL front (csrc/fdn_python.h,
# fdn_install_fastcall) that answers a str key from the table directly and
# passes every other call, keywords and errors included, to the def below it.
cdef PyObject *_lookup_general = <PyObject *>NativeBackend.__dict__["lookup"]
cdef PyObject *_get_general = <PyObject *>NativeBackend.__dict__["get"]
# the two defs stay referenced here after the type's dict drops them
cdef tuple _generals = (NativeBackend.__dict__["lookup"], NativeBackend.__dict__["get"])


cdef PyObject *_lookup_fast(PyObject *self, PyObject **args, Py_ssize_t nargs,
                            PyObject *kwnames) noexcept:
    cdef PyObject *v
    cdef NativeBackend b
    if nargs == 2 and kwnames == NULL:
        b = <NativeBackend>self
        if fdn_get_str(b._sh, b._n, args[0], args[1], &v, 0) == FDN_HIT:
            fdn_incref(v)
            return v
    return fdn_call_general(_lookup_general, self, args, nargs, kwnames)


cdef PyObject *_get_fast(PyObject *self, PyObject **args, Py_ssize_t nargs,
                         PyObject *kwnames) noexcept:
    cdef PyObject *v
    cdef NativeBackend b
    cdef int r
    if (nargs == 2 or nargs == 3) and kwnames == NULL:
        b = <NativeBackend>self
        r = fdn_get_str(b._sh, b._n, args[0], args[1], &v, 1)
        if r == FDN_HIT:
            fdn_incref(v)
            return v
        if r == FDN_MISS:
            v = args[2] if nargs == 3 else <PyObject *>None
            fdn_incref(v)
            return v
    return fdn_call_general(_get_general, self, args, nargs, kwnames)


def _clinic_doc(descr):
    """The docstring with its signature line, as inspect.signature() reads it."""
    if descr.__text_signature__ is None:
        return descr.__doc__
    return f"{descr.__name__}{descr.__text_signature__}\n--\n\n{descr.__doc__}"


fdn_install_fastcall(<PyTypeObject *>NativeBackend, "lookup", _lookup_fast,
                     _clinic_doc(NativeBackend.__dict__["lookup"]))
fdn_install_fastcall(<PyTypeObject *>NativeBackend, "get", _get_fast,
                     _clinic_doc(NativeBackend.__dict__["get"]))
del _clinic_doc
