/* fdn_table.c: see fdn_table.h. Python-agnostic. */
#include "fdn_table.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <stdint.h>
#include <sys/mman.h>
#endif

#define FDN_MIN_CAPACITY 8u
#define FDN_MAX_CAPACITY ((size_t)1 << 31)

static void *std_malloc(size_t size) { return malloc(size); }
static void *std_calloc(size_t n, size_t size) { return calloc(n, size); }
static void std_free(void *p) { free(p); }

static fdn_allocator fdn_alloc = {std_malloc, std_calloc, std_free};

void fdn_set_allocator(const fdn_allocator *alloc)
{
    fdn_alloc = *alloc;
}

/* ------------------------------------------------------------ tables */

#define FDN_HUGE_PAGE ((size_t)2 << 20)

/*
 * Ask for transparent huge pages on the 2 MiB-aligned interior of a large
 * array. A lookup in a table of 1e6 entries is one cache miss on its slot;
 * with 4 KiB pages it is also a TLB miss (a 32 MiB slot array spans 8,192
 * pages), which costs as much again. Advisory: where THP is off, or the
 * kernel has none to give, nothing changes.
 */
static void advise_huge(void *p, size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    uintptr_t start = ((uintptr_t)p + FDN_HUGE_PAGE - 1) & ~(uintptr_t)(FDN_HUGE_PAGE - 1);
    uintptr_t end = ((uintptr_t)p + size) & ~(uintptr_t)(FDN_HUGE_PAGE - 1);
    if (end > start)
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)p;
    (void)size;
#endif
}

static int table_alloc(fdn_table *t, size_t capacity, int with_recs)
{
    fdn_slot *slots;
    struct fdn_rec **recs = NULL;

    /* slot indexes are 32-bit in the records (fdn_rec.slot) */
    if (capacity > FDN_MAX_CAPACITY || capacity > ((size_t)-1) / sizeof(fdn_slot))
        return -1;
    slots = (fdn_slot *)fdn_alloc.calloc(capacity, sizeof(fdn_slot));
    if (slots == NULL)
        return -1;
    if (capacity * sizeof(fdn_slot) >= 2 * FDN_HUGE_PAGE)
        advise_huge(slots, capacity * sizeof(fdn_slot));
    if (with_recs) {
        recs = (struct fdn_rec **)fdn_alloc.calloc(capacity, sizeof(*recs));
        if (recs == NULL) {
            fdn_alloc.free(slots);
            return -1;
        }
    }
    t->slots = slots;
    t->recs = recs;
    t->mask = capacity - 1;
    return 0;
}

int fdn_table_init(fdn_table *t, int with_recs)
{
    memset(t, 0, sizeof(*t));
    return table_alloc(t, FDN_MIN_CAPACITY, with_recs);
}

void fdn_table_free(fdn_table *t)
{
    if (t->slots != NULL)
        fdn_alloc.free(t->slots);
    if (t->recs != NULL)
        fdn_alloc.free(t->recs);
    t->slots = NULL;
    t->recs = NULL;
    t->mask = 0;
    t->used = 0;
}

int fdn_table_resize(fdn_table *t, size_t capacity)
{
    fdn_table old = *t;
    size_t i, j, mask;

    if (capacity < FDN_MIN_CAPACITY || (capacity & (capacity - 1)) != 0 ||
        t->used * 3 > capacity * 2)
        return -1;
    if (table_alloc(t, capacity, old.recs != NULL) < 0) {
        *t = old;
        return -1;
    }
    mask = t->mask;
    for (i = 0; i <= old.mask; i++) {
        fdn_slot *e = &old.slots[i];
        if (e->a == NULL)
            continue;
        j = (size_t)e->hash & mask;
        while (t->slots[j].a != NULL)
            j = (j + 1) & mask;
        t->slots[j] = *e;
        if (old.recs != NULL) {
            t->recs[j] = old.recs[i];
            t->recs[j]->slot = (uint32_t)j;
        }
    }
    fdn_alloc.free(old.slots);
    if (old.recs != NULL)
        fdn_alloc.free(old.recs);
    t->version++;
    return 0;
}

int fdn_table_reserve(fdn_table *t, size_t extra)
{
    size_t need, capacity = t->mask + 1;

    /* need * 3 below must not wrap (it once reported room it had not made) */
    if (extra > ((size_t)-1) / 3 - t->used)
        return -1;
    need = t->used + extra;

    if (need * 3 <= capacity * 2)
        return 0;
    while (need * 3 > capacity * 2) {
        if (capacity >= FDN_MAX_CAPACITY)
            return -1;
        capacity *= 2;
    }
    return fdn_table_resize(t, capacity);
}

void fdn_table_maybe_shrink(fdn_table *t)
{
    size_t capacity = t->mask + 1;
    size_t target;

    if (capacity <= FDN_MIN_CAPACITY || t->used * 8 >= capacity)
        return;
    /* land at about 1/4 full: room to grow back before the next resize */
    target = FDN_MIN_CAPACITY;
    while (target < t->used * 4)
        target *= 2;
    if (target < capacity)
        (void)fdn_table_resize(t, target); /* failure: keep the big table */
}

