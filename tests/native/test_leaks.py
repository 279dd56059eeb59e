"""Reference counts and memory: nothing leaks, on success or on error paths.

Both local backends (``Registry(backend="native" | "python")``) run:

* long cycles of register / re-register / update / lookups / conflicts /
  join-leave / unregister / owner removal (with and without a metadata
  index), and of watch + migrate, after which tracemalloc's traced memory,
  the number of GC-tracked objects and (on a debug build)
  ``sys.gettotalrefcount()`` are back where they were after a warm-up, and
  every key, value, owner and metadata value has its starting refcount;
* error paths, each repeated: a key whose ``__hash__`` raises, whose
  ``__eq__`` raises, whose ``__eq__`` changes the registry mid-probe, and
  (native) injected allocation failures in the C table. Each raises a Python
  exception (or, for the re-entrant ones, answers), leaves the refcounts as
  they were and the registry equal to a snapshot taken before.

tests/registry/test_bad_input.py checks the errors and messages of these
inputs and tests/native/test_native_core.py the C table's consistency; this
file adds what neither measures: references and memory.
"""

from __future__ import annotations

import gc
import inspect
import subprocess
import sys
import sysconfig
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from foundation.errors import AlreadyRegistered, InvalidKey, NotRegistered
from foundation.registry import Registry

BACKENDS = [
    pytest.param("native", marks=pytest.mark.native, id="native"),
    pytest.param("python", id="python"),
]

# Growth allowed between two samples N rounds apart after a warm-up: noise
# (free lists, caches, a dict that resized once) stays well under these,
# while a leak of one small object or one 48-byte table record per round
# shows as >= ROUNDS objects / ROUNDS * 48 bytes.
ROUNDS = 200
MEM_SLACK = 4096
if sysconfig.get_config_var("Py_GIL_DISABLED"):
    # Free-threaded CPython defers some frees (QSBR) and keeps their
    # bookkeeping in 4 KiB chunks, allocated under whatever line freed last:
    # one chunk more, still under a 48-byte-per-round leak (ROUNDS * 48).
    MEM_SLACK += 4096
OBJ_SLACK = 20
REF_SLACK = 50


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest, require: Callable[[str], None]) -> str:
    name: str = request.param
    require(name)
    return name


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc on for the test (left on if it already was: PYTHONTRACEMALLOC)."""
    already = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        yield
    finally:
        if not already:
            tracemalloc.stop()


# ---------------------------------------------------------------- helpers


class Obj:
    """A value, owner or key with identity hash/eq; never interned or cached."""

    __slots__ = ("__weakref__", "tag")

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __repr__(self) -> str:
        return f"Obj({self.tag})"


def fresh_str(text: str) -> str:
    """A str built at run time: not interned, so its refcount is ours alone."""
    return "".join(["~", text])[1:]


@dataclass
class Sample:
    mem: int
    objects: int
    refs: int | None


def _collect() -> None:
    for _ in range(3):
        gc.collect()


# The line of _collect() that runs the collector. Free-threaded CPython's
# collector keeps work buffers of its own (4 KiB at a time, sized by how much
# it had to visit), allocated under that line: they belong to the sampling,
# not to the code under test, so the memory samples leave them out.
_COLLECT_LINE = _collect.__code__.co_firstlineno + next(
    i for i, line in enumerate(inspect.getsourcelines(_collect)[0]) if "gc.collect()" in line
)


def sample() -> Sample:
    _collect()
    # counted before the snapshot, whose own objects are not the test's
    objects = len(gc.get_objects())
    total = getattr(sys, "gettotalrefcount", None)
    refs = total() if total is not None else None
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, __file__, _COLLECT_LINE)]
    )
    mem = sum(stat.size for stat in snapshot.statistics("filename"))
    return Sample(mem, objects, refs)


def assert_no_growth(a: Sample, b: Sample, what: str) -> None:
    assert b.mem - a.mem <= MEM_SLACK, f"{what}: traced memory grew {b.mem - a.mem} B"
    assert b.objects - a.objects <= OBJ_SLACK, (
        f"{what}: {b.objects - a.objects} more GC-tracked objects"
    )
    if a.refs is not None and b.refs is not None:
        assert b.refs - a.refs <= REF_SLACK, f"{what}: total refcount grew {b.refs - a.refs}"


def steady(step: Callable[[], object], what: str, *, warmup: int = 20) -> None:
    """Run ``step`` warmup times, then ROUNDS times between two samples."""
    for _ in range(warmup):
        step()
    a = sample()
    for _ in range(ROUNDS):
        step()
    b = sample()
    assert_no_growth(a, b, what)


async def steady_async(step: Callable[[], Awaitable[object]], what: str) -> None:
    for _ in range(20):
        await step()
    a = sample()
    for _ in range(ROUNDS):
        await step()
    b = sample()
    assert_no_growth(a, b, what)


def refcounts(objs: list[Any]) -> list[int]:
    gc.collect()
    return [sys.getrefcount(o) for o in objs]


def assert_refcounts(objs: list[Any], before: list[int]) -> None:
    after = refcounts(objs)
    moved = [(o, b, a) for o, b, a in zip(objs, before, after, strict=True) if a != b]
    assert not moved, f"refcounts changed (object, before, after): {moved}"


def snapshot(reg: Registry) -> dict[str, Any]:
    """All a registry answers, comparable with ==; on native also the used
    counts of each shard's three tables (a leaked index list shows there)."""
    regs = sorted(
        ((r.namespace, r.name, r.value, dict(r.metadata), r.owner) for r in reg.registrations()),
        key=repr,
    )
    members = sorted(
        (
            (m.namespace, m.name, m.value, dict(m.metadata), m.owner)
            for m in reg.backend.memberships()
        ),
        key=repr,
    )
    shape = None
    if reg.backend_name == "native":
        info = reg.backend._shard_info()  # type: ignore[attr-defined]
        shape = [
            (s["main"][1], s["ns"][1], s["own"][1], s["grp"][1], s["mem"][1], s["members"])
            for s in info
        ]
    return {
        "registrations": regs,
        "memberships": members,
        "len": len(reg),
        "namespaces": reg.stats().namespaces,
        "shape": shape,
    }


