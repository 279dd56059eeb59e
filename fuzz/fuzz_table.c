/*
 * fuzz_table.c: a libFuzzer harness for the C core of the native registry
 * (csrc/fdn_table.c alone: no Python).
 *
 * The input is decoded into a header (shard count, whether the shards
 * share their order and refs vectors as the binding's do under a GIL, and
 * whether they are freed detached from them at the end; hash modes, an
 * allocation failure for the shards' creation) and then a sequence of
 * operations, each an opcode byte and argument bytes:
 *
 *   names:  insert / re-insert (metadata replace), lookup, delete, owner
 *           removal (names and memberships), metadata replace
 *   groups: join (a new member, or an update: metadata, owner), leave,
 *           member lookup (opcode bytes with bit 0x40 set)
 *   tables: resize, reserve, shrink (of any of the five tables), shard
 *           free + re-init
 *
 * driven the way the binding (src/foundation/registry/_native.pyx) drives
 * the core: it probes with fdn_probe() and decides CANDIDATEs itself, finds
 * the namespace / owner / group lists before an insert or join, removes an
 * owner's entries by walking l->first. Every result is checked against a
 * model (plain arrays of what must be stored), and after every operation
 * every shard is checked in full (check_shard): slots reachable from their
 * home slot, empty slots zeroed, each record's `slot` pointing at its slot,
 * list links, counts and order (namespace and group lists in insertion
 * order, loose members in their own list), used counts, load <= 2/3, and the
 * traced references: exactly the pointers the model says each entry and
 * list asked to trace, each entry's in one contiguous run where its record
 * says, holes counted right; and the order vector: every name once, in
 * insertion order, at the index its record holds.
 *
 * Keys are opaque pointers compared by identity in the core, so they are
 * small integers cast to pointers (never dereferenced): kind << 40 | id << 1
 * | alias. The two aliases of an id are *equal but not identical* keys (as
 * two equal str objects), which exercises the CANDIDATE path; the hash modes
 * make hashes collide on purpose (all equal, equal low bits, few classes)
 * to exercise long probe runs and backward-shift deletion. Member values
 * with an id of N_HASHED or more have no hash: they are "loose" members,
 * found by walking their group's loose list. Which pointers an entry traces
 * is derived from its sequence number, so every mask occurs.
 *
 * Allocation failures: the core's allocator is replaced (fdn_set_allocator)
 * by one that fails when an input-controlled countdown reaches zero, and
 * refuses requests over ALLOC_LIMIT as an out-of-memory would (so huge
 * resizes are exercised without asking the real allocator for them). A
 * failed resize / reserve must leave the table exactly as it was (header:
 * "Every allocation failure is reported as -1 with the table unchanged"); a
 * failed insert, join or member update must leave the contents unchanged,
 * and if a reserve rebuilt a table before a later step failed, the shard
 * version must have moved (the binding re-checks only that after a key's
 * __eq__). No operation may leak an allocation.
 *
 * FDN_FUZZ_KNOWN_BUGS (environment, comma-separated) relaxes the check of a
 * known, reported bug so a long run can look past it:
 *   reserve-overflow  fdn_table_reserve() with an `extra` so large that
 *                     (used + extra) * 3 wraps returns 0 without room.
 * FDN_FUZZ_TRACE=1 prints every operation (to read a reproducer).
 *
 * Build: see fuzz/run.sh (libFuzzer) and fuzz/replay_main.c (a plain main()
 * for gcc or any C compiler).
 */
#include "fdn_table.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SHARDS 4
#define N_NS 12 /* > 5: the ns and own tables grow past 8 slots too */
#define N_NAMES 48
#define N_OWNERS 8
#define N_GNS 4      /* namespaces of groups (ids shared with names') */
#define N_GROUPS 4
#define N_VALUES 16  /* member values */
#define N_HASHED 12  /* values with an id from here on have no hash: loose */
#define MAX_OPS 2048
#define ALLOC_LIMIT ((size_t)8 << 20) /* larger requests fail like an OOM */

/* ------------------------------------------------------------ checking */

static size_t cur_op; /* index of the operation being checked */

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_table.c:%d: op %zu: check failed: %s: ",  \
                    __LINE__, cur_op, #cond);                                 \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            abort();                                                          \
        }                                                                     \
    } while (0)

static int trace;
static int known_reserve_overflow;

#define TRACE(...)                                                            \
    do {                                                                      \
        if (trace)                                                            \
            fprintf(stderr, __VA_ARGS__);                                     \
    } while (0)

/* ------------------------------------------------------------ allocator */

static long fail_countdown = -1; /* >= 0: the allocation after that many fails */
static size_t live_allocs;       /* allocations not yet freed */

static int should_fail(size_t bytes)
{
    if (bytes > ALLOC_LIMIT)
        return 1;
    if (fail_countdown < 0)
        return 0;
    return fail_countdown-- == 0;
}

static void *fz_malloc(size_t size)
{
    void *p;
    if (should_fail(size))
        return NULL;
    p = malloc(size);
    if (p != NULL)
        live_allocs++;
    return p;
}

static void *fz_calloc(size_t n, size_t size)
{
    size_t total;
    void *p;
    if (__builtin_mul_overflow(n, size, &total) || should_fail(total))
        return NULL;
    p = calloc(n, size);
    if (p != NULL)
        live_allocs++;
    return p;
}

static void fz_free(void *p)
{
    CHECK(p != NULL, "the core frees NULL");
    CHECK(live_allocs > 0, "more frees than allocations");
    live_allocs--;
    free(p);
}

static const fdn_allocator fz_alloc = {fz_malloc, fz_calloc, fz_free};

/* ------------------------------------------------------------ fake keys */

enum { K_NS = 1, K_NAME = 2, K_OWNER = 3, K_VALUE = 4, K_META = 5, K_GROUP = 6, K_MVALUE = 7 };

static void *kptr(unsigned kind, unsigned id, unsigned alias)
{
    return (void *)(((uintptr_t)kind << 40) | ((uintptr_t)id << 1) | (alias & 1u));
}

static unsigned kkind(const void *p) { return (unsigned)((uintptr_t)p >> 40); }
static unsigned kid(const void *p) { return (unsigned)(((uintptr_t)p & 0xFFFFFFFFFFu) >> 1); }

/* The binding's __eq__: equal ids, whichever alias. */
static int same_key(const void *x, const void *y)
{
    return ((uintptr_t)x >> 1) == ((uintptr_t)y >> 1);
}

/* ------------------------------------------------------------ hashes */

static unsigned main_mode, ns_mode, own_mode;

static uint64_t main_hash(unsigned ns, unsigned name)
{
    uint64_t good = fdn_mix2(ns + 1, name + 1);
    switch (main_mode % 5) {
    case 0:
        return good;
    case 1: /* every key the same hash: every probe meets CANDIDATEs */
        return 0x5555555555555555ull;
    case 2: /* four home slots, distinct full hashes: long runs */
        return (good & ~(uint64_t)0xFF) | (name & 3u);
    case 3: /* 15 classes of equal full hashes, spread over shards */
        return (fdn_mix1(name % 5) & 0xFFFFFFFF00000000ull) | (name % 3);
    default: /* equal low bits per namespace: one cluster per ns */
        return (good & 0xFFFFFFFF00000000ull) | (uint64_t)(ns * 8);
    }
}

static uint64_t index_hash(unsigned mode, unsigned id)
{
    switch (mode % 3) {
    case 0:
        return fdn_mix1(id + 1);
    case 1:
        return 0xABCDEFull; /* all collide */
    default:
        return (uint64_t)(id & 1u) << 3; /* two classes, home 0 or 8 */
    }
}

/* A group's hash: as a name's, with ids past the names'. */
static uint64_t grp_hash(unsigned ns, unsigned group)
{
    return main_hash(ns, N_NAMES + group);
}

/* A member's hash in the mem table, from its group's hash and value id. */
static uint64_t mem_hash(uint64_t gh, unsigned value)
{
    uint64_t good = fdn_mix2(gh, value + 1);
    switch ((main_mode / 5) % 3) {
    case 0:
        return good;
    case 1: /* every member of every group the same hash */
        return 0x3333333333333333ull;
    default: /* two home slots */
        return (good & ~(uint64_t)0xFF) | ((value & 1u) << 3);
    }
}

/* Which of an entry's pointers it traces (FDN_T_*), and a new list's
 * (FDN_TL_*): derived from the sequence number, so every mask occurs. */
static unsigned tmask_of(uint64_t seq)
{
    return (unsigned)(fdn_mix1(seq * 7 + 3) & FDN_T_ALL);
}

static unsigned ltmask_of(uint64_t seq)
{
    return (unsigned)(fdn_mix1(seq * 13 + 5) >> 7) & 0x3Fu;
}

/* ------------------------------------------------------------ model */

typedef struct entry {
    int live;
    void *ns, *name; /* the stored pointers (an alias of the id) */
    void *value, *meta;
    unsigned owner;  /* 0: unowned, else owner id + 1 */
    void *owner_ptr; /* the pointer passed at insertion */
    uint64_t seq;
    size_t shard;
    unsigned tmask;      /* FDN_T_* it traces */
    uint64_t own_stamp;  /* when it was linked into its owner's list */
} entry;

/* A group member: as an entry, its keys being its group's. */
typedef struct member {
    int live;
    void *value, *meta;
    unsigned owner;
    void *owner_ptr;
    uint64_t seq;
    unsigned tmask;
    uint64_t own_stamp;
} member;

static fdn_shard shards[MAX_SHARDS];
static size_t nshards;
/* header bit: every shard files its names and traced references in these
 * shared vectors, as the binding's shards do under a GIL (fdn_shard_attach) */
static int sharing;
static fdn_order shared_order;
static fdn_refs shared_refs;
static size_t traced[MAX_SHARDS]; /* what each shard traces (check_refs) */
static int detach_at_end; /* header bit: free shared shards detached */
static entry model[N_NS][N_NAMES];
static member mmodel[N_GNS][N_GROUPS][N_VALUES];
/* the key each shard's ns / owner list was created with (NULL: no list),
 * and which of its keys it traces */
static void *ns_list_key[MAX_SHARDS][N_NS];
static void *own_list_key[MAX_SHARDS][N_OWNERS];
static unsigned ns_list_tl[MAX_SHARDS][N_NS];
static unsigned own_list_tl[MAX_SHARDS][N_OWNERS];
/* each group's list (a group lives in one shard): keys, traced keys */
static void *grp_key[N_GNS][N_GROUPS], *grp_key2[N_GNS][N_GROUPS];
static unsigned grp_tl[N_GNS][N_GROUPS];
static uint64_t seq_counter, stamp_counter;
static uintptr_t next_obj;