size_t fdn_table_insert_new(fdn_table *t, uint64_t h, void *a, void *b,
                            void *value, struct fdn_rec *rec)
{
    size_t mask = t->mask;
    size_t i = (size_t)h & mask;
    fdn_slot *e;

    while (t->slots[i].a != NULL)
        i = (i + 1) & mask;
    e = &t->slots[i];
    e->hash = h;
    e->a = a;
    e->b = b;
    e->value = value;
    if (t->recs != NULL) {
        t->recs[i] = rec;
        if (rec != NULL)
            rec->slot = (uint32_t)i;
    }
    t->used++;
    t->version++;
    return i;
}

size_t fdn_table_find_identity(const fdn_table *t, uint64_t h, const void *a,
                               const void *b)
{
    size_t mask = t->mask;
    size_t i = (size_t)h & mask;

    for (;;) {
        const fdn_slot *e = &t->slots[i];
        if (e->hash == h && e->a == a && e->b == b)
            return i;
        /* absent: a broken caller invariant; debug and sanitizer builds stop
         * here instead of probing forever */
        assert(e->a != NULL);
        i = (i + 1) & mask;
    }
}

void fdn_table_delete_at(fdn_table *t, size_t i)
{
    size_t mask = t->mask;
    size_t j = i;
    fdn_slot *slots = t->slots;

    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (slots[j].a == NULL)
            break;
        home = (size_t)slots[j].hash & mask;
        /* j may move back to the hole i if i lies on its probe path, i.e.
         * if its distance from home to j is at least the distance i..j */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            slots[i] = slots[j];
            if (t->recs != NULL) {
                t->recs[i] = t->recs[j];
                if (t->recs[i] != NULL)
                    t->recs[i]->slot = (uint32_t)i;
            }
            i = j;
        }
    }
    memset(&slots[i], 0, sizeof(fdn_slot));
    if (t->recs != NULL)
        t->recs[i] = NULL;
    t->used--;
    t->version++;
}


/* ------------------------------------------------------------ traced refs */

/* The refs vector's indexes are 32-bit, FDN_NONE (UINT32_MAX) meaning none. */
#define FDN_REFS_MAX ((size_t)UINT32_MAX - 1)

