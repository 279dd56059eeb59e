/*
 * fdn_table.h: the C core of the native registry (Python-agnostic).
 *
 * One shard = five open-addressing tables sharing one version counter, and
 * one vector of traced references:
 *
 *   main   (hash(ns, name), ns, name)     -> value    + a parallel fdn_rec* per slot
 *   ns     (hash(ns), ns)                 -> fdn_list* (the shard's entries of ns)
 *   own    (hash(owner), owner)           -> fdn_list* (the shard's entries and
 *                                                      memberships of owner)
 *   grp    (hash(ns, group), ns, group)   -> fdn_list* (a group's members, in join order)
 *   mem    (hash(group, value), group list, value)   + a parallel fdn_rec* per slot
 *                                            (the members whose value has a hash)
 *   refs   the pointers the binding asked to trace, in insertion order
 *   order  the shard's names (their records), in insertion order, in a
 *          vector of its own or one shared with other shards
 *
 * A slot is {uint64 hash; void *a; void *b; void *value}: 32 bytes, two per
 * cache line, so a lookup hit touches one slot line and compares the stored
 * hash before it dereferences any key object (hash maps that skip this pay a
 * cache miss on a key object for every probe, and are 1.3-2.5x slower than
 * a dict at 1e6 entries). Per-entry bookkeeping (metadata, owner, index
 * links) lives in a separately allocated fdn_rec reached through the
 * parallel `recs` array, so it never dilutes the slot array.
 *
 * Keys are opaque pointers compared by identity here. When the stored hash
 * matches but a pointer differs, fdn_probe() reports a CANDIDATE and the
 * binding decides equality (Python __eq__), re-checking `version` afterwards.
 *
 * Traced references (`refs`): a garbage collector must be told which
 * objects a table refers to, but most registered objects (str, int, None)
 * cannot refer back to anything. The binding says, per entry, which of its
 * pointers need tracing (a mask of FDN_T_*); the core keeps exactly those in
 * one dense vector per shard, in insertion order, so a collector's walk is
 * sequential, skips everything else, and costs nothing for a table that
 * holds only such objects. Removal leaves holes (NULL), compacted once they
 * are half the vector. Shards serialised by one lock can share one refs
 * vector (fdn_shard_attach), so the walk follows insertion order across
 * them too.
 *
 * The order vector serves reads of every namespace at once: walking it
 * visits records in the order they were allocated, which is what caches and
 * prefetchers reward, where following each namespace's list jumps between
 * namespaces. It has holes and compaction like refs, and always ends with
 * &fdn_order_end, so a walk needs no bound. Shards serialised by one lock
 * (a binding under a GIL) can share one vector (fdn_shard_attach): a read of
 * every name is then one sequential pass, with no merge across shards.
 *
 * Linear probing, at most 2/3 full, backward-shift deletion (no tombstones),
 * shrink below 1/8. Every allocation failure is reported as -1 with the
 * table unchanged. Memory comes from fdn_allocator (stdlib by default; the
 * binding installs tracemalloc-visible PyMem functions). Slot and refs
 * indexes are 32-bit: a table of more than 2^32 slots, or a refs vector of
 * more than 2^32 - 2 pointers, is refused as an allocation failure.
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
    void *b;     /* second key part (NULL in the ns and own tables) */
    void *value;
} fdn_slot;

typedef struct fdn_table {
    fdn_slot *slots;
    struct fdn_rec **recs; /* parallel to slots; NULL for index tables */
    size_t mask;           /* capacity - 1, capacity a power of two >= 8 */
    size_t used;
    uint64_t version;      /* bumped by every mutation, resizes included */
} fdn_table;

/* "No index": a record without traced refs, a member without a mem slot. */
#define FDN_NONE UINT32_MAX

/* An intrusive list head: the entries of one namespace or owner, or the
 * members of one group. */
typedef struct fdn_list {
    struct fdn_rec *first;
    struct fdn_rec *last;
    size_t count;
    void *key;      /* the ns / owner object this list is filed under */
    uint64_t hash;  /* its hash in the index table */
    void *key2;     /* group lists: the group (key is its namespace); else NULL */
    uint32_t refs;  /* its traced keys in the refs vector, or FDN_NONE */
    uint32_t tmask; /* which keys are traced: FDN_TL_KEY | FDN_TL_KEY2 */
    /* group lists: the loose members (see fdn_rec), in join order */
    struct fdn_rec *loose_first;
    struct fdn_rec *loose_last;
    size_t loose;
} fdn_list;