static size_t shard_of(uint64_t h) { return fdn_shard_of(h, nshards); }

/* ------------------------------------------------------------ the binding's probes */

/* _find: 1 found (*pos), 0 absent. Equality of a CANDIDATE: same ids. */
static int find_main(fdn_shard *s, uint64_t h, void *ns, void *name, size_t *pos)
{
    size_t steps = 0;
    *pos = (size_t)h & s->main.mask;
    for (;;) {
        int r = fdn_probe(&s->main, h, ns, name, pos);
        CHECK(steps++ <= s->main.mask, "probe never ended (table full?)");
        if (r == FDN_HIT)
            return 1;
        if (r == FDN_MISS)
            return 0;
        CHECK(r == FDN_CANDIDATE, "fdn_probe returned %d", r);
        CHECK(s->main.slots[*pos].hash == h, "CANDIDATE with another hash");
        CHECK(s->main.slots[*pos].a != ns || s->main.slots[*pos].b != name,
              "CANDIDATE for identical pointers");
        if (same_key(s->main.slots[*pos].a, ns) && same_key(s->main.slots[*pos].b, name))
            return 1;
        *pos = (*pos + 1) & s->main.mask;
    }
}

/* _find_list */
static fdn_list *find_list(fdn_table *t, uint64_t h, void *key)
{
    size_t pos = (size_t)h & t->mask, steps = 0;
    for (;;) {
        int r = fdn_probe(t, h, key, NULL, &pos);
        CHECK(steps++ <= t->mask, "index probe never ended");
        if (r == FDN_MISS)
            return NULL;
        if (r == FDN_HIT || same_key(t->slots[pos].a, key))
            return (fdn_list *)t->slots[pos].value;
        pos = (pos + 1) & t->mask;
    }
}

/* The binding's _find_group: a group list by its two-part key. */
static fdn_list *find_grp(fdn_shard *s, uint64_t gh, void *ns, void *group)
{
    size_t pos = (size_t)gh & s->grp.mask, steps = 0;
    for (;;) {
        int r = fdn_probe(&s->grp, gh, ns, group, &pos);
        CHECK(steps++ <= s->grp.mask, "group probe never ended");
        if (r == FDN_MISS)
            return NULL;
        if (r == FDN_HIT ||
            (same_key(s->grp.slots[pos].a, ns) && same_key(s->grp.slots[pos].b, group)))
            return (fdn_list *)s->grp.slots[pos].value;
        pos = (pos + 1) & s->grp.mask;
    }
}

/* The binding's _find_member: by the mem table if the value has a hash,
 * then among the group's loose members. */
static fdn_rec *find_member(fdn_shard *s, fdn_list *gl, uint64_t mh, void *value, int loose)
{
    fdn_rec *rec;
    size_t steps = 0;
    if (!loose) {
        size_t pos = (size_t)mh & s->mem.mask;
        for (;;) {
            int r = fdn_probe(&s->mem, mh, gl, value, &pos);
            CHECK(steps++ <= s->mem.mask, "member probe never ended");
            if (r == FDN_MISS)
                break;
            if (r == FDN_HIT ||
                (s->mem.slots[pos].a == (void *)gl && same_key(s->mem.slots[pos].b, value)))
                return s->mem.recs[pos];
            pos = (pos + 1) & s->mem.mask;
        }
    }
    steps = 0;
    for (rec = gl->loose_first; rec != NULL; rec = rec->loose_next) {
        CHECK(steps++ <= gl->count, "loose list longer than the group");
        if (same_key(rec->value, value))
            return rec;
    }
    return NULL;
}

/* ------------------------------------------------------------ full checks */

/* Slots: empty ones all zero, occupied ones reachable from home (no empty
 * slot between home and them), used and load right. */
static void check_table(const fdn_table *t, int with_recs, const char *what)
{
    size_t cap = t->mask + 1, used = 0, i, start, k, run = 0;

    CHECK(t->slots != NULL, "%s: no slots", what);
    CHECK(cap >= 8 && (cap & t->mask) == 0, "%s: capacity %zu", what, cap);
    CHECK((t->recs != NULL) == with_recs, "%s: recs %p", what, (void *)t->recs);
    for (start = 0; start < cap && t->slots[start].a != NULL; start++)
        ;
    CHECK(start < cap, "%s: full table", what);
    /* walk the ring from an empty slot: `run` = occupied slots just before */
    for (k = 1; k <= cap; k++) {
        const fdn_slot *e;
        i = (start + k) & t->mask;
        e = &t->slots[i];
        if (e->a == NULL) {
            CHECK(e->hash == 0 && e->b == NULL && e->value == NULL,
                  "%s: empty slot %zu not cleared", what, i);
            if (with_recs)
                CHECK(t->recs[i] == NULL, "%s: empty slot %zu has a record", what, i);
            run = 0;
            continue;
        }
        run++;
        used++;
        CHECK((((i - (size_t)e->hash) & t->mask)) < run,
              "%s: slot %zu unreachable from home %zu (empty slot between)", what, i,
              (size_t)e->hash & t->mask);
        if (with_recs) {
            CHECK(t->recs[i] != NULL, "%s: slot %zu has no record", what, i);
            CHECK(t->recs[i]->slot == i, "%s: record of slot %zu says slot %u", what, i,
                  t->recs[i]->slot);
        }
    }
    CHECK(used == t->used, "%s: used %zu, %zu occupied", what, t->used, used);
    CHECK(used * 3 <= cap * 2, "%s: %zu of %zu: above 2/3", what, used, cap);
}

/* One index table (ns or own): every list's links, counts, keys. Returns the
 * records listed. */
static size_t check_index(const fdn_shard *s, size_t si, const fdn_table *t, int own)
{
    size_t i, total = 0;
    int seen[N_NS > N_OWNERS ? N_NS : N_OWNERS] = {0};
    const char *what = own ? "own" : "ns";

    for (i = 0; i <= t->mask; i++) {
        const fdn_slot *e = &t->slots[i];
        const fdn_list *l;
        const fdn_rec *rec, *prev = NULL;
        size_t n = 0;
        unsigned id;
        uint64_t last = 0;
        if (e->a == NULL)
            continue;
        l = (const fdn_list *)e->value;
        CHECK(l != NULL && e->b == NULL, "%s slot %zu", what, i);
        CHECK(kkind(e->a) == (own ? K_OWNER : K_NS), "%s key kind", what);
        id = kid(e->a);
        CHECK(id < (own ? N_OWNERS : N_NS), "%s key id %u", what, id);
        CHECK(!seen[id], "%s: two lists for id %u in shard %zu", what, id, si);
        seen[id] = 1;
        CHECK(l->key == e->a && l->hash == e->hash && l->key2 == NULL,
              "%s: list key/hash != slot", what);
        CHECK(l->key == (own ? own_list_key[si][id] : ns_list_key[si][id]),
              "%s: list of id %u filed under %p, model says %p", what, id, l->key,
              own ? own_list_key[si][id] : ns_list_key[si][id]);
        CHECK(l->tmask == (own ? own_list_tl[si][id] : ns_list_tl[si][id]),
              "%s: list tmask %u", what, l->tmask);
        CHECK(l->loose == 0 && l->loose_first == NULL, "%s: loose members", what);
        CHECK(fdn_table_find_identity(t, e->hash, e->a, NULL) == i, "%s: find_identity", what);
        CHECK(l->count > 0, "%s: empty list kept", what);
        for (rec = l->first; rec != NULL; rec = own ? rec->own_next : rec->ns_next) {
            CHECK(n++ < s->main.used + s->members, "%s: list longer than the shard", what);
            if (own) {
                uint64_t stamp;
                CHECK(FDN_REC_OWNED(rec), "own: unowned record in an owner list");
                CHECK(rec->own_list == l && rec->own_prev == prev, "own: links");
                CHECK(same_key(rec->owner, l->key), "own: record of another owner");
                if (FDN_REC_MEMBER(rec)) {
                    unsigned gns = kid(rec->ns_list->key), g = kid(rec->ns_list->key2);
                    stamp = mmodel[gns][g][kid(rec->value)].own_stamp;
                } else {
                    CHECK(rec->slot <= s->main.mask && s->main.recs[rec->slot] == rec,
                          "own: listed name not at its slot %u", rec->slot);
                    stamp = model[kid(s->main.slots[rec->slot].a)][kid(s->main.slots[rec->slot].b)]
                                .own_stamp;
                }
                CHECK(stamp > last, "own: list not in the order entries came to the owner");
                last = stamp;
            } else {
                CHECK(!FDN_REC_MEMBER(rec), "ns: a member in a namespace list");
                CHECK(rec->slot <= s->main.mask && s->main.recs[rec->slot] == rec,
                      "ns: listed record not at its slot %u", rec->slot);
                CHECK(FDN_REC_SEQ(rec) > last, "ns: list not in insertion order");
                last = FDN_REC_SEQ(rec);
                CHECK(rec->ns_list == l && rec->ns_prev == prev, "ns: links");
                CHECK(same_key(s->main.slots[rec->slot].a, l->key), "ns: record of another ns");
            }
            prev = rec;
        }
        CHECK(l->last == prev, "%s: last", what);
        CHECK(n == l->count, "%s: count %zu, %zu listed", what, l->count, n);
        total += n;
    }
    for (i = 0; i < (own ? N_OWNERS : N_NS); i++) {
        void *key = own ? own_list_key[si][i] : ns_list_key[si][i];
        CHECK(seen[i] == (key != NULL), "%s: model list of id %zu %s", what, i,
              key ? "missing" : "unexpected");
    }
    return total;
}

/* The group index, the member table and every group list. Returns the
 * owned members. */