# ---------------------------------------------------------------- long cycles


class Pool:
    """The objects a cycle uses, built once, so their refcounts can be compared."""

    def __init__(self) -> None:
        self.namespaces = [fresh_str("ns-a"), Obj("ns-b")]
        self.names: list[Any] = [fresh_str(f"name-{i}") for i in range(30)]
        self.names += [Obj(f"name-obj-{i}") for i in range(10)]
        self.values = [Obj(f"value-{i}") for i in range(len(self.names))]
        self.md_values = [Obj(f"md-{i}") for i in range(4)]
        self.owners = [(fresh_str("owner"), 1), Obj("owner-2")]
        self.group = fresh_str("group")
        self.missing = fresh_str("missing")

    def all(self) -> list[Any]:
        return [
            *self.namespaces,
            *self.names,
            *self.values,
            *self.md_values,
            *self.owners,
            self.group,
            self.missing,
        ]


def write_cycle(reg: Registry, pool: Pool, i: int) -> None:
    ns = pool.namespaces[i % 2]
    names, values, mds, owners = pool.names, pool.values, pool.md_values, pool.owners
    for k, name in enumerate(names):
        reg.register_nowait(
            ns, name, values[k], {"i": k % 4, "md": mds[k % 4]}, owner=owners[k % 2]
        )
    # same value and owner again: the metadata is replaced
    reg.register_nowait(ns, names[0], values[0], {"md": mds[1]}, owner=owners[0])
    reg.update_metadata_nowait(ns, names[1], {"x": mds[2]})
    assert reg.lookup(ns, names[2]) is values[2]
    assert reg.get(ns, pool.missing, mds[3]) is mds[3]
    assert reg.lookup_with_metadata(ns, names[3]).value is values[3]
    assert reg.metadata(ns, names[1])["x"] is mds[2]
    assert len(reg.names(ns)) == len(names)
    assert len(reg.registrations(ns)) == len(reg.registrations()) == len(names)
    assert reg.count(ns) == len(names)
    assert len(reg.select(ns, where={"i": 3})) == len(names) // 4
    assert len(reg.select(None, predicate=lambda r: r.value is values[5])) == 1
    reg.stats()
    with pytest.raises(NotRegistered):
        reg.lookup(ns, pool.missing)
    with pytest.raises(AlreadyRegistered):
        reg.register_nowait(ns, names[0], values[1])
    reg.join_nowait(ns, pool.group, values[0], {"md": mds[0]}, owner=owners[0])
    reg.join_nowait(ns, pool.group, values[1])
    assert reg.leave_nowait(ns, pool.group, values[1])
    # an unhashable (loose) member, and a member that changes owner
    loose = [values[2]]
    reg.join_nowait(ns, pool.group, loose, {"md": mds[1]}, owner=owners[1])
    reg.join_nowait(ns, pool.group, values[3], owner=owners[0])
    reg.join_nowait(ns, pool.group, values[3], {"md": mds[2]}, owner=owners[1])
    assert reg.member_count(ns, pool.group) == 3
    assert [m.value for m in reg.members(ns, pool.group)] == [values[0], loose, values[3]]
    assert len(reg.backend.memberships()) == 3
    assert reg.leave_nowait(ns, pool.group, [values[2]])  # equal, not identical: the same
    assert not reg.leave_nowait(ns, pool.missing, values[0])
    assert reg.unregister_nowait(ns, names[-1])
    assert not reg.unregister_nowait(ns, names[-1])
    # owners[0] holds the even names (the last one, odd, is gone) + 1 membership
    assert reg.unregister_owner_nowait(owners[0]) == len(names) // 2 + 1
    # owners[1] the other odd names + the member that moved to it
    assert reg.unregister_owner_nowait(owners[1]) == len(names) // 2 - 1 + 1
    assert len(reg) == 0
    assert reg.backend.memberships() == []


