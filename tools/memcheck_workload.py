"""A short workload over every path of the native registry, for valgrind.

tools/valgrind_memcheck.sh runs this under memcheck; it also runs as a plain
script (``python tools/memcheck_workload.py``, a few seconds). It touches
each part of csrc/ and the binding once or a few times, not many: under
memcheck every instruction costs ~50x.

Exits 0 and prints ``workload ok`` when every check passed; an assertion
error otherwise (memcheck's own findings are read from its XML by
tools/memcheck_filter.py).
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import weakref
from typing import Any

from foundation.errors import AlreadyRegistered, InvalidKey, NotRegistered
from foundation.registry import NATIVE, Registry
from foundation.registry._query import Query


class Key:
    """Chosen hash, equality by ident: collisions on demand."""

    def __init__(self, ident: Any, h: int) -> None:
        self.ident, self.h = ident, h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other.ident == self.ident


class BadHash:
    def __hash__(self) -> int:
        raise ValueError("hash")


class BadEq(Key):
    __hash__ = Key.__hash__

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        raise RuntimeError("eq")


class Reentrant(Key):
    """Runs ``action`` once from its __eq__ (the stored key's is called)."""

    __hash__ = Key.__hash__

    def __init__(self, ident: Any, h: int) -> None:
        super().__init__(ident, h)
        self.action: Any = None

    def __eq__(self, other: object) -> bool:
        action, self.action = self.action, None
        if action is not None:
            action()
        return super().__eq__(other)


def growth_and_reads() -> None:
    reg = Registry("native", partitions=2, indexes=("role",))
    names = [f"svc-{i}" for i in range(3000)]
    for i, n in enumerate(names):
        reg.register_nowait(f"ns{i % 5}", n, i, {"role": "db" if i % 10 == 0 else "web"})
    for i, n in enumerate(names[::7]):
        assert reg.lookup(f"ns{(i * 7) % 5}", n) == i * 7
        assert reg.get("ns0", "missing", -1) == -1
    assert len(reg.names("ns1")) == 600
    assert len(reg.registrations()) == 3000
    assert len(reg.select("ns0", where={"role": "db"})) == 300
    assert len(reg.backend.select(None, Query({"role": "web"}))) == 2700  # scan path
    assert len(reg.select(None, predicate=lambda r: r.value < 10)) == 10
    reg.update_metadata_nowait("ns0", names[0], {"role": "cache"})
    reg.register_nowait("ns0", names[0], 0, {"role": "db"})  # same value: update
    with contextlib.suppress(AlreadyRegistered):
        reg.register_nowait("ns0", names[0], "other")
    for i, n in enumerate(names):
        if i % 3:
            assert reg.unregister_nowait(f"ns{i % 5}", n)
    assert reg.count() == 1000
    reg.stats()
    reg.close()


def owners() -> None:
    reg = Registry("native", partitions=3)
    for i in range(600):
        reg.register_nowait("ns", i, i, owner=("owner", i % 6) if i % 4 else None)
        if i % 50 == 0:
            reg.join_nowait("ns", "group", i, owner=("owner", 1))
    removed = sum(reg.unregister_owner_nowait(("owner", o)) for o in range(6))
    assert removed == 450 + 12
    assert reg.count() == 150
    del reg  # dealloc with entries left: _free_shards


def collisions() -> None:
    reg = Registry("native", partitions=1)
    keys = [Key(i, i % 3) for i in range(200)]
    for k in keys:
        reg.register_nowait("ns", k, k.ident)
    for k in keys[::2]:
        assert reg.unregister_nowait("ns", Key(k.ident, k.h))  # equal, not identical
    for k in keys[1::2]:
        assert reg.lookup("ns", Key(k.ident, k.h)) == k.ident
    reg.close()


def bad_keys() -> None:
    reg = Registry("native", partitions=1)
    stored = BadEq("stored", 7)
    reg.register_nowait("ns", stored, 1)
    for call in (
        lambda: reg.lookup("ns", BadHash()),
        lambda: reg.register_nowait("ns", BadHash(), 1),
        lambda: reg.register_nowait("ns", "x", 1, owner=BadHash()),
        lambda: reg.lookup("ns", Key("probe", 7)),
        lambda: reg.unregister_nowait("ns", Key("probe", 7)),
        lambda: reg.update_metadata_nowait("ns", Key("probe", 7), {}),
    ):
        try:
            call()
        except InvalidKey:
            pass
        else:
            raise AssertionError("no InvalidKey")
    assert reg.lookup("ns", stored) == 1


def reentrancy() -> None:
    reg = Registry("native", partitions=1)
    stored = Reentrant("k", 5)
    reg.register_nowait("ns", stored, "v")

    def grow() -> None:
        for i in range(200):
            reg.register_nowait("fill", i, i)

    stored.action = grow
    assert reg.lookup("ns", Reentrant("k", 5)) == "v"
    stored.action = lambda: reg.unregister_nowait("ns", stored)
    with contextlib.suppress(NotRegistered):
        reg.lookup("ns", Reentrant("k", 5))
    assert reg.count("ns") == 0


def alloc_failures() -> None:
    from foundation.registry import _native

    for after in range(10):
        reg = Registry("native", partitions=1)
        for i in range(5):
            reg.register_nowait(f"ns{i}", i, i, owner=("o", i))
        _native._inject_alloc_failure(after)
        try:
            reg.register_nowait("new", "x", 1, owner="new-owner")
        except MemoryError:
            pass
        finally:
            _native._inject_alloc_failure(-1)
        for i in range(5):
            _native._inject_alloc_failure(0)  # a shrink fails: skipped
            try:
                assert reg.unregister_nowait(f"ns{i}", i)
            finally:
                _native._inject_alloc_failure(-1)
        reg.close()


def events_and_cycles() -> None:
    reg = Registry("native", partitions=2)
    seen: list[Any] = []
    unsubscribe = reg.backend.subscribe(seen.append)
    reg.register_nowait("ns", "a", 1, {"m": 1}, owner="o")
    reg.update_metadata_nowait("ns", "a", {"m": 2})
    reg.unregister_owner_nowait("o")
    unsubscribe()
    del unsubscribe  # its closure holds the backend
    assert len(seen) == 3

    class Service:
        def __init__(self, registry: Registry) -> None:
            self.registry = registry

    svc = Service(reg)
    reg.register_nowait("ns", "svc", svc, owner=svc)
    gone = weakref.ref(reg.backend)
    del reg, svc
    gc.collect()  # the cycle runs through the C table: tp_traverse, tp_clear
    assert gone() is None


def groups_orders_and_caches() -> None:
    """Groups (hashed and loose members, updates that move owners, leaves),
    kept registrations(ns) answers, the C equality scan, and the shared
    order vector compacted under removals."""
    reg = Registry("native", partitions=3)
    for i in range(300):
        member: Any = [i] if i % 7 == 0 else i  # a list has no hash: a loose member
        reg.join_nowait("ns", f"g{i % 4}", member, {"i": i}, owner=("o", i % 5))
    for i in range(0, 300, 3):
        member = [i] if i % 7 == 0 else i
        reg.join_nowait("ns", f"g{i % 4}", member, {"i": -i}, owner=("o", (i + 1) % 5))
    assert sum(reg.member_count("ns", f"g{g}") for g in range(4)) == 300
    for i in range(0, 300, 2):
        member = [i] if i % 7 == 0 else i
        assert reg.leave_nowait("ns", f"g{i % 4}", member)
    for i in range(2000):
        reg.register_nowait(f"ns{i % 3}", i, f"v{i}", {"tier": f"t{i % 10}"})
    first = reg.registrations("ns0")
    assert reg.registrations("ns0") == first  # the kept answer
    reg.unregister_nowait("ns0", 0)
    assert len(reg.registrations("ns0")) == len(first) - 1
    assert len(reg.select(None, where={"tier": "t3"})) == 200
    for i in range(1, 2000):
        if i % 9:
            reg.unregister_nowait(f"ns{i % 3}", i)
    assert [r.name for r in reg.registrations()] == [i for i in range(1, 2000) if i % 9 == 0]
    removed = sum(reg.unregister_owner_nowait(("o", o)) for o in range(5))
    assert removed == 150
    del reg  # dealloc with names left in the shared order vector


def threads() -> None:
    reg = Registry("native", partitions=4)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(150):
                reg.register_nowait("ns", (t, i), i, owner=t)
                assert reg.lookup("ns", (t, i)) == i
                if i % 2:
                    reg.unregister_nowait("ns", (t, i))
            assert reg.unregister_owner_nowait(t) == 75
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
    assert len(reg) == 0


def main() -> int:
    if not NATIVE:
        print("memcheck_workload: the native backend is not in use", file=sys.stderr)
        return 2
    for step in (
        growth_and_reads,
        owners,
        collisions,
        bad_keys,
        reentrancy,
        alloc_failures,
        events_and_cycles,
        groups_orders_and_caches,
        threads,
    ):
        step()
        print(f"workload: {step.__name__} ok", flush=True)
    gc.collect()
    print("workload ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
