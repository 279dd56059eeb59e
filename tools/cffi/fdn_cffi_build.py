"""cffi builder (API, out-of-line mode) for the Python-agnostic C core in csrc/.

Builds an extension module ``_fdn_cffi`` that compiles ``csrc/fdn_table.c``
and exposes the declarations of ``csrc/fdn_table.h`` that the cffi binding
(``cffi_table.py``) needs, plus a little C glue: a counting allocator with a
failure-injection switch (installed through ``fdn_set_allocator``) and probe /
insert / delete steps that hash and pick the shard in C, so a lookup, insert
or delete that meets no CANDIDATE is one foreign call.

This is the PyPy / fuzzing path, a tool of the source checkout: setup.py
does not build it and the package does not ship it. Build it on demand into
a directory of your choice::

    python tools/cffi/fdn_cffi_build.py BUILD_DIR

or ``build(BUILD_DIR)`` from Python; then put BUILD_DIR on ``sys.path`` (or
use ``cffi_table.load(BUILD_DIR)``, which does both). Nothing is ever
written next to this file.

Runs on CPython >= 3.9 and PyPy3.9 (Debian's pypy3 ships cffi built in): it
imports nothing from ``foundation``, whose other modules need Python 3.11.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

__all__ = ["CDEF", "MODULE_NAME", "PREAMBLE", "build", "csrc_dir", "make_ffi", "source_digest"]

MODULE_NAME = "_fdn_cffi"

# The declarations of fdn_table.h the binding uses (layouts checked against
# the real header by the C compiler: API mode), then the glue below.
CDEF = r"""
typedef struct fdn_allocator {
    void *(*malloc)(size_t size);
    void *(*calloc)(size_t n, size_t size);
    void (*free)(void *ptr);
} fdn_allocator;

void fdn_set_allocator(const fdn_allocator *alloc);

struct fdn_rec;
struct fdn_list;

typedef struct fdn_slot {
    uint64_t hash;
    void *a;
    void *b;
    void *value;
} fdn_slot;

typedef struct fdn_table {
    fdn_slot *slots;
    struct fdn_rec **recs;
    size_t mask;
    size_t used;
    uint64_t version;
} fdn_table;

typedef struct fdn_list {
    struct fdn_rec *first;
    struct fdn_rec *last;
    size_t count;
    void *key;
    uint64_t hash;
    void *key2;
    uint32_t refs;
    uint32_t tmask;
    struct fdn_rec *loose_first;
    struct fdn_rec *loose_last;
    size_t loose;
} fdn_list;

typedef struct fdn_rec {
    void *meta;
    struct fdn_rec *ns_prev;
    struct fdn_rec *ns_next;
    fdn_list *ns_list;
    uint32_t slot;
    uint32_t refs;
    uint64_t seq;
    void *reg;
    uint32_t ord;
    uint32_t shard;
    void *owner;
    struct fdn_rec *own_prev;
    struct fdn_rec *own_next;
    fdn_list *own_list;
    void *value;
    struct fdn_rec *loose_prev;
    struct fdn_rec *loose_next;
} fdn_rec;

typedef struct fdn_order {
    struct fdn_rec **v;
    size_t n;
    size_t cap;
    size_t holes;
} fdn_order;

typedef struct fdn_shard {
    fdn_table main;
    fdn_table ns;
    fdn_table own;
    uint64_t version;
    uint64_t hits;
    uint64_t misses;
    uint64_t writes;
    uint64_t conflicts;
    fdn_order *order;
    ...;
} fdn_shard;

extern fdn_rec fdn_order_end;

typedef struct fdn_removed {
    void *ns;
    void *name;
    void *value;
    void *meta;
    void *owner;
    void *ns_key;
    void *own_key;
    uint64_t seq;
    unsigned member;
    void *reg;
} fdn_removed;

#define FDN_MISS ...
#define FDN_HIT ...
#define FDN_CANDIDATE ...
#define FDN_CREATED_NS ...
#define FDN_CREATED_OWN ...
#define FDN_REC_UNOWNED_SIZE ...
#define FDN_SEQ_SHIFT ...
#define FDN_F_OWNED ...

uint64_t fdn_mix2(uint64_t a, uint64_t b);
uint64_t fdn_mix1(uint64_t a);
size_t fdn_shard_of(uint64_t h, size_t n);
int fdn_probe(const fdn_table *t, uint64_t h, const void *a, const void *b,
              size_t *pos);