@pytest.mark.parametrize("indexes", [(), ("i",)], ids=["plain", "indexed"])
def test_write_cycles_leave_nothing(kind: str, indexes: tuple[str, ...], traced: None) -> None:
    reg = Registry(kind, partitions=3, indexes=indexes)
    pool = Pool()
    objs = pool.all()
    write_cycle(reg, pool, 0)  # warm the lazily built parts first
    before = refcounts(objs)
    counter = iter(range(10**9))
    steady(lambda: write_cycle(reg, pool, next(counter)), f"{kind} write cycles")
    reg.close()
    assert_refcounts(objs, before)


async def test_watch_and_migrate_cycles(kind: str, traced: None) -> None:
    reg = Registry(kind, partitions=2)
    ns, name, value, owner = fresh_str("ns"), Obj("name"), Obj("value"), Obj("owner")
    md_value = Obj("md")
    objs = [ns, name, value, owner, md_value]
    before = refcounts(objs)
    # only the last one: a growing list would itself count as growth
    last_old: list[weakref.ref[Any]] = []

    async def cycle() -> None:
        async with reg.watch(ns, initial=True) as watch:
            await reg.register(ns, name, value, {"m": md_value}, owner=owner)
            await reg.update_metadata(ns, name, {"m": md_value, "n": 1})
            await reg.join(ns, "group", value, owner=owner)
            kinds = [(await watch.__anext__()).kind for _ in range(3)]
            assert len(kinds) == 3
            last_old[:] = [weakref.ref(reg.backend)]
            await reg.migrate(kind)  # a fresh backend of the same kind
            assert reg.lookup(ns, name) is value
            assert await reg.unregister_owner(owner) == 2
            assert (await watch.__anext__()).registration.value is value
        async with reg.watch() as watch:
            assert await reg.register(ns, name, value)
            assert await reg.unregister(ns, name)
            assert (await watch.__anext__()).registration.name is name

    await steady_async(cycle, f"{kind} watch + migrate cycles")
    gc.collect()
    assert last_old[0]() is None, "the migrated-away backend is still alive"
    assert_refcounts(objs, before)
    reg.close()


# ---------------------------------------------------------------- error paths


class Boom(Exception):
    pass


class RaisingHash:
    def __hash__(self) -> int:
        raise Boom("hash")


class Colliding:
    """Equal by tag; every instance hashes alike, so probes compare them."""

    def __init__(self, tag: Any) -> None:
        self.tag = tag

    def __hash__(self) -> int:
        return 0x5EED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Colliding) and other.tag == self.tag

    def __repr__(self) -> str:
        return f"Colliding({self.tag!r})"


class RaisingEq(Colliding):
    """Stored first; a colliding probe calls its __eq__, which raises."""

    __hash__ = Colliding.__hash__

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        raise Boom("eq")


class Mutating(Colliding):
    """Stored first; when armed, its __eq__ runs ``action`` once mid-probe."""

    __hash__ = Colliding.__hash__

    def __init__(self, tag: Any) -> None:
        super().__init__(tag)
        self.action: Callable[[], object] | None = None

    def __eq__(self, other: object) -> bool:
        action, self.action = self.action, None
        if action is not None:
            action()
        return super().__eq__(other)