static unsigned popcount8(unsigned x)
{
    unsigned n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

/* Room for `extra` more pointers. 0 / -1 (unchanged). */
static int refs_reserve(fdn_refs *r, size_t extra)
{
    size_t cap;
    void **v;
    if (extra <= r->cap - r->n)
        return 0;
    if (extra > FDN_REFS_MAX - r->n)
        return -1;
    cap = r->cap ? r->cap : 16;
    while (cap - r->n < extra) {
        if (cap >= FDN_REFS_MAX / 2) {
            cap = FDN_REFS_MAX;
            break;
        }
        cap *= 2;
    }
    v = (void **)fdn_alloc.malloc(cap * sizeof(void *));
    if (v == NULL)
        return -1;
    if (r->n)
        memcpy(v, r->v, r->n * sizeof(void *));
    if (r->v != NULL)
        fdn_alloc.free(r->v);
    r->v = v;
    r->cap = cap;
    return 0;
}

/* A record's traced pointers, in vector order; returns how many. */
static unsigned rec_traced(const fdn_shard *s, const fdn_rec *rec, void **out)
{
    unsigned m = FDN_REC_TMASK(rec), n = 0;
    const fdn_slot *e = FDN_REC_MEMBER(rec) ? NULL : &s->main.slots[rec->slot];
    if (m & FDN_T_NS)
        out[n++] = e->a;
    if (m & FDN_T_NAME)
        out[n++] = e->b;
    if (m & FDN_T_VALUE)
        out[n++] = e != NULL ? e->value : rec->value;
    if (m & FDN_T_META)
        out[n++] = rec->meta;
    if (m & FDN_T_OWNER)
        out[n++] = rec->owner;
    return n;
}

static unsigned list_traced(const fdn_list *l, void **out)
{
    unsigned n = 0;
    if (l->tmask & FDN_TL_KEY)
        out[n++] = l->key;
    if (l->tmask & FDN_TL_KEY2)
        out[n++] = l->key2;
    return n;
}

/* Append n pointers (room reserved); returns where they start. */
static uint32_t refs_append(fdn_refs *r, void *const *p, unsigned n)
{
    uint32_t at = (uint32_t)r->n;
    unsigned k;
    for (k = 0; k < n; k++)
        r->v[r->n++] = p[k];
    return at;
}

static void rec_refs_put(fdn_shard *s, fdn_rec *rec)
{
    void *p[5];
    unsigned n = rec_traced(s, rec, p);
    rec->refs = n ? refs_append(s->refs, p, n) : FDN_NONE;
}

static void list_refs_put(fdn_shard *s, fdn_list *l)
{
    void *p[2];
    unsigned n = list_traced(l, p);
    l->refs = n ? refs_append(s->refs, p, n) : FDN_NONE;
}

/* Punch n holes from `at`; trailing holes shrink the vector. */
static void refs_drop(fdn_refs *r, uint32_t at, unsigned n)
{
    unsigned k;
    if (at == FDN_NONE || n == 0)
        return;
    for (k = 0; k < n; k++)
        r->v[at + k] = NULL;
    r->holes += n;
    while (r->n > 0 && r->v[r->n - 1] == NULL) {
        r->n--;
        r->holes--;
    }
}

static void rebase_lists(fdn_table *t, const uint32_t *pre, int recs_too)
{
    size_t i;
    if (t->slots == NULL)
        return; /* a freed shard among those sharing the vector */
    for (i = 0; i <= t->mask; i++) {
        fdn_list *l;
        fdn_rec *rec;
        if (t->slots[i].a == NULL)
            continue;
        l = (fdn_list *)t->slots[i].value;
        if (l->refs != FDN_NONE)
            l->refs = pre[l->refs];
        if (!recs_too)
            continue;
        for (rec = l->first; rec != NULL; rec = rec->ns_next)
            if (rec->refs != FDN_NONE)
                rec->refs = pre[rec->refs];
    }
}

/* Squeeze the holes out once they are half the vector, keeping the order.
 * Needs a temporary index map; if that cannot be had the holes stay. */
static void refs_maybe_compact(fdn_shard *s)
{
    fdn_refs *r = s->refs;
    uint32_t *pre;
    size_t i, j, k;
    if (r->holes < 64 || r->holes * 2 < r->n)
        return;
    pre = (uint32_t *)fdn_alloc.malloc(r->n * sizeof(uint32_t));
    if (pre == NULL)
        return;
    for (i = 0, j = 0; i < r->n; i++) {
        pre[i] = (uint32_t)j;
        if (r->v[i] != NULL)
            j++;
    }
    /* every holder, in every shard filing its references here: names
     * (through their namespace lists), members (through their group lists),
     * and the lists themselves */
    for (k = 0; k < r->nshards; k++) {
        fdn_shard *h = &r->shards[k];
        rebase_lists(&h->ns, pre, 1);
        rebase_lists(&h->grp, pre, 1);
        rebase_lists(&h->own, pre, 0);
    }
    fdn_alloc.free(pre);
    for (i = 0, j = 0; i < r->n; i++)
        if (r->v[i] != NULL)
            r->v[j++] = r->v[i];
    r->n = j;
    r->holes = 0;
}

/* ------------------------------------------------------------ order */

fdn_rec fdn_order_end;

static int order_reserve(fdn_order *o);

int fdn_order_init(fdn_order *o)
{
    memset(o, 0, sizeof(*o));
    return order_reserve(o);
}

void fdn_order_free(fdn_order *o)
{
    if (o->v != NULL)
        fdn_alloc.free(o->v);
    memset(o, 0, sizeof(*o));
}

/* Room for one more name (and the end marker after it). 0 / -1. */
static int order_reserve(fdn_order *o)
{
    size_t cap;
    fdn_rec **v;
    if (o->v != NULL && o->n + 2 <= o->cap)
        return 0;
    if (o->n + 2 > FDN_REFS_MAX)
        return -1;
    cap = o->cap ? o->cap : 8;
    while (cap < o->n + 2)
        cap = cap >= FDN_REFS_MAX / 2 ? FDN_REFS_MAX : cap * 2;
    v = (fdn_rec **)fdn_alloc.malloc(cap * sizeof(fdn_rec *));
    if (v == NULL)
        return -1;
    if (o->v != NULL) {
        memcpy(v, o->v, o->n * sizeof(fdn_rec *));
        fdn_alloc.free(o->v);
    }
    v[o->n] = &fdn_order_end;
    o->v = v;
    o->cap = cap;
    return 0;
}

/* Append a name (room reserved). */
static void order_append(fdn_order *o, fdn_rec *rec)
{
    rec->ord = (uint32_t)o->n;
    o->v[o->n++] = rec;
    o->v[o->n] = &fdn_order_end;
}

/* Take a name out: a hole, or trailing holes dropped; squeeze the holes
 * out once they are half the vector (in place: it cannot fail), and give
 * memory back when most of it is unused (if that allocation fails, the
 * vector just stays as large). */
static void order_drop(fdn_order *o, fdn_rec *rec)
{
    size_t i, j;
    o->v[rec->ord] = NULL;
    o->holes++;
    while (o->n > 0 && o->v[o->n - 1] == NULL) {
        o->n--;
        o->holes--;
    }
    o->v[o->n] = &fdn_order_end;
    if (o->holes < 64 || o->holes * 2 < o->n)
        return;
    for (i = 0, j = 0; i < o->n; i++) {
        fdn_rec *r = o->v[i];
        if (r != NULL) {
            r->ord = (uint32_t)j;
            o->v[j++] = r;
        }
    }
    o->n = j;
    o->holes = 0;
    o->v[o->n] = &fdn_order_end;
    if (o->cap >= 64 && (o->n + 1) * 4 < o->cap) {
        size_t cap = o->cap / 2;
        fdn_rec **v;
        while (cap >= 16 && (o->n + 1) * 4 < cap)
            cap /= 2;
        v = (fdn_rec **)fdn_alloc.malloc(cap * sizeof(fdn_rec *));
        if (v != NULL) {
            memcpy(v, o->v, (o->n + 1) * sizeof(fdn_rec *));
            fdn_alloc.free(o->v);
            o->v = v;
            o->cap = cap;
        }
    }
}

/* ------------------------------------------------------------ shards */

int fdn_shard_init(fdn_shard *s)
{
    fdn_table *ts[5];
    int with_recs[5] = {1, 0, 0, 0, 1};
    size_t k, i;
    memset(s, 0, sizeof(*s));
    ts[0] = &s->main;
    ts[1] = &s->ns;
    ts[2] = &s->own;
    ts[3] = &s->grp;
    ts[4] = &s->mem;
    for (k = 0; k < 5; k++) {
        if (fdn_table_init(ts[k], with_recs[k]) < 0) {
            for (i = 0; i < k; i++)
                fdn_table_free(ts[i]);
            return -1;
        }
    }
    s->refs = &s->refs_own;
    s->refs_own.shards = s;
    s->refs_own.nshards = 1;
    /* the order vector from the start, so that a failed insert leaves the
     * shard's allocations as they were */
    s->order = &s->order_own;
    if (order_reserve(s->order) < 0) {
        for (i = 0; i < 5; i++)
            fdn_table_free(ts[i]);
        return -1;
    }
    return 0;
}

static void free_lists(fdn_table *t, int recs_too)
{
    size_t i;
    if (t->slots == NULL)
        return;
    for (i = 0; i <= t->mask; i++) {
        fdn_list *l;
        fdn_rec *rec, *next;
        if (t->slots[i].a == NULL)
            continue;
        l = (fdn_list *)t->slots[i].value;
        if (recs_too) {
            for (rec = l->first; rec != NULL; rec = next) {
                next = rec->ns_next;
                fdn_alloc.free(rec);
            }
        }
        fdn_alloc.free(l);
    }
}

int fdn_refs_init(fdn_refs *r, fdn_shard *shards, size_t nshards)
{
    memset(r, 0, sizeof(*r));
    r->shards = shards;
    r->nshards = nshards;
    return 0;
}

void fdn_refs_free(fdn_refs *r)
{
    if (r->v != NULL)
        fdn_alloc.free(r->v);
    r->v = NULL;
    r->n = r->cap = r->holes = 0;
}

void fdn_shard_attach(fdn_shard *s, uint32_t tag, fdn_order *order, fdn_refs *refs)
{
    assert(s->main.used == 0 && s->members == 0);
    s->tag = tag;
    if (order != NULL && order != s->order) {
        if (s->order == &s->order_own)
            fdn_order_free(&s->order_own);
        s->order = order;
    }
    if (refs != NULL && refs != s->refs) {
        assert(s->refs_own.n == 0);
        if (s->refs == &s->refs_own)
            fdn_refs_free(&s->refs_own);
        s->refs = refs;
    }
}

void fdn_shard_detach(fdn_shard *s)
{
    s->order = &s->order_own;
    s->refs = &s->refs_own;
}

/* A shard going away takes its traced references out of a vector it
 * shares (a compaction meanwhile rebases through its lists, still intact). */
static void drop_shared_refs(fdn_shard *s)
{
    fdn_table *ts[3];
    size_t i, k;
    ts[0] = &s->ns;
    ts[1] = &s->own;
    ts[2] = &s->grp;
    for (i = 0; s->main.slots != NULL && i <= s->main.mask; i++) {
        fdn_rec *rec = s->main.recs[i];
        if (rec != NULL)
            refs_drop(s->refs, rec->refs, popcount8(FDN_REC_TMASK(rec)));
    }
    for (k = 0; k < 3; k++) {
        fdn_table *t = ts[k];
        for (i = 0; t->slots != NULL && i <= t->mask; i++) {
            fdn_list *l = (fdn_list *)t->slots[i].value;
            fdn_rec *rec;
            if (t->slots[i].a == NULL)
                continue;
            refs_drop(s->refs, l->refs, popcount8(l->tmask));
            if (k == 2) {
                for (rec = l->first; rec != NULL; rec = rec->ns_next)
                    refs_drop(s->refs, rec->refs, popcount8(FDN_REC_TMASK(rec)));
            }
        }
    }
}

void fdn_shard_free(fdn_shard *s)
{
    size_t i;
    if (s->refs != NULL && s->refs != &s->refs_own)
        drop_shared_refs(s);
    if (s->main.slots != NULL && s->main.recs != NULL) {
        /* a shared vector outlives the shard: take its names out first */
        if (s->order != NULL && s->order != &s->order_own) {
            for (i = 0; i <= s->main.mask; i++) {
                if (s->main.recs[i] != NULL)
                    order_drop(s->order, s->main.recs[i]);
            }
        }
        for (i = 0; i <= s->main.mask; i++) {
            if (s->main.recs[i] != NULL)
                fdn_alloc.free(s->main.recs[i]);
        }
    }
    free_lists(&s->ns, 0);
    free_lists(&s->own, 0);
    free_lists(&s->grp, 1); /* members, the loose ones included */
    fdn_table_free(&s->main);
    fdn_table_free(&s->ns);
    fdn_table_free(&s->own);
    fdn_table_free(&s->grp);
    fdn_table_free(&s->mem);
    fdn_refs_free(&s->refs_own);
    s->refs = NULL;
    if (s->order_own.v != NULL)
        fdn_alloc.free(s->order_own.v);
    memset(&s->order_own, 0, sizeof(s->order_own));
    s->order = NULL;
    s->members = 0;
}

static void list_init(fdn_list *l, void *key, void *key2, uint64_t hash, unsigned tmask)
{
    /* first/last/count and the loose list: zero from calloc */
    l->key = key;
    l->key2 = key2;
    l->hash = hash;
    l->tmask = tmask;
    l->refs = FDN_NONE;
}

static void link_ns(fdn_list *l, fdn_rec *rec)
{
    rec->ns_list = l;
    rec->ns_next = NULL;
    rec->ns_prev = l->last;
    if (l->last != NULL)
        l->last->ns_next = rec;
    else
        l->first = rec;
    l->last = rec;
    l->count++;
}

static void link_own(fdn_list *l, fdn_rec *rec)
{
    rec->own_list = l;
    rec->own_next = NULL;
    rec->own_prev = l->last;
    if (l->last != NULL)
        l->last->own_next = rec;
    else
        l->first = rec;
    l->last = rec;
    l->count++;
}

/* Drop an emptied list from its index table; returns the list's key. */
static void *drop_list(fdn_shard *s, fdn_table *t, fdn_list *l)
{
    void *key = l->key;
    size_t i = fdn_table_find_identity(t, l->hash, key, l->key2);
    refs_drop(s->refs, l->refs, popcount8(l->tmask));
    fdn_table_delete_at(t, i);
    fdn_alloc.free(l);
    fdn_table_maybe_shrink(t);
    return key;
}

/* Unlink rec from its namespace / group list; the list's key if the list
 * was emptied and freed, else NULL. */
static void *unlink_ns(fdn_shard *s, fdn_table *index, fdn_rec *rec)
{
    fdn_list *l = rec->ns_list;
    if (rec->ns_prev != NULL)
        rec->ns_prev->ns_next = rec->ns_next;
    else
        l->first = rec->ns_next;
    if (rec->ns_next != NULL)
        rec->ns_next->ns_prev = rec->ns_prev;
    else
        l->last = rec->ns_prev;
    if (--l->count == 0)
        return drop_list(s, index, l);
    return NULL;
}

static void unlink_own_only(fdn_rec *rec)
{
    fdn_list *l = rec->own_list;
    if (rec->own_prev != NULL)
        rec->own_prev->own_next = rec->own_next;
    else
        l->first = rec->own_next;
    if (rec->own_next != NULL)
        rec->own_next->own_prev = rec->own_prev;
    else
        l->last = rec->own_prev;
    l->count--;
}

static void *unlink_own(fdn_shard *s, fdn_rec *rec)
{
    fdn_list *l = rec->own_list;
    if (rec->own_prev != NULL)
        rec->own_prev->own_next = rec->own_next;
    else
        l->first = rec->own_next;
    if (rec->own_next != NULL)
        rec->own_next->own_prev = rec->own_prev;
    else
        l->last = rec->own_prev;
    if (--l->count == 0)
        return drop_list(s, &s->own, l);
    return NULL;
}

int fdn_shard_insert_t(fdn_shard *s, uint64_t h, void *ns, void *name,
                       void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                       void *owner, uint64_t own_hash, fdn_list *ownl,
                       uint64_t seq, unsigned tmask, unsigned list_tmask,
                       int *created)
{
    fdn_rec *rec;
    fdn_list *new_ns = NULL, *new_own = NULL;
    unsigned lt_ns = nsl == NULL ? FDN_TL_NS(list_tmask) & FDN_TL_KEY : 0;
    unsigned lt_own = owner != NULL && ownl == NULL ? FDN_TL_OWN(list_tmask) & FDN_TL_KEY : 0;

    *created = 0;
    tmask &= FDN_T_ALL;
    if (owner == NULL)
        tmask &= ~FDN_T_OWNER;
    /* A reserve below may move every entry (a resize) before a later step
     * fails; a binding paused in __eq__ mid-probe must then restart, so the
     * shard counts as changed even when the insert does not happen. */
    s->version++;
    /* 1. everything that can fail, leaving the contents unchanged */
    if (fdn_table_reserve(&s->main, 1) < 0)
        return -1;
    if (nsl == NULL && fdn_table_reserve(&s->ns, 1) < 0)
        return -1;
    if (owner != NULL && ownl == NULL && fdn_table_reserve(&s->own, 1) < 0)
        return -1;
    if (refs_reserve(s->refs, popcount8(tmask) + (lt_ns != 0) + (lt_own != 0)) < 0)
        return -1;
    if (order_reserve(s->order) < 0)
        return -1;
    rec = (fdn_rec *)fdn_alloc.malloc(owner != NULL ? FDN_REC_OWNED_SIZE
                                                    : FDN_REC_UNOWNED_SIZE);
    if (rec == NULL)
        return -1;
    if (nsl == NULL) {
        new_ns = (fdn_list *)fdn_alloc.calloc(1, sizeof(fdn_list));
        if (new_ns == NULL) {
            fdn_alloc.free(rec);
            return -1;
        }
    }
    if (owner != NULL && ownl == NULL) {
        new_own = (fdn_list *)fdn_alloc.calloc(1, sizeof(fdn_list));
        if (new_own == NULL) {
            if (new_ns != NULL)
                fdn_alloc.free(new_ns);
            fdn_alloc.free(rec);
            return -1;
        }
    }

    /* 2. commit: nothing below can fail */
    if (new_ns != NULL) {
        list_init(new_ns, ns, NULL, ns_hash, lt_ns);
        fdn_table_insert_new(&s->ns, ns_hash, ns, NULL, new_ns, NULL);
        list_refs_put(s, new_ns);
        nsl = new_ns;
        *created |= FDN_CREATED_NS;
    }
    rec->meta = meta;
    rec->reg = NULL;
    rec->seq = (seq << FDN_SEQ_SHIFT) | (owner != NULL ? FDN_F_OWNED : 0u) | tmask;
    link_ns(nsl, rec);
    if (owner != NULL) {
        if (new_own != NULL) {
            list_init(new_own, owner, NULL, own_hash, lt_own);
            fdn_table_insert_new(&s->own, own_hash, owner, NULL, new_own, NULL);
            list_refs_put(s, new_own);
            ownl = new_own;
            *created |= FDN_CREATED_OWN;
        }
        rec->owner = owner;
        link_own(ownl, rec);
    }
    fdn_table_insert_new(&s->main, h, ns, name, value, rec);
    rec_refs_put(s, rec); /* after the slot: the name's ns/name/value live there */
    rec->shard = s->tag;
    order_append(s->order, rec);
    s->version++;
    return 0;
}

int fdn_shard_insert(fdn_shard *s, uint64_t h, void *ns, void *name,
                     void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                     void *owner, uint64_t own_hash, fdn_list *ownl,
                     uint64_t seq, int *created)
{
    return fdn_shard_insert_t(s, h, ns, name, value, meta, ns_hash, nsl, owner,
                              own_hash, ownl, seq, 0, 0, created);
}

void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out)
{
    fdn_slot *e = &s->main.slots[i];
    fdn_rec *rec = s->main.recs[i];

    out->ns = e->a;
    out->name = e->b;
    out->value = e->value;
    out->meta = rec->meta;
    out->owner = NULL;
    out->own_key = NULL;
    out->seq = FDN_REC_SEQ(rec);
    out->member = 0;
    out->reg = rec->reg;

    refs_drop(s->refs, rec->refs, popcount8(FDN_REC_TMASK(rec)));
    order_drop(s->order, rec);
    out->ns_key = unlink_ns(s, &s->ns, rec);
    if (FDN_REC_OWNED(rec)) {
        out->owner = rec->owner;
        out->own_key = unlink_own(s, rec);
    }
    fdn_table_delete_at(&s->main, i);
    fdn_alloc.free(rec);
    fdn_table_maybe_shrink(&s->main);
    refs_maybe_compact(s);
    s->version++;
}

