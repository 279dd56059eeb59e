# Declarations of the C core (csrc/fdn_table.h) and of its Python glue
# (csrc/fdn_python.h) for the Cython binding in _native.pyx.

from cpython.object cimport PyObject, PyTypeObject
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "fdn_table.h" nogil:
    ctypedef struct fdn_slot:
        uint64_t hash
        void *a
        void *b
        void *value

    cdef struct fdn_rec
    cdef struct fdn_list

    cdef struct fdn_list:
        fdn_rec *first
        fdn_rec *last
        size_t count
        void *key
        uint64_t hash
        void *key2
        uint32_t refs
        uint32_t tmask
        fdn_rec *loose_first
        fdn_rec *loose_last
        size_t loose

    cdef struct fdn_rec:
        void *meta
        fdn_rec *ns_prev
        fdn_rec *ns_next
        fdn_list *ns_list
        uint32_t slot
        uint32_t refs
        uint64_t seq
        void *reg
        uint32_t ord
        uint32_t shard
        void *owner
        fdn_rec *own_prev
        fdn_rec *own_next
        fdn_list *own_list
        void *value
        fdn_rec *loose_prev
        fdn_rec *loose_next

    ctypedef struct fdn_table:
        fdn_slot *slots
        fdn_rec **recs
        size_t mask
        size_t used
        uint64_t version

    ctypedef struct fdn_refs:
        void **v
        size_t n
        size_t cap
        size_t holes

    ctypedef struct fdn_order:
        fdn_rec **v
        size_t n
        size_t cap
        size_t holes

    ctypedef struct fdn_shard:
        fdn_table main
        fdn_table ns
        fdn_table own
        uint64_t version
        uint64_t hits
        uint64_t misses
        uint64_t writes
        uint64_t conflicts
        fdn_table grp
        fdn_table mem
        fdn_refs *refs
        size_t members
        fdn_order *order
        fdn_order order_own
        uint32_t tag
        fdn_refs refs_own

    ctypedef struct fdn_removed:
        void *ns
        void *name
        void *value
        void *meta
        void *owner
        void *ns_key
        void *own_key
        uint64_t seq
        unsigned member
        void *reg

    enum:
        FDN_MISS
        FDN_HIT
        FDN_CANDIDATE
        FDN_CREATED_NS
        FDN_CREATED_OWN
        FDN_CREATED_GRP
        FDN_T_NS
        FDN_T_NAME
        FDN_T_VALUE
        FDN_T_META
        FDN_T_OWNER
        FDN_TL_KEY
        FDN_TL_KEY2
    uint32_t FDN_NONE

    bint FDN_REC_OWNED(fdn_rec *r)
    bint FDN_REC_MEMBER(fdn_rec *r)
    bint FDN_REC_LOOSE(fdn_rec *r)
    void *FDN_REC_OWNER(fdn_rec *r)
    uint64_t FDN_REC_SEQ(fdn_rec *r)
    unsigned FDN_REC_TMASK(fdn_rec *r)
    unsigned FDN_TL(unsigned ns, unsigned own, unsigned grp)

    uint64_t fdn_mix2(uint64_t a, uint64_t b) noexcept
    uint64_t fdn_mix1(uint64_t a) noexcept
    size_t fdn_shard_of(uint64_t h, size_t n) noexcept
    int fdn_probe(const fdn_table *t, uint64_t h, const void *a, const void *b,
                  size_t *pos) noexcept

    int fdn_table_reserve(fdn_table *t, size_t extra) noexcept
    int fdn_shard_init(fdn_shard *s) noexcept
    int fdn_order_init(fdn_order *o) noexcept
    void fdn_order_free(fdn_order *o) noexcept
    int fdn_refs_init(fdn_refs *r, fdn_shard *shards, size_t nshards) noexcept
    void fdn_refs_free(fdn_refs *r) noexcept
    void fdn_shard_attach(fdn_shard *s, uint32_t tag, fdn_order *order,
                          fdn_refs *refs) noexcept
    void fdn_shard_detach(fdn_shard *s) noexcept
    void fdn_shard_free(fdn_shard *s) noexcept
    int fdn_shard_insert_t(fdn_shard *s, uint64_t h, void *ns, void *name,
                           void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                           void *owner, uint64_t own_hash, fdn_list *ownl,
                           uint64_t seq, unsigned tmask, unsigned list_tmask,
                           int *created) noexcept
    void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out) noexcept
    int fdn_shard_set_meta_t(fdn_shard *s, fdn_rec *rec, void *meta,
                             int meta_traced, void **old) noexcept
    int fdn_shard_set_value_t(fdn_shard *s, fdn_rec *rec, void *value,
                              int value_traced, void **old) noexcept
    int fdn_shard_join(fdn_shard *s, uint64_t gh, void *ns, void *group,
                       fdn_list *gl, uint64_t mh, int loose, void *value, void *meta,
                       void *owner, uint64_t own_hash, fdn_list *ownl, uint64_t seq,
                       unsigned tmask, unsigned list_tmask, fdn_rec **out,
                       int *created) noexcept
    int fdn_shard_member_update(fdn_shard *s, fdn_rec *rec, void *meta,
                                void *owner, uint64_t own_hash, fdn_list *ownl,
                                unsigned tmask, unsigned list_tmask,
                                void **old_meta, void **old_owner,
                                void **dropped_own, int *created) noexcept
    void fdn_shard_leave(fdn_shard *s, fdn_rec *rec, fdn_removed *out) noexcept
    void fdn_shard_remove_rec(fdn_shard *s, fdn_rec *rec, fdn_removed *out) noexcept
    uint64_t fdn_next_seq(uint64_t *counter) noexcept

    ctypedef struct fdn_walk:
        size_t k
    int fdn_walk_init(fdn_walk *w, size_t lists) noexcept
    void fdn_walk_add(fdn_walk *w, fdn_rec *first, size_t src) noexcept
    void fdn_walk_add_index(fdn_walk *w, const fdn_table *index, size_t src) noexcept
    void fdn_walk_add_order(fdn_walk *w, fdn_order *order) noexcept
    void fdn_walk_start(fdn_walk *w) noexcept
    fdn_rec *fdn_walk_next(fdn_walk *w, size_t *src) noexcept
    void fdn_walk_free(fdn_walk *w) noexcept