/*
 * Per-entry record, for a unique name or a group member. Unowned names are
 * allocated without the owner tail (FDN_REC_UNOWNED_SIZE bytes: 64), owned
 * ones up to it (FDN_REC_OWNED_SIZE: 96); members always in full
 * (sizeof(fdn_rec): 120). The low bits of `seq` say which, so a field that
 * is absent is never read.
 *
 * For a member, the ns_* links chain the group's list (ns_list is the group
 * list) and `slot` is its index in the mem table, or FDN_NONE for a "loose"
 * member: one whose value has no hash, found by walking the group's loose
 * list (so only groups with such members pay for such a walk).
 */
typedef struct fdn_rec {
    void *meta;
    struct fdn_rec *ns_prev;
    struct fdn_rec *ns_next;
    struct fdn_list *ns_list;
    uint32_t slot;  /* index in main (names) or mem (hashed members) */
    uint32_t refs;  /* its traced pointers in the refs vector, or FDN_NONE */
    uint64_t seq;   /* (insertion sequence << FDN_SEQ_SHIFT) | FDN_F_* | FDN_T_* */
    /* The binding's own cache of the entry (the record a read hands out),
     * or NULL: the core sets it NULL on insert, never reads it, and hands it
     * back on removal (fdn_removed.reg); the binding clears it whenever it
     * changes the entry. */
    void *reg;
    uint32_t ord;   /* names: index in the shard's order vector; members: FDN_NONE */
    uint32_t shard; /* names: the shard's tag (fdn_shard_attach), for shared vectors */
    /* owned names, every member */
    void *owner;    /* NULL for an unowned member */
    struct fdn_rec *own_prev;
    struct fdn_rec *own_next;
    struct fdn_list *own_list;
    /* members only */
    void *value;
    struct fdn_rec *loose_prev; /* loose members: the group's loose list */
    struct fdn_rec *loose_next;
} fdn_rec;

#define FDN_REC_UNOWNED_SIZE offsetof(fdn_rec, owner)
#define FDN_REC_OWNED_SIZE offsetof(fdn_rec, value)

/* seq's low byte: kind flags, then the trace mask */
#define FDN_F_OWNED 1u   /* has an owner (the owner tail is linked) */
#define FDN_F_MEMBER 2u  /* a group member (full size, `value` valid) */
#define FDN_F_LOOSE 4u   /* a member not in the mem table */
/* Which of the record's pointers are traced, in this order in the refs
 * vector: ns and name (names only: a member's are its group list's), value,
 * metadata, owner. */
#define FDN_T_NS 8u
#define FDN_T_NAME 16u
#define FDN_T_VALUE 32u
#define FDN_T_META 64u
#define FDN_T_OWNER 128u
#define FDN_T_ALL 248u
#define FDN_SEQ_SHIFT 8
/* A list's traced keys (fdn_list.tmask; list_tmask arguments). */
#define FDN_TL_KEY 1u
#define FDN_TL_KEY2 2u
/* list_tmask arguments that say which new list: ns / own / group */
#define FDN_TL_NS(m) ((m) & 3u)
#define FDN_TL_OWN(m) (((m) >> 2) & 3u)
#define FDN_TL_GRP(m) (((m) >> 4) & 3u)
#define FDN_TL(ns, own, grp) ((ns) | ((own) << 2) | ((grp) << 4))

#define FDN_REC_OWNED(r) ((r)->seq & FDN_F_OWNED)
#define FDN_REC_MEMBER(r) ((r)->seq & FDN_F_MEMBER)
#define FDN_REC_LOOSE(r) ((r)->seq & FDN_F_LOOSE)
#define FDN_REC_OWNER(r) (FDN_REC_OWNED(r) ? (r)->owner : NULL)
#define FDN_REC_SEQ(r) ((r)->seq >> FDN_SEQ_SHIFT)
#define FDN_REC_TMASK(r) ((unsigned)((r)->seq & FDN_T_ALL))

struct fdn_shard;

