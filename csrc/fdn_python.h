/*
 * fdn_python.h: the Python glue of the native registry, the one csrc file
 * that includes Python.h (fdn_table.{h,c} stay Python-agnostic).
 *
 * Included only by the Cython binding (_native.pyx through _native.pxd).
 */
#ifndef FDN_PYTHON_H
#define FDN_PYTHON_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fdn_table.h"

/* types.MappingProxyType's layout (Objects/descrobject.c; unchanged since
 * it was added): the metadata the registry stores is one over its own dict. */
typedef struct {
    PyObject_HEAD
    PyObject *mapping;
} fdn_proxy;


/*
 * Table memory goes through PyMem_*, which tracemalloc traces like any
 * object allocation (so the memory benchmark sees the slots, records and
 * lists), and which serves the 48/80-byte records from pymalloc's pools.
 * Every call into the table holds the GIL (or an attached thread state on
 * free-threaded builds), as PyMem_* requires.
 */
/* 1 on free-threaded builds, where every shard access must hold the
 * shard's critical section; 0 under the GIL, where reads take no lock. */
#ifdef Py_GIL_DISABLED
#define FDN_FREETHREADED 1
#else
#define FDN_FREETHREADED 0
#endif

/* Test hook: when >= 0, the allocation after that many more fails (then
 * the hook disarms itself). Lets tests check "MemoryError, table unchanged". */
static Py_ssize_t fdn_fail_countdown = -1;

static inline int fdn_py_should_fail(void)
{
    if (fdn_fail_countdown < 0)
        return 0;
    return fdn_fail_countdown-- == 0;
}

static void *fdn_py_malloc(size_t n)
{
    return fdn_py_should_fail() ? NULL : PyMem_Malloc(n);
}
static void *fdn_py_calloc(size_t n, size_t m)
{
    return fdn_py_should_fail() ? NULL : PyMem_Calloc(n, m);
}
static void fdn_py_free(void *p) { PyMem_Free(p); }

static inline void fdn_inject_alloc_failure(Py_ssize_t after)
{
    fdn_fail_countdown = after;
}

static inline void fdn_use_python_allocator(void)
{
    static const fdn_allocator a = {fdn_py_malloc, fdn_py_calloc, fdn_py_free};
    fdn_set_allocator(&a);
}

/*
 * hash(o), reading a str's cached hash without a call (the common case:
 * service names are prebuilt str). -1 with an exception set on failure.
 * The cached-hash shortcut is skipped on free-threaded builds, where the
 * field is written racily by other threads.
 */
static inline Py_hash_t fdn_hash(PyObject *o)
{
#if !defined(Py_GIL_DISABLED) && !defined(Py_LIMITED_API)
    if (PyUnicode_CheckExact(o)) {
        Py_hash_t h = ((PyASCIIObject *)o)->hash;
        if (h != -1)
            return h;
    }
#endif
    return PyObject_Hash(o);
}

#if !FDN_FREETHREADED && !defined(Py_LIMITED_API)
/* An exact str's hash, computed (and cached) if it was not: hashing an
 * exact str runs no Python code and cannot fail. */
static inline Py_hash_t fdn_str_hash(PyObject *o)
{
    Py_hash_t h = ((PyASCIIObject *)o)->hash;
    return h != -1 ? h : PyObject_Hash(o);
}
#endif

#ifndef Py_LIMITED_API
/* Equality of two exact str, in C (what str.__eq__ does, with no call and
 * no Python code): 1 / 0, or -1 if either is a legacy string that is not
 * ready (the caller takes the general path). */
static inline int fdn_str_eq(PyObject *a, PyObject *b)
{
    Py_ssize_t len;
    int kind;
    if (a == b)
        return 1;
#if PY_VERSION_HEX < 0x030C0000
    if (!PyUnicode_IS_READY(a) || !PyUnicode_IS_READY(b))
        return -1;
#endif
    len = PyUnicode_GET_LENGTH(a);
    kind = PyUnicode_KIND(a);
    if (len != PyUnicode_GET_LENGTH(b) || kind != (int)PyUnicode_KIND(b))
        return 0;
    return memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)len * (size_t)kind) == 0;
}
#endif

