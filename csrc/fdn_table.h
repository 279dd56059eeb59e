/*
 * fdn_table.h: the C core of the native registry (Python-agnostic).
 *
 * One shard = three open-addressing tables sharing one version counter:
 *
 *   main   (hash(ns, name), ns, name) -> value        + a parallel fdn_rec* per slot
 *   ns     (hash(ns), ns)             -> fdn_list*     (the shard's entries of ns)
 *   own    (hash(owner), owner)       -> fdn_list*     (the shard's entries of owner)
 *
 * A slot is {uint64 hash; void *a; void *b; void *value}: 32 bytes, two per
 * cache line, so a lookup hit touches one slot line and compares the stored
 * hash before it dereferences any key object (docs/contract.rst: the
 * khash maps that skip this are 1.3-2.5x slower than dict at 1e6 entries).
 * Per-entry bookkeeping (metadata, owner, index links) lives in a separately
 * allocated fdn_rec reached through the parallel `recs` array, so it never
 * dilutes the slot array.
 *
 * Keys are opaque pointers compared by identity here. When the stored hash
 * matches but a pointer differs, fdn_probe() reports a CANDIDATE and the
 * binding decides equality (Python __eq__), re-checking `version` afterwards.
 *
 * Linear probing, at most 2/3 full, backward-shift deletion (no tombstones),
 * shrink below 1/8. Every allocation failure is reported as -1 with the
 * table unchanged. Memory comes from fdn_allocator (stdlib by default; the
 * binding installs tracemalloc-visible PyMem functions).
 *
 * Not thread-safe by itself: the binding serialises each shard (GIL, or a
 * per-shard critical section on free-threaded builds).
 */
#ifndef FDN_TABLE_H
#define FDN_TABLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ allocator */

typedef struct fdn_allocator {
    void *(*malloc)(size_t size);
    void *(*calloc)(size_t n, size_t size);
    void (*free)(void *ptr);
} fdn_allocator;

/* Install the allocator used by every table (call before creating any). */
void fdn_set_allocator(const fdn_allocator *alloc);

/* ------------------------------------------------------------ layout */

struct fdn_rec;

typedef struct fdn_slot {
    uint64_t hash;
    void *a;     /* NULL: empty slot (keys are never NULL) */
    void *b;     /* second key part (NULL in index tables) */
    void *value;
} fdn_slot;

typedef struct fdn_table {
    fdn_slot *slots;
    struct fdn_rec **recs; /* parallel to slots; NULL for index tables */
    size_t mask;           /* capacity - 1, capacity a power of two >= 8 */
    size_t used;
    uint64_t version;      /* bumped by every mutation, resizes included */
} fdn_table;

/* An intrusive list head: the entries of one namespace or one owner. */
typedef struct fdn_list {
    struct fdn_rec *first;
    struct fdn_rec *last;
    size_t count;
    void *key;      /* the ns / owner object this list is filed under */
    uint64_t hash;  /* its hash in the index table */
} fdn_list;

/*
 * Per-entry record. Unowned entries are allocated without the owner tail
 * (FDN_REC_UNOWNED_SIZE bytes: 48), owned ones in full (80 bytes); the low
 * bit of `seq` says which, so the tail is never read when absent.
 */
typedef struct fdn_rec {
    void *meta;
    struct fdn_rec *ns_prev;
    struct fdn_rec *ns_next;
    fdn_list *ns_list;
    size_t slot;    /* index in main, kept current when entries move */
    uint64_t seq;   /* (insertion sequence << 1) | owned */
    /* owned entries only */
    void *owner;
    struct fdn_rec *own_prev;
    struct fdn_rec *own_next;
    fdn_list *own_list;
} fdn_rec;

#define FDN_REC_UNOWNED_SIZE offsetof(fdn_rec, owner)
#define FDN_REC_OWNED(r) ((r)->seq & 1u)
#define FDN_REC_OWNER(r) (FDN_REC_OWNED(r) ? (r)->owner : NULL)

typedef struct fdn_shard {
    fdn_table main;
    fdn_table ns;
    fdn_table own;
    /* bumped by every mutation of any of the three tables or of a record */
    uint64_t version;
    uint64_t hits;
    uint64_t misses;
    uint64_t writes;
    uint64_t conflicts;
} fdn_shard;

/* What a removal hands back so the binding can drop references after the
 * table is consistent again. ns_key / own_key: non-NULL when the namespace
 * or owner list was emptied and freed (the list held a reference to it). */
typedef struct fdn_removed {
    void *ns;
    void *name;
    void *value;
    void *meta;
    void *owner;
    void *ns_key;
    void *own_key;
    uint64_t seq;
} fdn_removed;