static size_t check_groups(const fdn_shard *s, size_t si)
{
    size_t i, members = 0, hashed = 0, owned = 0;
    unsigned gns, g, v;
    int seen[N_GNS][N_GROUPS] = {{0}};

    for (i = 0; i <= s->grp.mask; i++) {
        const fdn_slot *e = &s->grp.slots[i];
        const fdn_list *l;
        const fdn_rec *rec, *prev = NULL, *lprev = NULL;
        size_t n = 0, nl = 0;
        uint64_t last = 0;
        if (e->a == NULL)
            continue;
        l = (const fdn_list *)e->value;
        CHECK(kkind(e->a) == K_NS && kkind(e->b) == K_GROUP, "grp: key kinds");
        gns = kid(e->a);
        g = kid(e->b);
        CHECK(gns < N_GNS && g < N_GROUPS, "grp: key ids");
        CHECK(!seen[gns][g], "grp: group (%u, %u) filed twice", gns, g);
        seen[gns][g] = 1;
        CHECK(shard_of(grp_hash(gns, g)) == si, "grp: group in the wrong shard");
        CHECK(e->hash == grp_hash(gns, g) && l->hash == e->hash, "grp: stored hash");
        CHECK(l->key == e->a && l->key2 == e->b, "grp: list keys != slot");
        CHECK(l->key == grp_key[gns][g] && l->key2 == grp_key2[gns][g],
              "grp: group (%u, %u) filed under other keys than the model's", gns, g);
        CHECK(l->tmask == grp_tl[gns][g], "grp: list tmask");
        CHECK(l->count > 0, "grp: empty group kept");
        CHECK(fdn_table_find_identity(&s->grp, e->hash, e->a, e->b) == i, "grp: find_identity");
        for (rec = l->first; rec != NULL; rec = rec->ns_next) {
            const member *m;
            CHECK(n++ < s->members, "grp: list longer than the shard's members");
            CHECK(FDN_REC_MEMBER(rec), "grp: a name in a group list");
            CHECK(rec->ns_list == l && rec->ns_prev == prev, "grp: links");
            CHECK(FDN_REC_SEQ(rec) > last, "grp: members not in join order");
            last = FDN_REC_SEQ(rec);
            CHECK(kkind(rec->value) == K_MVALUE, "grp: member value kind");
            v = kid(rec->value);
            CHECK(v < N_VALUES, "grp: member value id");
            m = &mmodel[gns][g][v];
            CHECK(m->live, "grp: member %u of (%u, %u) not in the model", v, gns, g);
            CHECK(rec->value == m->value && rec->meta == m->meta && FDN_REC_SEQ(rec) == m->seq,
                  "grp: member %u pointers/seq", v);
            CHECK((unsigned)FDN_REC_OWNED(rec) == (m->owner != 0) &&
                      FDN_REC_OWNER(rec) == (m->owner ? m->owner_ptr : NULL),
                  "grp: member owner");
            CHECK(FDN_REC_TMASK(rec) == m->tmask, "grp: member tmask");
            CHECK(rec->ord == FDN_NONE, "grp: a member in the order vector");
            CHECK((FDN_REC_LOOSE(rec) != 0) == (v >= N_HASHED), "grp: loose flag");
            if (FDN_REC_LOOSE(rec)) {
                CHECK(rec->slot == FDN_NONE, "grp: loose member with a mem slot");
            } else {
                const fdn_slot *me;
                CHECK(rec->slot <= s->mem.mask && s->mem.recs[rec->slot] == rec,
                      "grp: member not at its mem slot");
                me = &s->mem.slots[rec->slot];
                CHECK(me->a == (void *)l && me->b == rec->value &&
                          me->hash == mem_hash(e->hash, v),
                      "grp: mem slot of member %u", v);
                hashed++;
            }
            if (FDN_REC_OWNED(rec))
                owned++;
            prev = rec;
        }
        CHECK(l->last == prev && n == l->count, "grp: last/count");
        for (rec = l->loose_first; rec != NULL; rec = rec->loose_next) {
            CHECK(nl++ < n, "grp: loose list longer than the group");
            CHECK(FDN_REC_LOOSE(rec) && rec->ns_list == l && rec->loose_prev == lprev,
                  "grp: loose links");
            lprev = rec;
        }
        CHECK(l->loose_last == lprev && l->loose == nl, "grp: loose last/count");
        {
            size_t want_loose = 0, want = 0;
            for (v = 0; v < N_VALUES; v++) {
                want += mmodel[gns][g][v].live;
                want_loose += v >= N_HASHED && mmodel[gns][g][v].live;
            }
            CHECK(nl == want_loose, "grp: %zu loose members, model %zu", nl, want_loose);
            CHECK(n == want, "grp: %zu members, model %zu", n, want);
        }
        members += n;
    }
    for (gns = 0; gns < N_GNS; gns++)
        for (g = 0; g < N_GROUPS; g++)
            if (shard_of(grp_hash(gns, g)) == si)
                CHECK(seen[gns][g] == (grp_key[gns][g] != NULL), "grp: model group (%u, %u) %s",
                      gns, g, grp_key[gns][g] ? "missing" : "unexpected");
    CHECK(members == s->members, "shard %zu: %zu members listed, counter %zu", si, members,
          s->members);
    CHECK(hashed == s->mem.used, "mem: %zu hashed members, %zu slots used", hashed,
          s->mem.used);
    for (i = 0; i <= s->mem.mask; i++)
        if (s->mem.slots[i].a != NULL)
            CHECK(s->mem.recs[i] != NULL && s->mem.recs[i]->slot == i, "mem: slot %zu record",
                  i);
    return owned;
}

/* The pointers an entry traces, in vector order. */
static unsigned expect_traced(unsigned tmask, void *ns, void *name, void *value, void *meta,
                              void *owner, void **out)
{
    unsigned n = 0;
    if (tmask & FDN_T_NS)
        out[n++] = ns;
    if (tmask & FDN_T_NAME)
        out[n++] = name;
    if (tmask & FDN_T_VALUE)
        out[n++] = value;
    if (tmask & FDN_T_META)
        out[n++] = meta;
    if (tmask & FDN_T_OWNER)
        out[n++] = owner;
    return n;
}

static void check_run(const fdn_refs *r, uint32_t at, void *const *want, unsigned n,
                      const char *what)
{
    unsigned k;
    if (n == 0) {
        CHECK(at == FDN_NONE, "%s: traces nothing but has refs at %u", what, at);
        return;
    }
    CHECK(at != FDN_NONE && (size_t)at + n <= r->n, "%s: refs at %u (+%u) of %zu", what, at, n,
          r->n);
    for (k = 0; k < n; k++)
        CHECK(r->v[at + k] == want[k], "%s: traced pointer %u of %u is %p, expected %p", what,
              k, n, r->v[at + k], want[k]);
}

/* A refs vector (a shard's own, or the one the shards share): no trailing
 * hole, holes counted, and exactly `expected` live pointers (what the
 * model says its shards' entries and lists trace, each run checked by
 * check_refs). */
static void check_refs_vector(const fdn_refs *r, size_t expected, size_t s0, size_t s1)
{
    size_t i, holes = 0, live = 0;
    CHECK(r->n <= r->cap && (r->cap == 0) == (r->v == NULL), "refs: n %zu cap %zu", r->n,
          r->cap);
    CHECK(r->shards == &shards[s0] && r->nshards == s1 - s0,
          "refs: made for %zu shards at %p, used by [%zu, %zu)", r->nshards,
          (void *)r->shards, s0, s1);
    for (i = 0; i < r->n; i++) {
        if (r->v[i] == NULL)
            holes++;
        else
            live++;
    }
    CHECK(holes == r->holes, "refs: %zu holes, counter %zu", holes, r->holes);
    CHECK(r->n == 0 || r->v[r->n - 1] != NULL, "refs: trailing hole kept");
    CHECK(expected == live, "refs: %zu live pointers, the model traces %zu", live, expected);
}

/* The traced references of shard si: each entry's and list's run exactly
 * its pointers. Returns how many the model says it traces. */
static size_t check_refs(const fdn_shard *s, size_t si)
{
    const fdn_refs *r = s->refs;
    size_t i, expected = 0;
    unsigned a, b;
    void *want[5];

    for (i = 0; i <= s->main.mask; i++) {
        const fdn_slot *e = &s->main.slots[i];
        const entry *m;
        unsigned n;
        if (e->a == NULL)
            continue;
        m = &model[kid(e->a)][kid(e->b)];
        n = expect_traced(m->tmask, m->ns, m->name, m->value, m->meta, m->owner_ptr, want);
        check_run(r, s->main.recs[i]->refs, want, n, "refs of a name");
        expected += n;
    }
    for (i = 0; i <= s->ns.mask; i++) {
        const fdn_list *l = (const fdn_list *)s->ns.slots[i].value;
        if (s->ns.slots[i].a == NULL)
            continue;
        want[0] = l->key;
        check_run(r, l->refs, want, l->tmask & FDN_TL_KEY ? 1 : 0, "refs of an ns list");
        expected += l->tmask & FDN_TL_KEY ? 1 : 0;
    }
    for (i = 0; i <= s->own.mask; i++) {
        const fdn_list *l = (const fdn_list *)s->own.slots[i].value;
        if (s->own.slots[i].a == NULL)
            continue;
        want[0] = l->key;
        check_run(r, l->refs, want, l->tmask & FDN_TL_KEY ? 1 : 0, "refs of an owner list");
        expected += l->tmask & FDN_TL_KEY ? 1 : 0;
    }
    for (a = 0; a < N_GNS; a++)
        for (b = 0; b < N_GROUPS; b++) {
            const fdn_list *l;
            const fdn_rec *rec;
            unsigned n = 0;
            if (grp_key[a][b] == NULL || shard_of(grp_hash(a, b)) != si)
                continue;
            l = find_grp((fdn_shard *)s, grp_hash(a, b), grp_key[a][b], grp_key2[a][b]);
            CHECK(l != NULL, "refs: group (%u, %u) not found", a, b);
            if (l->tmask & FDN_TL_KEY)
                want[n++] = l->key;
            if (l->tmask & FDN_TL_KEY2)
                want[n++] = l->key2;
            check_run(r, l->refs, want, n, "refs of a group list");
            expected += n;
            for (rec = l->first; rec != NULL; rec = rec->ns_next) {
                const member *m = &mmodel[a][b][kid(rec->value)];
                n = expect_traced(m->tmask, NULL, NULL, m->value, m->meta, m->owner_ptr, want);
                check_run(r, rec->refs, want, n, "refs of a member");
                expected += n;
            }
        }
    return expected;
}

/* An order vector: every name of the shards [s0, s1) that file their names
 * in it once, at its record's `ord`, in insertion order, in the main table
 * of the shard its tag names; holes counted, none trailing; the end marker
 * after the last; compacted once holes are half of it. */