int fdn_table_reserve(fdn_table *t, size_t extra);
int fdn_shard_init(fdn_shard *s);
void fdn_shard_free(fdn_shard *s);
int fdn_shard_insert(fdn_shard *s, uint64_t h, void *ns, void *name,
                     void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                     void *owner, uint64_t own_hash, fdn_list *ownl,
                     uint64_t seq, int *created);
void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out);
void *fdn_shard_set_meta(fdn_shard *s, size_t i, void *meta);
uint64_t fdn_next_seq(uint64_t *counter);

/* ---- glue (defined in the set_source preamble) ---- */

typedef struct fdn_cffi_res {
    int kind;
    size_t shard;
    size_t pos;
    uint64_t h;
    uint64_t version;
    intptr_t value;
    intptr_t key;
    size_t count;
} fdn_cffi_res;

typedef struct fdn_cffi_removed {
    intptr_t ns;
    intptr_t name;
    intptr_t value;
    intptr_t meta;
    intptr_t owner;
    intptr_t ns_key;
    intptr_t own_key;
} fdn_cffi_removed;

void *fdn_cffi_malloc(size_t size);
void *fdn_cffi_calloc(size_t n, size_t size);
void fdn_cffi_free(void *p);
void fdn_cffi_inject_alloc_failure(long long after);
long long fdn_cffi_live_blocks(void);

fdn_shard *fdn_cffi_shards_new(size_t n);
void fdn_cffi_shards_free(fdn_shard *sh, size_t n);

intptr_t fdn_cffi_get(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                      intptr_t a, intptr_t b, fdn_cffi_res *r);
int fdn_cffi_next(fdn_shard *sh, intptr_t a, intptr_t b, int eq,
                  fdn_cffi_res *r);
int fdn_cffi_list_get(fdn_shard *sh, size_t shard, int which, int64_t hk,
                      intptr_t key, fdn_cffi_res *r);
int fdn_cffi_list_next(fdn_shard *sh, int which, intptr_t key, int eq,
                       fdn_cffi_res *r);
int fdn_cffi_insert(fdn_shard *sh, size_t shard, uint64_t version, uint64_t h,
                    intptr_t ns, intptr_t name, intptr_t value, intptr_t meta,
                    uint64_t ns_hash, intptr_t nsl, intptr_t owner,
                    uint64_t own_hash, intptr_t ownl, uint64_t *seq,
                    int *created);
int fdn_cffi_insert_fast(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                         intptr_t ns, intptr_t name, intptr_t value,
                         intptr_t meta, int64_t ho, intptr_t owner,
                         uint64_t *seq, int *created);
int fdn_cffi_remove(fdn_shard *sh, const fdn_cffi_res *at,
                    fdn_cffi_removed *out);
int fdn_cffi_delete_fast(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                         intptr_t a, intptr_t b, fdn_cffi_removed *out);
long long fdn_cffi_remove_list(fdn_shard *sh, const fdn_cffi_res *at,
                               fdn_cffi_removed *outs, size_t cap);
"""

# Python-agnostic C glue compiled with the core: the allocator hook, and
# probe / insert / remove steps that each take one foreign call. Python
# objects are named by integers (their id(), see cffi_table.py). A probe
# result lives in an fdn_cffi_res the caller owns; every step after the first
# re-checks the shard version recorded in it, so Python code run in between
# (a key's __eq__) that changed the shard makes the step return -1 (restart).
# The *_fast steps do a whole insert / delete in one call when no probe meets
# a CANDIDATE (which needs Python's __eq__): they return -3 then, untouched.
PREAMBLE = r"""
#include <stdlib.h>
#include "fdn_table.h"

/* A counting allocator for the core, with a failure-injection switch: when
 * fail_after >= 0, the allocation after that many more fails (once). */
static long long fdn_cffi_fail_after = -1;
static long long fdn_cffi_live = 0;

static int fdn_cffi_should_fail(void)
{
    if (fdn_cffi_fail_after < 0)
        return 0;
    return fdn_cffi_fail_after-- == 0;
}

void *fdn_cffi_malloc(size_t size)
{
    void *p = fdn_cffi_should_fail() ? NULL : malloc(size);
    if (p != NULL)
        fdn_cffi_live++;
    return p;
}

void *fdn_cffi_calloc(size_t n, size_t size)
{
    void *p = fdn_cffi_should_fail() ? NULL : calloc(n, size);
    if (p != NULL)
        fdn_cffi_live++;
    return p;
}

void fdn_cffi_free(void *p)
{
    if (p != NULL) {
        fdn_cffi_live--;
        free(p);
    }
}

void fdn_cffi_inject_alloc_failure(long long after) { fdn_cffi_fail_after = after; }
long long fdn_cffi_live_blocks(void) { return fdn_cffi_live; }

