/*
 * fuzz_table.c: a libFuzzer harness for the C core of the native registry
 * (csrc/fdn_table.c alone: no Python).
 *
 * The input is decoded into a header (shard count, hash modes, an
 * allocation failure for the shards' creation) and then a sequence of
 * operations, each an opcode byte and argument bytes:
 *
 *   insert / re-insert (metadata replace), lookup, delete, owner removal,
 *   metadata replace, table resize, reserve, shrink, shard free + re-init
 *
 * driven the way the binding (src/foundation/registry/_native.pyx) drives
 * the core: it probes with fdn_probe() and decides CANDIDATEs itself, finds
 * the namespace / owner lists before fdn_shard_insert(), removes an owner's
 * entries by walking l->first->slot. Every result is checked against a
 * model (a plain array of what must be stored), and after every operation
 * every shard is checked in full (check_shard): slots reachable from their
 * home slot, empty slots zeroed, each record's `slot` pointing at its slot,
 * list links and counts, used counts, load <= 2/3.
 *
 * Keys are opaque pointers compared by identity in the core, so they are
 * small integers cast to pointers (never dereferenced): kind << 40 | id << 1
 * | alias. The two aliases of an id are *equal but not identical* keys (as
 * two equal str objects), which exercises the CANDIDATE path; the hash modes
 * make hashes collide on purpose (all equal, equal low bits, few classes)
 * to exercise long probe runs and backward-shift deletion.
 *
 * Allocation failures: the core's allocator is replaced (fdn_set_allocator)
 * by one that fails when an input-controlled countdown reaches zero, and
 * refuses requests over ALLOC_LIMIT as an out-of-memory would (so huge
 * resizes are exercised without asking the real allocator for them). A
 * failed resize / reserve must leave the table exactly as it was (header:
 * "Every allocation failure is reported as -1 with the table unchanged"); a
 * failed insert must leave the contents unchanged, and if a reserve rebuilt
 * a table before a later step failed, the shard version must have moved
 * (the binding re-checks only that after a key's __eq__). No operation may
 * leak an allocation.
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

enum { K_NS = 1, K_NAME = 2, K_OWNER = 3, K_VALUE = 4, K_META = 5 };

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

/* ------------------------------------------------------------ model */

typedef struct entry {
    int live;
    void *ns, *name; /* the stored pointers (an alias of the id) */
    void *value, *meta;
    unsigned owner;  /* 0: unowned, else owner id + 1 */
    void *owner_ptr; /* the pointer passed at insertion */
    uint64_t seq;
    size_t shard;
} entry;

