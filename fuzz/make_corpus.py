"""Write the seed corpus (fuzz/corpus/) and the known-bug reproducers (fuzz/crashes/).

The files are committed; this script is how they were made, and says in
words what each one does. Run it again after changing the input encoding of
fuzz_table.c (it overwrites the files it knows, nothing else):

    python3 fuzz/make_corpus.py

Encoding (fuzz_table.c, LLVMFuzzerTestOneInput): a header
``[shards - 1 | share << 2 | detach << 3, main hash mode, ns mode | own mode << 4]`` (share:
every shard files its names and traced references in shared vectors, as
under a GIL) and one arm
byte per shard (its fdn_shard_init may fail), then operations. An *arm* byte
``0x80 | k`` makes the k-th allocation of that operation fail (0: the first);
``0`` arms nothing. Key bits: bit 0 picks the namespace alias, bit 1 the
name alias; for inserts bit 2 the owner alias and bits 3-7 (mod 9) the
owner (0: none). Namespaces are 0-11, names 0-47, owners 1-8.

Group operations have bit 0x40 set in their opcode byte (op % 8: 0-3 join,
4-5 leave, 6 member lookup (with bit 0x80: a merged walk of every name or
every member, argument bit 0 and an arm byte), 7 owner removal). Their arguments: group
namespace (0-3), group (0-3), value (0-15; 12-15 have no hash: loose
members) and key bits (bit 0 namespace alias, bit 1 group alias, bit 2 the
value's and the owner's alias, bits 3-7 (mod 9) the owner). The main hash
mode also picks the member hash mode: (mode // 5) % 3 (0 good, 1 all
members collide, 2 two home slots). Which pointers an entry or a new list
traces derives from its sequence number.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# hash modes (fuzz_table.c main_hash / index_hash)
GOOD, ALL_SAME, LOW_BITS, CLASSES, PER_NS = range(5)
IDX_GOOD, IDX_SAME, IDX_TWO = range(3)

# table selector of resize/reserve/shrink: low 2 bits, shard in the rest;
# with bit 0x40: the group index (GRP_T) or the member table (MEM_T), shard
# in bits 2-5
NS_T, OWN_T, MAIN_T = 0, 1, 2
GRP_T, MEM_T = 0x40, 0x41
# member hash modes, added to a main hash mode
MEM_GOOD, MEM_SAME, MEM_TWO = 0, 5, 10


def header(
    shards: int,
    main: int,
    ns: int = IDX_GOOD,
    own: int = IDX_GOOD,
    *,
    share: bool = False,
    detach: bool = False,
) -> bytes:
    """share: the shards file their names and traced references in shared
    vectors; detach: at the end they are freed detached from them (as the
    binding frees a table), else one by one."""
    first = (shards - 1) | (4 if share else 0) | (8 if detach else 0)
    return bytes([first, main, ns | own << 4]) + bytes(shards)


def arm(k: int | None) -> int:
    return 0 if k is None else 0x80 | k


def insert(ns: int, name: int, *, owner: int = 0, alias: int = 0, fail: int | None = None) -> bytes:
    return bytes([0, ns, name, alias | owner << 3, arm(fail)])


def lookup(ns: int, name: int, alias: int = 0) -> bytes:
    return bytes([5, ns, name, alias])


def delete(ns: int, name: int, alias: int = 0, fail: int | None = None) -> bytes:
    return bytes([7, ns, name, alias, arm(fail)])


def remove_owner(owner: int, alias: int = 0, fail: int | None = None) -> bytes:
    return bytes([10, (owner - 1) | alias << 3, arm(fail)])


def set_meta(ns: int, name: int, alias: int = 0) -> bytes:
    return bytes([11, ns, name, alias])


def resize(table: int, shard: int, c: int, fail: int | None = None) -> bytes:
    return bytes([12, table | shard << 2, c, arm(fail)])


def reserve(table: int, shard: int, c: int, fail: int | None = None) -> bytes:
    return bytes([13, table | shard << 2, c, arm(fail)])


def shrink(table: int, shard: int, fail: int | None = None) -> bytes:
    return bytes([14, table | shard << 2, arm(fail)])


def clear_shard(shard: int, init_fail: int | None = None) -> bytes:
    return bytes([0x8F, shard, arm(init_fail)])


def _gbits(alias: int, owner: int) -> int:
    return alias | owner << 3


def join(
    gns: int, g: int, v: int, *, owner: int = 0, alias: int = 0, fail: int | None = None
) -> bytes:
    return bytes([0x40, gns, g, v, _gbits(alias, owner), arm(fail)])


def leave(gns: int, g: int, v: int, *, alias: int = 0, fail: int | None = None) -> bytes:
    return bytes([0x44, gns, g, v, _gbits(alias, 0), arm(fail)])


def member(gns: int, g: int, v: int, alias: int = 0) -> bytes:
    return bytes([0x46, gns, g, v, _gbits(alias, 0)])


def walk(members: int, fail: int | None = None) -> bytes:
    """0: names over the namespace lists, 1: members, 2: names over the
    shards' order vectors."""
    return bytes([0xC6, members, arm(fail)])


