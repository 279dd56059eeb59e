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
    ValueMismatch,
)
from foundation.registry._events import Listeners
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
    MISSING,
    EventKind,
    Health,
    Registration,
    RegistryEvent,
    RegistryStats,
)

__all__ = ["NativeBackend", "RegistryFront", "install_front"]

fdn_use_python_allocator()

cdef object _EMPTY = EMPTY_METADATA
cdef PyTypeObject *_REG_T = <PyTypeObject *>Registration
cdef PyTypeObject *_EVENT_T = <PyTypeObject *>RegistryEvent
cdef object _REGISTERED = EventKind.REGISTERED
cdef object _UPDATED = EventKind.UPDATED
cdef object _UNREGISTERED = EventKind.UNREGISTERED
cdef object _JOINED = EventKind.JOINED
cdef object _LEFT = EventKind.LEFT
# RegistryEvent.reason
cdef object _EXPLICIT = "explicit"
cdef object _OWNER = "owner"
cdef object _REPLACED = "replaced"


# ---------------------------------------------------------------- helpers

# what NativeBackend._value returns on a miss
cdef object _MISSING = object()

# registrations(ns) answers kept (see NativeBackend._keep): from this many
# entries on, and for at most this many namespaces at a time
cdef size_t _CACHE_MIN = 64
cdef Py_ssize_t _CACHE_MAX = 64

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


cdef int _reraise() except -1:
    """Raise the pending exception (set by C code) as itself."""
    cdef PyObject *p = fdn_fetch_exception()
    if p == NULL:
        raise SystemError("foundation: error without an exception")
    exc = <object>p
    fdn_decref(p)
    raise exc


cdef int _unhashable_value() except -1:
    """A member value whose hash raised: it is "loose" (found by ==), unless
    the error is a BaseException that must propagate (KeyboardInterrupt)."""
    cdef PyObject *p = fdn_fetch_exception()
    if p == NULL:
        return 0
    exc = <object>p
    fdn_decref(p)
    if not isinstance(exc, Exception):
        raise exc
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


cdef inline object _event(object kind, object reg, object reason):
    return fdn_make_record3(_EVENT_T, kind, reg, reason)


cdef struct _item:
    uint64_t seq
    PyObject *reg    # the whole Registration (then p is unused), or NULL
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
            fdn_xdecref(b.items[i].reg)
            for k in range(5):
                fdn_xdecref(b.items[i].p[k])
        else:
            fdn_xdecref(b.items[i].p[1])
    PyMem_Free(b.items)
    b.items = NULL
    b.n = b.cap = 0


cdef void _buf_truncate(_buf *b, size_t n) noexcept:
    """Drop the full items from index n on (their references too)."""
    cdef size_t i
    cdef int k
    for i in range(n, b.n):
        fdn_xdecref(b.items[i].reg)
        for k in range(5):
            fdn_xdecref(b.items[i].p[k])
    b.n = n


cdef inline int _walk_init(fdn_walk *w, size_t lists) except -1:
    if fdn_walk_init(w, lists) < 0:
        raise MemoryError()
    return 0


cdef int _cmp_removed(const void *x, const void *y) noexcept nogil:
    cdef uint64_t a = (<const fdn_removed *>x).seq
    cdef uint64_t b = (<const fdn_removed *>y).seq
    return (a > b) - (a < b)


def _first(item):
    return item[0]


# What a select scan holds of an entry while its metadata is tested: no
# reference to its key or value, so entries that do not match stay untouched.
cdef struct _light:
    size_t shard
    size_t slot
    PyObject *meta
    bint hit


cdef struct _lbuf:
    _light *items
    size_t n
    size_t cap


cdef inline int _lbuf_reserve(_lbuf *b, size_t extra) except -1:
    return _grow(<void **>&b.items, &b.cap, b.n + extra, sizeof(_light))


cdef inline void _lbuf_add(_lbuf *b, fdn_rec *rec, size_t shard) noexcept:
    """Append ``rec`` (room reserved) with a new reference to its metadata."""
    cdef _light *it = &b.items[b.n]
    it.shard = shard
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


# Entries gathered shard by shard: runs[k] is where shard k's entries end.
# Within a run they are in registration order when the run came from one
# list (a namespace, a group, an owner); across runs they interleave.
cdef int _order(_buf *b, size_t *runs, size_t nruns, bint sorted_runs) except -1:
    """Put ``b`` into registration order: a merge of its runs when each is
    already ordered (O(n * runs), for the few runs of a partition count),
    else a sort."""
    cdef size_t i, k, best, start, nonempty = 0
    cdef size_t *heads
    cdef _item *out
    cdef uint64_t seq
    for k in range(nruns):
        start = runs[k - 1] if k else 0
        if runs[k] > start:
            nonempty += 1
    if nonempty <= 1:
        return 0
    if not sorted_runs or nruns > 16:
        qsort(b.items, b.n, sizeof(_item), _cmp_items)
        return 0
    heads = <size_t *>PyMem_Calloc(nruns, sizeof(size_t))
    out = <_item *>PyMem_Calloc(b.n, sizeof(_item))
    if heads == NULL or out == NULL:
        PyMem_Free(heads)
        PyMem_Free(out)
        qsort(b.items, b.n, sizeof(_item), _cmp_items)  # in place, no memory
        return 0
    for k in range(nruns):
        heads[k] = runs[k - 1] if k else 0
    for i in range(b.n):
        best = nruns
        for k in range(nruns):
            if heads[k] < runs[k]:
                seq = b.items[heads[k]].seq
                if best == nruns or seq < b.items[heads[best]].seq:
                    best = k
        out[i] = b.items[heads[best]]
        heads[best] += 1
    PyMem_Free(b.items)
    PyMem_Free(heads)
    b.items = out
    b.cap = b.n
    return 0


cdef list _registrations_of(_buf *b):
    """The full items of ``b`` (already in order) as a list of Registrations."""
    cdef size_t i
    cdef list out
    cdef _item *it
    out = PyList_New(b.n)
    for i in range(b.n):
        it = &b.items[i]
        if it.reg != NULL:
            fdn_list_set_item(out, i, it.reg)  # the item's reference, handed over
            it.reg = NULL
            continue
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
    it.seq = FDN_REC_SEQ(rec)
    it.reg = NULL
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


cdef int _take_reg(_buf *b, fdn_shard *s, fdn_rec *rec) except -1:
    """Append the Registration of name ``rec`` to ``b`` (room reserved): its
    cache, or one built now, and cached if nothing in it can hold a
    reference (the collector never needs to see it: it is untracked).

    Builds under the shard's lock, so the caller keeps the collector off
    (no collection, hence no finalizer, may run inside an allocation).
    """
    cdef fdn_slot *e
    cdef _item *it = &b.items[b.n]
    cdef PyObject *owner
    cdef object reg
    it.seq = FDN_REC_SEQ(rec)
    it.p[0] = it.p[1] = it.p[2] = it.p[3] = it.p[4] = NULL
    if rec.reg != NULL:
        it.reg = <PyObject *>rec.reg
        fdn_incref(it.reg)
        b.n += 1
        return 0
    e = &s.main.slots[rec.slot]
    owner = <PyObject *>FDN_REC_OWNER(rec)
    if owner == NULL:
        owner = <PyObject *>None
    reg = _reg(<object>e.a, <object>e.b, <object>e.value, <object>rec.meta, <object>owner)
    if not FDN_FREETHREADED and FDN_REC_TMASK(rec) == 0:
        # its items are atomic: it can close no cycle
        fdn_gc_untrack(<PyObject *>reg)
        fdn_incref(<PyObject *>reg)
        rec.reg = <PyObject *>reg
    fdn_incref(<PyObject *>reg)
    it.reg = <PyObject *>reg
    b.n += 1
    return 0


cdef inline void _take_member(_buf *b, fdn_rec *rec) noexcept:
    """Append member ``rec`` to ``b`` (room reserved), with new references."""
    cdef fdn_list *gl = rec.ns_list
    cdef _item *it = &b.items[b.n]
    cdef PyObject *owner = <PyObject *>FDN_REC_OWNER(rec)
    if owner == NULL:
        owner = <PyObject *>None
    it.seq = FDN_REC_SEQ(rec)
    it.reg = NULL
    it.p[0] = <PyObject *>gl.key
    it.p[1] = <PyObject *>gl.key2
    it.p[2] = <PyObject *>rec.value
    it.p[3] = <PyObject *>rec.meta
    it.p[4] = owner
    for k in range(5):
        fdn_incref(it.p[k])
    b.n += 1


