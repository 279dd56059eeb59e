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

    if (capacity > ((size_t)-1) / sizeof(fdn_slot))
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
            t->recs[j]->slot = j;
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
        if (capacity > ((size_t)-1) / 4)
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
            rec->slot = i;
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
                    t->recs[i]->slot = i;
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

/* ------------------------------------------------------------ shards */

int fdn_shard_init(fdn_shard *s)
{
    memset(s, 0, sizeof(*s));
    if (fdn_table_init(&s->main, 1) < 0)
        return -1;
    if (fdn_table_init(&s->ns, 0) < 0) {
        fdn_table_free(&s->main);
        return -1;
    }
    if (fdn_table_init(&s->own, 0) < 0) {
        fdn_table_free(&s->main);
        fdn_table_free(&s->ns);
        return -1;
    }
    return 0;
}

static void free_lists(fdn_table *t)
{
    size_t i;
    if (t->slots == NULL)
        return;
    for (i = 0; i <= t->mask; i++) {
        if (t->slots[i].a != NULL)
            fdn_alloc.free(t->slots[i].value);
    }
}

void fdn_shard_free(fdn_shard *s)
{
    size_t i;
    if (s->main.slots != NULL && s->main.recs != NULL) {
        for (i = 0; i <= s->main.mask; i++) {
            if (s->main.recs[i] != NULL)
                fdn_alloc.free(s->main.recs[i]);
        }
    }
    free_lists(&s->ns);
    free_lists(&s->own);
    fdn_table_free(&s->main);
    fdn_table_free(&s->ns);
    fdn_table_free(&s->own);
}

int fdn_shard_insert(fdn_shard *s, uint64_t h, void *ns, void *name,
                     void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                     void *owner, uint64_t own_hash, fdn_list *ownl,
                     uint64_t seq, int *created)
{
    fdn_rec *rec;
    fdn_list *new_ns = NULL, *new_own = NULL;

    *created = 0;
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
    rec = (fdn_rec *)fdn_alloc.malloc(owner != NULL ? sizeof(fdn_rec)
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
        new_ns->key = ns;
        new_ns->hash = ns_hash;
        fdn_table_insert_new(&s->ns, ns_hash, ns, NULL, new_ns, NULL);
        nsl = new_ns;
        *created |= FDN_CREATED_NS;
    }
    rec->meta = meta;
    rec->seq = (seq << 1) | (owner != NULL ? 1u : 0u);
    rec->ns_list = nsl;
    rec->ns_next = NULL;
    rec->ns_prev = nsl->last;
    if (nsl->last != NULL)
        nsl->last->ns_next = rec;
    else
        nsl->first = rec;
    nsl->last = rec;
    nsl->count++;

    if (owner != NULL) {
        if (new_own != NULL) {
            new_own->key = owner;
            new_own->hash = own_hash;
            fdn_table_insert_new(&s->own, own_hash, owner, NULL, new_own, NULL);
            ownl = new_own;
            *created |= FDN_CREATED_OWN;
        }
        rec->owner = owner;
        rec->own_list = ownl;
        rec->own_next = NULL;
        rec->own_prev = ownl->last;
        if (ownl->last != NULL)
            ownl->last->own_next = rec;
        else
            ownl->first = rec;
        ownl->last = rec;
        ownl->count++;
    }
    fdn_table_insert_new(&s->main, h, ns, name, value, rec);
    s->version++;
    return 0;
}

/* Drop an emptied list from its index table; returns the list's key. */
static void *drop_list(fdn_table *t, fdn_list *l)
{
    void *key = l->key;
    size_t i = fdn_table_find_identity(t, l->hash, key, NULL);
    fdn_table_delete_at(t, i);
    fdn_alloc.free(l);
    fdn_table_maybe_shrink(t);
    return key;
}

void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out)
{
    fdn_slot *e = &s->main.slots[i];
    fdn_rec *rec = s->main.recs[i];
    fdn_list *l;

    out->ns = e->a;
    out->name = e->b;
    out->value = e->value;
    out->meta = rec->meta;
    out->owner = NULL;
    out->ns_key = NULL;
    out->own_key = NULL;
    out->seq = rec->seq >> 1;

    l = rec->ns_list;
    if (rec->ns_prev != NULL)
        rec->ns_prev->ns_next = rec->ns_next;
    else
        l->first = rec->ns_next;
    if (rec->ns_next != NULL)
        rec->ns_next->ns_prev = rec->ns_prev;
    else
        l->last = rec->ns_prev;
    if (--l->count == 0)
        out->ns_key = drop_list(&s->ns, l);

    if (FDN_REC_OWNED(rec)) {
        out->owner = rec->owner;
        l = rec->own_list;
        if (rec->own_prev != NULL)
            rec->own_prev->own_next = rec->own_next;
        else
            l->first = rec->own_next;
        if (rec->own_next != NULL)
            rec->own_next->own_prev = rec->own_prev;
        else
            l->last = rec->own_prev;
        if (--l->count == 0)
            out->own_key = drop_list(&s->own, l);
    }

    fdn_table_delete_at(&s->main, i);
    fdn_alloc.free(rec);
    fdn_table_maybe_shrink(&s->main);
    s->version++;
}

void *fdn_shard_set_meta(fdn_shard *s, size_t i, void *meta)
{
    fdn_rec *rec = s->main.recs[i];
    void *old = rec->meta;
    rec->meta = meta;
    s->main.version++;
    s->version++;
    return old;
}

uint64_t fdn_next_seq(uint64_t *counter)
{
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
#else
    return ++*counter;
#endif
}