def basic() -> bytes:
    """One shard, good hashes: insert, look up (both aliases), re-insert, delete."""
    ops = [insert(0, n) for n in range(6)]
    ops += [lookup(0, n, alias=n & 3) for n in range(8)]
    ops += [insert(0, 2, alias=3), set_meta(0, 3, alias=1)]
    ops += [delete(0, n, alias=n & 3) for n in range(0, 6, 2)]
    ops += [lookup(0, n) for n in range(6)]
    return header(1, GOOD) + b"".join(ops)


def collide_all() -> bytes:
    """Every key the same 64-bit hash: every probe meets CANDIDATEs, deletes
    shift whole runs back."""
    ops = [insert(n % 2, n, alias=n & 3) for n in range(24)]
    ops += [delete(n % 2, n, alias=(n + 1) & 3) for n in range(0, 24, 3)]
    ops += [lookup(n % 2, n, alias=(n + 2) & 3) for n in range(24)]
    ops += [insert(n % 2, n) for n in range(0, 24, 3)]
    ops += [delete(n % 2, n) for n in range(24)]
    return header(1, ALL_SAME, IDX_SAME, IDX_SAME) + b"".join(ops)


def low_bits() -> bytes:
    """Distinct hashes on four home slots: long probe runs that wrap."""
    ops = [insert(n % 3, n, owner=1 + n % 2) for n in range(30)]
    ops += [delete(n % 3, n) for n in range(1, 30, 2)]
    ops += [lookup(n % 3, n) for n in range(30)]
    ops += [remove_owner(1)]
    ops += [insert(0, n) for n in range(40, 47)]
    return header(1, LOW_BITS) + b"".join(ops)


def owners_4shards() -> bytes:
    """Four shards, colliding owner/ns index hashes, owner removal."""
    ops = [insert(n % 4, n, owner=1 + n % 4, alias=n & 7) for n in range(40)]
    ops += [remove_owner(2, alias=1), lookup(1, 1), remove_owner(2)]
    ops += [delete(n % 4, n) for n in range(0, 40, 4)]
    ops += [remove_owner(4), remove_owner(3, alias=1), remove_owner(1)]
    return header(4, GOOD, IDX_SAME, IDX_TWO) + b"".join(ops)