typedef struct fdn_cffi_res {
    int kind;          /* FDN_MISS / FDN_HIT / FDN_CANDIDATE */
    size_t shard;      /* the key's shard */
    size_t pos;        /* the slot the probe reached */
    uint64_t h;        /* the (mixed) hash probed for */
    uint64_t version;  /* the shard's version when the probe began */
    intptr_t value;    /* the slot's value on HIT / CANDIDATE */
    intptr_t key;      /* index probes: the slot's key on CANDIDATE */
    size_t count;      /* index probes: the list's length on HIT */
} fdn_cffi_res;

typedef struct fdn_cffi_removed {
    intptr_t ns;
    intptr_t name;
    intptr_t value;
    intptr_t meta;
    intptr_t owner;    /* 0: unowned */
    intptr_t ns_key;   /* non-0: the namespace list was dropped (its key) */
    intptr_t own_key;  /* non-0: the owner list was dropped (its key) */
} fdn_cffi_removed;

/* n initialised shards (calloc'd: not counted by the core's allocator), or
 * NULL with nothing allocated. */
fdn_shard *fdn_cffi_shards_new(size_t n)
{
    size_t i, k;
    fdn_shard *sh = (fdn_shard *)calloc(n ? n : 1, sizeof(fdn_shard));
    if (sh == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (fdn_shard_init(&sh[i]) < 0) {
            for (k = 0; k < i; k++)
                fdn_shard_free(&sh[k]);
            free(sh);
            return NULL;
        }
    }
    return sh;
}

void fdn_cffi_shards_free(fdn_shard *sh, size_t n)
{
    size_t i;
    if (sh == NULL)
        return;
    for (i = 0; i < n; i++)
        fdn_shard_free(&sh[i]);
    free(sh);
}

static void fdn_cffi_found(const fdn_table *t, int kind, fdn_cffi_res *r)
{
    r->kind = kind;
    r->value = kind != FDN_MISS ? (intptr_t)t->slots[r->pos].value : 0;
}

/* Hash (h1, h2) as the Cython binding does, pick the shard, probe its main
 * table for identities (a, b). Returns the slot's value on a HIT, else 0;
 * r says what the probe found and where. */
intptr_t fdn_cffi_get(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                      intptr_t a, intptr_t b, fdn_cffi_res *r)
{
    uint64_t h = fdn_mix2((uint64_t)h1, (uint64_t)h2);
    size_t k = fdn_shard_of(h, n);
    fdn_shard *s = &sh[k];
    size_t pos = (size_t)h & s->main.mask;
    int kind = fdn_probe(&s->main, h, (const void *)a, (const void *)b, &pos);
    r->shard = k;
    r->pos = pos;
    r->h = h;
    r->version = s->version;
    fdn_cffi_found(&s->main, kind, r);
    return kind == FDN_HIT ? r->value : 0;
}

/* After the caller compared the CANDIDATE at r->pos (eq: equal): -1 if the
 * shard changed meanwhile (restart), FDN_HIT if equal, else probe on. */
int fdn_cffi_next(fdn_shard *sh, intptr_t a, intptr_t b, int eq,
                  fdn_cffi_res *r)
{
    fdn_shard *s = &sh[r->shard];
    size_t pos;
    int kind;
    if (s->version != r->version)
        return -1;
    if (eq) {
        r->kind = FDN_HIT;
        return FDN_HIT;
    }
    pos = (r->pos + 1) & s->main.mask;
    kind = fdn_probe(&s->main, r->h, (const void *)a, (const void *)b, &pos);
    r->pos = pos;
    fdn_cffi_found(&s->main, kind, r);
    return kind;
}

static void fdn_cffi_list_found(const fdn_table *t, int kind, fdn_cffi_res *r)
{
    fdn_cffi_found(t, kind, r);
    r->key = kind == FDN_CANDIDATE ? (intptr_t)t->slots[r->pos].a : 0;
    r->count = kind == FDN_HIT ? ((fdn_list *)r->value)->count : 0;
}

/* Probe shard's namespace (which 0) or owner (which 1) index for key, whose
 * Python hash is hk; r->value is the list on HIT. */
int fdn_cffi_list_get(fdn_shard *sh, size_t shard, int which, int64_t hk,
                      intptr_t key, fdn_cffi_res *r)
{
    fdn_shard *s = &sh[shard];
    const fdn_table *t = which ? &s->own : &s->ns;
    uint64_t h = fdn_mix1((uint64_t)hk);
    size_t pos = (size_t)h & t->mask;
    int kind = fdn_probe(t, h, (const void *)key, NULL, &pos);
    r->shard = shard;
    r->pos = pos;
    r->h = h;
    r->version = s->version;
    fdn_cffi_list_found(t, kind, r);
    return kind;
}