/* Where the metadata sits in a record's traced group. */
static unsigned meta_offset(unsigned tmask)
{
    return popcount8(tmask & (FDN_T_NS | FDN_T_NAME | FDN_T_VALUE));
}

/* Rewrite a record's traced group after its mask or pointers changed: in
 * place if it did not grow, else at the end (room reserved by the caller). */
static void rec_refs_rewrite(fdn_shard *s, fdn_rec *rec, unsigned old_mask)
{
    void *p[5];
    unsigned n = rec_traced(s, rec, p), old_n = popcount8(old_mask), k;
    if (rec->refs != FDN_NONE && n <= old_n) {
        for (k = 0; k < n; k++)
            s->refs->v[rec->refs + k] = p[k];
        refs_drop(s->refs, rec->refs + n, old_n - n);
        if (n == 0)
            rec->refs = FDN_NONE;
        return;
    }
    refs_drop(s->refs, rec->refs, old_n);
    rec->refs = n ? refs_append(s->refs, p, n) : FDN_NONE;
}

int fdn_shard_set_meta_t(fdn_shard *s, fdn_rec *rec, void *meta,
                         int meta_traced, void **old)
{
    unsigned tm = FDN_REC_TMASK(rec);
    unsigned nt = meta_traced ? (tm | FDN_T_META) : (tm & ~FDN_T_META);
    if (popcount8(nt) > popcount8(tm) && refs_reserve(s->refs, popcount8(nt)) < 0)
        return -1;
    *old = rec->meta;
    rec->meta = meta;
    if (nt == tm) {
        if (tm & FDN_T_META)
            s->refs->v[rec->refs + meta_offset(tm)] = meta;
    } else {
        rec->seq = (rec->seq & ~(uint64_t)FDN_T_ALL) | nt;
        rec_refs_rewrite(s, rec, tm);
        refs_maybe_compact(s);
    }
    s->main.version++;
    s->version++;
    return 0;
}