/*
 * The read fast path of lookup()/get(): both key parts exact str (the
 * common case: service names). Their hashes are read (or computed: no
 * Python code runs for an exact str), and a stored key that is equal but not
 * identical (a name read from a message, say) is compared in C as long as
 * its parts are exact str too. Reports
 *   FDN_HIT   *value = the stored value (borrowed), hit counted;
 *   FDN_MISS  no equal key can be stored (the probe met an empty slot before
 *             any slot with the same hash), miss counted if count_miss;
 *   FDN_CANDIDATE  anything else (a key part that is not an exact str, a
 *             stored key of another type with the same hash): the caller
 *             takes the general path, which hashes any object and calls
 *             __eq__.
 * No Python code runs and nothing can fail, so under the GIL it needs no
 * lock; on free-threaded builds it always defers to the general path, whose
 * probe runs in the shard's critical section.
 */
static inline int fdn_get_str(fdn_shard *sh, size_t n, PyObject *ns,
                              PyObject *name, PyObject **value, int count_miss)
{
#if FDN_FREETHREADED || defined(Py_LIMITED_API)
    (void)sh; (void)n; (void)ns; (void)name; (void)value; (void)count_miss;
    return FDN_CANDIDATE;
#else
    Py_hash_t h1, h2;
    uint64_t h;
    fdn_shard *s;
    size_t pos;
    int r;

    if (!PyUnicode_CheckExact(ns) || !PyUnicode_CheckExact(name))
        return FDN_CANDIDATE;
    h1 = fdn_str_hash(ns);
    h2 = fdn_str_hash(name);
    h = fdn_mix2((uint64_t)h1, (uint64_t)h2);
    s = &sh[fdn_shard_of(h, n)];
    pos = (size_t)h & s->main.mask;
    r = fdn_probe(&s->main, h, ns, name, &pos);
    while (r == FDN_CANDIDATE) {
        /* the same hash, other objects: equal str, or not */
        const fdn_slot *e = &s->main.slots[pos];
        PyObject *a = (PyObject *)e->a, *b = (PyObject *)e->b;
        int eq;
        if (!PyUnicode_CheckExact(a) || !PyUnicode_CheckExact(b))
            return FDN_CANDIDATE;
        eq = fdn_str_eq(a, ns);
        if (eq > 0)
            eq = fdn_str_eq(b, name);
        if (eq < 0)
            return FDN_CANDIDATE;
        if (eq) {
            r = FDN_HIT;
            break;
        }
        pos = (pos + 1) & s->main.mask;
        r = fdn_probe(&s->main, h, ns, name, &pos);
    }
    if (r == FDN_HIT) {
        s->hits++;
        *value = (PyObject *)s->main.slots[pos].value;
    } else if (r == FDN_MISS && count_miss) {
        s->misses++;
    }
    return r;
#endif
}

/*
 * METH_FASTCALL|METH_KEYWORDS methods put in front of Cython def methods.
 *
 * Cython's def methods parse their arguments in a generic wrapper; for
 * lookup()/get(), whose whole work is ~20 instructions, that wrapper was
 * half the cost of a call. fdn_install_fastcall() replaces the type's
 * method with a C function taking the vector of arguments as given (no
 * tuple, no parsing); the function handles the common case itself and
 * hands every other call, keywords included, to the original def through
 * fdn_call_general(), so errors and signatures stay the def's.
 */
typedef PyObject *(*fdn_fastcall)(PyObject *self, PyObject **args,
                                  Py_ssize_t nargs, PyObject *kwnames);

