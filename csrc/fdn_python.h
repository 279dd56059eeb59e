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
 * The object references a shard holds, for the backend's tp_traverse (so a
 * value that refers back to its registry forms a cycle the GC can see and
 * collect, instead of a leak).
 */
static inline int fdn_traverse_shards(fdn_shard *sh, size_t n, visitproc visit,
                                      void *arg)
{
    size_t k, i;
    for (k = 0; sh != NULL && k < n; k++) {
        fdn_shard *s = &sh[k];
        if (s->main.slots != NULL) {
            for (i = 0; i <= s->main.mask; i++) {
                fdn_slot *e = &s->main.slots[i];
                fdn_rec *rec;
                if (e->a == NULL)
                    continue;
                rec = s->main.recs[i];
                Py_VISIT((PyObject *)e->a);
                Py_VISIT((PyObject *)e->b);
                Py_VISIT((PyObject *)e->value);
                Py_VISIT((PyObject *)rec->meta);
                if (FDN_REC_OWNED(rec))
                    Py_VISIT((PyObject *)rec->owner);
            }
        }
        if (s->ns.slots != NULL) {
            for (i = 0; i <= s->ns.mask; i++)
                if (s->ns.slots[i].a != NULL)
                    Py_VISIT((PyObject *)s->ns.slots[i].a);
        }
        if (s->own.slots != NULL) {
            for (i = 0; i <= s->own.mask; i++)
                if (s->own.slots[i].a != NULL)
                    Py_VISIT((PyObject *)s->own.slots[i].a);
        }
    }
    return 0;
}

#endif /* FDN_PYTHON_H */