ctypedef struct _shared_vectors:
    fdn_order order
    fdn_refs refs


cdef inline _shared_vectors *_shared(fdn_shard *sh, size_t n) noexcept:
    return <_shared_vectors *>&sh[n]


cdef fdn_shard *_new_shards(size_t n) except NULL:
    """``n`` empty shards, each tagged with its index. Under the GIL, which
    serialises every shard, they share one order vector and one vector of
    traced references (kept after them, in the same block): a read of every
    name is one pass over it, and the collector reaches what the table
    holds in the order it was registered (shard by shard, it would reorder
    its own list of those objects, and every later pass over that list would
    stride through memory). Free with _free_shards."""
    cdef size_t k, i
    cdef _shared_vectors *shared = NULL
    cdef fdn_shard *sh
    if n >= <size_t>FDN_NONE:
        raise MemoryError()
    sh = <fdn_shard *>PyMem_Calloc(1, n * sizeof(fdn_shard) + sizeof(_shared_vectors))
    if sh == NULL:
        raise MemoryError()
    if not FDN_FREETHREADED:
        shared = _shared(sh, n)
        fdn_refs_init(&shared.refs, sh, n)
        if fdn_order_init(&shared.order) < 0:
            PyMem_Free(sh)
            raise MemoryError()
    for k in range(n):
        if fdn_shard_init(&sh[k]) < 0:
            for i in range(k):
                fdn_shard_free(&sh[i])
            if shared != NULL:
                fdn_order_free(&shared.order)
            PyMem_Free(sh)
            raise MemoryError()
        if shared != NULL:
            fdn_shard_attach(&sh[k], <uint32_t>k, &shared.order, &shared.refs)
        else:
            fdn_shard_attach(&sh[k], <uint32_t>k, NULL, NULL)
    return sh


cdef void _free_shards(fdn_shard *sh, size_t n) noexcept:
    """Drop every reference the (detached) shards hold, then free their C
    memory (the shared vectors last, as a whole: nothing is taken out of
    them one by one)."""
    cdef size_t k
    for k in range(n):
        fdn_shard_release(&sh[k])
    for k in range(n):
        fdn_shard_detach(&sh[k])
        fdn_shard_free(&sh[k])
    if not FDN_FREETHREADED:
        fdn_order_free(&_shared(sh, n).order)
        fdn_refs_free(&_shared(sh, n).refs)
    PyMem_Free(sh)