/* Call fn(self, *args, **kwnames) by vectorcall (fn: an unbound method). */
static PyObject *fdn_call_general(PyObject *fn, PyObject *self,
                                  PyObject **args, Py_ssize_t nargs,
                                  PyObject *kwnames)
{
    PyObject *small[6];
    PyObject **stack = small;
    PyObject *r;
    Py_ssize_t i, total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);

    if (total + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        stack = (PyObject **)PyMem_Malloc((size_t)(total + 1) * sizeof(PyObject *));
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = self;
    for (i = 0; i < total; i++)
        stack[i + 1] = args[i];
    r = PyObject_Vectorcall(fn, stack, (size_t)nargs + 1, kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return r;
}

/* The method definitions made below: they must outlive every descriptor
 * made from them (a type, even one freed at exit, may be in use until
 * then), so they are never freed, and stay reachable from this chain. */
typedef struct fdn_kept_def {
    PyMethodDef def;
    struct fdn_kept_def *next;
} fdn_kept_def;

static fdn_kept_def *fdn_kept_defs = NULL;

/* A METH_FASTCALL|METH_KEYWORDS definition for fn, documented by doc (a
 * str, kept alive forever, as the definition is), or NULL. */
static PyMethodDef *fdn_fastcall_def(const char *name, fdn_fastcall fn, PyObject *doc)
{
    fdn_kept_def *kept;
    const char *text = NULL;

    if (doc != Py_None) {
        text = PyUnicode_AsUTF8(doc);
        if (text == NULL)
            return NULL;
    }
    kept = (fdn_kept_def *)PyMem_RawCalloc(1, sizeof(fdn_kept_def));
    if (kept == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_INCREF(doc);
    kept->def.ml_name = name;
    kept->def.ml_meth = (PyCFunction)(void (*)(void))fn;
    kept->def.ml_flags = METH_FASTCALL | METH_KEYWORDS;
    kept->def.ml_doc = text;
    kept->next = fdn_kept_defs;
    fdn_kept_defs = kept;
    return &kept->def;
}

/* A METH_FASTCALL|METH_KEYWORDS method descriptor of `type` for fn,
 * documented by doc. CPython specialises calls of it (3.11:
 * PRECALL_METHOD_DESCRIPTOR_FAST_WITH_KEYWORDS) only on instances of
 * exactly `type`. A new reference, or NULL. */
static PyObject *fdn_new_fastcall(PyTypeObject *type, const char *name,
                                  fdn_fastcall fn, PyObject *doc)
{
    PyMethodDef *def = fdn_fastcall_def(name, fn, doc);
    if (def == NULL)
        return NULL;
    return PyDescr_NewMethod(type, def);
}

/* Replace type.<name> by a METH_FASTCALL|METH_KEYWORDS descriptor for fn,
 * documented by doc. 0 / -1. */
static int fdn_install_fastcall(PyTypeObject *type, const char *name,
                                fdn_fastcall fn, PyObject *doc)
{
    PyObject *descr = fdn_new_fastcall(type, name, fn, doc);
    int r;
    if (descr == NULL)
        return -1;
    r = PyDict_SetItemString(type->tp_dict, name, descr);
    Py_DECREF(descr);
    PyType_Modified(type);
    return r;
}

/*
 * Equality of a stored key part with a probe key part: 1, 0, or -1 with an
 * exception set. May run Python code (the key's __eq__), so the stored
 * object is kept alive across the call; the caller re-checks the shard
 * version afterwards. The DECREF can run __del__ too, which the same
 * version check covers.
 */
static inline int fdn_eq(PyObject *stored, PyObject *key)
{
    int r;
    if (stored == key)
        return 1;
#ifndef Py_LIMITED_API
    if (PyUnicode_CheckExact(stored) && PyUnicode_CheckExact(key)) {
        r = fdn_str_eq(stored, key);
        if (r >= 0)
            return r;
    }
#endif
    Py_INCREF(stored);
    r = PyObject_RichCompareBool(stored, key, Py_EQ);
    Py_DECREF(stored);
    return r;
}

static inline int fdn_pair_eq(PyObject *sa, PyObject *sb, PyObject *a,
                              PyObject *b)
{
    int r = fdn_eq(sa, a);
    if (r <= 0)
        return r;
    return fdn_eq(sb, b);
}

/*
 * same_value(a, b) of _keys.py in C: identity, or a truthy a == b; an
 * __eq__ (or a bool()) that raises an Exception means "not the same".
 * 1 / 0, or -1 with a BaseException that is not an Exception set
 * (KeyboardInterrupt, trio.Cancelled: never swallowed). May run Python code.
 */
static inline int fdn_same_value(PyObject *a, PyObject *b)
{
    PyObject *res;
    int t;
    if (a == b)
        return 1;
    Py_INCREF(a);
    Py_INCREF(b);
    res = PyObject_RichCompare(a, b, Py_EQ);
    Py_DECREF(a);
    Py_DECREF(b);
    if (res == NULL) {
        t = -1;
    } else {
        t = PyObject_IsTrue(res);
        Py_DECREF(res);
    }
    if (t >= 0)
        return t;
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/*
 * _query._equalities_matcher's test in C, on stored metadata: 1 if the
 * mapping has every fields[i] equal (a truthy ==) to operands[i], else 0;
 * -1 with an exception set when a lookup or a comparison raised (the caller
 * decides: an Exception means "no match"); -2 when md is not a mappingproxy
 * over a dict (the caller uses the Python matcher). The identity shortcut
 * is taken only for types whose == is identity-true (str, int, bool, None),
 * so a NaN still differs from itself as it does in Python. May run Python
 * code (a custom __eq__), which the caller guards against.
 */
static int fdn_md_match(PyObject *md, PyObject **fields, PyObject **operands,
                        Py_ssize_t n)
{
    PyObject *d, *v, *op, *res;
    Py_ssize_t i;
    int t = 1;
    if (n == 0)
        return 1;
    if (!Py_IS_TYPE(md, &PyDictProxy_Type))
        return -2;
    d = ((fdn_proxy *)md)->mapping;
    if (!PyDict_CheckExact(d))
        return -2;
    /* d lives as long as md (a proxy never changes its mapping), which the
     * caller holds */
    for (i = 0; i < n; i++) {
        v = PyDict_GetItemWithError(d, fields[i]);
        if (v == NULL) {
            t = PyErr_Occurred() ? -1 : 0;
            break;
        }
        op = operands[i];
        if (v == op && (PyUnicode_CheckExact(v) || PyLong_CheckExact(v) ||
                        v == Py_None || PyBool_Check(v)))
            continue;
        if (PyUnicode_CheckExact(v) && PyUnicode_CheckExact(op)) {
            if (PyUnicode_GET_LENGTH(v) != PyUnicode_GET_LENGTH(op) ||
                PyUnicode_Compare(v, op) != 0) {
                t = 0;
                break;
            }
            continue;
        }
        Py_INCREF(v);
        res = PyObject_RichCompare(v, op, Py_EQ);
        Py_DECREF(v);
        if (res == NULL) {
            t = -1;
            break;
        }
        t = PyObject_IsTrue(res);
        Py_DECREF(res);
        if (t <= 0)
            break;
    }
    return t;
}

/* The pending exception (normalised, traceback attached) as a new
 * reference, clearing it; NULL if none. */
static inline PyObject *fdn_fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/*
 * A Registration (a NamedTuple, so a tuple subclass without __dict__)
 * built the way tuple.__new__(cls, items) builds one, minus the argument
 * tuple and the Python-level __new__: ~4x cheaper than Registration(...).
 * Steals nothing: takes new references to the five items.
 */
static inline PyObject *fdn_make_record5(PyTypeObject *type, PyObject *a,
                                         PyObject *b, PyObject *c,
                                         PyObject *d, PyObject *e)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* 3.14 caches tuple hashes in the object: let tuple.__new__ set it up */
    PyObject *items = PyTuple_Pack(5, a, b, c, d, e);
    PyObject *args, *t;
    if (items == NULL)
        return NULL;
    args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL)
        return NULL;
    t = PyTuple_Type.tp_new(type, args, NULL);
    Py_DECREF(args);
    return t;
#else
    PyObject *t = type->tp_alloc(type, 5);
    if (t == NULL)
        return NULL;
    Py_INCREF(a);
    PyTuple_SET_ITEM(t, 0, a);
    Py_INCREF(b);
    PyTuple_SET_ITEM(t, 1, b);
    Py_INCREF(c);
    PyTuple_SET_ITEM(t, 2, c);
    Py_INCREF(d);
    PyTuple_SET_ITEM(t, 3, d);
    Py_INCREF(e);
    PyTuple_SET_ITEM(t, 4, e);
    return t;
#endif
}

static inline PyObject *fdn_make_record3(PyTypeObject *type, PyObject *a,
                                         PyObject *b, PyObject *c)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *items = PyTuple_Pack(3, a, b, c);
    PyObject *args, *t;
    if (items == NULL)
        return NULL;
    args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL)
        return NULL;
    t = PyTuple_Type.tp_new(type, args, NULL);
    Py_DECREF(args);
    return t;