/* ------------------------------------------------------------ hashing */

/* Combine two (already good or poor) 64-bit hashes; the result's low bits
 * pick the slot and its high 32 bits the shard. */
static inline uint64_t fdn_mix2(uint64_t a, uint64_t b)
{
    uint64_t x = (a * 0x9E3779B97F4A7C15ULL) ^ b;
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ULL;
    x ^= x >> 32;
    return x;
}

static inline uint64_t fdn_mix1(uint64_t a)
{
    uint64_t x = a * 0x9E3779B97F4A7C15ULL;
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ULL;
    x ^= x >> 32;
    return x;
}

/* Multiply-shift of the high 32 bits onto [0, n). */
static inline size_t fdn_shard_of(uint64_t h, size_t n)
{
    return (size_t)(((h >> 32) * (uint64_t)n) >> 32);
}

/* ------------------------------------------------------------ probing */

enum { FDN_MISS = 0, FDN_HIT = 1, FDN_CANDIDATE = 2 };

/*
 * Probe from *pos (start with h & t->mask). Stops at the first slot that
 * is empty (MISS), holds the same hash and the same pointers (HIT), or the
 * same hash and other pointers (CANDIDATE: the caller decides equality and
 * continues from (*pos + 1) & mask if unequal). *pos is the slot reached.
 * The table is never full, so the loop ends.
 */
static inline int fdn_probe(const fdn_table *t, uint64_t h, const void *a,
                            const void *b, size_t *pos)
{
    const fdn_slot *slots = t->slots;
    size_t mask = t->mask;
    size_t i = *pos;
    for (;;) {
        const fdn_slot *e = &slots[i];
        if (e->a == NULL) {
            *pos = i;
            return FDN_MISS;
        }
        if (e->hash == h) {
            *pos = i;
            return (e->a == a && e->b == b) ? FDN_HIT : FDN_CANDIDATE;
        }
        i = (i + 1) & mask;
    }
}

/* ------------------------------------------------------------ tables */

/* Capacity 8. with_recs: allocate the parallel record array. 0 / -1. */
int fdn_table_init(fdn_table *t, int with_recs);
/* Free the arrays (not what the pointers point to). */
void fdn_table_free(fdn_table *t);
/* Make room for `extra` more entries at <= 2/3 load. 0 / -1 (unchanged). */
int fdn_table_reserve(fdn_table *t, size_t extra);
/* Insert a key known to be absent, room reserved. Returns its slot. */
size_t fdn_table_insert_new(fdn_table *t, uint64_t h, void *a, void *b,
                            void *value, struct fdn_rec *rec);
/* Find a stored key by identity only (it must be present). */
size_t fdn_table_find_identity(const fdn_table *t, uint64_t h, const void *a,
                               const void *b);
/* Remove slot i with backward shift; moved records get their new slot. */
void fdn_table_delete_at(fdn_table *t, size_t i);
/* Halve (or more) when under 1/8 full; an allocation failure skips it. */
void fdn_table_maybe_shrink(fdn_table *t);
/* Rebuild at `capacity` (a power of two that fits). 0 / -1 (unchanged). */
int fdn_table_resize(fdn_table *t, size_t capacity);

/* ------------------------------------------------------------ shards */

int fdn_shard_init(fdn_shard *s);
/* Free every C allocation of the shard: tables, records, lists. The caller
 * has already dropped the object references (see fdn_shard_iter). */
void fdn_shard_free(fdn_shard *s);

#define FDN_CREATED_NS 1
#define FDN_CREATED_OWN 2

/*
 * Insert (ns, name) -> value, known absent. nsl / ownl: the existing lists
 * for ns / owner found by the caller, or NULL to create them (then the new
 * list's key is ns / owner and *created says so, so the binding can take a
 * reference for it). owner == NULL: unowned, the owner index is untouched.
 * Returns 0, or -1 on allocation failure with the contents unchanged (a
 * table may have grown, so the shard version is bumped either way).
 */
int fdn_shard_insert(fdn_shard *s, uint64_t h, void *ns, void *name,
                     void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                     void *owner, uint64_t own_hash, fdn_list *ownl,
                     uint64_t seq, int *created);

/* Remove the entry at main slot i; never fails. */
void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out);

/* Replace a record's metadata; returns the old pointer. */
void *fdn_shard_set_meta(fdn_shard *s, size_t i, void *meta);

/* Next insertion sequence number from a shared counter (atomic). */
uint64_t fdn_next_seq(uint64_t *counter);

#ifdef __cplusplus
}
#endif

#endif /* FDN_TABLE_H */
