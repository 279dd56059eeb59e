"""OS threads writing and reading one registry at once (both local backends
are thread-safe: see the backend contract in docs/registry.rst). Bounded op
counts keep this a few seconds.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registry

# OS threads calling *_nowait writes: local backends only (etcd writes are async).
pytestmark = pytest.mark.local_only

THREADS = 8


def run_threads(target: Callable[[int], None], n: int = THREADS) -> None:
    """Run ``target(i)`` in ``n`` threads; re-raise the first failure."""
    failures: list[BaseException] = []

    def wrapper(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a worker thread hung"
    if failures:
        raise failures[0]


def check_consistent(registry: Registry, namespaces: list[Any]) -> None:
    regs = registry.registrations()
    assert registry.count() == len(regs) == len(registry)
    assert sum(len(registry.names(ns)) for ns in namespaces) == len(regs)
    assert sum(registry.count(ns) for ns in namespaces) == len(regs)
    keys = [(r.namespace, r.name) for r in regs]
    assert len(set(keys)) == len(keys), "a key is listed twice"
    for reg in regs:
        assert registry.lookup(reg.namespace, reg.name) == reg.value
        assert registry.lookup_with_metadata(reg.namespace, reg.name).owner == reg.owner


@pytest.fixture(autouse=True)
def _switch_often() -> Any:
    """Switch threads every ~10 us instead of 5 ms, so races actually interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def local_registry(make_registry: Callable[..., Registry]) -> Registry:
    registry = make_registry()
    if registry.backend.is_async:
        pytest.skip("_nowait writes are local-only")
    return registry


def test_hammer(local_registry: Registry) -> None:
    registry = local_registry
    namespaces = [("t", i) for i in range(3)]
    ops_per_thread = 15_000

    def worker(tid: int) -> None:
        rnd = random.Random(tid)
        mine: set[tuple[Any, Any]] = set()
        for _ in range(ops_per_thread):
            ns = namespaces[rnd.randrange(3)]
            name = rnd.randrange(64)
            op = rnd.random()
            if op < 0.45:
                try:
                    registry.register_nowait(ns, name, (tid, name), {"t": tid}, owner=tid)
                except errors.AlreadyRegistered as exc:
                    assert exc.holder.owner != tid or exc.holder.value != (tid, name)
                else:
                    mine.add((ns, name))
            elif op < 0.75:
                if (ns, name) in mine:
                    # only this thread unregisters what it registered
                    assert registry.unregister_nowait(ns, name) is True
                    mine.discard((ns, name))
            else:
                value = registry.get(ns, name)
                if (ns, name) in mine:
                    assert value == (tid, name)
                elif value is not None:
                    assert value[1] == name
        for key in mine:
            reg = registry.lookup_with_metadata(*key)
            assert reg.owner == tid
            assert reg.value == (tid, key[1])

    run_threads(worker)
    check_consistent(registry, namespaces)
    # owner cleanup after the storm removes exactly each thread's entries
    total = registry.count()
    removed = sum(registry.unregister_owner_nowait(tid) for tid in range(THREADS))
    assert removed == total
    assert registry.count() == 0
    assert registry.registrations() == []


def test_contested_key_one_winner_per_round(local_registry: Registry) -> None:
    registry = local_registry
    rounds = 300
    barrier = threading.Barrier(THREADS, timeout=30)
    results: list[list[int]] = [[] for _ in range(rounds)]
    lock = threading.Lock()
    problems: list[str] = []

    def worker(tid: int) -> None:
        for r in range(rounds):
            barrier.wait()
            try:
                registry.register_nowait("contested", "key", (r, tid), owner=tid)
            except errors.AlreadyRegistered as exc:
                if exc.holder.value[0] != r:
                    with lock:
                        problems.append(f"round {r}: holder from round {exc.holder.value}")
            else:
                with lock:
                    results[r].append(tid)
            barrier.wait()
            if tid == 0:
                winners = results[r]
                if len(winners) != 1:
                    problems.append(f"round {r}: winners {winners}")
                elif registry.lookup("contested", "key") != (r, winners[0]):
                    problems.append(f"round {r}: lookup disagrees with winner")
                registry.unregister_nowait("contested", "key")
            barrier.wait()

    run_threads(worker)
    assert problems == []
    assert all(len(w) == 1 for w in results)
    assert registry.count() == 0