#else
    PyObject *t = type->tp_alloc(type, 3);
    if (t == NULL)
        return NULL;
    Py_INCREF(a);
    PyTuple_SET_ITEM(t, 0, a);
    Py_INCREF(b);
    PyTuple_SET_ITEM(t, 1, b);
    Py_INCREF(c);
    PyTuple_SET_ITEM(t, 2, c);
    return t;
#endif
}

static inline PyObject *fdn_make_record2(PyTypeObject *type, PyObject *a,
                                         PyObject *b)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *items = PyTuple_Pack(2, a, b);
    PyObject *args, *t;
    if (items == NULL)
        return NULL;
    args = PyTuple_Pack(1, items);
    Py_DECREF(items);
    if (args == NULL)
        return NULL;
    t = PyTuple_Type.tp_new(type, args, NULL);
    Py_DECREF(args);
    return t;
#else
    PyObject *t = type->tp_alloc(type, 2);
    if (t == NULL)
        return NULL;
    Py_INCREF(a);
    PyTuple_SET_ITEM(t, 0, a);
    Py_INCREF(b);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
#endif
}

/*
 * Which objects the table must show the garbage collector.
 *
 * Only an object that can hold references can be part of a reference cycle,
 * so only those need a visit from the table's tp_traverse: str, int, float,
 * bytes, None (no GC type) never do, nor does a tuple of such objects,
 * recursively (immutable, so it stays that way). Everything else (a service
 * object, a dict, a function, a GC type whose instance is untracked just
 * now, like an empty dict that may later hold a list) is traced.
 */