/* The traced pointers of a shard, or of several (see the top of this file). */
typedef struct fdn_refs {
    void **v;
    size_t n;     /* used, holes included */
    size_t cap;
    size_t holes; /* NULL entries among the n */
    /* the shards whose records and lists index it (a compaction rebases
     * them all): the owning shard, or an array of shards sharing it */
    struct fdn_shard *shards;
    size_t nshards;
} fdn_refs;

/* The names of a shard in insertion order (see the top of this file). */
typedef struct fdn_order {
    fdn_rec **v; /* v[n] == &fdn_order_end whenever v != NULL */
    size_t n;    /* used, holes included */
    size_t cap;
    size_t holes;
} fdn_order;

/* The end marker of every order vector (never a real record). */
extern fdn_rec fdn_order_end;

typedef struct fdn_shard {
    fdn_table main;
    fdn_table ns;
    fdn_table own;
    /* bumped by every mutation of any table, record or list of the shard */
    uint64_t version;
    uint64_t hits;
    uint64_t misses;
    uint64_t writes;
    uint64_t conflicts;
    fdn_table grp;
    fdn_table mem;
    fdn_refs *refs;      /* &refs_own, or a vector shared with other shards */
    size_t members;      /* memberships in this shard */
    fdn_order *order;    /* &order_own, or a vector shared with other shards */
    fdn_order order_own;
    uint32_t tag;        /* stored in its names' records (rec->shard) */
    fdn_refs refs_own;
} fdn_shard;

/* What a removal hands back so the binding can drop references after the
 * table is consistent again. ns_key / own_key: non-NULL when the namespace
 * (for a member: the group) or owner list was emptied and freed (the list
 * held a reference to it; a group list also to its group, name below). */