cdef void _drop_removed(fdn_removed *o) noexcept:
    """Drop the references a removal handed over (no event, no index). For
    a member, ns/name are references the caller took on its group's keys."""
    fdn_xdecref(<PyObject *>o.reg)
    fdn_decref(<PyObject *>o.ns)
    fdn_decref(<PyObject *>o.name)
    fdn_decref(<PyObject *>o.value)
    fdn_decref(<PyObject *>o.meta)
    if o.owner != NULL:
        fdn_decref(<PyObject *>o.owner)
    if o.ns_key != NULL:
        fdn_decref(<PyObject *>o.ns_key)
    if o.own_key != NULL:
        fdn_decref(<PyObject *>o.own_key)


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
    cdef uint64_t _mutations    # writes under the GIL (see _stamp)
    cdef dict _ns_cache         # ns -> kept registrations(ns) (see _keep)
    cdef bint _closed
    cdef Py_ssize_t _nsubs      # live subscriptions: writes build events only if > 0
    cdef readonly Py_ssize_t partitions
    cdef tuple _lock_objs
    cdef object _listeners
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
        self._lock_objs = tuple([_ShardLock() for _ in range(n)])
        self._locks = <PyObject **>PyMem_Calloc(n, sizeof(PyObject *))
        if self._locks == NULL:
            raise MemoryError()
        for i in range(n):
            self._locks[i] = <PyObject *>self._lock_objs[i]
        self._sh = _new_shards(n)
        self._n = n
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
        cdef size_t n = self._n
        if old == NULL:
            return 0
        fresh = _new_shards(n)
        self._sh = fresh  # consistent (empty) before any DECREF runs code
        self._mutated()
        self._ns_cache = None
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
        cdef uint64_t seq
        reg = self._registration_seq(ns, name, &seq)
        if reg is None and missing_raises:
            raise NotRegistered((ns, name))
        return reg

    cdef object _registration_seq(self, object ns, object name, uint64_t *seq):
        """The live Registration of (ns, name) and its sequence number (its
        place in registration order), or None if absent."""
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
                seq[0] = FDN_REC_SEQ(rec)
                if rec.reg != NULL:
                    return <object>rec.reg
                # strong references first: building the tuple may run the GC
                a = <object>e.a
                b = <object>e.b
                v = <object>e.value
                m = <object>rec.meta
                o = <object>rec.owner if FDN_REC_OWNED(rec) else None
        if r == 1:
            return _reg(a, b, v, m, o)
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

    # Reads that walk many entries go by "segment": under the GIL one
    # segment spans every shard (a reader that runs no Python code needs no
    # lock, and one merged walk visits entries in memory order); on
    # free-threaded builds a segment is one shard, read in its critical
    # section, and the segments' runs are merged afterwards.

    cdef inline size_t _nseg(self) noexcept:
        return self._n if FDN_FREETHREADED else 1

    cdef inline void _seg(self, size_t g, size_t *k0, size_t *k1) noexcept:
        if FDN_FREETHREADED:
            k0[0] = g
            k1[0] = g + 1
        else:
            k0[0] = 0
            k1[0] = self._n

    cdef inline uint64_t _stamp(self, size_t k0) noexcept:
        """What changes when a segment's entries may have been removed: the
        write counter under the GIL, the shard's version otherwise."""
        if FDN_FREETHREADED:
            return self._sh[k0].version
        return self._mutations

    cdef inline void _mutated(self) noexcept:
        if not FDN_FREETHREADED:
            self._mutations += 1

    cdef int _walk_open(self, fdn_walk *w, size_t k0, size_t k1, object ns, bint all_ns,
                        uint64_t nh, size_t *count) except -1:
        """Set ``w`` up over the entries of ``ns`` (all_ns: every entry) in
        shards [k0, k1), whose locks the caller holds; *count: how many.
        Finding a namespace's lists may run a key's ``__eq__``: the setup
        starts over until no entry was removed meanwhile."""
        cdef size_t k
        cdef uint64_t stamp, ver
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef int r
        while True:
            stamp = self._stamp(k0)
            count[0] = 0
            if all_ns:
                # every name, in the shards' order vector(s): one shared by
                # all under the GIL, each its own otherwise
                _walk_init(w, k1 - k0)
                for k in range(k0, k1):
                    s = &self._sh[k]
                    if k == k0 or s.order != self._sh[k - 1].order:
                        fdn_walk_add_order(w, s.order)
                    count[0] += s.main.used
            else:
                _walk_init(w, k1 - k0)
                for k in range(k0, k1):
                    s = &self._sh[k]
                    while True:
                        ver = s.version
                        r = self._find_list(s, &s.ns, nh, ns, ver, &l)
                        if r < 0:
                            fdn_walk_free(w)
                            _raise_key(ns, None)
                        if r != 2:
                            break
                    if r == 1:
                        fdn_walk_add(w, l.first, k)
                        count[0] += l.count
            if self._stamp(k0) == stamp:
                fdn_walk_start(w)
                return 0
            fdn_walk_free(w)

    cdef inline uint64_t _ns_hash(self, object ns, bint all_ns) except? 0:
        cdef Py_hash_t hn
        if all_ns:
            return 0
        hn = fdn_hash(<PyObject *>ns)
        if hn == -1:
            _raise_key(ns, None)
        return fdn_mix1(<uint64_t>hn)

    cdef size_t _gather(self, object ns, _buf *b, bint full, size_t *runs,
                        bint all_ns) except? 0:
        """Append every entry of ``ns`` (all_ns: of every namespace; None is
        otherwise a namespace like any other) to ``b`` with new references,
        segment by segment (each read atomically), each segment's run in
        registration order; runs[g] is where segment g's entries end.
        Returns the number of segments."""
        cdef uint64_t nh = self._ns_hash(ns, all_ns)
        cdef size_t g, k0, k1, src = 0, count, nseg = self._nseg()
        cdef fdn_walk w
        cdef fdn_rec *rec
        cdef int gc_was
        for g in range(nseg):
            self._seg(g, &k0, &k1)
            with cython.critical_section(<object>self._locks[k0]):
                self._walk_open(&w, k0, k1, ns, all_ns, nh, &count)
                # no Python code runs below (the collector is off while
                # Registrations are built): the walk stays valid
                gc_was = fdn_gc_disable() if full else 0
                try:
                    _buf_reserve(b, count)
                    rec = fdn_walk_next(&w, &src)
                    while rec != NULL:
                        if full:
                            _take_reg(b, &self._sh[src], rec)
                        else:
                            _take(b, &self._sh[src], rec, False)
                        rec = fdn_walk_next(&w, &src)
                finally:
                    fdn_walk_free(&w)
                    if gc_was:
                        fdn_gc_enable()
            runs[g] = b.n
        return nseg

    cdef size_t *_runs(self) except NULL:
        cdef size_t *runs = <size_t *>PyMem_Calloc(self._n, sizeof(size_t))
        if runs == NULL:
            raise MemoryError()
        return runs

    def names(self, ns):
        """The unique names registered in ``ns`` (groups excluded), in
        registration order; O(partitions + entries of ns)."""
        cdef _buf b
        cdef size_t i
        cdef size_t *runs = self._runs()
        cdef list out
        b.items = NULL
        b.n = b.cap = 0
        try:
            _order(&b, runs, self._gather(ns, &b, False, runs, False), True)
            out = PyList_New(b.n)
            for i in range(b.n):
                fdn_incref(b.items[i].p[1])  # the list's own reference
                fdn_list_set_item(out, i, b.items[i].p[1])
        finally:
            PyMem_Free(runs)
            _buf_release(&b, False)
        return out

    cdef list _registrations_list(self, object ns, bint all_ns):
        """registrations() under the GIL: one merged walk over every shard,
        straight into the list (no buffer, no reorder).

        A namespace (an exact str) keeps the result, until a write to the
        namespace drops it: a service reading its registrations again and
        again gets a copy of it, at the cost of copying a list (the python
        twin's cost too)."""
        cdef uint64_t nh
        cdef uint64_t m0
        cdef size_t src = 0, count, i = 0
        cdef fdn_walk w
        cdef fdn_rec *rec
        cdef fdn_shard *s
        cdef fdn_slot *e
        cdef PyObject *owner
        cdef PyObject *p
        cdef int gc_was
        cdef bint atomic = True
        cdef bint cacheable = not all_ns and type(ns) is str
        cdef list out
        if cacheable and self._ns_cache:
            hit = self._ns_cache.get(ns)
            if hit is not None:
                return list(<list>hit)
        nh = self._ns_hash(ns, all_ns)
        self._walk_open(&w, 0, self._n, ns, all_ns, nh, &count)
        m0 = self._mutations
        # no Python code runs below (the collector is off while Registrations
        # are built): the walk stays valid
        gc_was = fdn_gc_disable()
        try:
            out = PyList_New(count)
            rec = fdn_walk_next(&w, &src)
            while rec != NULL and i < count:
                p = <PyObject *>rec.reg
                if p == NULL:
                    s = &self._sh[src]
                    e = &s.main.slots[rec.slot]
                    owner = <PyObject *>FDN_REC_OWNER(rec)
                    if owner == NULL:
                        owner = <PyObject *>None
                    reg = _reg(<object>e.a, <object>e.b, <object>e.value,
                               <object>rec.meta, <object>owner)
                    p = <PyObject *>reg
                    if FDN_REC_TMASK(rec) == 0:
                        # its items are atomic: it can close no cycle
                        fdn_gc_untrack(p)
                        fdn_incref(p)
                        rec.reg = p
                    else:
                        atomic = False
                fdn_incref(p)
                fdn_list_set_item(out, i, p)
                i += 1
                rec = fdn_walk_next(&w, &src)
        finally:
            fdn_walk_free(&w)
            if gc_was:
                fdn_gc_enable()
        if cacheable and count >= _CACHE_MIN and self._mutations == m0:
            self._keep(ns, out, atomic)
        return out

    cdef int _keep(self, object ns, list out, bint atomic) except -1:
        """Keep registrations(ns)'s answer (ns an exact str: no user code
        runs here) until a write to ns drops it. When every entry is atomic
        the kept list is untracked (it holds only untracked Registrations
        and never changes); otherwise it stays tracked, and the collector
        reaches it from the backend, as it must: its Registrations hold
        objects that can close a cycle."""
        cdef list kept = list(out)
        if self._ns_cache is None:
            self._ns_cache = {}
        elif len(self._ns_cache) >= _CACHE_MAX:
            self._ns_cache.clear()
        if atomic:
            fdn_gc_untrack(<PyObject *>kept)
        self._ns_cache[ns] = kept
        return 0

    cdef inline int _forget(self, object ns) except -1:
        """A write to ns: drop what _keep kept of it (only exact str are
        kept, so no other key is looked up: that could run user code)."""
        if self._ns_cache and type(ns) is str:
            self._ns_cache.pop(ns, None)
        return 0

    def registrations(self, ns=None):
        """Every registration of ``ns`` (``None``: of every namespace), in
        registration order."""
        if not FDN_FREETHREADED:
            return self._registrations_list(ns, ns is None)
        return self._registrations_seg(ns)

    cdef list _registrations_seg(self, object ns):
        cdef _buf b
        cdef size_t *runs = self._runs()
        cdef list out
        cdef bint all_ns = ns is None
        b.items = NULL
        b.n = b.cap = 0
        try:
            _order(&b, runs, self._gather(ns, &b, True, runs, all_ns), True)
            out = _registrations_of(&b)
        finally:
            PyMem_Free(runs)
            _buf_release(&b, True)
        return out

    def list_all(self):
        """Every registration (Elixir Foundation's backend callback name)."""
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
        """Registrations of ``ns`` (``None``: all) whose metadata matches
        ``query``, in registration order.

        Uses a metadata index when ``query`` tests an indexed field for
        equality (O(matches)); otherwise scans the namespace, in C when every
        criterion is a top-level equality. Exceptions from the query's
        predicate propagate.
        """
        cdef object pairs
        if self._index is not None:
            keys = self._index.candidates(ns, query)
            if keys is not None:
                return self._select_keys(keys, query)
        if query.predicate is not None:
            return [reg for reg in self.registrations(ns) if query.matches(reg)]
        pairs = query.eq_pairs
        if pairs is not None:
            return self._scan_eq(ns, pairs, query.metadata_matches)
        return self._scan(ns, query.metadata_matches)

    def count_select(self, ns, query):
        """How many registrations ``select(ns, query)`` would return,
        without building them: the metadata of each entry of ``ns`` is
        tested as it is stored."""
        cdef _lbuf lb
        cdef bint all_ns = ns is None
        cdef uint64_t nh, seq
        cdef size_t g, k0, k1, i, nseg = self._nseg()
        cdef Py_ssize_t n = 0
        if self._index is not None:
            keys = self._index.candidates(ns, query)
            if keys is not None:
                for kns, kname in keys:
                    reg = self._registration_seq(kns, kname, &seq)
                    if reg is not None and query.matches(reg):
                        n += 1
                return n
        if query.predicate is not None:
            # the predicate takes whole registrations
            test = query.matches
            for reg in self.registrations(ns):
                if test(reg):
                    n += 1
            return n
        matches = query.metadata_matches
        nh = self._ns_hash(ns, all_ns)
        lb.items = NULL
        lb.n = lb.cap = 0
        try:
            for g in range(nseg):
                self._seg(g, &k0, &k1)
                with cython.critical_section(<object>self._locks[k0]):
                    self._gather_light(k0, k1, ns, nh, all_ns, &lb)
                # Python code from here: the metadata references are ours
                for i in range(lb.n):
                    if matches(<object>lb.items[i].meta):
                        n += 1
                _lbuf_clear(&lb)
        finally:
            _lbuf_clear(&lb)
            PyMem_Free(lb.items)
        return n

    def owned(self, owner):
        """The names and memberships of ``owner``, in write order;
        O(partitions + its entries). ``[]`` for None or an unknown owner.

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        cdef Py_hash_t ho
        cdef uint64_t oh, ver
        cdef size_t k
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef fdn_rec *rec
        cdef _buf b
        cdef int r
        cdef list out
        check_owner(owner)
        if owner is None:
            return []
        ho = fdn_hash(<PyObject *>owner)
        if ho == -1:
            _raise_owner(owner)
        oh = fdn_mix1(<uint64_t>ho)
        b.items = NULL
        b.n = b.cap = 0
        try:
            for k in range(self._n):
                s = &self._sh[k]
                if s.own.used == 0:
                    continue
                with cython.critical_section(<object>self._locks[k]):
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
                        # no Python code runs during the walk
                        _buf_reserve(&b, l.count)
                        rec = l.first
                        while rec != NULL:
                            if FDN_REC_MEMBER(rec):
                                _take_member(&b, rec)
                            else:
                                _take(&b, s, rec, True)
                            rec = rec.own_next
            if b.n > 1:
                qsort(b.items, b.n, sizeof(_item), _cmp_items)
            out = _registrations_of(&b)
        finally:
            _buf_release(&b, True)
        return out

    cdef list _select_keys(self, object keys, object query):
        """The live registrations of candidate ``keys`` that match, in
        registration order."""
        cdef uint64_t seq
        found = []
        for kns, kname in keys:
            reg = self._registration_seq(kns, kname, &seq)
            if reg is not None and query.matches(reg):
                found.append((seq, reg))
        found.sort(key=_first)
        return [item[1] for item in found]

    cdef list _scan_eq(self, object ns, tuple pairs, object matches):
        """The registrations of ``ns`` whose metadata has every
        ``(field, value)`` of ``pairs``, in registration order: the test runs
        in C on each stored metadata dict (``_equalities_matcher``'s answers)
        during the walk, and only matches are taken.

        A comparison may run Python code (a custom ``__eq__``), which may
        remove entries: the entry's metadata is held meanwhile, the
        segment's stamp is checked after each test, and a segment that
        changed is read again; after a few tries the query falls back to
        :meth:`_scan`.
        """
        cdef _buf b
        cdef Py_ssize_t npairs = len(pairs), j
        cdef PyObject **fields = NULL
        cdef PyObject **operands
        cdef size_t *runs = NULL
        cdef bint all_ns = ns is None
        cdef uint64_t nh = self._ns_hash(ns, all_ns)
        cdef size_t g, k0, k1, nseg = self._nseg()
        cdef int tries, r
        cdef list out
        b.items = NULL
        b.n = b.cap = 0
        try:
            fields = <PyObject **>PyMem_Calloc(2 * npairs + 1, sizeof(PyObject *))
            runs = self._runs()
            if fields == NULL:
                raise MemoryError()
            operands = fields + npairs
            for j in range(npairs):
                # borrowed: the pairs tuple holds them for the whole call
                fields[j] = <PyObject *>pairs[j][0]
                operands[j] = <PyObject *>pairs[j][1]
            for g in range(nseg):
                self._seg(g, &k0, &k1)
                tries = 0
                while True:
                    tries += 1
                    if tries > 3:
                        return self._scan(ns, matches)
                    with cython.critical_section(<object>self._locks[k0]):
                        r = self._scan_seg_eq(k0, k1, ns, nh, all_ns, fields, operands,
                                              npairs, matches, &b)
                    if r == 0:
                        break
                runs[g] = b.n
            _order(&b, runs, nseg, True)
            out = _registrations_of(&b)
        finally:
            PyMem_Free(fields)
            PyMem_Free(runs)
            _buf_release(&b, True)
        return out

    cdef int _scan_seg_eq(self, size_t k0, size_t k1, object ns, uint64_t nh, bint all_ns,
                          PyObject **fields, PyObject **operands, Py_ssize_t npairs,
                          object matches, _buf *b) except -1:
        """One segment of :meth:`_scan_eq` (its lock held): 0 done, 1 entries
        were removed under a comparison (its partial results dropped: read it
        again)."""
        cdef size_t before = b.n, src = 0, count
        cdef fdn_walk w
        cdef uint64_t stamp
        cdef fdn_rec *rec
        cdef int r
        self._walk_open(&w, k0, k1, ns, all_ns, nh, &count)
        stamp = self._stamp(k0)
        try:
            rec = fdn_walk_next(&w, &src)
            while rec != NULL:
                r = self._test_eq(rec, fields, operands, npairs, matches)
                if self._stamp(k0) != stamp:
                    _buf_truncate(b, before)
                    return 1
                if r:
                    _buf_reserve(b, 1)
                    _take(b, &self._sh[src], rec, True)
                rec = fdn_walk_next(&w, &src)
        finally:
            fdn_walk_free(&w)
        return 0

    cdef inline int _test_eq(self, fdn_rec *rec, PyObject **fields, PyObject **operands,
                             Py_ssize_t npairs, object matches) except -1:
        """1 if the record's metadata has every (field, operand), else 0. An
        odd entry (a comparison that raises) never matches; a BaseException
        that is not an Exception (KeyboardInterrupt, Cancelled) propagates."""
        cdef PyObject *md = <PyObject *>rec.meta
        cdef PyObject *p
        cdef int r
        fdn_incref(md)  # a comparison may run code that drops the entry
        r = fdn_md_match(md, fields, operands, npairs)
        if r == -2:
            try:
                r = 1 if matches(<object>md) else 0
            finally:
                fdn_decref(md)
            return r
        fdn_decref(md)
        if r >= 0:
            return r
        p = fdn_fetch_exception()
        if p == NULL:
            return 0
        exc = <object>p
        fdn_decref(p)
        if not isinstance(exc, Exception):
            raise exc
        return 0

    cdef list _scan(self, object ns, object matches):
        """The registrations of ``ns`` whose metadata passes ``matches`` (any
        criteria), in registration order, touching only the metadata of
        entries that do not match.

        Segment by segment: take the shard, slot and a reference to the
        metadata of each entry (under the segment's lock), test them (Python
        code, no lock), then, if no entry was removed meanwhile, take the
        whole entries of the matches from their slots. A segment that
        changed is read again; after a few tries the query falls back to
        :meth:`_scan_full`, which holds references to every entry.
        """
        cdef _buf b
        cdef _lbuf lb
        cdef bint all_ns = ns is None
        cdef uint64_t nh = self._ns_hash(ns, all_ns)
        cdef bint done
        cdef size_t g, k0, k1, i, nseg = self._nseg()
        cdef size_t *runs = self._runs()
        cdef uint64_t stamp
        cdef int tries
        cdef _light *it
        cdef list out
        b.items = NULL
        b.n = b.cap = 0
        lb.items = NULL
        lb.n = lb.cap = 0
        try:
            for g in range(nseg):
                self._seg(g, &k0, &k1)
                tries = 0
                while True:
                    tries += 1
                    if tries > 3:
                        return self._scan_full(ns, matches)
                    with cython.critical_section(<object>self._locks[k0]):
                        stamp = self._gather_light(k0, k1, ns, nh, all_ns, &lb)
                    for i in range(lb.n):
                        lb.items[i].hit = bool(matches(<object>lb.items[i].meta))
                    done = False
                    with cython.critical_section(<object>self._locks[k0]):
                        if self._stamp(k0) == stamp:
                            done = True
                            for i in range(lb.n):
                                it = &lb.items[i]
                                if it.hit:
                                    _buf_reserve(&b, 1)
                                    _take(&b, &self._sh[it.shard],
                                          self._sh[it.shard].main.recs[it.slot], True)
                    _lbuf_clear(&lb)
                    if done:
                        break
                runs[g] = b.n
            _order(&b, runs, nseg, True)
            out = _registrations_of(&b)
        finally:
            _lbuf_clear(&lb)
            PyMem_Free(lb.items)
            PyMem_Free(runs)
            _buf_release(&b, True)
        return out

    cdef uint64_t _gather_light(self, size_t k0, size_t k1, object ns, uint64_t nh,
                                bint all_ns, _lbuf *lb) except? 0:
        """Append (shard, slot, new metadata reference) of every entry of
        ``ns`` in shards [k0, k1) to ``lb``, in registration order; returns
        the stamp they were read at. The caller holds the segment's lock."""
        cdef fdn_walk w
        cdef fdn_rec *rec
        cdef size_t src = 0, count
        self._walk_open(&w, k0, k1, ns, all_ns, nh, &count)
        try:
            _lbuf_reserve(lb, count)
            rec = fdn_walk_next(&w, &src)
            while rec != NULL:
                _lbuf_add(lb, rec, src)
                rec = fdn_walk_next(&w, &src)
        finally:
            fdn_walk_free(&w)
        return self._stamp(k0)

    cdef list _scan_full(self, object ns, object matches):
        """The registrations of ``ns`` whose metadata passes ``matches``, in
        registration order. Tests the stored metadata before anything is
        built, so a 1% query over 1e5 entries builds 1e3 registrations, not
        1e5."""
        cdef _buf b
        cdef size_t i, j = 0, k, nseg
        cdef size_t *runs = self._runs()
        cdef list out
        cdef _item *it
        cdef bint all_ns = ns is None
        b.items = NULL
        b.n = b.cap = 0
        try:
            nseg = self._gather(ns, &b, True, runs, all_ns)
            # filter in place, keeping the run boundaries in step
            k = 0
            for i in range(b.n):
                while k < nseg and runs[k] <= i:
                    runs[k] = j
                    k += 1
                it = &b.items[i]
                if matches((<object>it.reg)[3]):
                    if j != i:
                        b.items[j] = it[0]
                        it.reg = NULL  # moved: _buf_release skips it
                    j += 1
                else:
                    fdn_xdecref(it.reg)
                    it.reg = NULL
            while k < nseg:
                runs[k] = j
                k += 1
            b.n = j
            _order(&b, runs, nseg, True)
            out = _registrations_of(&b)
        finally:
            PyMem_Free(runs)
            _buf_release(&b, True)
        return out

    # ------------------------------------------------------------ groups: reads

    cdef int _find_group(self, fdn_shard *s, uint64_t gh, object ns, object group,
                         uint64_t ver, fdn_list **out) noexcept:
        """Find group (ns, group)'s list: 1 found, 0 absent, 2 the shard changed
        since ``ver`` (restart), -1 with an exception set."""
        cdef size_t pos = <size_t>gh & s.grp.mask
        cdef fdn_slot *e
        cdef int r
        while True:
            r = fdn_probe(&s.grp, gh, <PyObject *>ns, <PyObject *>group, &pos)
            if r == FDN_HIT:
                out[0] = <fdn_list *>s.grp.slots[pos].value
                return 1
            if r == FDN_MISS:
                return 0
            e = &s.grp.slots[pos]
            r = fdn_pair_eq(<PyObject *>e.a, <PyObject *>e.b, <PyObject *>ns,
                            <PyObject *>group)
            if r < 0:
                return -1
            if s.version != ver:
                return 2
            if r:
                out[0] = <fdn_list *>e.value
                return 1
            pos = (pos + 1) & s.grp.mask

    cdef int _find_member(self, fdn_shard *s, fdn_list *gl, uint64_t mh, object value,
                          bint loose, uint64_t ver, fdn_rec **out) noexcept:
        """Find the member of group list ``gl`` that is ``value`` (identity, or
        a truthy ==, as same_value): 1 found, 0 absent, 2 the shard changed
        (restart), -1 with a KeyboardInterrupt-like exception set. A value
        with a hash is looked up in the mem table, then (as any value) among
        the group's loose members."""
        cdef size_t pos
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef int r
        if not loose:
            pos = <size_t>mh & s.mem.mask
            while True:
                r = fdn_probe(&s.mem, mh, <void *>gl, <PyObject *>value, &pos)
                if r == FDN_HIT:
                    out[0] = s.mem.recs[pos]
                    return 1
                if r == FDN_MISS:
                    break
                e = &s.mem.slots[pos]
                if e.a == <void *>gl:
                    r = fdn_same_value(<PyObject *>e.b, <PyObject *>value)
                    if r < 0:
                        return -1
                    if s.version != ver:
                        return 2
                    if r:
                        out[0] = s.mem.recs[pos]
                        return 1
                pos = (pos + 1) & s.mem.mask
        rec = gl.loose_first
        while rec != NULL:
            r = fdn_same_value(<PyObject *>rec.value, <PyObject *>value)
            if r < 0:
                return -1
            if s.version != ver:
                return 2
            if r:
                out[0] = rec
                return 1
            rec = rec.loose_next
        return 0

    cdef inline int _group_key(self, object ns, object group, uint64_t *gh) except -1:
        cdef Py_hash_t h1 = fdn_hash(<PyObject *>ns)
        cdef Py_hash_t h2
        if h1 == -1:
            _raise_key(ns, group)
        h2 = fdn_hash(<PyObject *>group)
        if h2 == -1:
            _raise_key(ns, group)
        gh[0] = fdn_mix2(<uint64_t>h1, <uint64_t>h2)
        return 0

    cdef int _locate_group(self, fdn_shard *s, object ns, object group, uint64_t gh,
                           fdn_list **gl) except -1:
        """1 if the group exists (*gl), else 0; the caller holds the lock."""
        cdef int r
        while True:
            r = self._find_group(s, gh, ns, group, s.version, gl)
            if r < 0:
                _raise_key(ns, group)
            if r != 2:
                return r

    def members(self, ns, group):
        """The members of group ``(ns, group)``, in join order."""
        cdef uint64_t gh
        cdef size_t idx
        cdef fdn_shard *s
        cdef fdn_list *gl
        cdef fdn_rec *rec
        cdef _buf b
        cdef list out
        self._group_key(ns, group, &gh)
        s = self._shard(gh, &idx)
        b.items = NULL
        b.n = b.cap = 0
        try:
            with cython.critical_section(<object>self._locks[idx]):
                if self._locate_group(s, ns, group, gh, &gl):
                    _buf_reserve(&b, gl.count)
                    rec = gl.first
                    while rec != NULL:
                        _take_member(&b, rec)
                        rec = rec.ns_next
            out = _registrations_of(&b)
        finally:
            _buf_release(&b, True)
        return out

    def member_count(self, ns, group):
        """How many members group ``(ns, group)`` has."""
        cdef uint64_t gh
        cdef size_t idx, n = 0
        cdef fdn_shard *s
        cdef fdn_list *gl
        self._group_key(ns, group, &gh)
        s = self._shard(gh, &idx)
        with cython.critical_section(<object>self._locks[idx]):
            if self._locate_group(s, ns, group, gh, &gl):
                n = gl.count
        return n

    def memberships(self, ns=None):
        """Every group membership of ``ns`` (``None``: all), in join order
        (across groups); used by ``migrate``."""
        cdef _buf b
        cdef size_t g, k0, k1, k, i, j, src = 0, lists, members, nseg = self._nseg()
        cdef size_t *runs = self._runs()
        cdef int m
        cdef fdn_walk w
        cdef fdn_rec *rec
        cdef _item *it
        cdef list out
        b.items = NULL
        b.n = b.cap = 0
        try:
            for g in range(nseg):
                self._seg(g, &k0, &k1)
                with cython.critical_section(<object>self._locks[k0]):
                    lists = members = 0
                    for k in range(k0, k1):
                        lists += self._sh[k].grp.used
                        members += self._sh[k].members
                    _buf_reserve(&b, members)
                    _walk_init(&w, lists)
                    try:
                        for k in range(k0, k1):
                            fdn_walk_add_index(&w, &self._sh[k].grp, k)
                        fdn_walk_start(&w)
                        rec = fdn_walk_next(&w, &src)
                        while rec != NULL:
                            _take_member(&b, rec)
                            rec = fdn_walk_next(&w, &src)
                    finally:
                        fdn_walk_free(&w)
                runs[g] = b.n
            _order(&b, runs, nseg, True)
            if ns is not None:
                # the Python twin's test: its namespace is (or == ) ns
                j = 0
                for i in range(b.n):
                    it = &b.items[i]
                    if same_value(<object>it.p[0], ns):
                        if j != i:
                            b.items[j] = it[0]
                            for m in range(5):
                                it.p[m] = NULL
                        j += 1
                    else:
                        for m in range(5):
                            fdn_xdecref(it.p[m])
                            it.p[m] = NULL
                b.n = j
            out = _registrations_of(&b)
        finally:
            PyMem_Free(runs)
            _buf_release(&b, True)
        return out

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
        cdef PyObject *old_reg = NULL
        cdef PyObject *po = <PyObject *>owner if owner is not None else NULL
        cdef int r, created = 0
        cdef unsigned tmask, ltmask
        cdef bint same
        cdef object reg
        cdef object kind
        # what the collector must see of this entry (no Python code runs)
        tmask = fdn_name_tmask(<PyObject *>ns, <PyObject *>name, <PyObject *>value,
                               <PyObject *>md, po, <PyObject *>_EMPTY)
        ltmask = FDN_TL(FDN_TL_KEY if tmask & FDN_T_NS else 0,
                        FDN_TL_KEY if tmask & FDN_T_OWNER else 0, 0)
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
                    if fdn_shard_set_meta_t(s, rec, <PyObject *>md,
                                            (tmask & FDN_T_META) != 0,
                                            <void **>&old_md) < 0:
                        raise MemoryError()
                    fdn_incref(<PyObject *>md)
                    old_reg = <PyObject *>rec.reg  # stale now (dropped below)
                    rec.reg = NULL
                    break
                nsl = NULL
                r = self._find_list(s, &s.ns, nh, ns, ver, &nsl)
                if r < 0:
                    _raise_key(ns, name)
                if r == 2:
                    continue
                ownl = NULL
                if po != NULL:
                    r = self._find_list(s, &s.own, oh, owner, ver, &ownl)
                    if r < 0:
                        _raise_key(ns, name)
                    if r == 2:
                        continue
                seq = fdn_next_seq(&self._seq)
                if fdn_shard_insert_t(s, h, <PyObject *>ns, <PyObject *>name,
                                      <PyObject *>value, <PyObject *>md, nh, nsl,
                                      po, oh, ownl, seq, tmask, ltmask, &created) < 0:
                    raise MemoryError()
                fdn_incref(<PyObject *>ns)
                fdn_incref(<PyObject *>name)
                fdn_incref(<PyObject *>value)
                fdn_incref(<PyObject *>md)
                if po != NULL:
                    fdn_incref(po)
                    if created & FDN_CREATED_OWN:
                        fdn_incref(po)
                if created & FDN_CREATED_NS:
                    fdn_incref(<PyObject *>ns)
                break
            s.writes += 1
            self._mutated()
        # the table is consistent: now Python code may run
        self._forget(ns)
        if old_reg != NULL:
            fdn_decref(old_reg)
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
            self._listeners.notify(
                _event(kind, reg, _EXPLICIT if kind is _REGISTERED else _REPLACED))
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
            self._mutated()
        self._forget(ns)
        if self._nsubs > 0 or self._index is not None:
            self._released(&out, 1, _EXPLICIT)
        else:
            _drop_removed(&out)  # nobody to tell: just drop the references
        return True

    cdef int _released(self, fdn_removed *outs, size_t n, object reason) except -1:
        """Take over the references of removed entries (names and members,
        in the order given), update the metadata index, emit one
        ``unregistered`` / ``left`` event each (with ``reason``), then drop
        them."""
        cdef size_t i
        cdef fdn_removed *o
        regs = []
        for i in range(n):
            # steal every reference into Python locals first, so an error
            # below (or in a listener) still releases all of them
            o = &outs[i]
            # a cache holds only atomic objects: dropping it runs no code
            fdn_xdecref(<PyObject *>o.reg)
            o.reg = NULL
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
            if not o.member:
                self._forget(e_ns)
            regs.append((o.member, _reg(e_ns, e_name, e_value, e_md, e_owner)))
        if self._index is not None:
            for member, reg in regs:
                if not member:
                    self._index.remove(reg[0], reg[1], reg[3])
        if self._nsubs > 0:
            for member, reg in regs:
                self._listeners.notify(
                    _event(_LEFT if member else _UNREGISTERED, reg, reason))
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
        cdef PyObject *old_reg = NULL
        cdef int r
        cdef bint traced = fdn_meta_traced(<PyObject *>md, <PyObject *>_EMPTY)
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
            if fdn_shard_set_meta_t(s, rec, <PyObject *>md, traced, <void **>&old_md) < 0:
                raise MemoryError()
            fdn_incref(<PyObject *>md)
            old_reg = <PyObject *>rec.reg  # stale now (dropped below)
            rec.reg = NULL
            s.writes += 1
            self._mutated()
        self._forget(ns)
        if old_reg != NULL:
            fdn_decref(old_reg)
        old = <object>old_md
        fdn_decref(old_md)
        reg = _reg(cur_ns, cur_name, cur_value, md, cur_owner)
        if self._index is not None:
            self._index.remove(cur_ns, cur_name, old)
            self._index.add(cur_ns, cur_name, md)
        if self._nsubs > 0:
            self._listeners.notify(_event(_UPDATED, reg, _REPLACED))
        return reg

    def update_value(self, ns, name, value, expect=MISSING):
        """Replace the value of ``(ns, name)``, keeping its owner and metadata.

        With ``expect`` (anything but ``MISSING``), only if the current value
        is it or equals it (an ``__eq__`` that raises means "not equal"),
        checked and written atomically.

        Raises:
            NotRegistered: nothing is registered there.
            ValueMismatch: ``expect`` does not match the current value.
            InvalidKey: the key cannot be hashed or compared.
            RegistryClosed: after :meth:`close`.
        """
        cdef Py_hash_t h1, h2
        if self._closed:
            raise RegistryClosed()
        h1 = fdn_hash(<PyObject *>ns)
        if h1 == -1:
            _raise_key(ns, name)
        h2 = fdn_hash(<PyObject *>name)
        if h2 == -1:
            _raise_key(ns, name)
        return self._update_value(ns, name, value, expect,
                                  fdn_mix2(<uint64_t>h1, <uint64_t>h2))

    cdef object _update_value(self, object ns, object name, object value, object expect,
                              uint64_t h):
        cdef size_t idx, pos
        cdef fdn_shard *s = self._shard(h, &idx)
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef PyObject *old_value = NULL
        cdef PyObject *old_reg = NULL
        cdef uint64_t ver
        cdef int r
        cdef bint same
        cdef bint traced = fdn_traced(<PyObject *>value)
        cur_ns = cur_name = cur_value = cur_md = cur_owner = None
        with cython.critical_section(<object>self._locks[idx]):
            while True:
                # drop what a previous pass held before probing (see _register)
                cur_ns = cur_name = cur_value = cur_md = cur_owner = None
                if self._closed:
                    raise RegistryClosed()
                r = self._find(s, h, ns, name, &pos)
                if r < 0:
                    _raise_key(ns, name)
                if r == 0:
                    raise NotRegistered((ns, name))
                ver = s.version
                cur_value = <object>s.main.slots[pos].value
                if expect is not MISSING:
                    same = cur_value is expect or same_value(cur_value, expect)
                    if s.version != ver:
                        continue  # an __eq__ re-entered and changed the shard
                    if not same:
                        raise ValueMismatch((ns, name), expect, cur_value)
                e = &s.main.slots[pos]
                rec = s.main.recs[pos]
                cur_ns = <object>e.a
                cur_name = <object>e.b
                cur_md = <object>rec.meta
                cur_owner = <object>rec.owner if FDN_REC_OWNED(rec) else None
                if fdn_shard_set_value_t(s, rec, <PyObject *>value, traced,
                                         <void **>&old_value) < 0:
                    raise MemoryError()
                fdn_incref(<PyObject *>value)
                old_reg = <PyObject *>rec.reg  # stale now (dropped below)
                rec.reg = NULL
                break
            s.writes += 1
            self._mutated()
        # the table is consistent: now Python code may run
        self._forget(ns)
        if old_reg != NULL:
            fdn_decref(old_reg)
        fdn_decref(old_value)  # cur_value still holds it
        reg = _reg(cur_ns, cur_name, value, cur_md, cur_owner)
        if self._nsubs > 0:
            self._listeners.notify(_event(_UPDATED, reg, _REPLACED))
        return reg

    def unregister_select(self, ns, query):
        """Remove the names of ``ns`` (``None``: of every namespace) that
        ``select(ns, query)`` returns; one ``unregistered`` event each.

        An entry that another writer changed between the match and its
        removal stays.

        Returns:
            How many were removed.

        Raises:
            RegistryClosed: after :meth:`close`.
            InvalidKey: ``ns`` cannot be hashed or compared.
        """
        cdef Py_ssize_t n = 0
        if self._closed:
            raise RegistryClosed()
        for reg in self.select(ns, query):
            if self._index is None:
                n += self._unregister_if(reg)
            else:
                with self._index_lock:
                    n += self._unregister_if(reg)
        return n

    cdef int _unregister_if(self, object reg) except -1:
        """Remove ``reg``'s entry if it is still the one ``reg`` shows
        (same stored key, value, metadata and owner objects): 1, else 0."""
        cdef uint64_t h
        cdef size_t idx, pos
        cdef fdn_shard *s
        cdef fdn_slot *e
        cdef fdn_rec *rec
        cdef fdn_removed out
        cdef PyObject *po
        cdef int r
        r_ns = reg[0]
        r_name = reg[1]
        r_value = reg[2]
        r_md = reg[3]
        r_owner = reg[4]
        _key_hash(r_ns, r_name, &h)
        s = self._shard(h, &idx)
        with cython.critical_section(<object>self._locks[idx]):
            if self._closed:
                return 0
            r = self._find(s, h, r_ns, r_name, &pos)
            if r < 0:
                fdn_xdecref(fdn_fetch_exception())  # gone odd: leave it
                return 0
            if r == 0:
                return 0
            e = &s.main.slots[pos]
            rec = s.main.recs[pos]
            po = <PyObject *>FDN_REC_OWNER(rec)
            if po == NULL:
                po = <PyObject *>None
            if (e.a != <PyObject *>r_ns or e.b != <PyObject *>r_name
                    or e.value != <PyObject *>r_value or rec.meta != <PyObject *>r_md
                    or po != <PyObject *>r_owner):
                return 0  # changed since it matched
            fdn_shard_remove_at(s, pos, &out)
            s.writes += 1
            self._mutated()
        self._forget(r_ns)
        if self._nsubs > 0 or self._index is not None:
            self._released(&out, 1, _EXPLICIT)
        else:
            _drop_removed(&out)
        return 1

    def unregister_owner(self, owner):
        """Remove every registration and membership of ``owner``.

        O(partitions + its entries). ``owner=None`` removes nothing: unowned
        entries belong to no one. One event per removed entry, in the order
        they were written.

        Returns:
            How many entries were removed (0 when closed).

        Raises:
            InvalidKey: ``owner`` is not hashable.
        """
        cdef Py_hash_t ho
        check_owner(owner)
        if owner is None or self._closed:
            return 0
        ho = fdn_hash(<PyObject *>owner)
        if ho == -1:
            _raise_owner(owner)
        if self._index is None:
            return self._unregister_owner(owner, fdn_mix1(<uint64_t>ho))
        with self._index_lock:
            return self._unregister_owner(owner, fdn_mix1(<uint64_t>ho))

    cdef size_t _unregister_owner(self, object owner, uint64_t oh) except? 0:
        cdef size_t k, i, cnt, total = 0, cap = 0
        cdef fdn_shard *s
        cdef fdn_list *l
        cdef fdn_removed *outs = NULL
        cdef fdn_removed *o
        cdef uint64_t ver
        cdef int r
        try:
            for k in range(self._n):
                s = &self._sh[k]
                if s.own.used == 0:
                    continue
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
                        _grow(<void **>&outs, &cap, total + cnt, sizeof(fdn_removed))
                        # all removals with no Python call in between; the
                        # list is freed with its last entry
                        for i in range(cnt):
                            o = &outs[total + i]
                            fdn_shard_remove_rec(s, l.first, o)
                            if o.member:
                                # the keys are its group's: own them now
                                if o.ns_key == NULL:
                                    fdn_incref(<PyObject *>o.ns)
                                    fdn_incref(<PyObject *>o.name)
                                o.ns_key = NULL
                        s.writes += cnt
                        total += cnt
                        self._mutated()
            if total:
                # one event each, in the order they were written
                qsort(outs, total, sizeof(fdn_removed), _cmp_removed)
                self._released(outs, total, _OWNER)
        finally:
            PyMem_Free(outs)
        return total

    # ------------------------------------------------------------ groups: writes

    def join(self, ns, group, value, metadata=None, *, owner=None):
        """Add ``value`` to group ``(ns, group)`` (or update it if a member).

        A member keeps its place in the group when it joins again; its
        metadata and owner are replaced.

        Raises:
            InvalidKey: the group key or the owner cannot be hashed.
            InvalidMetadata: ``metadata`` is not a mapping.
            RegistryClosed: after :meth:`close`.
        """
        cdef Py_hash_t ho = 0, hv
        cdef uint64_t gh
        cdef bint loose = False
        if self._closed:
            raise RegistryClosed()
        md = _EMPTY if metadata is None else copy_metadata(metadata)
        if owner is not None:
            ho = fdn_hash(<PyObject *>owner)
            if ho == -1:
                _raise_owner(owner)
        self._group_key(ns, group, &gh)
        hv = fdn_hash(<PyObject *>value)
        if hv == -1:
            _unhashable_value()
            loose = True
        return self._join(ns, group, value, md, owner, gh, <uint64_t>hv, loose,
                          fdn_mix1(<uint64_t>ho))

    cdef object _join(self, object ns, object group, object value, object md,
                      object owner, uint64_t gh, uint64_t hv, bint loose, uint64_t oh):
        cdef uint64_t mh = fdn_mix2(gh, hv)
        cdef uint64_t ver, seq
        cdef size_t idx
        cdef fdn_shard *s = self._shard(gh, &idx)
        cdef fdn_list *gl
        cdef fdn_list *ownl
        cdef fdn_rec *rec
        cdef PyObject *po = <PyObject *>owner if owner is not None else NULL
        cdef PyObject *old_md = NULL
        cdef PyObject *old_owner = NULL
        cdef PyObject *dropped = NULL
        cdef int r, created = 0
        cdef unsigned tmask = 0, ltmask
        cdef bint update, moved
        if fdn_traced(<PyObject *>value):
            tmask |= FDN_T_VALUE
        if fdn_meta_traced(<PyObject *>md, <PyObject *>_EMPTY):
            tmask |= FDN_T_META
        if po != NULL and fdn_traced(po):
            tmask |= FDN_T_OWNER
        ltmask = FDN_TL(0, FDN_TL_KEY if tmask & FDN_T_OWNER else 0,
                        (FDN_TL_KEY if fdn_traced(<PyObject *>ns) else 0)
                        | (FDN_TL_KEY2 if fdn_traced(<PyObject *>group) else 0))
        with cython.critical_section(<object>self._locks[idx]):
            while True:
                cur_ns = cur_group = cur_value = None
                if self._closed:
                    raise RegistryClosed()
                ver = s.version
                gl = NULL
                rec = NULL
                r = self._find_group(s, gh, ns, group, ver, &gl)
                if r < 0:
                    _raise_key(ns, group)
                if r == 2:
                    continue
                if r == 1:
                    r = self._find_member(s, gl, mh, value, loose, ver, &rec)
                    if r < 0:
                        _reraise()
                    if r == 2:
                        continue
                update = rec != NULL
                ownl = NULL
                if po != NULL and not (update and rec.owner == <void *>po):
                    r = self._find_list(s, &s.own, oh, owner, ver, &ownl)
                    if r < 0:
                        _raise_key(ns, group)
                    if r == 2:
                        continue
                if update:
                    cur_ns = <object>gl.key
                    cur_group = <object>gl.key2
                    cur_value = <object>rec.value
                    moved = FDN_REC_OWNER(rec) != <void *>po
                    if fdn_shard_member_update(s, rec, <PyObject *>md, po, oh, ownl,
                                               tmask, ltmask, <void **>&old_md,
                                               <void **>&old_owner, <void **>&dropped,
                                               &created) < 0:
                        raise MemoryError()
                    fdn_incref(<PyObject *>md)
                    if moved and po != NULL:
                        fdn_incref(po)
                else:
                    seq = fdn_next_seq(&self._seq)
                    if fdn_shard_join(s, gh, <PyObject *>ns, <PyObject *>group, gl, mh,
                                      loose, <PyObject *>value, <PyObject *>md, po, oh,
                                      ownl, seq, tmask, ltmask, &rec, &created) < 0:
                        raise MemoryError()
                    fdn_incref(<PyObject *>value)
                    fdn_incref(<PyObject *>md)
                    if po != NULL:
                        fdn_incref(po)
                    if created & FDN_CREATED_GRP:
                        fdn_incref(<PyObject *>ns)
                        fdn_incref(<PyObject *>group)
                    cur_ns = <object>rec.ns_list.key
                    cur_group = <object>rec.ns_list.key2
                    cur_value = value
                if created & FDN_CREATED_OWN:
                    fdn_incref(po)  # the new owner list's own reference
                s.writes += 1
                self._mutated()
                break
        # the table is consistent: now Python code may run
        if old_md != NULL:
            fdn_decref(old_md)
        if old_owner != NULL:
            fdn_decref(old_owner)
        if dropped != NULL:
            fdn_decref(dropped)
        reg = _reg(cur_ns, cur_group, cur_value, md, owner)
        if self._nsubs > 0:
            self._listeners.notify(
                _event(_UPDATED if update else _JOINED, reg, _REPLACED if update else _EXPLICIT))
        return reg

    def leave(self, ns, group, value):
        """Remove ``value`` from group ``(ns, group)``.

        Returns:
            True if it was a member; False if not, or when closed.

        Raises:
            InvalidKey: the group key cannot be hashed or compared.
        """
        cdef uint64_t gh, ver
        cdef Py_hash_t hv
        cdef bint loose = False
        cdef size_t idx
        cdef fdn_shard *s
        cdef fdn_list *gl
        cdef fdn_rec *rec
        cdef fdn_removed out
        cdef int r
        if self._closed:
            return False
        self._group_key(ns, group, &gh)
        hv = fdn_hash(<PyObject *>value)
        if hv == -1:
            _unhashable_value()
            loose = True
        s = self._shard(gh, &idx)
        with cython.critical_section(<object>self._locks[idx]):
            while True:
                if self._closed:
                    return False
                ver = s.version
                r = self._find_group(s, gh, ns, group, ver, &gl)
                if r < 0:
                    _raise_key(ns, group)
                if r == 2:
                    continue
                if r == 0:
                    return False
                r = self._find_member(s, gl, fdn_mix2(gh, <uint64_t>hv), value, loose,
                                      ver, &rec)
                if r < 0:
                    _reraise()
                if r == 2:
                    continue
                if r == 0:
                    return False
                fdn_shard_leave(s, rec, &out)
                if out.ns_key == NULL:
                    # the group lives on: take our own references to its keys
                    fdn_incref(<PyObject *>out.ns)
                    fdn_incref(<PyObject *>out.name)
                out.ns_key = NULL
                s.writes += 1
                self._mutated()
                break
        if self._nsubs > 0:
            self._released(&out, 1, _EXPLICIT)
        else:
            _drop_removed(&out)
        return True

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
        cdef size_t k, i, members = 0
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
                members += s.members
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
                        for i in range(s.grp.mask + 1):
                            if s.grp.slots[i].a != NULL:
                                nss.append(<object>s.grp.slots[i].a)
                                if s.version != ver:
                                    break
                    if s.version == ver:
                        break
            namespaces.update(nss)
        return RegistryStats(
            backend="native",
            partitions=self.partitions,
            registrations=len(self),
            memberships=members,
            namespaces=len(namespaces),
            hits=hits,
            misses=misses,
            writes=writes,
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
        """Test hook: per shard, (capacity, used) of each table, the traced
        references (used slots, holes), the order vector (used slots, holes,
        capacity; whether shards share it) and the shard version. Not part of
        the API."""
        cdef size_t k
        cdef fdn_shard *s
        out = []
        for k in range(self._n):
            s = &self._sh[k]
            out.append({
                "main": (s.main.mask + 1, s.main.used),
                "ns": (s.ns.mask + 1, s.ns.used),
                "own": (s.own.mask + 1, s.own.used),
                "grp": (s.grp.mask + 1, s.grp.used),
                "mem": (s.mem.mask + 1, s.mem.used),
                "members": s.members,
                "refs": (s.refs.n, s.refs.holes),
                "refs_shared": s.refs != &s.refs_own,
                "order": (s.order.n, s.order.holes, s.order.cap),
                "order_shared": s.order != &s.order_own,
                "version": s.version,
            })
        return out

    def _traced(self):
        """Test hook: the objects the collector is shown (the traced
        references, in the order it visits them). Not part of the API."""
        cdef size_t k, i
        cdef fdn_shard *s
        out = []
        for k in range(self._n):
            s = &self._sh[k]
            if k > 0 and s.refs == self._sh[k - 1].refs:
                continue  # shared: listed once
            for i in range(s.refs.n):
                if s.refs.v[i] != NULL:
                    out.append(<object>s.refs.v[i])
        return out

    def close(self):
        """Refuse further writes; idempotent. Reads keep the last state.

        Returns once writes already inside a shard's critical section have
        finished (free-threaded builds; under the GIL there are none).
        """
        cdef size_t k
        self._closed = True
        for k in range(self._n):
            with cython.critical_section(<object>self._locks[k]):
                pass


# ---------------------------------------------------------------- the facade's front

cdef class RegistryFront:
    """The base class of :class:`foundation.registry.Registry` when the
    extension is built: ``lookup()`` and ``get()`` as C methods of the
    registry itself.

    Users call ``registry.lookup(ns, name)``, not a method bound ahead of
    time. When that method is an entry of the instance's ``__dict__`` (the
    backend's own bound method), CPython 3.11 cannot specialise the
    attribute load of the call (LOAD_METHOD only specialises methods found
    on the type), which cost about 10 ns of a 30 ns lookup. As a method of
    the type it is specialised, and when the reads are a native table's,
    the C method answers a str key from that table directly (no Python
    frame, no second call); anything else is handed to the backend's own
    method unchanged, errors and keywords included.
    """

    cdef object _front_native   # the NativeBackend answering reads, or None
    cdef object _front_lookup   # the backend's own bound lookup() and get()
    cdef object _front_get

    def _bind_reads(self, lookup, get):
        """Answer ``lookup()``/``get()`` with these (the backend's own bound
        methods). Returns True when the native table behind them answers
        directly, else False (the facade then binds them per instance)."""
        owner = getattr(lookup, "__self__", None)
        self._front_lookup = lookup
        self._front_get = get
        if type(owner) is NativeBackend and getattr(get, "__self__", None) is owner:
            self._front_native = owner
            return True
        self._front_native = None
        return False

    def lookup(self, ns, name):
        """Return the value registered under ``(ns, name)``.

        Raises:
            NotRegistered: nothing is registered there.
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._front_lookup(ns, name)

    def get(self, ns, name, default=None):
        """Return the value under ``(ns, name)``, or ``default``.

        Raises:
            InvalidKey: the key cannot be hashed or compared.
        """
        return self._front_get(ns, name, default)


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


cdef PyObject *_front_lookup_fast(PyObject *self, PyObject **args, Py_ssize_t nargs,
                                  PyObject *kwnames) noexcept:
    cdef PyObject *v
    cdef RegistryFront f = <RegistryFront>self
    cdef NativeBackend b
    if nargs == 2 and kwnames == NULL and f._front_native is not None:
        b = <NativeBackend>f._front_native
        if fdn_get_str(b._sh, b._n, args[0], args[1], &v, 0) == FDN_HIT:
            fdn_incref(v)
            return v
    return fdn_vectorcall(<PyObject *>f._front_lookup, args, nargs, kwnames)


cdef PyObject *_front_get_fast(PyObject *self, PyObject **args, Py_ssize_t nargs,
                               PyObject *kwnames) noexcept:
    cdef PyObject *v
    cdef RegistryFront f = <RegistryFront>self
    cdef NativeBackend b
    cdef int r
    if (nargs == 2 or nargs == 3) and kwnames == NULL and f._front_native is not None:
        b = <NativeBackend>f._front_native
        r = fdn_get_str(b._sh, b._n, args[0], args[1], &v, 1)
        if r == FDN_HIT:
            fdn_incref(v)
            return v
        if r == FDN_MISS:
            v = args[2] if nargs == 3 else <PyObject *>None
            fdn_incref(v)
            return v
    return fdn_vectorcall(<PyObject *>f._front_get, args, nargs, kwnames)


def _clinic_doc(descr):
    """The docstring with its signature line, as inspect.signature() reads it."""
    if descr.__text_signature__ is None:
        return descr.__doc__
    return f"{descr.__name__}{descr.__text_signature__}\n--\n\n{descr.__doc__}"


fdn_install_fastcall(<PyTypeObject *>NativeBackend, "lookup", _lookup_fast,
                     _clinic_doc(NativeBackend.__dict__["lookup"]))
fdn_install_fastcall(<PyTypeObject *>NativeBackend, "get", _get_fast,
                     _clinic_doc(NativeBackend.__dict__["get"]))
_front_docs = (_clinic_doc(RegistryFront.__dict__["lookup"]),
               _clinic_doc(RegistryFront.__dict__["get"]))
del _clinic_doc


def install_front(cls):
    """Give ``cls`` (a subclass of :class:`RegistryFront`: the facade's
    Registry) its C ``lookup()``/``get()``. They are made for ``cls`` itself,
    not inherited from RegistryFront: CPython specialises the call of a C
    method only on instances of exactly the type that defines it (a
    subclass's instances take the generic path, about 30% slower)."""
    if not (isinstance(cls, type) and issubclass(cls, RegistryFront)):
        raise TypeError(f"{cls!r} is not a subclass of RegistryFront")
    setattr(cls, "lookup", fdn_new_fastcall(<PyTypeObject *>cls, "lookup",
                                            _front_lookup_fast, _front_docs[0]))
    setattr(cls, "get", fdn_new_fastcall(<PyTypeObject *>cls, "get",
                                         _front_get_fast, _front_docs[1]))