def seeded(kind: str, **kwargs: Any) -> tuple[Registry, list[Any]]:
    """A registry with a few entries of every shape; returns it and the
    objects it holds (so their refcounts are checked too)."""
    reg = Registry(kind, partitions=kwargs.pop("partitions", 2), **kwargs)
    ns, owner, md = fresh_str("seed-ns"), Obj("seed-owner"), Obj("seed-md")
    values = [Obj(f"seed-{i}") for i in range(4)]
    for i, v in enumerate(values):
        reg.register_nowait(ns, i, v, {"md": md}, owner=owner if i % 2 else None)
    reg.join_nowait(ns, "g", values[0], owner=owner)
    return reg, [ns, owner, md, *values]


def test_raising_hash_leaves_no_reference(kind: str, traced: None) -> None:
    reg, held = seeded(kind)
    bad, value, md_value, owner = RaisingHash(), Obj("v"), Obj("md"), Obj("o")
    ns = fresh_str("ns")
    objs = [*held, bad, value, md_value, owner, ns]
    before_snap = snapshot(reg)
    before = refcounts(objs)

    def attempt() -> None:
        md = {"m": md_value}
        for call in (
            lambda: reg.register_nowait(ns, bad, value, md, owner=owner),
            lambda: reg.register_nowait(bad, "x", value, md),
            lambda: reg.register_nowait(ns, "x", value, md, owner=bad),
            lambda: reg.update_metadata_nowait(ns, bad, md),
            lambda: reg.unregister_nowait(bad, "x"),
            lambda: reg.unregister_owner_nowait(bad),
            lambda: reg.lookup(ns, bad),
            lambda: reg.get(bad, "x", value),
            lambda: reg.lookup_with_metadata(ns, bad),
            lambda: reg.names(bad),
            lambda: reg.count(bad),
            lambda: (ns, bad) in reg,
            lambda: reg.join_nowait(ns, bad, value, md, owner=owner),
        ):
            with pytest.raises(InvalidKey):
                call()

    steady(attempt, f"{kind} raising __hash__")
    assert_refcounts(objs, before)
    assert snapshot(reg) == before_snap


def test_raising_eq_leaves_no_reference(kind: str, traced: None) -> None:
    reg, held = seeded(kind, partitions=1)
    ns, value, md_value, owner = fresh_str("ns"), Obj("v"), Obj("md"), Obj("o")
    stored = RaisingEq("stored")
    reg.register_nowait(ns, stored, value, {"m": md_value}, owner=owner)
    stored_ns = RaisingEq("stored-ns")
    reg.register_nowait(stored_ns, "x", value)
    probe, probe_ns, other_value = Colliding("probe"), Colliding("probe-ns"), Obj("other")
    objs = [*held, ns, value, md_value, owner, stored, stored_ns, probe, probe_ns, other_value]
    before_snap = snapshot(reg)
    before = refcounts(objs)

    def attempt() -> None:
        md = {"m": md_value}
        for call in (
            lambda: reg.register_nowait(ns, probe, other_value, md, owner=owner),
            lambda: reg.register_nowait(probe_ns, "x", other_value, md),  # the ns index
            lambda: reg.update_metadata_nowait(ns, probe, md),
            lambda: reg.unregister_nowait(ns, probe),
            lambda: reg.lookup(ns, probe),
            lambda: reg.get(ns, probe),
            lambda: reg.lookup_with_metadata(ns, probe),
            lambda: (ns, probe) in reg,
        ):
            with pytest.raises(InvalidKey):
                call()
        # the stored keys themselves still work (identity first)
        assert reg.lookup(ns, stored) is value
        assert reg.lookup(stored_ns, "x") is value

    steady(attempt, f"{kind} raising __eq__")
    assert_refcounts(objs, before)
    assert snapshot(reg) == before_snap


PROBES = ["lookup", "register", "unregister", "update_metadata"]
SIDE_EFFECTS = ["unregister-self", "grow-and-shrink", "owner-removal", "replace-self"]