typedef struct fdn_removed {
    void *ns;      /* a member: its group's namespace */
    void *name;    /* a member: its group */
    void *value;
    void *meta;
    void *owner;
    void *ns_key;
    void *own_key;
    uint64_t seq;
    unsigned member; /* 1: a group membership (fdn_shard_leave) */
    void *reg;       /* the record's cache (fdn_rec.reg), or NULL */
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

/* A shard with its own order vector and tag 0. 0 / -1 (nothing to free). */
int fdn_shard_init(fdn_shard *s);
/* An empty order vector to share (fdn_shard_attach). 0 / -1. */
int fdn_order_init(fdn_order *o);
/* Free a vector made by fdn_order_init, once every shard using it is freed
 * or detached (the records it points to are not freed). */
void fdn_order_free(fdn_order *o);
/* An empty refs vector to share among the `nshards` shards at `shards`
 * (fdn_shard_attach). 0. */
int fdn_refs_init(fdn_refs *r, fdn_shard *shards, size_t nshards);
/* Free a refs vector's memory (the pointers in it are borrowed), once
 * every shard using it is freed or detached. */
void fdn_refs_free(fdn_refs *r);
/*
 * Tag an empty shard (its records carry the tag, so a walk of a shared
 * order vector says which shard each record is in) and, for each of
 * `order` / `refs` that is not NULL, file its names / traced references
 * there instead of in its own vector (freed then). Every shard sharing a
 * vector must be serialised by one lock; a shared refs vector must have
 * been made for exactly the shards that share it. Sharing both keeps what
 * is read together in insertion order across shards: a read of every name,
 * and a collector's walk over what the table refers to (which, shard by
 * shard, would leave the collector's own list of those objects in that
 * order, and every later pass over that list striding through memory).
 */
void fdn_shard_attach(fdn_shard *s, uint32_t tag, fdn_order *order, fdn_refs *refs);
/* Make a shard forget shared vectors without taking anything out of them:
 * only when every shard sharing them is about to be freed. */
void fdn_shard_detach(fdn_shard *s);
/* Free every C allocation of the shard: tables, records, lists, refs. The
 * caller has already dropped the object references (fdn_shard_free_python
 * in the binding walks them first). */
void fdn_shard_free(fdn_shard *s);

#define FDN_CREATED_NS 1
#define FDN_CREATED_OWN 2
#define FDN_CREATED_GRP 4

/*
 * Insert (ns, name) -> value, known absent. nsl / ownl: the existing lists
 * for ns / owner found by the caller, or NULL to create them (then the new
 * list's key is ns / owner and *created says so, so the binding can take a
 * reference for it). owner == NULL: unowned, the owner index is untouched.
 * tmask: which of the entry's pointers to trace (FDN_T_*); list_tmask:
 * FDN_TL(ns list key, own list key, 0) for lists it creates.
 * Returns 0, or -1 on allocation failure with the contents unchanged (a
 * table may have grown, so the shard version is bumped either way).
 */
int fdn_shard_insert_t(fdn_shard *s, uint64_t h, void *ns, void *name,
                       void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                       void *owner, uint64_t own_hash, fdn_list *ownl,
                       uint64_t seq, unsigned tmask, unsigned list_tmask,
                       int *created);
/* fdn_shard_insert_t tracing nothing. */
int fdn_shard_insert(fdn_shard *s, uint64_t h, void *ns, void *name,
                     void *value, void *meta, uint64_t ns_hash, fdn_list *nsl,
                     void *owner, uint64_t own_hash, fdn_list *ownl,
                     uint64_t seq, int *created);

/* Remove the entry at main slot i; never fails. */
void fdn_shard_remove_at(fdn_shard *s, size_t i, fdn_removed *out);

/*
 * Replace a record's (name's or member's) metadata; *old gets the old
 * pointer. meta_traced: whether the new one is traced. 0, or -1 on
 * allocation failure (nothing changed: the record's traced set grew and
 * the refs vector could not).
 */
int fdn_shard_set_meta_t(fdn_shard *s, fdn_rec *rec, void *meta,
                         int meta_traced, void **old);
/*
 * Replace a name's value (not a member's); *old gets the old pointer.
 * value_traced: whether the new one is traced. 0, or -1 on allocation
 * failure (nothing changed).
 */
int fdn_shard_set_value_t(fdn_shard *s, fdn_rec *rec, void *value,
                          int value_traced, void **old);
/* Replace the metadata at main slot i keeping the record's trace mask
 * (never fails: use it only when both metadata are untraced, or traced). */
void *fdn_shard_set_meta(fdn_shard *s, size_t i, void *meta);

/* ------------------------------------------------------------ groups */

/*
 * Add a member known absent to the group (ns, group) of hash gh. gl: the
 * group's list found by the caller, or NULL to create it (keys ns, group;
 * *created gets FDN_CREATED_GRP). mh: the member's hash in the mem table
 * (mix of gh and the value's hash); loose: the value has no hash (not put in
 * the mem table). owner / own_hash / ownl as for names. tmask: FDN_T_VALUE |
 * FDN_T_META | FDN_T_OWNER bits; list_tmask: FDN_TL(0, own key, group keys).
 * On success *out is the new record. 0 / -1 (contents unchanged).
 */
int fdn_shard_join(fdn_shard *s, uint64_t gh, void *ns, void *group,
                   fdn_list *gl, uint64_t mh, int loose, void *value, void *meta,
                   void *owner, uint64_t own_hash, fdn_list *ownl, uint64_t seq,
                   unsigned tmask, unsigned list_tmask, fdn_rec **out,
                   int *created);

/*
 * Update a member in place (it keeps its place in the group): new metadata,
 * and a new owner (NULL: none). When the owner changes, the member moves to
 * the end of the new owner's list (ownl: found by the caller, or NULL to
 * create it). *old_meta / *old_owner get the old pointers (the binding
 * drops them); *dropped_own: the old owner's list key if that list was
 * emptied and freed, else NULL. tmask: the new FDN_T_VALUE | META | OWNER
 * bits. 0 / -1 (allocation failure: nothing changed).
 */
int fdn_shard_member_update(fdn_shard *s, fdn_rec *rec, void *meta,
                            void *owner, uint64_t own_hash, fdn_list *ownl,
                            unsigned tmask, unsigned list_tmask,
                            void **old_meta, void **old_owner,
                            void **dropped_own, int *created);

/* Remove a member; never fails. out->ns / out->name are the group's keys
 * (still held by the group list unless out->ns_key says it was freed). */
void fdn_shard_leave(fdn_shard *s, fdn_rec *rec, fdn_removed *out);

/* Remove any record (a name or a member), as the two above. */
void fdn_shard_remove_rec(fdn_shard *s, fdn_rec *rec, fdn_removed *out);

/* ------------------------------------------------------------ walks */

/*
 * Records of several lists (the namespace lists of every shard, say), or of
 * several shards' order vectors, in insertion order: a k-way merge by
 * sequence number. Records allocated one
 * after another sit together in memory, so this order is also what caches
 * and prefetchers reward, where walking list by list (or shard by shard)
 * strides across everything in between: 16 interleaved namespaces made a
 * scan 6x slower, two shards 3x. Valid while no record of the lists is
 * removed: a binding that runs code in between checks for that.
 */
typedef struct fdn_walk_head {
    uint64_t seq;
    union {
        fdn_rec *rec;  /* lists: the list's next record */
        fdn_rec **pos; /* order vectors: where its next record is */
    } at;
    size_t src; /* the caller's tag for the list (its shard) */
} fdn_walk_head;

typedef struct fdn_walk {
    fdn_walk_head *heap; /* a binary min-heap on seq */
    size_t k;
    size_t cap;
    int vec; /* walking order vectors, not lists */
    fdn_walk_head small[16];
} fdn_walk;

/* An empty walk with room for `lists` lists: 0, or -1 when that room could
 * not be allocated (nothing to free then). */
int fdn_walk_init(fdn_walk *w, size_t lists);
/* Add a list (its first record; NULL: nothing), tagged src. Room reserved. */
void fdn_walk_add(fdn_walk *w, fdn_rec *first, size_t src);
/* Add every list of an index table (w needs room for index->used more). */
void fdn_walk_add_index(fdn_walk *w, const fdn_table *index, size_t src);
/* Add an order vector: every name of the shards that file their names in
 * it (room reserved). A walk adds either lists or order vectors, never
 * both; fdn_walk_next then gives each record's shard tag as its source. */
void fdn_walk_add_order(fdn_walk *w, fdn_order *order);
/* Start walking (after the adds). */
void fdn_walk_start(fdn_walk *w);
void fdn_walk_free(fdn_walk *w);

static inline void fdn_heap_down(fdn_walk_head *h, size_t k, size_t i)
{
    fdn_walk_head x = h[i];
    for (;;) {
        size_t c = 2 * i + 1, r;
        if (c >= k)
            break;
        /* the smaller child without a branch (which one it is, is what a
         * merge of interleaved lists cannot predict) */
        r = c + 1 < k ? c + 1 : c;
        c = h[r].seq < h[c].seq ? r : c;
        if (h[c].seq >= x.seq)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* The next record (and its list's tag), or NULL at the end. */
static inline fdn_rec *fdn_walk_next(fdn_walk *w, size_t *src)
{
    fdn_rec *rec, *next;
    if (w->k == 0)
        return NULL;
    if (w->vec) {
        fdn_rec **pos = w->heap[0].at.pos;
        rec = *pos;
        *src = rec->shard;
        do
            next = *++pos;
        while (next == NULL);
        if (next != &fdn_order_end) {
            w->heap[0].at.pos = pos;
            w->heap[0].seq = next->seq;
#if defined(__GNUC__) || defined(__clang__)
            /* as below: the record after it, read k steps from now */
            if (pos[1] != NULL)
                __builtin_prefetch(pos[1]);
#endif
        } else {
            w->heap[0] = w->heap[--w->k];
        }
        if (w->k > 1)
            fdn_heap_down(w->heap, w->k, 0);
        return rec;
    }
    *src = w->heap[0].src;
    rec = w->heap[0].at.rec;
    next = rec->ns_next;
    if (next != NULL) {
        w->heap[0].at.rec = next;
        w->heap[0].seq = next->seq;
        /* Each list's next record is read about k steps before it is
         * visited, and that read would miss every time (it lies k records
         * ahead, past what the hardware prefetches): fetch the one after it
         * now, so that read finds it in cache. */
#if defined(__GNUC__) || defined(__clang__)
        if (next->ns_next != NULL)
            __builtin_prefetch(next->ns_next);
#endif
    } else {
        w->heap[0] = w->heap[--w->k];
    }
    fdn_heap_down(w->heap, w->k, 0);
    return rec;
}


/* Next insertion sequence number from a shared counter (atomic). */
uint64_t fdn_next_seq(uint64_t *counter);

#ifdef __cplusplus
}
#endif

#endif /* FDN_TABLE_H */