def resize_reserve_shrink() -> bytes:
    """Resizes valid and not (too small, not a power of two, beyond the
    allocator), reserves, shrinks."""
    ops = [insert(0, n, owner=n % 3) for n in range(10)]
    # capacity byte c (fuzz_table.c op_resize): 2^(c % 13); bit 0x40:
    # 2^(20 + c % 40); bit 0x80: one less, or one more with 0x20 too
    ops += [
        resize(MAIN_T, 0, 10),  # 1024 slots
        shrink(MAIN_T, 0),  # -> 64
        resize(MAIN_T, 0, 3),  # 8: too small for 10
        resize(MAIN_T, 0, 0xA2),  # 65: not a power of two
        resize(MAIN_T, 0, 0x88),  # 63
        resize(MAIN_T, 0, 0x45),  # 2^49: refused by the allocator
        resize(NS_T, 0, 12),  # 4096
        shrink(NS_T, 0),
        resize(OWN_T, 0, 2),  # 4: below the minimum
        reserve(MAIN_T, 0, 40),
        reserve(OWN_T, 0, 0x83),  # 2^59 entries: cannot
        shrink(MAIN_T, 0),
    ]
    ops += [delete(0, n) for n in range(9)]
    ops += [shrink(MAIN_T, 0), lookup(0, 9)]
    return header(1, GOOD) + b"".join(ops)


def alloc_failures() -> bytes:
    """Injected allocation failures where the core must fail cleanly: the
    first allocation of an insert (a resize's slots, or the record), the new
    ns/owner list, resizes and reserves, shrinks inside deletes, shard
    re-creation."""
    ops = [insert(0, 0, fail=0), insert(0, 0)]
    ops += [insert(1, 1, owner=1, fail=1), insert(1, 1, owner=1, fail=2)]  # ns list, own list
    ops += [insert(0, n) for n in range(2, 6)]  # 5 entries: main is full at 8 slots
    ops += [insert(0, 6, fail=0), insert(0, 6, fail=1)]  # the growth's slots, then recs
    ops += [resize(MAIN_T, 0, 8, fail=0), resize(MAIN_T, 0, 8, fail=1)]
    ops += [reserve(MAIN_T, 0, 30, fail=0), reserve(NS_T, 0, 20, fail=1)]
    ops += [insert(0, n) for n in range(5, 20)]
    ops += [delete(0, n, fail=0) for n in range(5, 20)]  # shrinks fail: skipped
    ops += [delete(0, n, fail=1) for n in range(0, 5)]
    ops += [clear_shard(0, init_fail=0), clear_shard(0, init_fail=1), clear_shard(0, 2)]
    ops += [insert(1, 1, owner=2), remove_owner(2, fail=0)]
    return header(1, GOOD) + b"".join(ops)


def classes_3shards() -> bytes:
    """Fifteen classes of equal hashes over three shards, every operation."""
    ops = []
    for n in range(36):
        ops.append(insert(n % 4, n, owner=n % 5, alias=n & 7))
        if n % 5 == 4:
            ops.append(delete((n - 2) % 4, n - 2, alias=1))
    ops += [set_meta(n % 4, n) for n in range(0, 36, 5)]
    ops += [remove_owner(3), clear_shard(1), remove_owner(1, alias=1)]
    ops += [lookup(n % 4, n, alias=n & 3) for n in range(36)]
    return header(3, CLASSES, IDX_TWO, IDX_SAME) + b"".join(ops)


def per_ns_clusters() -> bytes:
    """One cluster per namespace; deletes at cluster edges and wrap-around."""
    ops = [insert(ns, n) for n in range(8) for ns in range(4)]
    ops += [delete(ns, 0) for ns in range(4)] + [delete(3, n) for n in range(1, 8)]
    ops += [lookup(ns, n) for n in range(8) for ns in range(3)]
    return header(1, PER_NS) + b"".join(ops)


def index_growth() -> bytes:
    """Seven namespaces and owners in one shard: the ns and own tables grow
    past 8 slots on insert, and their growth fails cleanly (first
    allocation) once main has room; then a 2^17-slot main (4 MiB: the
    huge-page advice) shrinks back."""
    ops = [insert(n, n, owner=1 + n) for n in range(5)]  # ns, own: 5 of 8
    ops += [resize(MAIN_T, 0, 6)]  # main 64 slots: only the index tables grow
    ops += [insert(5, 5, owner=6, fail=0)]  # the ns table's new slots fail
    ops += [insert(5, 5, owner=6), insert(6, 6, owner=7)]
    ops += [resize(MAIN_T, 0, 0x3F), delete(6, 6), shrink(MAIN_T, 0)]
    ops += [remove_owner(n) for n in range(1, 8)]
    return header(1, GOOD) + b"".join(ops)