int fdn_cffi_list_next(fdn_shard *sh, int which, intptr_t key, int eq,
                       fdn_cffi_res *r)
{
    fdn_shard *s = &sh[r->shard];
    const fdn_table *t = which ? &s->own : &s->ns;
    size_t pos;
    int kind;
    if (s->version != r->version)
        return -1;
    if (eq) {
        fdn_cffi_list_found(t, FDN_HIT, r);
        return FDN_HIT;
    }
    pos = (r->pos + 1) & t->mask;
    kind = fdn_probe(t, r->h, (const void *)key, NULL, &pos);
    r->pos = pos;
    fdn_cffi_list_found(t, kind, r);
    return kind;
}

/* fdn_shard_insert with identities as integers (owner 0: none), if the
 * shard is still at `version`: 0 inserted, -1 no memory (nothing changed),
 * -2 the shard changed (restart). */
int fdn_cffi_insert(fdn_shard *sh, size_t shard, uint64_t version, uint64_t h,
                    intptr_t ns, intptr_t name, intptr_t value, intptr_t meta,
                    uint64_t ns_hash, intptr_t nsl, intptr_t owner,
                    uint64_t own_hash, intptr_t ownl, uint64_t *seq,
                    int *created)
{
    fdn_shard *s = &sh[shard];
    if (s->version != version)
        return -2;
    return fdn_shard_insert(s, h, (void *)ns, (void *)name, (void *)value,
                            (void *)meta, ns_hash, (fdn_list *)nsl, (void *)owner,
                            own_hash, (fdn_list *)ownl, fdn_next_seq(seq), created);
}

/* Probe index table t for key by identity only: the list, NULL if absent;
 * *cand set if a CANDIDATE was met first. */
static fdn_list *fdn_cffi_list_identity(const fdn_table *t, uint64_t h,
                                        intptr_t key, int *cand)
{
    size_t pos = (size_t)h & t->mask;
    int kind = fdn_probe(t, h, (const void *)key, NULL, &pos);
    if (kind == FDN_CANDIDATE)
        *cand = 1;
    return kind == FDN_HIT ? (fdn_list *)t->slots[pos].value : NULL;
}

/* The whole insert in one call when no probe meets a CANDIDATE: 0 inserted,
 * 1 present (the very key objects), -1 no memory (nothing changed), -3 a
 * CANDIDATE needs Python's __eq__ (nothing done: take the slow path). */
int fdn_cffi_insert_fast(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                         intptr_t ns, intptr_t name, intptr_t value,
                         intptr_t meta, int64_t ho, intptr_t owner,
                         uint64_t *seq, int *created)
{
    uint64_t h = fdn_mix2((uint64_t)h1, (uint64_t)h2);
    uint64_t nh = fdn_mix1((uint64_t)h1), oh = 0;
    fdn_shard *s = &sh[fdn_shard_of(h, n)];
    size_t pos = (size_t)h & s->main.mask;
    fdn_list *nsl, *ownl = NULL;
    int cand = 0;
    int kind = fdn_probe(&s->main, h, (const void *)ns, (const void *)name, &pos);
    if (kind == FDN_HIT)
        return 1;
    if (kind == FDN_CANDIDATE)
        return -3;
    nsl = fdn_cffi_list_identity(&s->ns, nh, ns, &cand);
    if (owner != 0) {
        oh = fdn_mix1((uint64_t)ho);
        ownl = fdn_cffi_list_identity(&s->own, oh, owner, &cand);
    }
    if (cand)
        return -3;
    return fdn_shard_insert(s, h, (void *)ns, (void *)name, (void *)value,
                            (void *)meta, nh, nsl, (void *)owner, oh, ownl,
                            fdn_next_seq(seq), created);
}

static void fdn_cffi_take(fdn_shard *s, size_t pos, fdn_cffi_removed *out)
{
    fdn_removed o;
    fdn_shard_remove_at(s, pos, &o);
    out->ns = (intptr_t)o.ns;
    out->name = (intptr_t)o.name;
    out->value = (intptr_t)o.value;
    out->meta = (intptr_t)o.meta;
    out->owner = (intptr_t)o.owner;
    out->ns_key = (intptr_t)o.ns_key;
    out->own_key = (intptr_t)o.own_key;
}

/* Remove the entry a probe found (r->kind FDN_HIT) if the shard did not
 * change since: 0 removed (out filled), -1 restart. */