int fdn_shard_set_value_t(fdn_shard *s, fdn_rec *rec, void *value,
                          int value_traced, void **old)
{
    fdn_slot *e = &s->main.slots[rec->slot];
    unsigned tm = FDN_REC_TMASK(rec);
    unsigned nt = value_traced ? (tm | FDN_T_VALUE) : (tm & ~FDN_T_VALUE);
    if (popcount8(nt) > popcount8(tm) && refs_reserve(s->refs, popcount8(nt)) < 0)
        return -1;
    *old = e->value;
    e->value = value;
    if (nt == tm) {
        if (tm & FDN_T_VALUE)
            s->refs->v[rec->refs + popcount8(tm & (FDN_T_NS | FDN_T_NAME))] = value;
    } else {
        rec->seq = (rec->seq & ~(uint64_t)FDN_T_ALL) | nt;
        rec_refs_rewrite(s, rec, tm);
        refs_maybe_compact(s);
    }
    s->main.version++;
    s->version++;
    return 0;
}

void *fdn_shard_set_meta(fdn_shard *s, size_t i, void *meta)
{
    fdn_rec *rec = s->main.recs[i];
    void *old = NULL;
    (void)fdn_shard_set_meta_t(s, rec, meta, (FDN_REC_TMASK(rec) & FDN_T_META) != 0, &old);
    return old;
}