def failed_insert_after_growth() -> bytes:
    """Regression (found by this harness; fixed in csrc/fdn_table.c by a
    shard version bump at the top of fdn_shard_insert): five entries fill
    main to its 2/3 limit; the sixth insert grows main (slots + recs:
    allocations 0 and 1) and then fails on the record (allocation 2). It
    returned -1 with main rebuilt at 16 slots and the shard version
    unchanged, so a binding probe paused in a key's __eq__ resumed with a
    slot index of the old layout (a false miss, or the NULL value of an
    empty slot: a segfault in _native.pyx _value()). The same then for the
    ns and the own index growing before a failing record."""
    ops = [insert(0, n) for n in range(5)] + [insert(0, 5, fail=2)]
    ops += [insert(0, 5), resize(MAIN_T, 0, 7)]  # 6 entries; main 128: only indexes grow
    ops += [insert(n, n, owner=n) for n in range(1, 5)]  # ns 5/8, own 4/8
    ops += [insert(5, 6, owner=5, fail=1)]  # ns grows, then the record fails
    ops += [insert(5, 6, owner=5)]  # own 5/8
    ops += [insert(6, 7, owner=6, fail=1)]  # own grows, then the record fails
    return header(1, GOOD) + b"".join(ops)


def groups_basic() -> bytes:
    """One shard: members with and without a hash (12-15: loose), joining
    again (metadata, another owner, an equal owner object), lookups with
    both aliases, leaves (absent ones too) until groups drop and come back."""
    ops = [join(0, 0, v, owner=v % 3) for v in range(16)]
    ops += [member(0, 0, v, alias=v & 7) for v in range(16)]
    ops += [join(0, 0, v, owner=(v + 1) % 3, alias=4) for v in range(0, 16, 3)]
    ops += [join(0, 0, v, owner=v % 3, alias=4) for v in range(1, 16, 3)]  # equal owner
    ops += [join(1, 2, v) for v in (3, 13, 7)]
    ops += [leave(0, 0, v, alias=v & 7) for v in range(0, 16, 2)]
    ops += [leave(0, 0, 2), leave(2, 2, 2)]  # absent member, absent group
    ops += [leave(1, 2, v) for v in (13, 3, 7)]
    ops += [join(1, 2, 14), member(1, 2, 14, alias=4)]
    ops += [leave(0, 0, v) for v in range(1, 16, 2)]
    return header(1, GOOD) + b"".join(ops)