@pytest.mark.parametrize("probe_op", PROBES)
@pytest.mark.parametrize("side_effect", SIDE_EFFECTS)
def test_mutating_eq_leaves_no_reference(
    kind: str, probe_op: str, side_effect: str, traced: None
) -> None:
    reg, held = seeded(kind, partitions=1)
    ns, owner, value, md_value = fresh_str("ns"), Obj("owner"), Obj("value"), Obj("md")
    probe_value, fillers = Obj("probe-value"), [Obj(f"filler-{i}") for i in range(60)]
    objs = [*held, ns, owner, value, md_value, probe_value, *fillers]
    before_snap = snapshot(reg)
    before = refcounts(objs)

    def attempt() -> None:
        stored = Mutating("k")
        reg.register_nowait(ns, stored, value, {"m": md_value}, owner=owner)
        reg.register_nowait(ns, Colliding("neighbour"), value)

        def unregister_self() -> None:
            assert reg.unregister_nowait(ns, stored)

        def grow_and_shrink() -> None:
            for i, f in enumerate(fillers):
                reg.register_nowait(ns, ("filler", i), f, owner=owner)
            for i in range(len(fillers)):
                reg.unregister_nowait(ns, ("filler", i))

        def owner_removal() -> None:
            reg.unregister_owner_nowait(owner)

        def replace_self() -> None:
            assert reg.unregister_nowait(ns, stored)
            reg.register_nowait(ns, Colliding("k"), fillers[0], owner=owner)

        stored.action = {
            "unregister-self": unregister_self,
            "grow-and-shrink": grow_and_shrink,
            "owner-removal": owner_removal,
            "replace-self": replace_self,
        }[side_effect]
        probe = Colliding("k")  # equal to stored: its __eq__ runs
        try:
            if probe_op == "lookup":
                reg.get(ns, probe)
            elif probe_op == "register":
                reg.register_nowait(ns, probe, value, {"m": md_value}, owner=owner)
            elif probe_op == "unregister":
                reg.unregister_nowait(ns, probe)
            else:
                reg.update_metadata_nowait(ns, probe, {"m": probe_value})
        except (AlreadyRegistered, NotRegistered):
            pass  # either answer is allowed; leaking is not
        assert stored.action is None, "the probe never compared with the stored key"
        reg.unregister_owner_nowait(owner)
        reg.unregister_nowait(ns, Colliding("neighbour"))
        reg.unregister_nowait(ns, Colliding("k"))
        assert reg.count(ns) == 0

    steady(attempt, f"{kind} {side_effect} during {probe_op}", warmup=5)
    assert_refcounts(objs, before)
    assert snapshot(reg) == before_snap


# ---------------------------------------------------------------- injected allocation failures


@pytest.fixture
def native_hook(require: Callable[[str], None]) -> Iterator[Callable[[int], None]]:
    """``_native._inject_alloc_failure``: the table allocation after N more fails."""
    require("native")
    from foundation.registry import _native

    hook: Callable[[int], None] = _native._inject_alloc_failure
    yield hook
    hook(-1)


@pytest.mark.native
def test_injected_alloc_failures_leave_no_reference(
    native_hook: Callable[[int], None], traced: None
) -> None:
    """Every allocation of an insert that grows all three tables of a shard
    (main slots + recs, ns slots, own slots, the traced-references vector,
    the record, the new ns and owner lists) fails in turn: MemoryError,
    references and registry unchanged."""
    held = [Obj(f"held-{i}") for i in range(5)]
    spaces = [fresh_str(f"ns-{i}") for i in range(5)]
    owners = [Obj(f"owner-{i}") for i in range(5)]
    ns, name, value, owner, md_value = fresh_str("new"), Obj("n"), Obj("v"), Obj("o"), Obj("m")
    objs = [*held, *spaces, *owners, ns, name, value, owner, md_value]
    before = refcounts(objs)

    def full_registry() -> Registry:
        # 5 entries, 5 namespaces, 5 owners: each table is full at 8 slots,
        # and the 15 traced references (held[i], owners[i] as entries' and as
        # owner lists' keys) nearly fill the vector's first 16 places
        reg = Registry("native", partitions=1)
        for i in range(5):
            reg.register_nowait(spaces[i], i, held[i], owner=owners[i])
        return reg

    def attempt() -> None:
        # a fresh registry for each failure point: a failed insert may have
        # grown a table already (fdn_shard_insert reserves first), and the
        # next attempt would then take another path
        outcomes = []
        for after in range(9):
            reg = full_registry()
            before_snap = snapshot(reg)
            native_hook(after)
            try:
                reg.register_nowait(ns, name, value, {"m": md_value}, owner=owner)
            except MemoryError:
                outcomes.append("MemoryError")
                assert snapshot(reg) == before_snap
            else:
                outcomes.append("ok")
                assert reg.unregister_nowait(ns, name)
                assert snapshot(reg) == before_snap
            finally:
                native_hook(-1)
            reg.close()
        assert outcomes == ["MemoryError"] * 8 + ["ok"]

    steady(attempt, "native injected allocation failures", warmup=3)
    assert_refcounts(objs, before)