/* ------------------------------------------------------------ groups */

int fdn_shard_join(fdn_shard *s, uint64_t gh, void *ns, void *group,
                   fdn_list *gl, uint64_t mh, int loose, void *value, void *meta,
                   void *owner, uint64_t own_hash, fdn_list *ownl, uint64_t seq,
                   unsigned tmask, unsigned list_tmask, fdn_rec **out,
                   int *created)
{
    fdn_rec *rec;
    fdn_list *new_grp = NULL, *new_own = NULL;
    unsigned lt_grp = gl == NULL ? FDN_TL_GRP(list_tmask) : 0;
    unsigned lt_own = owner != NULL && ownl == NULL ? FDN_TL_OWN(list_tmask) & FDN_TL_KEY : 0;

    *created = 0;
    tmask &= FDN_T_VALUE | FDN_T_META | FDN_T_OWNER;
    if (owner == NULL)
        tmask &= ~FDN_T_OWNER;
    s->version++; /* as in fdn_shard_insert_t: a reserve may move entries */
    if (gl == NULL && fdn_table_reserve(&s->grp, 1) < 0)
        return -1;
    if (!loose && fdn_table_reserve(&s->mem, 1) < 0)
        return -1;
    if (owner != NULL && ownl == NULL && fdn_table_reserve(&s->own, 1) < 0)
        return -1;
    if (refs_reserve(s->refs, popcount8(tmask) + popcount8(lt_grp) + (lt_own != 0)) < 0)
        return -1;
    rec = (fdn_rec *)fdn_alloc.malloc(sizeof(fdn_rec));
    if (rec == NULL)
        return -1;
    if (gl == NULL) {
        new_grp = (fdn_list *)fdn_alloc.calloc(1, sizeof(fdn_list));
        if (new_grp == NULL) {
            fdn_alloc.free(rec);
            return -1;
        }
    }
    if (owner != NULL && ownl == NULL) {
        new_own = (fdn_list *)fdn_alloc.calloc(1, sizeof(fdn_list));
        if (new_own == NULL) {
            if (new_grp != NULL)
                fdn_alloc.free(new_grp);
            fdn_alloc.free(rec);
            return -1;
        }
    }

    if (new_grp != NULL) {
        list_init(new_grp, ns, group, gh, lt_grp);
        fdn_table_insert_new(&s->grp, gh, ns, group, new_grp, NULL);
        list_refs_put(s, new_grp);
        gl = new_grp;
        *created |= FDN_CREATED_GRP;
    }
    rec->meta = meta;
    rec->reg = NULL;
    rec->ord = FDN_NONE;
    rec->shard = s->tag;
    rec->value = value;
    rec->seq = (seq << FDN_SEQ_SHIFT) | FDN_F_MEMBER | (loose ? FDN_F_LOOSE : 0u) |
               (owner != NULL ? FDN_F_OWNED : 0u) | tmask;
    link_ns(gl, rec);
    rec->loose_prev = rec->loose_next = NULL;
    if (loose) {
        rec->loose_prev = gl->loose_last;
        if (gl->loose_last != NULL)
            gl->loose_last->loose_next = rec;
        else
            gl->loose_first = rec;
        gl->loose_last = rec;
        gl->loose++;
    }
    rec->owner = owner;
    rec->own_prev = rec->own_next = NULL;
    rec->own_list = NULL;
    if (owner != NULL) {
        if (new_own != NULL) {
            list_init(new_own, owner, NULL, own_hash, lt_own);
            fdn_table_insert_new(&s->own, own_hash, owner, NULL, new_own, NULL);
            list_refs_put(s, new_own);
            ownl = new_own;
            *created |= FDN_CREATED_OWN;
        }
        link_own(ownl, rec);
    }
    if (loose)
        rec->slot = FDN_NONE;
    else
        fdn_table_insert_new(&s->mem, mh, gl, value, NULL, rec);
    rec_refs_put(s, rec);
    s->members++;
    s->version++;
    *out = rec;
    return 0;
}