def groups_collide() -> bytes:
    """Three shards, every name and every member the same hash: probes of
    the group index and the member table meet CANDIDATEs of other groups."""
    ops = [join(n % 4, (n // 4) % 4, n % 16, alias=n & 7) for n in range(48)]
    ops += [insert(n % 4, n) for n in range(12)]
    ops += [leave(n % 4, (n // 4) % 4, n % 16, alias=(n + 1) & 7) for n in range(0, 48, 3)]
    ops += [member(n % 4, (n // 4) % 4, n % 16) for n in range(48)]
    ops += [resize(MEM_T, 0, 9), shrink(MEM_T, 0), resize(GRP_T, 1 << 2, 6), shrink(GRP_T, 0)]
    ops += [leave(n % 4, (n // 4) % 4, n % 16) for n in range(48)]
    return header(3, ALL_SAME + MEM_SAME, IDX_SAME, IDX_SAME) + b"".join(ops)


def groups_owners() -> bytes:
    """Owners with names and memberships in several shards: unregister_owner
    removes both kinds in one walk of each owner list."""
    ops = []
    for n in range(30):
        ops.append(insert(n % 5, n, owner=1 + n % 3, alias=n & 7))
        ops.append(join(n % 4, n % 3, n % 16, owner=1 + n % 3, alias=n & 4))
    ops += [join(0, 0, 0, owner=2), join(0, 0, 0, owner=3)]  # a member changes owner
    ops += [remove_owner(1), remove_owner(2, alias=1)]
    ops += [member(n % 4, n % 3, n % 16) for n in range(30)]
    ops += [bytes([0x47, 2, 0])]  # owner removal by the group opcode
    return header(4, CLASSES + MEM_TWO, IDX_TWO, IDX_GOOD) + b"".join(ops)


def groups_alloc_failures() -> bytes:
    """Joins failing at each of their allocations (group index, member table
    and owner index growth, the refs vector, the record, the new group and
    owner lists) and owner-changing updates failing (owner index growth, the
    refs vector, the new owner list): nothing changes, nothing leaks."""
    ops = []
    for k in range(8):
        ops.append(join(k % 4, k % 2, k, owner=1 + k % 4, fail=k))
    ops += [join(0, 0, v, owner=1 + v % 4) for v in range(12)]
    for k in range(8):
        # to owners 5-8, who have no list yet: each update makes one
        ops.append(join(0, 0, k, owner=5 + k % 4, alias=4, fail=k % 4))
        ops.append(join(0, 0, k, owner=5 + k % 4, alias=4))
    ops += [join(3, 3, 13, fail=0), join(3, 3, 13, fail=1), join(3, 3, 13)]
    ops += [walk(0, fail=0), walk(1, fail=0)]  # more than 16 lists: the heap fails
    ops += [leave(0, 0, v, fail=0) for v in range(12)]
    return header(1, GOOD) + b"".join(ops)


def walks() -> bytes:
    """Merged walks of names and members over four shards, as lists empty
    and grow between them."""
    ops = [insert(n % 12, n, owner=n % 3) for n in range(40)]
    ops += [join(n % 4, n % 4, n % 16) for n in range(30)]
    ops += [walk(0), walk(1), walk(2)]
    ops += [delete(n % 12, n) for n in range(0, 40, 3)]
    ops += [leave(n % 4, n % 4, n % 16) for n in range(0, 30, 2)]
    ops += [walk(0), walk(1), remove_owner(1), walk(0), walk(2)]
    return header(4, GOOD) + b"".join(ops)


def order_vectors() -> bytes:
    """One shard's order vector grown past 400 names, compacted and shrunk
    by removals, and walked in between. The shard's creation fails at its
    eighth allocation (the order vector, after the five tables' seven
    arrays); where the vector grows, inserts fail at each of their first
    allocations in turn before one succeeds."""
    keys = [(n // 48, n % 48) for n in range(420)]
    grows = {k + d for k in (8, 16, 32, 64, 128, 256) for d in (-2, -1, 0)}
    ops = []
    for i, (a, b) in enumerate(keys):
        if i in grows:
            ops += [insert(a, b, owner=i % 9, fail=k) for k in range(6)]
        ops.append(insert(a, b, owner=i % 9))
    ops += [walk(2), walk(0)]
    ops += [delete(a, b) for i, (a, b) in enumerate(keys) if i % 6]
    ops += [walk(2), remove_owner(3), walk(2)]
    ops += [insert(a, b) for a, b in keys[::4]]
    ops += [walk(2)]
    return bytes([0, GOOD, IDX_GOOD, arm(7)]) + b"".join(ops)


def shared_order() -> bytes:
    """Three shards filing their names and traced references in shared
    vectors: inserts (some
    failing where the vector grows), removals that compact it, owner
    removal across shards, walks, and a shard freed (its names leave the
    shared vector) and created again (its first allocation failing)."""
    keys = [(n // 48, n % 48) for n in range(300)]
    grows = {k + d for k in (8, 16, 32, 64, 128, 256) for d in (-1, 0)}
    ops = []
    for i, (a, b) in enumerate(keys):
        if i in grows:
            ops += [insert(a, b, owner=i % 9, fail=k) for k in range(6)]
        ops.append(insert(a, b, owner=i % 9))
    ops += [join(n % 4, n % 4, n % 16, owner=n % 9) for n in range(20)]
    ops += [walk(2), walk(0), walk(1)]
    ops += [delete(a, b) for i, (a, b) in enumerate(keys) if i % 5 == 1 or i % 5 == 3]
    ops += [walk(2), remove_owner(2), walk(2), clear_shard(1, init_fail=0), walk(2)]
    ops += [insert(a, b) for a, b in keys[::3]]
    ops += [walk(2), clear_shard(0), clear_shard(2), walk(2)]
    ops += [insert(a, b) for a, b in keys[:40]]
    return header(3, GOOD, share=True) + b"".join(ops)


def shared_detached() -> bytes:
    """Two shards sharing their vectors, traced references compacted across
    both (names, members, metadata replaces), then freed as the binding
    frees a table: detached."""
    ops = [insert(n // 48, n % 48, owner=n % 9) for n in range(200)]
    ops += [join(n % 4, n % 4, n % 16, owner=n % 9) for n in range(40)]
    ops += [set_meta(n // 48, n % 48) for n in range(0, 200, 3)]
    ops += [delete(n // 48, n % 48) for n in range(200) if n % 4]
    ops += [walk(2), remove_owner(4), walk(2)]
    return header(2, GOOD, share=True, detach=True) + b"".join(ops)


def refs_compaction() -> bytes:
    """Enough traced entries, then removals, that the refs vector is
    compacted (64 holes and half of it); metadata replaces that change what
    an entry traces in between."""
    ops = [insert(n % 12, n % 48, owner=n % 9) for n in range(300)]
    ops += [set_meta(n % 12, n % 48) for n in range(0, 300, 7)]
    ops += [join(n % 4, n % 4, n % 16, owner=n % 9) for n in range(64)]
    ops += [delete(n % 12, n % 48) for n in range(300) if n % 10]
    ops += [leave(n % 4, n % 4, n % 16) for n in range(0, 64, 2)]
    ops += [insert(n % 12, n % 48) for n in range(40)]
    return header(2, GOOD) + b"".join(ops)


CORPUS = {
    "basic": basic,
    "collide_all": collide_all,
    "low_bits": low_bits,
    "owners_4shards": owners_4shards,
    "resize_reserve_shrink": resize_reserve_shrink,
    "alloc_failures": alloc_failures,
    "classes_3shards": classes_3shards,
    "per_ns_clusters": per_ns_clusters,
    "index_growth": index_growth,
    "failed_insert_after_growth": failed_insert_after_growth,
    "groups_basic": groups_basic,
    "groups_collide": groups_collide,
    "groups_owners": groups_owners,
    "groups_alloc_failures": groups_alloc_failures,
    "refs_compaction": refs_compaction,
    "walks": walks,
    "order_vectors": order_vectors,
    "shared_order": shared_order,
    "shared_detached": shared_detached,
}


def reserve_overflow() -> bytes:
    """Formerly a known bug (fixed): fdn_table_reserve(t, SIZE_MAX / 3 + 1):
    (used + extra) * 3 wrapped to 2, which "fit", so it returned 0 with no
    room made."""
    return header(1, GOOD) + reserve(MAIN_T, 0, 0xC0)


CORPUS["reserve-overflow"] = reserve_overflow

# reproducer name -> generator, for bugs reported but not yet fixed
CRASHES: dict[str, object] = {}


def main() -> int:
    for folder, files in (("corpus", CORPUS), ("crashes", CRASHES)):
        if not files:
            continue
        out = HERE / folder
        out.mkdir(exist_ok=True)
        for name, make in files.items():
            (out / name).write_bytes(make())  # type: ignore[operator]
    print(f"wrote {len(CORPUS)} corpus files and {len(CRASHES)} reproducers under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