@pytest.mark.native
def test_injected_alloc_failures_in_joins_leave_no_reference(
    native_hook: Callable[[int], None], traced: None
) -> None:
    """Every allocation of a join that makes a group, a member table entry,
    an owner list and grows every table, and of an update that moves a
    member to a new owner, fails in turn: MemoryError, references and
    registry unchanged."""
    held = [Obj(f"held-{i}") for i in range(5)]
    owners = [Obj(f"owner-{i}") for i in range(5)]
    ns, group, value, owner, md_value = fresh_str("g-ns"), Obj("g"), Obj("v"), Obj("o"), Obj("m")
    objs = [*held, *owners, ns, group, value, owner, md_value]
    before = refcounts(objs)

    def full_registry() -> Registry:
        # 5 groups, 5 members, 5 owners: each table at its 2/3 limit
        reg = Registry("native", partitions=1)
        for i in range(5):
            reg.join_nowait(f"gns-{i}", i, held[i], owner=owners[i])
        return reg

    def attempt(write: Callable[[Registry], object], what: str) -> None:
        outcomes = []
        for after in range(12):
            reg = full_registry()
            if what == "update":
                reg.join_nowait("gns-0", 0, value, owner=owners[0])
            before_snap = snapshot(reg)
            native_hook(after)
            try:
                write(reg)
            except MemoryError:
                outcomes.append("MemoryError")
                assert snapshot(reg) == before_snap
            else:
                outcomes.append("ok")
            finally:
                native_hook(-1)
            reg.close()
        assert "MemoryError" in outcomes, outcomes
        first_ok = outcomes.index("ok")
        assert outcomes[first_ok:] == ["ok"] * (len(outcomes) - first_ok), outcomes

    def new_member(reg: Registry) -> object:
        return reg.join_nowait(ns, group, value, {"m": md_value}, owner=owner)

    def move_member(reg: Registry) -> object:
        return reg.join_nowait("gns-0", 0, value, {"m": md_value}, owner=owner)

    steady(lambda: attempt(new_member, "join"), "native join allocation failures", warmup=3)
    steady(lambda: attempt(move_member, "update"), "native update allocation failures", warmup=3)
    assert_refcounts(objs, before)


@pytest.mark.native
def test_failed_shrinks_leave_no_reference(
    native_hook: Callable[[int], None], traced: None
) -> None:
    """A shrink whose allocation fails is skipped: the removal still happens
    and drops every reference."""
    reg = Registry("native", partitions=1)
    ns, owner = fresh_str("ns"), Obj("owner")
    values = [Obj(f"v{i}") for i in range(100)]
    objs = [ns, owner, *values]
    before = refcounts(objs)

    def removal(fn: Callable[[], object]) -> None:
        native_hook(0)  # the shrink this removal may start fails
        try:
            fn()
        finally:
            native_hook(-1)

    def attempt() -> None:
        for i, v in enumerate(values):
            reg.register_nowait(ns, i, v, owner=owner if i % 2 else None)
        for i in range(0, 100, 2):  # the unowned half
            removal(lambda i=i: reg.unregister_nowait(ns, i))
        for i in range(1, 60, 2):  # 30 owned: 20 left, under 1/8 of main
            removal(lambda i=i: reg.unregister_nowait(ns, i))
        capacity, used = reg.backend._shard_info()[0]["main"]  # type: ignore[attr-defined]
        assert used == 20
        assert used * 8 < capacity, "no shrink was skipped: the test needs a bigger table"
        removal(lambda: reg.unregister_owner_nowait(owner))
        assert len(reg) == 0

    steady(attempt, "native failed shrinks", warmup=3)
    assert_refcounts(objs, before)
    info = reg.backend._shard_info()[0]  # type: ignore[attr-defined]
    assert (info["main"][1], info["ns"][1], info["own"][1]) == (0, 0, 0)