int fdn_shard_member_update(fdn_shard *s, fdn_rec *rec, void *meta,
                            void *owner, uint64_t own_hash, fdn_list *ownl,
                            unsigned tmask, unsigned list_tmask,
                            void **old_meta, void **old_owner,
                            void **dropped_own, int *created)
{
    void *cur_owner = FDN_REC_OWNER(rec);
    int moves = owner != cur_owner;
    unsigned old_mask = FDN_REC_TMASK(rec);
    unsigned lt_own = moves && owner != NULL && ownl == NULL
                          ? FDN_TL_OWN(list_tmask) & FDN_TL_KEY : 0;
    fdn_list *new_own = NULL;
    unsigned need;

    *created = 0;
    *old_owner = NULL;
    *dropped_own = NULL;
    tmask &= FDN_T_VALUE | FDN_T_META | FDN_T_OWNER;
    if (owner == NULL)
        tmask &= ~FDN_T_OWNER;
    s->version++;
    if (moves && owner != NULL && ownl == NULL) {
        if (fdn_table_reserve(&s->own, 1) < 0)
            return -1;
    }
    /* room for the group if it grows (else it is rewritten in place), and
     * for the new owner list's key */
    need = (popcount8(tmask) > popcount8(old_mask) ? popcount8(tmask) : 0) + (lt_own != 0);
    if (need && refs_reserve(s->refs, need) < 0)
        return -1;
    if (moves && owner != NULL && ownl == NULL) {
        new_own = (fdn_list *)fdn_alloc.calloc(1, sizeof(fdn_list));
        if (new_own == NULL)
            return -1;
    }

    *old_meta = rec->meta;
    rec->meta = meta;
    if (moves) {
        *old_owner = cur_owner;
        if (cur_owner != NULL && owner != NULL && ownl == rec->own_list) {
            /* an equal owner (the same list): to the end of it, and the
             * list must not be dropped in between */
            unlink_own_only(rec);
        } else if (cur_owner != NULL) {
            *dropped_own = unlink_own(s, rec);
        }
        rec->owner = owner;
        rec->own_prev = rec->own_next = NULL;
        rec->own_list = NULL;
        if (owner != NULL) {
            if (new_own != NULL) {
                list_init(new_own, owner, NULL, own_hash, lt_own);
                fdn_table_insert_new(&s->own, own_hash, owner, NULL, new_own, NULL);
                list_refs_put(s, new_own);
                ownl = new_own;
                *created |= FDN_CREATED_OWN;
            }
            link_own(ownl, rec);
            rec->seq |= FDN_F_OWNED;
        } else {
            rec->seq &= ~(uint64_t)FDN_F_OWNED;
        }
    }
    rec->seq = (rec->seq & ~(uint64_t)FDN_T_ALL) | tmask;
    rec_refs_rewrite(s, rec, old_mask);
    refs_maybe_compact(s);
    s->version++;
    return 0;
}