int fdn_cffi_remove(fdn_shard *sh, const fdn_cffi_res *at, fdn_cffi_removed *out)
{
    fdn_shard *s = &sh[at->shard];
    if (s->version != at->version || at->kind != FDN_HIT)
        return -1;
    fdn_cffi_take(s, at->pos, out);
    return 0;
}

/* The whole delete in one call for an identity HIT: 0 removed (out filled),
 * 1 absent, -3 a CANDIDATE needs Python's __eq__ (nothing done). */
int fdn_cffi_delete_fast(fdn_shard *sh, size_t n, int64_t h1, int64_t h2,
                         intptr_t a, intptr_t b, fdn_cffi_removed *out)
{
    uint64_t h = fdn_mix2((uint64_t)h1, (uint64_t)h2);
    fdn_shard *s = &sh[fdn_shard_of(h, n)];
    size_t pos = (size_t)h & s->main.mask;
    int kind = fdn_probe(&s->main, h, (const void *)a, (const void *)b, &pos);
    if (kind == FDN_MISS)
        return 1;
    if (kind == FDN_CANDIDATE)
        return -3;
    fdn_cffi_take(s, pos, out);
    return 0;
}

/* Remove every entry of the index list a probe found (at most cap; the list
 * is freed with its last entry) with no call out in between: how many, or
 * -1 if the shard changed since the probe (restart). */
long long fdn_cffi_remove_list(fdn_shard *sh, const fdn_cffi_res *at,
                               fdn_cffi_removed *outs, size_t cap)
{
    fdn_shard *s = &sh[at->shard];
    fdn_list *l = (fdn_list *)at->value;
    size_t i, n;
    if (s->version != at->version || at->kind != FDN_HIT)
        return -1;
    n = l->count < cap ? l->count : cap;
    for (i = 0; i < n; i++)
        fdn_cffi_take(s, l->first->slot, &outs[i]);
    return (long long)n;
}
"""


def csrc_dir() -> str:
    """The csrc/ directory: ``$FDN_CSRC_DIR`` if set, else the one of the
    checkout this file belongs to (``tools/cffi/../../csrc``)."""
    given = os.environ.get("FDN_CSRC_DIR")
    if given:
        return os.path.normpath(given)
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "csrc"))


def source_digest() -> str:
    """A digest of everything the module is built from (C sources and glue)."""
    d = hashlib.sha256()
    d.update(CDEF.encode())
    d.update(PREAMBLE.encode())
    for name in ("fdn_table.h", "fdn_table.c"):
        with open(os.path.join(csrc_dir(), name), "rb") as f:
            d.update(f.read())
    return d.hexdigest()[:16]


def make_ffi(extra_compile_args: list[str] | None = None) -> Any:
    """The ``cffi.FFI`` builder of ``_fdn_cffi`` (not yet compiled)."""
    import cffi  # type: ignore[import-untyped,unused-ignore]

    csrc = csrc_dir()
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        MODULE_NAME,
        PREAMBLE,
        sources=[os.path.join(csrc, "fdn_table.c")],
        include_dirs=[csrc],
        extra_compile_args=["-O2", *(extra_compile_args or [])],
        depends=[os.path.join(csrc, "fdn_table.h"), os.path.join(csrc, "fdn_table.c")],
    )
    return ffi


def build(
    build_dir: str, *, verbose: bool = False, extra_compile_args: list[str] | None = None
) -> str:
    """Compile ``_fdn_cffi`` into ``build_dir`` (created if needed).

    Rebuilds only when the sources changed since the last build there (a
    digest file records them). Returns the path of the extension module.

    Raises:
        cffi.VerificationError (or a setuptools CompileError): no compiler,
            or the declarations disagree with the header.
    """
    build_dir = os.path.abspath(build_dir)
    os.makedirs(build_dir, exist_ok=True)
    stamp = os.path.join(build_dir, MODULE_NAME + ".digest")
    digest = source_digest() + " " + " ".join(extra_compile_args or [])
    existing = _find_module(build_dir)
    if existing is not None and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == digest.strip():
                return existing
    ffi = make_ffi(extra_compile_args)
    path = str(ffi.compile(tmpdir=build_dir, verbose=verbose))
    with open(stamp, "w") as f:
        f.write(digest.strip() + "\n")
    return path


def _find_module(build_dir: str) -> str | None:
    import importlib.machinery

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(build_dir, MODULE_NAME + suffix)
        if os.path.exists(path):
            return path
    return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} BUILD_DIR")
    print(build(sys.argv[1], verbose=True))