# -------------------------------------------- regression: an insert failing inside __eq__
#
# fdn_shard_insert() reserves room in main (and the ns / owner indexes) first;
# a reserve that grows a table rebuilds it (new slots, new mask). When a later
# allocation of the same insert failed, it used to return -1 with the table
# rebuilt and the *shard* version unchanged; the binding re-checks only the
# shard version after a key's __eq__, so a probe whose __eq__ ran such an
# insert went on with a slot index of the old layout: it missed a stored key,
# or returned the NULL value of an empty slot (a segfault). Found by
# fuzz/fuzz_table.c (seed fuzz/corpus/failed_insert_after_growth); fixed by a
# shard version bump at the top of fdn_shard_insert().

_M = (1 << 64) - 1
_K1, _K2 = 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93


def _name_hash_for(ns_hash: int, combined: int) -> int:
    """The name hash b with fdn_mix2(ns_hash, b) == combined (csrc/fdn_table.h)."""
    x = combined ^ (combined >> 32)
    x = (x * pow(_K2, -1, 1 << 64)) & _M
    x ^= x >> 32
    b = x ^ ((ns_hash & _M) * _K1 & _M)
    b = b - (1 << 64) if b >= 1 << 63 else b
    assert b != -1
    return b


class HashedKey:
    def __init__(self, tag: Any, h: int) -> None:
        self.tag, self.h = tag, h
        self.action: Callable[[], object] | None = None

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        action, self.action = self.action, None
        if action is not None:
            action()
        return isinstance(other, HashedKey) and other.tag == self.tag


@pytest.mark.native
def test_failed_insert_inside_eq_cannot_hide_a_key(native_hook: Callable[[int], None]) -> None:
    reg = Registry("native", partitions=1)
    ns = "ns"
    a = hash(ns)
    # combined hash ...F: home 7 of 8 slots, 15 of 16
    hook = HashedKey("hook", _name_hash_for(a, 0xABCD00000000000F))
    target = HashedKey("target", hook.h)  # same hash: probed after the hook, wraps to 0
    reg.register_nowait(ns, hook, 1)
    reg.register_nowait(ns, target, 2)
    for i, home in enumerate((2, 3, 4)):  # 5 of 8 slots: the next insert grows main
        reg.register_nowait(ns, HashedKey(i, _name_hash_for(a, 0x100 * (i + 1) + home)), i)
    newcomer = HashedKey("new", _name_hash_for(a, 0x7700000000000005))

    def failing_insert() -> None:
        native_hook(2)  # main's slots and recs are allocated, the record fails
        with pytest.raises(MemoryError):
            reg.register_nowait(ns, newcomer, 3)
        native_hook(-1)

    hook.action = failing_insert
    assert reg.lookup(ns, HashedKey("target", target.h)) == 2


_STALE_SLOT_SCRIPT = """
from foundation.registry import Registry, _native

reg = Registry("native", partitions=1)
ns = "ns"
a = hash(ns)
hook = HashedKey("hook", _name_hash_for(a, 0xABCD00000000000F))  # home 7 of 8, 15 of 16
reg.register_nowait(ns, hook, "hook-value")
for i, home in enumerate((2, 3, 4, 5)):  # 5 of 8 slots: the next insert grows main
    reg.register_nowait(ns, HashedKey(i, _name_hash_for(a, 0x100 * (i + 1) + home)), i)
newcomer = HashedKey("new", _name_hash_for(a, 0x7700000000000006))

def failing_insert():
    _native._inject_alloc_failure(2)  # main's slots and recs are allocated, the record fails
    try:
        reg.register_nowait(ns, newcomer, 3)
    except MemoryError:
        pass
    finally:
        _native._inject_alloc_failure(-1)

hook.action = failing_insert
# the probe meets the hook at slot 7, whose __eq__ grows main to 16 slots and
# answers True: with the bug, the binding returned slot 7 of the new table
# (empty: a NULL value)
print(reg.lookup(ns, HashedKey("hook", hook.h)))
"""


@pytest.mark.native
def test_failed_insert_inside_eq_returns_a_stale_slot(require: Callable[[str], None]) -> None:
    require("native")
    script = "\n".join(
        [
            "from typing import Any, Callable",
            inspect.getsource(_name_hash_for),
            "_M, _K1, _K2 = (1 << 64) - 1, 0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93",
            inspect.getsource(HashedKey),
            _STALE_SLOT_SCRIPT,
        ]
    )
    # in a child: with the bug back the interpreter dies (a segfault, or a
    # UBSan report under tools/sanitize.sh)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.strip() == "hook-value"