void fdn_shard_leave(fdn_shard *s, fdn_rec *rec, fdn_removed *out)
{
    fdn_list *gl = rec->ns_list;

    out->ns = gl->key;
    out->name = gl->key2;
    out->value = rec->value;
    out->meta = rec->meta;
    out->owner = NULL;
    out->own_key = NULL;
    out->seq = FDN_REC_SEQ(rec);
    out->member = 1;
    out->reg = rec->reg;

    refs_drop(s->refs, rec->refs, popcount8(FDN_REC_TMASK(rec)));
    if (!FDN_REC_LOOSE(rec)) {
        fdn_table_delete_at(&s->mem, rec->slot);
        fdn_table_maybe_shrink(&s->mem);
    } else {
        if (rec->loose_prev != NULL)
            rec->loose_prev->loose_next = rec->loose_next;
        else
            gl->loose_first = rec->loose_next;
        if (rec->loose_next != NULL)
            rec->loose_next->loose_prev = rec->loose_prev;
        else
            gl->loose_last = rec->loose_prev;
        gl->loose--;
    }
    out->ns_key = unlink_ns(s, &s->grp, rec);
    if (FDN_REC_OWNED(rec)) {
        out->owner = rec->owner;
        out->own_key = unlink_own(s, rec);
    }
    fdn_alloc.free(rec);
    s->members--;
    refs_maybe_compact(s);
    s->version++;
}

void fdn_shard_remove_rec(fdn_shard *s, fdn_rec *rec, fdn_removed *out)
{
    if (FDN_REC_MEMBER(rec))
        fdn_shard_leave(s, rec, out);
    else
        fdn_shard_remove_at(s, rec->slot, out);
}

/* ------------------------------------------------------------ walks */

int fdn_walk_init(fdn_walk *w, size_t lists)
{
    w->k = 0;
    w->vec = 0;
    w->heap = w->small;
    w->cap = sizeof(w->small) / sizeof(w->small[0]);
    if (lists > w->cap) {
        if (lists > ((size_t)-1) / sizeof(fdn_walk_head))
            return -1;
        w->heap = (fdn_walk_head *)fdn_alloc.malloc(lists * sizeof(fdn_walk_head));
        if (w->heap == NULL) {
            w->heap = w->small;
            return -1;
        }
        w->cap = lists;
    }
    return 0;
}

void fdn_walk_add(fdn_walk *w, fdn_rec *first, size_t src)
{
    if (first == NULL)
        return;
    assert(w->k < w->cap);
    assert(!w->vec);
    w->heap[w->k].at.rec = first;
    w->heap[w->k].seq = first->seq;
    w->heap[w->k].src = src;
    w->k++;
}

void fdn_walk_add_index(fdn_walk *w, const fdn_table *index, size_t src)
{
    size_t i;
    for (i = 0; i <= index->mask; i++) {
        if (index->slots[i].a != NULL)
            fdn_walk_add(w, ((const fdn_list *)index->slots[i].value)->first, src);
    }
}

void fdn_walk_add_order(fdn_walk *w, fdn_order *order)
{
    fdn_rec **pos;
    assert(w->vec || w->k == 0);
    w->vec = 1;
    if (order->v == NULL)
        return;
    for (pos = order->v; *pos == NULL; pos++)
        ;
    if (*pos == &fdn_order_end)
        return;
    assert(w->k < w->cap);
    w->heap[w->k].at.pos = pos;
    w->heap[w->k].seq = (*pos)->seq;
    w->heap[w->k].src = 0; /* each record says its shard */
    w->k++;
}

void fdn_walk_start(fdn_walk *w)
{
    size_t i;
    for (i = w->k / 2; i-- > 0;)
        fdn_heap_down(w->heap, w->k, i);
}

void fdn_walk_free(fdn_walk *w)
{
    if (w->heap != w->small && w->heap != NULL)
        fdn_alloc.free(w->heap);
    w->heap = w->small;
    w->k = 0;
    w->cap = sizeof(w->small) / sizeof(w->small[0]);
}

uint64_t fdn_next_seq(uint64_t *counter)
{
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
#else
    return ++*counter;
#endif
}