static void check_order(const fdn_order *o, size_t s0, size_t s1)
{
    size_t i, si, live = 0, holes = 0, used = 0;
    uint64_t last = 0;
    for (si = s0; si < s1; si++) {
        CHECK(shards[si].order == o, "order: shard %zu files its names elsewhere", si);
        CHECK(shards[si].tag == si, "order: shard %zu tagged %u", si, shards[si].tag);
        used += shards[si].main.used;
    }
    CHECK(o->v != NULL && o->n < o->cap, "order: n %zu cap %zu", o->n, o->cap);
    CHECK(o->v[o->n] == &fdn_order_end, "order: no end marker after %zu", o->n);
    CHECK(o->n == 0 || o->v[o->n - 1] != NULL, "order: trailing hole kept");
    for (i = 0; i < o->n; i++) {
        const fdn_rec *rec = o->v[i];
        if (rec == NULL) {
            holes++;
            continue;
        }
        live++;
        CHECK(rec != &fdn_order_end, "order: end marker at %zu of %zu", i, o->n);
        CHECK(rec->ord == i, "order: record at %zu says %u", i, rec->ord);
        CHECK(!FDN_REC_MEMBER(rec), "order: a member");
        CHECK(rec->shard >= s0 && rec->shard < s1, "order: record of shard %u", rec->shard);
        CHECK(rec->slot <= shards[rec->shard].main.mask &&
                  shards[rec->shard].main.recs[rec->slot] == rec,
              "order: a record not at its main slot in the shard of its tag");
        CHECK(FDN_REC_SEQ(rec) > last, "order: not in insertion order");
        last = FDN_REC_SEQ(rec);
    }
    CHECK(holes == o->holes, "order: %zu holes, counter %zu", holes, o->holes);
    CHECK(live == used, "order: %zu names, main tables %zu", live, used);
    CHECK(holes < 64 || holes * 2 < o->n, "order: %zu holes of %zu not compacted", holes, o->n);
}

/* Every order and refs vector: the shared ones, or each shard's own
 * (check_shard of every shard first: it counts what each traces). */
static void check_orders(void)
{
    size_t si, all = 0;
    if (sharing) {
        check_order(&shared_order, 0, nshards);
        for (si = 0; si < nshards; si++) {
            CHECK(shards[si].refs == &shared_refs, "refs: shard %zu files elsewhere", si);
            all += traced[si];
        }
        check_refs_vector(&shared_refs, all, 0, nshards);
        return;
    }
    for (si = 0; si < nshards; si++) {
        CHECK(shards[si].order == &shards[si].order_own, "order: shard %zu shares", si);
        CHECK(shards[si].refs == &shards[si].refs_own, "refs: shard %zu shares", si);
        check_order(shards[si].order, si, si + 1);
        check_refs_vector(shards[si].refs, traced[si], si, si + 1);
    }
}

static void check_shard(size_t si)
{
    fdn_shard *s = &shards[si];
    size_t i, owned = 0, live = 0;
    unsigned ns, name;
    static unsigned char seen[N_NS][N_NAMES];

    check_table(&s->main, 1, "main");
    check_table(&s->ns, 0, "ns");
    check_table(&s->own, 0, "own");
    check_table(&s->grp, 0, "grp");
    check_table(&s->mem, 1, "mem");
    memset(seen, 0, sizeof(seen));
    for (i = 0; i <= s->main.mask; i++) {
        const fdn_slot *e = &s->main.slots[i];
        const fdn_rec *rec = s->main.recs[i];
        const entry *m;
        if (e->a == NULL)
            continue;
        CHECK(kkind(e->a) == K_NS && kkind(e->b) == K_NAME, "main: key kinds");
        ns = kid(e->a);
        name = kid(e->b);
        CHECK(ns < N_NS && name < N_NAMES, "main: key ids");
        CHECK(!seen[ns][name], "main: key (%u, %u) stored twice", ns, name);
        seen[ns][name] = 1;
        m = &model[ns][name];
        CHECK(m->live && m->shard == si, "main: (%u, %u) should not be in shard %zu", ns, name,
              si);
        CHECK(e->hash == main_hash(ns, name), "main: stored hash");
        CHECK(e->a == m->ns && e->b == m->name && e->value == m->value,
              "main: (%u, %u) stored pointers", ns, name);
        CHECK(rec->meta == m->meta && FDN_REC_SEQ(rec) == m->seq, "main: record meta/seq");
        CHECK(!FDN_REC_MEMBER(rec) && !FDN_REC_LOOSE(rec), "main: member flags on a name");
        CHECK(rec->reg == NULL, "main: the core set the binding's cache");
        CHECK(FDN_REC_TMASK(rec) == m->tmask, "main: tmask");
        CHECK((unsigned)FDN_REC_OWNED(rec) == (m->owner != 0), "main: owned flag");
        CHECK(FDN_REC_OWNER(rec) == (m->owner ? m->owner_ptr : NULL), "main: owner");
        CHECK(rec->ns_list != NULL && same_key(rec->ns_list->key, e->a), "main: ns_list");
        if (FDN_REC_OWNED(rec)) {
            owned++;
            CHECK(rec->own_list != NULL && same_key(rec->own_list->key, rec->owner),
                  "main: own_list");
        }
    }
    for (ns = 0; ns < N_NS; ns++)
        for (name = 0; name < N_NAMES; name++)
            if (model[ns][name].live && model[ns][name].shard == si) {
                live++;
                CHECK(seen[ns][name], "model entry (%u, %u) missing from shard %zu", ns,
                      name, si);
            }
    CHECK(live == s->main.used, "shard %zu: %zu entries, model %zu", si, s->main.used, live);
    CHECK(check_index(s, si, &s->ns, 0) == s->main.used, "ns lists != main.used");
    owned += check_groups(s, si);
    CHECK(check_index(s, si, &s->own, 1) == owned, "own lists != owned records");
    traced[si] = check_refs(s, si);
}

/* Every model entry found by a probe with either alias (O(n * run): done
 * every few operations, not after each). */
static void check_lookups(void)
{
    unsigned ns, name, alias;
    for (ns = 0; ns < N_NS; ns++)
        for (name = 0; name < N_NAMES; name++)
            for (alias = 0; alias < 4; alias++) {
                uint64_t h = main_hash(ns, name);
                fdn_shard *s = &shards[shard_of(h)];
                size_t pos;
                int r = find_main(s, h, kptr(K_NS, ns, alias), kptr(K_NAME, name, alias >> 1),
                                  &pos);
                CHECK(r == model[ns][name].live, "lookup (%u, %u) alias %u: %d", ns, name,
                      alias, r);
                if (r)
                    CHECK(s->main.slots[pos].value == model[ns][name].value, "lookup value");
            }
}

/* ------------------------------------------------------------ snapshots */

typedef struct tsnap {
    fdn_slot *slots;
    fdn_rec **recs;
    size_t mask, used;
    uint64_t version;
} tsnap;

#define N_TABLES 5

typedef struct snap {
    tsnap t[N_TABLES];
    uint64_t version, sum;
    size_t live, members;
    void **refs_v;
    fdn_rec **order_v;
    size_t order_cap;
} snap;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    while (n--)
        h = (h ^ *b++) * 0x100000001B3ull;
    return h;
}

static fdn_table *shard_table(fdn_shard *s, size_t k)
{
    fdn_table *ts[N_TABLES] = {&s->main, &s->ns, &s->own, &s->grp, &s->mem};
    return ts[k];
}

static size_t rec_size(const fdn_rec *r)
{
    if (FDN_REC_MEMBER(r))
        return sizeof(fdn_rec);
    return FDN_REC_OWNED(r) ? FDN_REC_OWNED_SIZE : FDN_REC_UNOWNED_SIZE;
}

/* Everything a failed operation must leave as it was: the five tables'
 * arrays, sizes and versions, the shard version, and a checksum of every
 * slot, record (members and loose ones included), list and traced pointer
 * (the refs vector's contents; its capacity may have grown). */
static void take_snap(size_t si, snap *out)
{
    fdn_shard *s = &shards[si];
    uint64_t h = 0xCBF29CE484222325ull;
    size_t k, i;
    for (k = 0; k < N_TABLES; k++) {
        fdn_table *t = shard_table(s, k);
        out->t[k].slots = t->slots;
        out->t[k].recs = t->recs;
        out->t[k].mask = t->mask;
        out->t[k].used = t->used;
        out->t[k].version = t->version;
        h = fnv(h, t->slots, (t->mask + 1) * sizeof(fdn_slot));
        for (i = 0; i <= t->mask; i++) {
            if (t->slots[i].a == NULL)
                continue;
            if (k == 0) {
                h = fnv(h, t->recs[i], rec_size(t->recs[i]));
            } else if (k == 3) {
                const fdn_list *l = (const fdn_list *)t->slots[i].value;
                const fdn_rec *rec;
                h = fnv(h, l, sizeof(fdn_list));
                for (rec = l->first; rec != NULL; rec = rec->ns_next)
                    h = fnv(h, rec, rec_size(rec));
            } else if (k != 4) {
                h = fnv(h, t->slots[i].value, sizeof(fdn_list));
            }
        }
    }
    h = fnv(h, &s->refs->n, sizeof(s->refs->n));
    h = fnv(h, &s->refs->holes, sizeof(s->refs->holes));
    if (s->refs->n)
        h = fnv(h, s->refs->v, s->refs->n * sizeof(void *));
    h = fnv(h, &s->order->n, sizeof(s->order->n));
    h = fnv(h, &s->order->holes, sizeof(s->order->holes));
    h = fnv(h, s->order->v, (s->order->n + 1) * sizeof(fdn_rec *));
    out->version = s->version;
    out->sum = h;
    out->live = live_allocs;
    out->members = s->members;
    out->refs_v = s->refs->v;
    out->order_v = s->order->v;
    out->order_cap = s->order->cap;
}

static const char *const table_names[N_TABLES] = {"main", "ns", "own", "grp", "mem"};

static int rebuilt(const snap *before, const snap *now, size_t k)
{
    return now->t[k].slots != before->t[k].slots || now->t[k].recs != before->t[k].recs ||
           now->t[k].mask != before->t[k].mask;
}

/* After a failed fdn_table_resize / fdn_table_reserve: nothing changed at
 * all (arrays, sizes, versions, every slot, record and list). */