cdef extern from "Python.h":
    # the GC slots, declared without Cython's exception clauses
    ctypedef int (*fdn_visitproc "visitproc")(PyObject *, void *) noexcept
    ctypedef int (*fdn_traverseproc "traverseproc")(PyObject *, fdn_visitproc, void *) noexcept
    ctypedef int (*fdn_inquiry "inquiry")(PyObject *) noexcept
    ctypedef struct fdn_type "PyTypeObject":
        fdn_traverseproc tp_traverse
        fdn_inquiry tp_clear


cdef extern from "fdn_python.h":
    bint FDN_FREETHREADED
    # the str fast path of lookup()/get() and the fastcall method glue
    int fdn_get_str(fdn_shard *sh, size_t n, PyObject *ns, PyObject *name,
                    PyObject **value, int count_miss) noexcept
    ctypedef PyObject *(*fdn_fastcall)(PyObject *self, PyObject **args,
                                       Py_ssize_t nargs, PyObject *kwnames) noexcept
    PyObject *fdn_call_general(PyObject *fn, PyObject *self, PyObject **args,
                               Py_ssize_t nargs, PyObject *kwnames) noexcept
    PyObject *fdn_vectorcall "PyObject_Vectorcall"(PyObject *fn, PyObject **args,
                                                   size_t nargsf, PyObject *kwnames) noexcept
    int fdn_install_fastcall(PyTypeObject *type, const char *name, fdn_fastcall fn,
                             object doc) except -1
    object fdn_new_fastcall(PyTypeObject *type, const char *name, fdn_fastcall fn,
                            object doc)
    int fdn_traverse_shards(fdn_shard *sh, size_t n, fdn_visitproc visit, void *arg) noexcept
    # what the collector must see (see csrc/fdn_python.h)
    int fdn_traced(PyObject *o) noexcept
    int fdn_meta_traced(PyObject *md, PyObject *empty) noexcept
    unsigned fdn_name_tmask(PyObject *ns, PyObject *name, PyObject *value,
                            PyObject *md, PyObject *owner, PyObject *empty) noexcept
    void fdn_shard_release(fdn_shard *s) noexcept
    # -1 with a non-Exception BaseException set; may run Python code
    int fdn_same_value(PyObject *a, PyObject *b) noexcept
    # 1 / 0, -1 with an exception set, -2 not a proxy over a dict
    int fdn_md_match(PyObject *md, PyObject **fields, PyObject **operands,
                     Py_ssize_t n) noexcept
    void fdn_use_python_allocator() noexcept
    void fdn_inject_alloc_failure(Py_ssize_t after) noexcept
    # -1 with an exception set on failure (these may run Python code)
    Py_hash_t fdn_hash(PyObject *o) noexcept
    int fdn_eq(PyObject *stored, PyObject *key) noexcept
    int fdn_pair_eq(PyObject *sa, PyObject *sb, PyObject *a, PyObject *b) noexcept
    PyObject *fdn_fetch_exception() noexcept
    object fdn_make_record5(PyTypeObject *t, object a, object b, object c,
                            object d, object e)
    object fdn_make_record2(PyTypeObject *t, object a, object b)
    object fdn_make_record3(PyTypeObject *t, object a, object b, object c)
    # raw reference counting on PyObject* taken out of the table
    void fdn_incref "Py_INCREF"(PyObject *o) noexcept
    void fdn_decref "Py_DECREF"(PyObject *o) noexcept
    int fdn_gc_enable "PyGC_Enable"() noexcept
    int fdn_gc_disable "PyGC_Disable"() noexcept
    void fdn_gc_untrack "PyObject_GC_UnTrack"(PyObject *o) noexcept
    void fdn_xdecref "Py_XDECREF"(PyObject *o) noexcept
    # steals the reference to o
    void fdn_list_set_item "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject *o) noexcept