static fdn_shard shards[MAX_SHARDS];
static size_t nshards;
static entry model[N_NS][N_NAMES];
/* the key each shard's ns / owner list was created with (NULL: no list) */
static void *ns_list_key[MAX_SHARDS][N_NS];
static void *own_list_key[MAX_SHARDS][N_OWNERS];
static uint64_t seq_counter;
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
            CHECK(t->recs[i]->slot == i, "%s: record of slot %zu says slot %zu", what, i,
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
        uint64_t last_seq = 0;
        if (e->a == NULL)
            continue;
        l = (const fdn_list *)e->value;
        CHECK(l != NULL && e->b == NULL, "%s slot %zu", what, i);
        CHECK(kkind(e->a) == (own ? K_OWNER : K_NS), "%s key kind", what);
        id = kid(e->a);
        CHECK(id < (own ? N_OWNERS : N_NS), "%s key id %u", what, id);
        CHECK(!seen[id], "%s: two lists for id %u in shard %zu", what, id, si);
        seen[id] = 1;
        CHECK(l->key == e->a && l->hash == e->hash, "%s: list key/hash != slot", what);
        CHECK(l->key == (own ? own_list_key[si][id] : ns_list_key[si][id]),
              "%s: list of id %u filed under %p, model says %p", what, id, l->key,
              own ? own_list_key[si][id] : ns_list_key[si][id]);
        CHECK(fdn_table_find_identity(t, e->hash, e->a, NULL) == i, "%s: find_identity", what);
        CHECK(l->count > 0, "%s: empty list kept", what);
        for (rec = l->first; rec != NULL; rec = own ? rec->own_next : rec->ns_next) {
            CHECK(n++ < s->main.used, "%s: list longer than main (a cycle?)", what);
            CHECK(rec->slot <= s->main.mask && s->main.recs[rec->slot] == rec,
                  "%s: listed record not at its slot %zu", what, rec->slot);
            CHECK(FDN_REC_SEQ(rec) > last_seq, "%s: list not in insertion order", what);
            last_seq = FDN_REC_SEQ(rec);
            if (own) {
                CHECK(FDN_REC_OWNED(rec), "own: unowned record in an owner list");
                CHECK(rec->own_list == l && rec->own_prev == prev, "own: links");
                CHECK(same_key(rec->owner, l->key), "own: record of another owner");
            } else {
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

static void check_shard(size_t si)
{
    fdn_shard *s = &shards[si];
    size_t i, owned = 0, live = 0;
    unsigned ns, name;
    static unsigned char seen[N_NS][N_NAMES];

    check_table(&s->main, 1, "main");
    check_table(&s->ns, 0, "ns");
    check_table(&s->own, 0, "own");
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
    CHECK(check_index(s, si, &s->own, 1) == owned, "own lists != owned records");
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

typedef struct snap {
    tsnap t[3];
    uint64_t version, sum;
    size_t live;
} snap;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    while (n--)
        h = (h ^ *b++) * 0x100000001B3ull;
    return h;
}

/* Everything a failed operation must leave as it was: the three tables'
 * arrays, sizes and versions, the shard version, and a checksum of every
 * slot, record and list. */
static void take_snap(size_t si, snap *out)
{
    fdn_shard *s = &shards[si];
    fdn_table *ts[3] = {&s->main, &s->ns, &s->own};
    uint64_t h = 0xCBF29CE484222325ull;
    size_t k, i;
    for (k = 0; k < 3; k++) {
        fdn_table *t = ts[k];
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
                fdn_rec *r = t->recs[i];
                h = fnv(h, r, FDN_REC_OWNED(r) ? FDN_REC_OWNED_SIZE : FDN_REC_UNOWNED_SIZE);
            } else {
                h = fnv(h, t->slots[i].value, sizeof(fdn_list));
            }
        }
    }
    out->version = s->version;
    out->sum = h;
    out->live = live_allocs;
}

static const char *const table_names[3] = {"main", "ns", "own"};

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
    for (k = 0; k < 3; k++) {
        CHECK(!rebuilt(before, &now, k) && now.t[k].used == before->t[k].used,
              "%s failed (-1) but %s was rebuilt: capacity %zu -> %zu", what, table_names[k],
              before->t[k].mask + 1, now.t[k].mask + 1);
        CHECK(now.t[k].version == before->t[k].version, "%s failed but %s.version moved", what,
              table_names[k]);
    }
    CHECK(now.version == before->version, "%s failed but the shard version moved", what);
    CHECK(now.sum == before->sum, "%s failed but slots/records/lists changed", what);
}

/* After a failed fdn_shard_insert: the same entries (check_shard compares
 * them with the model after every operation), no allocation leaked or
 * freed; a reserve may have rebuilt a table before a later step failed, but
 * then the shard version must have moved: a binding paused in a key's
 * __eq__ re-checks only that, and would otherwise resume its probe with a
 * slot index of the old layout. Nothing rebuilt: every slot, record and
 * list as it was. */