static void check_unchanged(size_t si, const snap *before, const char *what)
{
    snap now;
    size_t k;
    take_snap(si, &now);
    CHECK(now.live == before->live, "%s: failed but leaked or freed %ld allocations", what,
          (long)now.live - (long)before->live);
    for (k = 0; k < N_TABLES; k++) {
        CHECK(!rebuilt(before, &now, k) && now.t[k].used == before->t[k].used,
              "%s failed (-1) but %s was rebuilt: capacity %zu -> %zu", what, table_names[k],
              before->t[k].mask + 1, now.t[k].mask + 1);
        CHECK(now.t[k].version == before->t[k].version, "%s failed but %s.version moved", what,
              table_names[k]);
    }
    CHECK(now.version == before->version, "%s failed but the shard version moved", what);
    CHECK(now.sum == before->sum, "%s failed but slots/records/lists changed", what);
    CHECK(now.order_v == before->order_v && now.order_cap == before->order_cap,
          "%s failed but the order vector was reallocated", what);
}

/* After a failed fdn_shard_insert_t / fdn_shard_join / member update: the
 * same entries (check_shard compares them with the model after every
 * operation), no allocation leaked or freed (a grown refs vector is a
 * reallocation: the same count); a reserve may have rebuilt a table before a
 * later step failed, but then the shard version must have moved: a binding
 * paused in a key's __eq__ re-checks only that, and would otherwise resume
 * its probe with a slot index of the old layout. Nothing rebuilt: every
 * slot, record, list and traced pointer as it was. */
static void check_failed_insert(size_t si, const snap *before, const char *what)
{
    snap now;
    size_t k;
    int any = 0;
    take_snap(si, &now);
    /* the one allocation that may stay: the refs vector's first (its
     * growth is a reallocation), reserved before a later step failed */
    CHECK(now.live == before->live + (before->refs_v == NULL && now.refs_v != NULL),
          "%s: failed but leaked or freed %ld allocations", what,
          (long)now.live - (long)before->live);
    CHECK(now.members == before->members, "%s failed but the member count changed", what);
    for (k = 0; k < N_TABLES; k++) {
        CHECK(now.t[k].used == before->t[k].used, "%s failed but %s.used changed", what,
              table_names[k]);
        if (rebuilt(before, &now, k)) {
            any = 1;
            CHECK(now.version != before->version,
                  "%s failed (-1) after rebuilding %s (capacity %zu -> %zu) but the"
                  " shard version stayed %llu: a probe paused in __eq__ resumes in the new"
                  " layout with an old slot index",
                  what, table_names[k], before->t[k].mask + 1, now.t[k].mask + 1,
                  (unsigned long long)now.version);
        }
    }
    if (!any)
        CHECK(now.sum == before->sum, "%s failed but slots/records/lists changed", what);
}