static int fdn_tuple_traced(PyObject *t, int depth)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(t);
    if (depth > 8)
        return 1;
    for (i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(t, i);
        if (!PyObject_IS_GC(item))
            continue;
        if (PyTuple_CheckExact(item) && !fdn_tuple_traced(item, depth + 1))
            continue;
        return 1;
    }
    return 0;
}

static inline int fdn_traced(PyObject *o)
{
    if (PyUnicode_CheckExact(o) || o == Py_None || PyLong_CheckExact(o))
        return 0;
    if (!PyObject_IS_GC(o))
        return 0;
    if (PyTuple_CheckExact(o))
        return fdn_tuple_traced(o, 0);
    return 1;
}

/*
 * Whether stored metadata must be traced: not when it is the shared empty
 * mapping, or a mappingproxy over an exact dict whose keys and values are
 * all untraced (the registry's own copy, never mutated: it can reach
 * nothing else). Such a dict is untracked here too, as CPython's collector
 * would untrack it on its next full pass. (The proxy stays tracked: its
 * deallocator requires it.)
 */
static inline int fdn_meta_traced(PyObject *md, PyObject *empty)
{
    PyObject *d, *k, *v;
    Py_ssize_t pos = 0;
    if (md == empty)
        return 0;
    if (!Py_IS_TYPE(md, &PyDictProxy_Type))
        return 1;
    d = ((fdn_proxy *)md)->mapping;
    if (!PyDict_CheckExact(d))
        return 1;
    while (PyDict_Next(d, &pos, &k, &v)) {
        if (fdn_traced(k) || fdn_traced(v))
            return 1;
    }
#if !FDN_FREETHREADED
    if (PyObject_GC_IsTracked(d))
        PyObject_GC_UnTrack(d);
#endif
    return 0;
}