static void check_failed_insert(size_t si, const snap *before)
{
    snap now;
    size_t k;
    int any = 0;
    take_snap(si, &now);
    CHECK(now.live == before->live, "fdn_shard_insert: failed but leaked or freed %ld allocations",
          (long)now.live - (long)before->live);
    for (k = 0; k < 3; k++) {
        CHECK(now.t[k].used == before->t[k].used, "fdn_shard_insert failed but %s.used changed",
              table_names[k]);
        if (rebuilt(before, &now, k)) {
            any = 1;
            CHECK(now.version != before->version,
                  "fdn_shard_insert failed (-1) after rebuilding %s (capacity %zu -> %zu) but the"
                  " shard version stayed %llu: a probe paused in __eq__ resumes in the new"
                  " layout with an old slot index",
                  table_names[k], before->t[k].mask + 1, now.t[k].mask + 1,
                  (unsigned long long)now.version);
        }
    }
    if (!any)
        CHECK(now.sum == before->sum, "fdn_shard_insert failed but slots/records/lists changed");
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
    rc = fdn_shard_insert(s, h, nsp, namep, value, meta, nh, nsl, ownp, oh, ownl, seq, &created);
    TRACE("op %zu: insert (%u, %u) owner %u shard %zu%s: %d created %d main %zu/%zu\n", cur_op,
          ns, name, owner, si, was_armed ? " (alloc failure armed)" : "", rc, created,
          s->main.used, s->main.mask + 1);
    if (rc < 0) {
        CHECK(rc == -1, "insert returned %d", rc);
        CHECK(was_armed, "insert failed with no allocation failure armed");
        disarm();
        check_failed_insert(si, &before);
        return;
    }
    disarm();
    CHECK(rc == 0, "insert returned %d", rc);
    CHECK(created == ((nsl == NULL ? FDN_CREATED_NS : 0) | (owner && ownl == NULL ? FDN_CREATED_OWN : 0)),
          "created %d", created);
    CHECK(s->version > ver, "insert did not bump the shard version");
    if (nsl == NULL)
        ns_list_key[si][ns] = nsp;
    if (owner && ownl == NULL)
        own_list_key[si][owner - 1] = ownp;
    m->live = 1;
    m->ns = nsp;
    m->name = namep;
    m->value = value;
    m->meta = meta;
    m->owner = owner;
    m->owner_ptr = ownp;
    m->seq = seq;
    m->shard = si;
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
    memset(&out, 0xA5, sizeof(out));
    fdn_shard_remove_at(s, pos, &out);
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
        size_t cnt, i, expect = 0;
        uint64_t last_seq = 0;
        unsigned a, b;
        for (a = 0; a < N_NS; a++)
            for (b = 0; b < N_NAMES; b++)
                expect += model[a][b].live && model[a][b].shard == si &&
                          model[a][b].owner == owner + 1;
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
            CHECK(FDN_REC_SEQ(first) > last_seq, "owner list out of order");
            last_seq = FDN_REC_SEQ(first);
            remove_checked(si, first->slot);
        }
        CHECK(own_list_key[si][owner] == NULL, "owner list survived its removal");
    }
    disarm();
}

static void op_set_meta(reader *r)
{
    unsigned ns = byte(r) % N_NS, name = byte(r) % N_NAMES, bits = byte(r);
    uint64_t h = main_hash(ns, name);
    fdn_shard *s = &shards[shard_of(h)];
    size_t pos;
    uint64_t ver = s->version, mver = s->main.version;
    void *meta, *old;
    if (!find_main(s, h, kptr(K_NS, ns, bits & 1u), kptr(K_NAME, name, (bits >> 1) & 1u), &pos)) {
        CHECK(!model[ns][name].live, "set_meta: (%u, %u) not found", ns, name);
        return;
    }
    meta = new_obj(K_META);
    old = fdn_shard_set_meta(s, pos, meta);
    TRACE("op %zu: set_meta (%u, %u)\n", cur_op, ns, name);
    CHECK(old == model[ns][name].meta, "set_meta returned the wrong old metadata");
    CHECK(s->version > ver && s->main.version > mver, "set_meta did not bump the versions");
    model[ns][name].meta = meta;
}

static fdn_table *pick_table(unsigned b, size_t *si, const char **name)
{
    fdn_shard *s;
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
    memset(ns_list_key, 0, sizeof(ns_list_key));
    memset(own_list_key, 0, sizeof(own_list_key));
    seq_counter = 0;
    next_obj = 0;
    cur_op = 0;
    live0 = live_allocs;

    nshards = 1 + byte(&r) % MAX_SHARDS;
    main_mode = byte(&r);
    b = byte(&r);
    ns_mode = b & 0xF;
    own_mode = b >> 4;
    TRACE("input: %zu shards, hash modes main %u ns %u own %u\n", nshards, main_mode % 5,
          ns_mode % 3, own_mode % 3);
    for (si = 0; si < nshards; si++)
        init_shard(si, &r);
    for (si = 0; si < nshards; si++)
        check_shard(si);

    while (r.n > 0 && cur_op < MAX_OPS) {
        unsigned op = byte(&r);
        cur_op++;
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
        CHECK(fail_countdown == -1, "failure left armed");
        for (si = 0; si < nshards; si++)
            check_shard(si);
        if (cur_op % 32 == 0)
            check_lookups();
    }
    check_lookups();
    for (si = 0; si < nshards; si++)
        fdn_shard_free(&shards[si]);
    CHECK(live_allocs == live0, "%zu allocations leaked after fdn_shard_free",
          live_allocs - live0);
    return 0;
}