/* ------------------------------------------------------------ input */

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned byte(reader *r)
{
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

/* An argument byte that may arm an allocation failure for this operation:
 * high bit set -> fail the (low 3 bits)-th allocation from now. */
static void arm(reader *r)
{
    unsigned b = byte(r);
    fail_countdown = (b & 0x80) ? (long)(b & 7u) : -1;
}

static int armed(void) { return fail_countdown >= 0; }

static void disarm(void) { fail_countdown = -1; }

static void *new_obj(unsigned kind) { return kptr(kind, (unsigned)(++next_obj & 0x7FFFFFFF), 0); }

/* ------------------------------------------------------------ operations */

static void op_insert(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    unsigned owner = (bits >> 3) % (N_OWNERS + 1); /* 0: unowned */
    void *nsp = kptr(K_NS, ns, bits & 1u), *namep = kptr(K_NAME, name, (bits >> 1) & 1u);
    void *ownp = owner ? kptr(K_OWNER, owner - 1, (bits >> 2) & 1u) : NULL;
    uint64_t h = main_hash(ns, name), nh = index_hash(ns_mode, ns);
    uint64_t oh = owner ? index_hash(own_mode, owner - 1) : 0;
    size_t si = shard_of(h), pos;
    fdn_shard *s = &shards[si];
    fdn_list *nsl, *ownl = NULL;
    void *value = new_obj(K_VALUE), *meta = new_obj(K_META);
    entry *m = &model[ns][name];
    uint64_t seq, ver = s->version;
    unsigned tmask, ltmask;
    int created = -1, rc, was_armed;
    snap before;

    arm(r);
    was_armed = armed();
    if (find_main(s, h, nsp, namep, &pos)) {
        /* re-registration: the binding replaces the metadata */
        void *old;
        disarm();
        CHECK(m->live, "found (%u, %u), model has none", ns, name);
        old = fdn_shard_set_meta(s, pos, meta);
        TRACE("op %zu: re-insert (%u, %u) shard %zu: meta replaced\n", cur_op, ns, name, si);
        CHECK(old == m->meta, "set_meta returned %p, model %p", old, m->meta);
        CHECK(s->version > ver, "set_meta did not bump the shard version");
        m->meta = meta;
        return;
    }
    CHECK(!m->live, "(%u, %u) not found, model has it", ns, name);
    nsl = find_list(&s->ns, nh, nsp);
    if (owner)
        ownl = find_list(&s->own, oh, ownp);
    CHECK((nsl != NULL) == (ns_list_key[si][ns] != NULL), "ns list lookup");
    CHECK(!owner || (ownl != NULL) == (own_list_key[si][owner - 1] != NULL), "own list lookup");
    take_snap(si, &before);
    seq = fdn_next_seq(&seq_counter);
    tmask = tmask_of(seq);
    ltmask = ltmask_of(seq);
    rc = fdn_shard_insert_t(s, h, nsp, namep, value, meta, nh, nsl, ownp, oh, ownl, seq, tmask,
                            ltmask, &created);
    TRACE("op %zu: insert (%u, %u) owner %u shard %zu%s: %d created %d main %zu/%zu\n", cur_op,
          ns, name, owner, si, was_armed ? " (alloc failure armed)" : "", rc, created,
          s->main.used, s->main.mask + 1);
    if (rc < 0) {
        CHECK(rc == -1, "insert returned %d", rc);
        CHECK(was_armed, "insert failed with no allocation failure armed");
        disarm();
        check_failed_insert(si, &before, "fdn_shard_insert_t");
        return;
    }
    disarm();
    CHECK(rc == 0, "insert returned %d", rc);
    CHECK(created == ((nsl == NULL ? FDN_CREATED_NS : 0) | (owner && ownl == NULL ? FDN_CREATED_OWN : 0)),
          "created %d", created);
    CHECK(s->version > ver, "insert did not bump the shard version");
    if (nsl == NULL) {
        ns_list_key[si][ns] = nsp;
        ns_list_tl[si][ns] = FDN_TL_NS(ltmask) & FDN_TL_KEY;
    }
    if (owner && ownl == NULL) {
        own_list_key[si][owner - 1] = ownp;
        own_list_tl[si][owner - 1] = FDN_TL_OWN(ltmask) & FDN_TL_KEY;
    }
    m->live = 1;
    m->ns = nsp;
    m->name = namep;
    m->value = value;
    m->meta = meta;
    m->owner = owner;
    m->owner_ptr = ownp;
    m->seq = seq;
    m->shard = si;
    m->tmask = owner ? tmask : tmask & ~FDN_T_OWNER;
    m->own_stamp = ++stamp_counter;
}

static void op_lookup(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    uint64_t h = main_hash(ns, name);
    fdn_shard *s = &shards[shard_of(h)];
    size_t pos;
    int found = find_main(s, h, kptr(K_NS, ns, bits & 1u), kptr(K_NAME, name, (bits >> 1) & 1u),
                          &pos);
    TRACE("op %zu: lookup (%u, %u): %d\n", cur_op, ns, name, found);
    CHECK(found == model[ns][name].live, "lookup (%u, %u): %d", ns, name, found);
    if (found) {
        const fdn_rec *rec = s->main.recs[pos];
        CHECK(s->main.slots[pos].value == model[ns][name].value, "lookup value");
        CHECK(rec->meta == model[ns][name].meta, "lookup meta");
    }
}

/* Remove the entry at main slot pos and check what comes back. */
/* Live members of shard si owned by owner (id + 1), but `skip`. */
static size_t owned_members(size_t si, unsigned owner, const member *skip)
{
    unsigned a, b, v;
    size_t n = 0;
    for (a = 0; a < N_GNS; a++)
        for (b = 0; b < N_GROUPS; b++) {
            if (shard_of(grp_hash(a, b)) != si)
                continue;
            for (v = 0; v < N_VALUES; v++) {
                const member *m = &mmodel[a][b][v];
                n += m->live && m != skip && m->owner == owner;
            }
        }
    return n;
}

static size_t owned_names(size_t si, unsigned owner)
{
    unsigned i, j;
    size_t n = 0;
    for (i = 0; i < N_NS; i++)
        for (j = 0; j < N_NAMES; j++)
            n += model[i][j].live && model[i][j].shard == si && model[i][j].owner == owner;
    return n;
}

static void remove_checked(size_t si, size_t pos)
{
    fdn_shard *s = &shards[si];
    fdn_slot *e = &s->main.slots[pos];
    unsigned ns = kid(e->a), name = kid(e->b);
    entry *m = &model[ns][name];
    fdn_removed out;
    size_t ns_left = 0, own_left = 0, live = live_allocs, expect_freed = 1;
    unsigned i, j;
    uint64_t ver = s->version;

    for (i = 0; i < N_NS; i++)
        for (j = 0; j < N_NAMES; j++)
            if (model[i][j].live && model[i][j].shard == si && !(i == ns && j == name)) {
                ns_left += i == ns;
                own_left += m->owner && model[i][j].owner == m->owner;
            }
    if (m->owner)
        own_left += owned_members(si, m->owner, NULL);
    memset(&out, 0xA5, sizeof(out));
    fdn_shard_remove_at(s, pos, &out);
    CHECK(out.member == 0 && out.reg == NULL, "a name removed as a member, or a cache");
    TRACE("op %zu: remove (%u, %u) shard %zu: ns_key %p own_key %p\n", cur_op, ns, name, si,
          out.ns_key, out.own_key);
    CHECK(out.ns == m->ns && out.name == m->name && out.value == m->value && out.meta == m->meta,
          "removed (%u, %u): wrong pointers", ns, name);
    CHECK(out.seq == m->seq, "removed seq %llu, model %llu", (unsigned long long)out.seq,
          (unsigned long long)m->seq);
    CHECK(out.owner == (m->owner ? m->owner_ptr : NULL), "removed owner");
    CHECK(out.ns_key == (ns_left ? NULL : ns_list_key[si][ns]), "removed ns_key %p", out.ns_key);
    CHECK(out.own_key == (m->owner && !own_left ? own_list_key[si][m->owner - 1] : NULL),
          "removed own_key %p", out.own_key);
    CHECK(s->version > ver, "remove did not bump the shard version");
    if (!ns_left) {
        ns_list_key[si][ns] = NULL;
        expect_freed++;
    }
    if (m->owner && !own_left) {
        own_list_key[si][m->owner - 1] = NULL;
        expect_freed++;
    }
    /* a shrink allocates two arrays and frees two (or, failing, frees
     * what it got): net zero either way */
    CHECK(live_allocs + expect_freed == live, "remove freed %zu allocations, expected %zu",
          live - live_allocs, expect_freed);
    m->live = 0;
}

static void op_delete(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    uint64_t h = main_hash(ns, name);
    size_t si = shard_of(h), pos;
    int found;
    arm(r); /* a failing shrink must be skipped, never fail the removal */
    found = find_main(&shards[si], h, kptr(K_NS, ns, bits & 1u),
                      kptr(K_NAME, name, (bits >> 1) & 1u), &pos);
    CHECK(found == model[ns][name].live, "delete lookup (%u, %u)", ns, name);
    if (found)
        remove_checked(si, pos);
    disarm();
}

/* unregister_owner: per shard, find the owner list, then remove
 * l->first->slot count times with nothing else in between. */
/* The member of record rec (from its group list's keys and its value). */
static member *member_of(const fdn_rec *rec)
{
    return &mmodel[kid(rec->ns_list->key)][kid(rec->ns_list->key2)][kid(rec->value)];
}

/* Remove member rec (fdn_shard_remove_rec, as unregister_owner does, or
 * fdn_shard_leave) and check what comes back. */
static void leave_checked(size_t si, fdn_rec *rec, int via_remove_rec)
{
    fdn_shard *s = &shards[si];
    unsigned gns = kid(rec->ns_list->key), g = kid(rec->ns_list->key2), v = kid(rec->value);
    member *m = &mmodel[gns][g][v];
    void *gk = grp_key[gns][g], *gk2 = grp_key2[gns][g];
    fdn_removed out;
    size_t left = 0, own_left = 0, live = live_allocs, expect_freed = 1;
    unsigned w;
    uint64_t ver = s->version;

    for (w = 0; w < N_VALUES; w++)
        left += w != v && mmodel[gns][g][w].live;
    if (m->owner)
        own_left = owned_names(si, m->owner) + owned_members(si, m->owner, m);
    memset(&out, 0xA5, sizeof(out));
    if (via_remove_rec)
        fdn_shard_remove_rec(s, rec, &out);
    else
        fdn_shard_leave(s, rec, &out);
    TRACE("op %zu: leave (%u, %u) value %u shard %zu: group dropped %d own_key %p\n", cur_op,
          gns, g, v, si, out.ns_key != NULL, out.own_key);
    CHECK(out.member == 1 && out.reg == NULL, "a member removed as a name, or a cache");
    CHECK(out.ns == gk && out.name == gk2, "left member: group keys");
    CHECK(out.value == m->value && out.meta == m->meta && out.seq == m->seq,
          "left member %u: pointers/seq", v);
    CHECK(out.owner == (m->owner ? m->owner_ptr : NULL), "left member: owner");
    CHECK(out.ns_key == (left ? NULL : gk), "left member: group dropped %d, model %zu left",
          out.ns_key != NULL, left);
    CHECK(out.own_key == (m->owner && !own_left ? own_list_key[si][m->owner - 1] : NULL),
          "left member: own_key %p", out.own_key);
    CHECK(s->version > ver, "leave did not bump the shard version");
    if (!left) {
        grp_key[gns][g] = grp_key2[gns][g] = NULL;
        expect_freed++;
    }
    if (m->owner && !own_left) {
        own_list_key[si][m->owner - 1] = NULL;
        expect_freed++;
    }
    CHECK(live_allocs + expect_freed == live, "leave freed %zu allocations, expected %zu",
          live - live_allocs, expect_freed);
    m->live = 0;
}

/* unregister_owner: per shard, find the owner list, then remove
 * l->first (a name or a member) count times with nothing else in between. */
static void op_owner_removal(reader *r)
{
    unsigned bits = byte(r), owner = bits % N_OWNERS;
    void *ownp = kptr(K_OWNER, owner, (bits >> 3) & 1u);
    uint64_t oh = index_hash(own_mode, owner);
    size_t si;
    arm(r);
    for (si = 0; si < nshards; si++) {
        fdn_shard *s = &shards[si];
        fdn_list *l = find_list(&s->own, oh, ownp);
        size_t cnt, i, expect;
        expect = owned_names(si, owner + 1) + owned_members(si, owner + 1, NULL);
        TRACE("op %zu: owner removal %u shard %zu: %zu entries\n", cur_op, owner, si, expect);
        CHECK((l != NULL) == (expect != 0), "owner %u list in shard %zu", owner, si);
        if (l == NULL)
            continue;
        cnt = l->count;
        CHECK(cnt == expect, "owner list count %zu, model %zu", cnt, expect);
        for (i = 0; i < cnt; i++) {
            fdn_rec *first = l->first; /* l is freed by the last removal */
            CHECK(first != NULL && FDN_REC_OWNED(first) && same_key(first->owner, ownp),
                  "owner list head");
            if (FDN_REC_MEMBER(first))
                leave_checked(si, first, 1);
            else
                remove_checked(si, first->slot);
        }
        CHECK(own_list_key[si][owner] == NULL, "owner list survived its removal");
    }
    disarm();
}

/* ------------------------------------------------------------ groups */

typedef struct gargs {
    unsigned gns, g, v, owner;
    void *nsp, *gp, *vp, *ownp;
    uint64_t gh, mh, oh;
    size_t si;
    int loose;
} gargs;

/* Decode a group operation's arguments: group namespace, group, value, and
 * a bits byte (aliases of the three in bits 0-2, the owner's alias is the
 * value's; the owner in bits 3-7, mod 9: 0 for none). */
static void group_args(reader *r, gargs *a)
{
    unsigned bits;
    a->gns = byte(r) % N_GNS;
    a->g = byte(r) % N_GROUPS;
    a->v = byte(r) % N_VALUES;
    bits = byte(r);
    a->owner = (bits >> 3) % (N_OWNERS + 1);
    a->nsp = kptr(K_NS, a->gns, bits & 1u);
    a->gp = kptr(K_GROUP, a->g, (bits >> 1) & 1u);
    a->vp = kptr(K_MVALUE, a->v, (bits >> 2) & 1u);
    /* the owner's alias follows the value's: bits 3-7 are all the owner */
    a->ownp = a->owner ? kptr(K_OWNER, a->owner - 1, (bits >> 2) & 1u) : NULL;
    a->gh = grp_hash(a->gns, a->g);
    a->mh = mem_hash(a->gh, a->v);
    a->oh = a->owner ? index_hash(own_mode, a->owner - 1) : 0;
    a->si = shard_of(a->gh);
    a->loose = a->v >= N_HASHED;
}

/* Find the member the binding would: its group, then the member. */
static fdn_rec *locate(const gargs *a, fdn_list **gl)
{
    fdn_shard *s = &shards[a->si];
    *gl = find_grp(s, a->gh, a->nsp, a->gp);
    CHECK((*gl != NULL) == (grp_key[a->gns][a->g] != NULL), "group (%u, %u) lookup", a->gns,
          a->g);
    return *gl == NULL ? NULL : find_member(s, *gl, a->mh, a->vp, a->loose);
}

static void op_join(reader *r)
{
    gargs a;
    fdn_shard *s;
    fdn_list *gl, *ownl = NULL;
    fdn_rec *rec;
    member *m;
    uint64_t seq, ver;
    unsigned tmask, ltmask;
    int created = -1, rc, was_armed;
    snap before;

    group_args(r, &a);
    s = &shards[a.si];
    m = &mmodel[a.gns][a.g][a.v];
    ver = s->version;
    arm(r);
    was_armed = armed();
    rec = locate(&a, &gl);
    CHECK((rec != NULL) == m->live, "join: member %u of (%u, %u) found %d, model %d", a.v,
          a.gns, a.g, rec != NULL, m->live);
    if (a.owner)
        ownl = find_list(&s->own, a.oh, a.ownp);
    CHECK(!a.owner || (ownl != NULL) == (own_list_key[a.si][a.owner - 1] != NULL),
          "join: own list lookup");
    take_snap(a.si, &before);
    seq = fdn_next_seq(&seq_counter);
    tmask = tmask_of(seq) & (FDN_T_VALUE | FDN_T_META | FDN_T_OWNER);
    ltmask = ltmask_of(seq);
    if (rec != NULL) {
        /* joining again: new metadata, maybe another owner */
        void *meta = new_obj(K_META), *old_meta = NULL, *old_owner = NULL, *dropped = NULL;
        void *cur_owner = FDN_REC_OWNER(rec);
        fdn_list *cur_list = cur_owner != NULL ? rec->own_list : NULL;
        int moves = cur_owner != a.ownp;
        size_t own_left = 0;
        if (moves && m->owner)
            own_left = owned_names(a.si, m->owner) + owned_members(a.si, m->owner, m);
        rc = fdn_shard_member_update(s, rec, meta, a.ownp, a.oh, ownl, tmask, ltmask, &old_meta,
                                     &old_owner, &dropped, &created);
        TRACE("op %zu: rejoin (%u, %u) value %u owner %u -> %u shard %zu%s: %d\n", cur_op, a.gns,
              a.g, a.v, m->owner, a.owner, a.si, was_armed ? " (failure armed)" : "", rc);
        if (rc < 0) {
            CHECK(rc == -1 && was_armed, "member update failed with no failure armed");
            disarm();
            check_failed_insert(a.si, &before, "fdn_shard_member_update");
            return;
        }
        disarm();
        CHECK(old_meta == m->meta, "member update: old metadata");
        CHECK(old_owner == (moves ? cur_owner : NULL), "member update: old owner");
        /* a move within one owner list (equal owners) drops nothing */
        CHECK(dropped == (moves && m->owner && !own_left && ownl != cur_list
                              ? own_list_key[a.si][m->owner - 1] : NULL),
              "member update: dropped owner list %p", dropped);
        if (dropped != NULL)
            own_list_key[a.si][m->owner - 1] = NULL;
        CHECK(created == (moves && a.owner && ownl == NULL ? FDN_CREATED_OWN : 0),
              "member update: created %d", created);
        if (created & FDN_CREATED_OWN) {
            own_list_key[a.si][a.owner - 1] = a.ownp;
            own_list_tl[a.si][a.owner - 1] = FDN_TL_OWN(ltmask) & FDN_TL_KEY;
        }
        CHECK(s->version > ver, "member update did not bump the shard version");
        m->meta = meta;
        m->tmask = a.owner ? tmask : tmask & ~FDN_T_OWNER;
        if (moves) {
            m->owner = a.owner;
            m->owner_ptr = a.ownp;
            m->own_stamp = ++stamp_counter;
        }
        return;
    }
    {
        void *meta = new_obj(K_META);
        fdn_rec *out = NULL;
        rc = fdn_shard_join(s, a.gh, a.nsp, a.gp, gl, a.mh, a.loose, a.vp, meta, a.ownp, a.oh,
                            ownl, seq, tmask, ltmask, &out, &created);
        TRACE("op %zu: join (%u, %u) value %u%s owner %u shard %zu%s: %d created %d\n", cur_op,
              a.gns, a.g, a.v, a.loose ? " (loose)" : "", a.owner, a.si,
              was_armed ? " (failure armed)" : "", rc, created);
        if (rc < 0) {
            CHECK(rc == -1 && was_armed, "join failed with no failure armed");
            disarm();
            check_failed_insert(a.si, &before, "fdn_shard_join");
            return;
        }
        disarm();
        CHECK(out != NULL && FDN_REC_MEMBER(out) && out->value == a.vp, "join: the new record");
        CHECK(created == ((gl == NULL ? FDN_CREATED_GRP : 0) |
                          (a.owner && ownl == NULL ? FDN_CREATED_OWN : 0)),
              "join: created %d", created);
        CHECK(s->version > ver, "join did not bump the shard version");
        if (gl == NULL) {
            grp_key[a.gns][a.g] = a.nsp;
            grp_key2[a.gns][a.g] = a.gp;
            grp_tl[a.gns][a.g] = FDN_TL_GRP(ltmask);
        }
        if (created & FDN_CREATED_OWN) {
            own_list_key[a.si][a.owner - 1] = a.ownp;
            own_list_tl[a.si][a.owner - 1] = FDN_TL_OWN(ltmask) & FDN_TL_KEY;
        }
        m->live = 1;
        m->value = a.vp;
        m->meta = meta;
        m->owner = a.owner;
        m->owner_ptr = a.ownp;
        m->seq = seq;
        m->tmask = a.owner ? tmask : tmask & ~FDN_T_OWNER;
        m->own_stamp = ++stamp_counter;
    }
}

static void op_leave(reader *r)
{
    gargs a;
    fdn_list *gl;
    fdn_rec *rec;
    group_args(r, &a);
    arm(r); /* a failing shrink must be skipped, never fail the removal */
    rec = locate(&a, &gl);
    CHECK((rec != NULL) == mmodel[a.gns][a.g][a.v].live, "leave: member %u of (%u, %u)", a.v,
          a.gns, a.g);
    if (rec != NULL)
        leave_checked(a.si, rec, 0);
    disarm();
}

/* The binding's merged walks (fdn_walk_*): every name of every shard (over
 * the namespace lists, or over the order vectors), or every member, each in
 * insertion order across shards and lists. */
static void op_walk(reader *r)
{
    fdn_walk w;
    fdn_rec *rec;
    size_t si, src, lists = 0, seen = 0, want = 0;
    uint64_t last = 0;
    unsigned a, b, v;
    unsigned sel = byte(r);
    int which = sel & 1, vec = !which && (sel & 2), was_armed;
    arm(r);
    was_armed = armed();
    for (si = 0; si < nshards; si++)
        lists += vec ? (sharing ? si == 0 : 1) : which ? shards[si].grp.used : shards[si].ns.used;
    if (fdn_walk_init(&w, lists) < 0) {
        CHECK(was_armed && lists > 16, "walk init failed with no failure armed");
        disarm();
        return;
    }
    disarm();
    for (si = 0; si < nshards; si++) {
        if (vec) {
            if (!sharing || si == 0)
                fdn_walk_add_order(&w, shards[si].order);
        } else
            fdn_walk_add_index(&w, which ? &shards[si].grp : &shards[si].ns, si);
    }
    fdn_walk_start(&w);
    while ((rec = fdn_walk_next(&w, &src)) != NULL) {
        CHECK(src < nshards && seen++ < 4096, "walk: source / length");
        CHECK(FDN_REC_SEQ(rec) > last, "walk: not in insertion order");
        last = FDN_REC_SEQ(rec);
        CHECK((FDN_REC_MEMBER(rec) != 0) == which, "walk: a record of the other kind");
        if (which) {
            CHECK(member_of(rec)->live && shard_of(rec->ns_list->hash) == src, "walk: member");
        } else {
            const fdn_slot *e = &shards[src].main.slots[rec->slot];
            CHECK(shards[src].main.recs[rec->slot] == rec && model[kid(e->a)][kid(e->b)].live,
                  "walk: name");
        }
    }
    fdn_walk_free(&w);
    if (which) {
        for (a = 0; a < N_GNS; a++)
            for (b = 0; b < N_GROUPS; b++)
                for (v = 0; v < N_VALUES; v++)
                    want += mmodel[a][b][v].live;
    } else {
        for (a = 0; a < N_NS; a++)
            for (b = 0; b < N_NAMES; b++)
                want += model[a][b].live;
    }
    TRACE("op %zu: walk of %s: %zu records over %zu lists\n", cur_op,
          which ? "members" : vec ? "names (order vectors)" : "names", seen, lists);
    CHECK(seen == want, "walk: %zu records, model %zu", seen, want);
}

static void op_member_lookup(reader *r)
{
    gargs a;
    fdn_list *gl;
    fdn_rec *rec;
    const member *m;
    group_args(r, &a);
    rec = locate(&a, &gl);
    m = &mmodel[a.gns][a.g][a.v];
    TRACE("op %zu: member lookup (%u, %u) value %u: %d\n", cur_op, a.gns, a.g, a.v, rec != NULL);
    CHECK((rec != NULL) == m->live, "member lookup (%u, %u) %u", a.gns, a.g, a.v);
    if (rec != NULL) {
        CHECK(rec->value == m->value && rec->meta == m->meta, "member lookup: pointers");
        CHECK(member_of(rec) == m, "member lookup: record of another member");
    }
}

/* A metadata replace that may change what the entry traces (odd metadata
 * ids are "traced"): the record's run in the refs vector is rewritten in
 * place, shrunk, or moved to the end. */
static void op_set_meta(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    uint64_t h = main_hash(ns, name);
    fdn_shard *s = &shards[shard_of(h)];
    size_t pos;
    uint64_t ver = s->version, mver = s->main.version;
    void *meta, *old = NULL;
    int traced, rc;
    if (!find_main(s, h, kptr(K_NS, ns, bits & 1u), kptr(K_NAME, name, (bits >> 1) & 1u), &pos)) {
        CHECK(!model[ns][name].live, "set_meta: (%u, %u) not found", ns, name);
        return;
    }
    meta = new_obj(K_META);
    traced = kid(meta) & 1;
    rc = fdn_shard_set_meta_t(s, s->main.recs[pos], meta, traced, &old);
    TRACE("op %zu: set_meta (%u, %u) traced %d: %d\n", cur_op, ns, name, traced, rc);
    CHECK(rc == 0, "set_meta_t failed with no failure armed");
    CHECK(old == model[ns][name].meta, "set_meta returned the wrong old metadata");
    CHECK(s->version > ver && s->main.version > mver, "set_meta did not bump the versions");
    model[ns][name].meta = meta;
    model[ns][name].tmask =
        traced ? (model[ns][name].tmask | FDN_T_META) : (model[ns][name].tmask & ~FDN_T_META);
}

/* A value replace (update_value), which may change what the entry traces
 * (odd value ids are "traced"), as op_set_meta does for metadata. */
static void op_set_value(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    uint64_t h = main_hash(ns, name);
    fdn_shard *s = &shards[shard_of(h)];
    size_t pos;
    uint64_t ver = s->version, mver = s->main.version;
    void *value, *old = NULL;
    int traced, rc;
    if (!find_main(s, h, kptr(K_NS, ns, bits & 1u), kptr(K_NAME, name, (bits >> 1) & 1u), &pos)) {
        CHECK(!model[ns][name].live, "set_value: (%u, %u) not found", ns, name);
        return;
    }
    value = new_obj(K_VALUE);
    traced = kid(value) & 1;
    rc = fdn_shard_set_value_t(s, s->main.recs[pos], value, traced, &old);
    TRACE("op %zu: set_value (%u, %u) traced %d: %d\n", cur_op, ns, name, traced, rc);
    CHECK(rc == 0, "set_value_t failed with no failure armed");
    CHECK(old == model[ns][name].value, "set_value returned the wrong old value");
    CHECK(s->main.slots[pos].value == value, "set_value did not store the value");
    CHECK(s->version > ver && s->main.version > mver, "set_value did not bump the versions");
    model[ns][name].value = value;
    model[ns][name].tmask =
        traced ? (model[ns][name].tmask | FDN_T_VALUE) : (model[ns][name].tmask & ~FDN_T_VALUE);
}

static fdn_table *pick_table(unsigned b, size_t *si, const char **name)
{
    fdn_shard *s;
    if (b & 0x40) {
        /* the group index or the member table */
        *si = ((b >> 2) & 0xFu) % nshards;
        s = &shards[*si];
        *name = (b & 1u) ? "mem" : "grp";
        return (b & 1u) ? &s->mem : &s->grp;
    }
    *si = (b >> 2) % nshards;
    s = &shards[*si];
    switch (b & 3u) {
    case 0:
        *name = "ns";
        return &s->ns;
    case 1:
        *name = "own";
        return &s->own;
    default:
        *name = "main";
        return &s->main;
    }
}

static void op_resize(reader *r)
{
    size_t si, capacity, used;
    const char *name;
    fdn_table *t = pick_table(byte(r), &si, &name);
    unsigned c = byte(r);
    uint64_t tver = t->version;
    int rc, valid, was_armed;
    snap before;

    /* 2^0..2^12 (kept small: every operation checks every slot), rarely
     * 2^17, or 2^20..2^59 (beyond ALLOC_LIMIT: an out-of-memory), or one
     * off a power of two */
    if (c & 0x40)
        capacity = (size_t)1 << (20 + c % 40);
    else if (c == 0x3F) /* 4 MiB of slots: the huge-page advice path */
        capacity = (size_t)1 << 17;
    else
        capacity = (size_t)1 << (c % 13);
    if (c & 0x80)
        capacity += (c & 0x20) ? 1 : (size_t)-1;
    used = t->used;
    valid = capacity >= 8 && (capacity & (capacity - 1)) == 0 && used * 3 <= capacity * 2;
    arm(r);
    was_armed = armed();
    take_snap(si, &before);
    rc = fdn_table_resize(t, capacity);
    disarm();
    TRACE("op %zu: resize %s of shard %zu to %zu (used %zu%s): %d\n", cur_op, name, si, capacity,
          used, was_armed ? ", failure armed" : "", rc);
    if (rc < 0) {
        CHECK(rc == -1, "resize returned %d", rc);
        CHECK(!valid || was_armed || capacity > ALLOC_LIMIT / sizeof(fdn_slot),
              "resize to a valid %zu failed with no failure", capacity);
        check_unchanged(si, &before, "fdn_table_resize");
        return;
    }
    CHECK(valid, "resize to an invalid capacity %zu (used %zu) succeeded", capacity, used);
    CHECK(t->mask + 1 == capacity && t->used == used, "resize: capacity/used");
    CHECK(t->version > tver, "resize did not bump the table version");
    CHECK(live_allocs == before.live, "resize leaked %ld allocations",
          (long)live_allocs - (long)before.live);
}

static void op_reserve(reader *r)
{
    size_t si, extra, cap0;
    const char *name;
    fdn_table *t = pick_table(byte(r), &si, &name);
    unsigned c = byte(r);
    int rc, was_armed;
    snap before;

    if ((c >> 6) == 3) /* (used + extra) * 3 wraps around to a small number */
        extra = ((size_t)-1) / 3 + 1 + (c & 3u);
    else if ((c >> 6) == 2) /* more than ALLOC_LIMIT allows, or than fits */
        extra = (size_t)1 << (30 + c % 34);
    else
        extra = c & 0x3Fu;
    cap0 = t->mask + 1;
    arm(r);
    was_armed = armed();
    take_snap(si, &before);
    rc = fdn_table_reserve(t, extra);
    disarm();
    TRACE("op %zu: reserve %s of shard %zu +%zu (used %zu, capacity %zu): %d -> %zu\n", cur_op,
          name, si, extra, t->used, cap0, rc, t->mask + 1);
    if (rc < 0) {
        check_unchanged(si, &before, "fdn_table_reserve");
        return;
    }
    CHECK(rc == 0, "reserve returned %d", rc);
    if (!known_reserve_overflow || (c >> 6) != 3)
        CHECK((unsigned __int128)(t->used + (unsigned __int128)extra) * 3 <=
                  (unsigned __int128)(t->mask + 1) * 2,
              "reserve(+%zu) returned 0 but %zu + %zu entries do not fit %zu slots at 2/3",
              extra, t->used, extra, t->mask + 1);
    (void)was_armed;
}

static void op_shrink(reader *r)
{
    size_t si, cap0;
    const char *name;
    fdn_table *t = pick_table(byte(r), &si, &name);
    size_t live = live_allocs;
    int was_armed;
    arm(r);
    was_armed = armed();
    cap0 = t->mask + 1;
    fdn_table_maybe_shrink(t);
    disarm();
    TRACE("op %zu: shrink %s of shard %zu: %zu -> %zu (used %zu)\n", cur_op, name, si, cap0,
          t->mask + 1, t->used);
    CHECK(t->mask + 1 <= cap0, "shrink grew the table");
    CHECK(t->mask + 1 == cap0 || t->mask + 1 == 8 || t->used * 8 >= t->mask + 1,
          "shrink left %zu of %zu", t->used, t->mask + 1);
    CHECK(was_armed || cap0 <= 8 || t->used * 8 >= cap0 || t->mask + 1 < cap0,
          "shrink kept %zu slots for %zu entries", cap0, t->used);
    CHECK(live_allocs == live, "shrink leaked");
}

/* fdn_shard_init, possibly failing: a failure must free what it got. */
static void init_shard(size_t si, reader *r)
{
    size_t live = live_allocs;
    int was_armed;
    arm(r);
    was_armed = armed();
    if (fdn_shard_init(&shards[si]) < 0) {
        CHECK(was_armed, "fdn_shard_init failed with no failure armed");
        CHECK(live_allocs == live, "failed fdn_shard_init leaked %zu allocations",
              live_allocs - live);
        disarm();
        CHECK(fdn_shard_init(&shards[si]) == 0, "fdn_shard_init failed with no failure");
    }
    disarm();
    fdn_shard_attach(&shards[si], (uint32_t)si, sharing ? &shared_order : NULL,
                     sharing ? &shared_refs : NULL);
}

static void op_clear_shard(reader *r)
{
    size_t si = byte(r) % nshards, i;
    unsigned a, b;
    fdn_shard_free(&shards[si]);
    for (a = 0; a < N_NS; a++)
        for (b = 0; b < N_NAMES; b++)
            if (model[a][b].shard == si)
                model[a][b].live = 0;
    for (a = 0; a < N_GNS; a++)
        for (b = 0; b < N_GROUPS; b++)
            if (shard_of(grp_hash(a, b)) == si) {
                memset(mmodel[a][b], 0, sizeof(mmodel[a][b]));
                grp_key[a][b] = grp_key2[a][b] = NULL;
            }
    for (i = 0; i < N_NS; i++)
        ns_list_key[si][i] = NULL;
    for (i = 0; i < N_OWNERS; i++)
        own_list_key[si][i] = NULL;
    TRACE("op %zu: free + init shard %zu\n", cur_op, si);
    init_shard(si, r);
}

/* ------------------------------------------------------------ entry point */

static void setup_env(void)
{
    static int done;
    const char *known;
    if (done)
        return;
    done = 1;
    trace = getenv("FDN_FUZZ_TRACE") != NULL && *getenv("FDN_FUZZ_TRACE") == '1';
    known = getenv("FDN_FUZZ_KNOWN_BUGS");
    if (known != NULL) {
        known_reserve_overflow = strstr(known, "reserve-overflow") != NULL;
    }
    fdn_set_allocator(&fz_alloc);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup_env();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size};
    size_t si, live0;
    unsigned b;

    setup_env();
    memset(model, 0, sizeof(model));
    memset(mmodel, 0, sizeof(mmodel));
    memset(ns_list_key, 0, sizeof(ns_list_key));
    memset(own_list_key, 0, sizeof(own_list_key));
    memset(ns_list_tl, 0, sizeof(ns_list_tl));
    memset(own_list_tl, 0, sizeof(own_list_tl));
    memset(grp_key, 0, sizeof(grp_key));
    memset(grp_key2, 0, sizeof(grp_key2));
    memset(grp_tl, 0, sizeof(grp_tl));
    seq_counter = 0;
    stamp_counter = 0;
    next_obj = 0;
    cur_op = 0;
    live0 = live_allocs;

    b = byte(&r);
    nshards = 1 + b % MAX_SHARDS;
    sharing = (b & 4) != 0;
    detach_at_end = (b & 8) != 0;
    if (sharing) {
        CHECK(fdn_order_init(&shared_order) == 0, "fdn_order_init failed with no failure");
        CHECK(fdn_refs_init(&shared_refs, shards, nshards) == 0, "fdn_refs_init failed");
    }
    main_mode = byte(&r);
    b = byte(&r);
    ns_mode = b & 0xF;
    own_mode = b >> 4;
    TRACE("input: %zu shards%s, hash modes main %u ns %u own %u\n", nshards,
          sharing ? " sharing one order vector" : "", main_mode % 5, ns_mode % 3, own_mode % 3);
    for (si = 0; si < nshards; si++)
        init_shard(si, &r);
    for (si = 0; si < nshards; si++)
        check_shard(si);
    check_orders();

    while (r.n > 0 && cur_op < MAX_OPS) {
        unsigned op = byte(&r);
        cur_op++;
        if (op & 0x40) {
            /* groups (the seeds of the names-only corpus never set this bit) */
            switch (op % 8) {
            case 0: case 1: case 2: case 3:
                op_join(&r);
                break;
            case 4: case 5:
                op_leave(&r);
                break;
            case 6:
                if (op & 0x80)
                    op_walk(&r);
                else
                    op_member_lookup(&r);
                break;
            default:
                op_owner_removal(&r);
                break;
            }
            goto checks;
        }
        switch (op % 16) {
        case 0: case 1: case 2: case 3: case 4:
            op_insert(&r);
            break;
        case 5: case 6:
            op_lookup(&r);
            break;
        case 7: case 8: case 9:
            op_delete(&r);
            break;
        case 10:
            op_owner_removal(&r);
            break;
        case 11:
            if (op & 0x80)
                op_set_value(&r);
            else
                op_set_meta(&r);
            break;
        case 12:
            op_resize(&r);
            break;
        case 13:
            op_reserve(&r);
            break;
        case 14:
            op_shrink(&r);
            break;
        default:
            if (op & 0x80)
                op_clear_shard(&r);
            else
                op_lookup(&r);
            break;
        }
    checks:
        CHECK(fail_countdown == -1, "failure left armed");
        for (si = 0; si < nshards; si++)
            check_shard(si);
        check_orders();
        if (cur_op % 32 == 0)
            check_lookups();
    }
    check_lookups();
    if (sharing && detach_at_end) {
        /* as the binding frees a whole table: detached, the shared vectors
         * freed as they are */
        for (si = 0; si < nshards; si++) {
            fdn_shard_detach(&shards[si]);
            fdn_shard_free(&shards[si]);
        }
        fdn_order_free(&shared_order);
        fdn_refs_free(&shared_refs);
    } else {
        /* one by one: each takes its names and references out */
        for (si = 0; si < nshards; si++)
            fdn_shard_free(&shards[si]);
    }
    if (sharing && !detach_at_end) {
        CHECK(shared_order.n == 0 && shared_order.holes == 0,
              "the shared order vector kept %zu slots after every shard was freed",
              shared_order.n);
        fdn_order_free(&shared_order);
        CHECK(shared_refs.n == 0 && shared_refs.holes == 0,
              "the shared refs vector kept %zu slots after every shard was freed",
              shared_refs.n);
        fdn_refs_free(&shared_refs);
    }
    CHECK(live_allocs == live0, "%zu allocations leaked after fdn_shard_free",
          live_allocs - live0);
    return 0;
}