def test_contested_owner_cleanup(local_registry: Registry) -> None:
    # threads racing register and unregister_owner on shared keys: the owner
    # index never points at an entry that is gone, nor misses one
    registry = local_registry

    def worker(tid: int) -> None:
        rnd = random.Random(100 + tid)
        for i in range(2000):
            name = rnd.randrange(32)
            owner = rnd.randrange(4)
            if rnd.random() < 0.7:
                with contextlib.suppress(errors.AlreadyRegistered):
                    registry.register_nowait("own", name, name, owner=owner)
            else:
                registry.unregister_owner_nowait(owner)
            if i % 50 == 0:
                registry.join_nowait("own", "g", (tid, i), owner=owner)

    run_threads(worker)
    check_consistent(registry, ["own"])
    owners_left = {r.owner for r in registry.registrations()} | {
        m.owner for m in registry.members("own", "g")
    }
    total = registry.count() + registry.member_count("own", "g")
    assert sum(registry.unregister_owner_nowait(o) for o in owners_left) == total
    assert registry.count() == 0
    assert registry.member_count("own", "g") == 0


def test_groups_from_threads(local_registry: Registry) -> None:
    registry = local_registry
    per_thread = 500

    def worker(tid: int) -> None:
        for i in range(per_thread):
            registry.join_nowait("grp", "g", (tid, i), owner=tid)
        for i in range(0, per_thread, 2):
            assert registry.leave_nowait("grp", "g", (tid, i))

    run_threads(worker)
    members = registry.members("grp", "g")
    assert len(members) == registry.member_count("grp", "g") == THREADS * per_thread // 2
    values = [m.value for m in members]
    assert len(set(values)) == len(values)
    for tid in range(THREADS):
        # join order is kept within each thread
        mine = [v[1] for v in values if v[0] == tid]
        assert mine == list(range(1, per_thread, 2))


async def test_to_thread_race_exactly_one_wins(registry: Registry, ns: Any) -> None:
    for round_ in range(20):
        outcomes: list[Any] = []

        def contender(i: int, r: int = round_, outcomes: list[Any] = outcomes) -> None:
            try:
                registry.register_nowait(ns, ("k", r), i, owner=i)
            except errors.AlreadyRegistered:
                outcomes.append("lost")
            else:
                outcomes.append(i)

        async with trio.open_nursery() as nursery:
            for i in range(THREADS):
                nursery.start_soon(trio.to_thread.run_sync, contender, i)
        winners = [o for o in outcomes if o != "lost"]
        assert len(winners) == 1, outcomes
        assert registry.lookup(ns, ("k", round_)) == winners[0]


async def test_async_tasks_and_threads_together(registry: Registry, ns: Any) -> None:
    wins: list[str] = []

    def thread_side(i: int) -> None:
        for k in range(200):
            try:
                registry.register_nowait(ns, k, ("thread", i))
            except errors.AlreadyRegistered:
                pass
            else:
                wins.append(f"thread{i}:{k}")

    async def task_side(i: int) -> None:
        for k in range(200):
            try:
                await registry.register(ns, k, ("task", i))
            except errors.AlreadyRegistered:
                pass
            else:
                wins.append(f"task{i}:{k}")

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(trio.to_thread.run_sync, thread_side, i)
                nursery.start_soon(task_side, i)
    assert registry.count(ns) == 200
    assert len(wins) == 200
    assert sorted(int(w.split(":")[1]) for w in wins) == list(range(200))