/* The trace mask (FDN_T_*) of a name's pointers. */
static inline unsigned fdn_name_tmask(PyObject *ns, PyObject *name, PyObject *value,
                                      PyObject *md, PyObject *owner, PyObject *empty)
{
    unsigned m = 0;
    if (fdn_traced(ns))
        m |= FDN_T_NS;
    if (fdn_traced(name))
        m |= FDN_T_NAME;
    if (fdn_traced(value))
        m |= FDN_T_VALUE;
    if (fdn_meta_traced(md, empty))
        m |= FDN_T_META;
    if (owner != NULL && fdn_traced(owner))
        m |= FDN_T_OWNER;
    return m;
}

/*
 * The backend's tp_traverse over its shards: exactly the traced pointers,
 * in a dense vector in insertion order (objects registered one after
 * another sit together in memory, where the table's slots, in hash order,
 * would send each visit to a new cache line): one shared by every shard
 * under the GIL, each shard's own otherwise. (The order matters beyond
 * this walk: the collector moves the objects it reaches to the end of its
 * list in the order it reaches them, and every later pass walks that list.)
 */
static inline int fdn_traverse_shards(fdn_shard *sh, size_t n, visitproc visit,
                                      void *arg)
{
    size_t k, i;
    for (k = 0; sh != NULL && k < n; k++) {
        fdn_refs *r = sh[k].refs;
        if (k > 0 && r == sh[k - 1].refs)
            continue; /* shared: walked once */
        for (i = 0; i < r->n; i++) {
            if (r->v[i] != NULL)
                Py_VISIT((PyObject *)r->v[i]);
        }
    }
    return 0;
}

static void fdn_release_lists(fdn_table *t, int members)
{
    size_t i;
    if (t->slots == NULL)
        return;
    for (i = 0; i <= t->mask; i++) {
        fdn_list *l;
        fdn_rec *rec;
        if (t->slots[i].a == NULL)
            continue;
        l = (fdn_list *)t->slots[i].value;
        if (members) {
            for (rec = l->first; rec != NULL; rec = rec->ns_next) {
                Py_DECREF((PyObject *)rec->value);
                Py_DECREF((PyObject *)rec->meta);
                Py_XDECREF((PyObject *)rec->reg);
                if (FDN_REC_OWNED(rec))
                    Py_DECREF((PyObject *)rec->owner);
            }
        }
        Py_DECREF((PyObject *)l->key);
        if (l->key2 != NULL)
            Py_DECREF((PyObject *)l->key2);
    }
}

/*
 * Drop every object reference a detached shard holds (the binding has
 * already swapped it out, so code run by a DECREF cannot reach it); the C
 * memory is freed by fdn_shard_free afterwards.
 */
static void fdn_shard_release(fdn_shard *s)
{
    size_t i;
    if (s->main.slots != NULL) {
        for (i = 0; i <= s->main.mask; i++) {
            fdn_slot *e = &s->main.slots[i];
            fdn_rec *rec;
            if (e->a == NULL)
                continue;
            rec = s->main.recs[i];
            Py_DECREF((PyObject *)e->a);
            Py_DECREF((PyObject *)e->b);
            Py_DECREF((PyObject *)e->value);
            Py_DECREF((PyObject *)rec->meta);
            Py_XDECREF((PyObject *)rec->reg);
            if (FDN_REC_OWNED(rec))
                Py_DECREF((PyObject *)rec->owner);
        }
    }
    fdn_release_lists(&s->ns, 0);
    fdn_release_lists(&s->own, 0);
    fdn_release_lists(&s->grp, 1);
}

#endif /* FDN_PYTHON_H */
