"""Readers and writers on every shard at once, while the tables grow and shrink.

``test_threads.py`` contends on a few dozen keys; these tests spread the
work over many more keys than shards, so writers resize shard tables (and
their namespace and owner indexes) while readers probe them and scans copy
them. Every value and metadata dict is a fresh object that a writer drops as
soon as it unregisters it, so a read that kept a pointer past the shard's
lock (the race a free-threaded build can lose: a lock-free read of a C table
racing a free) returns garbage or crashes instead of passing.

Both backends are thread-safe, so the same assertions hold with the GIL and
without it; on a free-threaded interpreter (``Py_GIL_DISABLED``) the threads
really run in parallel. Op counts are bounded: a few seconds each.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from foundation.registry import Registry

pytestmark = pytest.mark.local_only

WRITERS = 3
READERS = 3
# Keys present for the whole test (readers must always find them): few, so
# each round's churn grows every shard's table and unregistering it shrinks
# them again (a table shrinks below 1/8 full).
STABLE = 200
BATCH = 400  # keys a writer registers, then unregisters, per round
ROUNDS = 12
MAX_ROUNDS = 200
MIN_READER_LOOPS = 40


def run_all(workers: list[Callable[[], None]], timeout: float = 120) -> None:
    """Start every worker at once (a barrier), join them, re-raise the first failure."""
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(workers), timeout=30)

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # re-raised below, in the test's thread
                failures.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not t.is_alive(), "a worker thread hung"
    if failures:
        raise failures[0]


@pytest.fixture(autouse=True)
def _switch_often() -> Any:
    """With the GIL, switch threads every ~10 us so reads land inside writes."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def sharded(make_registry: Callable[..., Registry]) -> Registry:
    # more shards than threads: most pairs of operations touch different shards
    return make_registry(partitions=8, indexes=("kind",))


class Tracked:
    """A value that knows when its last reference went: ``__del__`` runs just
    before the memory is freed, so a read that hands out a value the registry
    already dropped (a use after free) most likely sees ``alive`` False."""

    __slots__ = ("alive", "key")

    def __init__(self, *key: Any) -> None:
        self.key = key
        self.alive = True

    def __del__(self) -> None:
        self.alive = False

    def check(self, *key: Any) -> None:
        assert self.alive, f"got the value of {self.key} after it was freed"
        assert self.key == key, f"looked up {key}, got the value of {self.key}"


def stable_value(i: int) -> list[Any]:
    return ["stable", i]


def test_stable_keys_stay_visible_while_every_shard_resizes(sharded: Registry) -> None:
    registry = sharded
    stable = [("stable", f"s{i}") for i in range(STABLE)]
    for i, (ns, name) in enumerate(stable):
        registry.register_nowait(ns, name, stable_value(i), {"kind": "stable", "i": i}, owner="s")
    writers_left = [WRITERS]
    # each writer's round and its names: readers look up the very str
    # objects being registered and unregistered (identity hits) and equal
    # copies of them (hits through __eq__)
    live: list[tuple[int, str, list[str]]] = [(0, f"churn{t}", []) for t in range(WRITERS)]
    reader_loops = [0] * READERS
    left_lock = threading.Lock()

    def writer(tid: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(tid)
            ns = f"churn{tid}"
            r = 0
            # at least ROUNDS rounds, and on until every reader has overlapped
            # a good share of the writes (a fast backend finishes ROUNDS early)
            while r < ROUNDS or (min(reader_loops) < MIN_READER_LOOPS and r < MAX_ROUNDS):
                names = [f"w{tid}-{r}-{i}" for i in range(BATCH)]
                live[tid] = (r, ns, names)
                for i, name in enumerate(names):
                    # fresh objects each time: only the registry keeps them alive
                    registry.register_nowait(
                        ns, name, Tracked(tid, r, i), {"kind": "churn", "i": i}, owner=("w", tid)
                    )
                for i in rnd.sample(range(BATCH), BATCH // 4):
                    registry.update_metadata_nowait(ns, names[i], {"kind": "moved", "i": i})
                if r % 3 == 2:
                    assert registry.unregister_owner_nowait(("w", tid)) == BATCH
                else:
                    for name in rnd.sample(names, len(names)):
                        assert registry.unregister_nowait(ns, name) is True
                assert registry.count(ns) == 0
                r += 1
            with left_lock:
                writers_left[0] -= 1

        return run

    def reader(tid: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(100 + tid)
            loops = 0
            while writers_left[0] > 0:
                loops += 1
                reader_loops[tid] = loops
                for _ in range(200):
                    i = rnd.randrange(STABLE)
                    ns, name = stable[i]
                    assert registry.lookup(ns, name) == stable_value(i)
                    reg = registry.lookup_with_metadata(ns, name)
                    assert reg.value == stable_value(i)
                    assert dict(reg.metadata) == {"kind": "stable", "i": i}
                    # keys of a writer's current round, registered or being
                    # unregistered right now: absent, or intact (the value of
                    # that key and of no other, still alive)
                    w, k = rnd.randrange(WRITERS), rnd.randrange(BATCH)
                    r, churn_ns, names = live[w]
                    if names:
                        for got in (
                            registry.get(churn_ns, names[k]),
                            registry.get(churn_ns, f"w{w}-{r}-{k}"),
                        ):
                            if got is not None:
                                got.check(w, r, k)
                # scans copy whole shards while writers resize them
                assert registry.count("stable") == STABLE
                if loops % 5 == 0:
                    regs = registry.registrations(f"churn{rnd.randrange(WRITERS)}")
                    for reg in regs:
                        w, r, k = reg.value.key
                        reg.value.check(w, r, k)
                        assert reg.name == f"w{w}-{r}-{k}"
                        assert reg.metadata["i"] == k
                    moved = registry.select(None, {"kind": "moved"})
                    assert all(reg.metadata["i"] == reg.value.key[2] for reg in moved)
                if loops % 20 == 0:
                    assert len(registry.names("stable")) == STABLE

        return run

    run_all([writer(t) for t in range(WRITERS)] + [reader(t) for t in range(READERS)])
    assert registry.count() == STABLE
    assert len(registry.select("stable", {"kind": "stable"})) == STABLE
    assert registry.select(None, {"kind": "churn"}) == []
    assert registry.unregister_owner_nowait("s") == STABLE
    assert registry.count() == 0


def test_reads_racing_unregister_of_the_same_keys(sharded: Registry) -> None:
    # The narrowest window: readers hit keys at the moment writers unregister
    # them (dropping the value's last reference) or register them again.
    registry = sharded
    keys = [[f"hot{w}-{i}" for i in range(64)] for w in range(2)]
    done = [False, False]  # one flag per writer: no shared counter to race on
    hits = [0] * 2

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for r in range(1500):
                    for i, name in enumerate(keys[w]):
                        registry.register_nowait("hot", name, Tracked(w, i, r))
                    for name in keys[w]:
                        assert registry.unregister_nowait("hot", name) is True
            finally:
                done[w] = True

        return run

    def reader(t: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(t)
            while not all(done):
                w = rnd.randrange(2)
                for i, name in enumerate(keys[w]):
                    got = registry.get("hot", name)
                    if got is not None:
                        assert got.alive, f"got the value of {got.key} after it was freed"
                        assert got.key[:2] == (w, i), got.key
                        hits[t] += 1

        return run

    run_all([writer(0), writer(1), reader(0), reader(1)])
    assert registry.count("hot") == 0
    assert sum(hits) > 0, "the readers never overlapped the writers"


def test_metadata_is_never_torn(sharded: Registry) -> None:
    # Writers replace metadata (a fresh dict each time) of keys that readers
    # read: every metadata a reader sees is one that a writer wrote whole.
    registry = sharded
    keys = [("md", f"k{i}") for i in range(64)]
    for ns, name in keys:
        registry.register_nowait(ns, name, name, {"a": 0, "b": 0, "kind": "x"})
    done = threading.Event()

    def writer(tid: int) -> Callable[[], None]:
        def run() -> None:
            try:
                for n in range(1, 3_000):
                    ns, name = keys[(n * 7 + tid) % len(keys)]
                    v = n * WRITERS + tid
                    registry.update_metadata_nowait(ns, name, {"a": v, "b": v, "kind": "x"})
            finally:
                done.set()

        return run

    def reader(tid: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(tid)
            while not done.is_set():
                ns, name = keys[rnd.randrange(len(keys))]
                md = registry.metadata(ns, name)
                assert md["a"] == md["b"], dict(md)
                reg = registry.lookup_with_metadata(ns, name)
                assert reg.value == name
                assert reg.metadata["a"] == reg.metadata["b"]
                for reg in registry.select("md", {"kind": "x"}):
                    assert reg.metadata["a"] == reg.metadata["b"]

        return run

    run_all([writer(t) for t in range(WRITERS)] + [reader(t) for t in range(READERS)])
    assert registry.count("md") == len(keys)


class CollidingKey:
    """A name whose hash collides with every other's and whose ``__eq__`` is
    Python code that lets other threads run (the probe must restart if the
    shard changed meanwhile)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 12345

    def __eq__(self, other: object) -> bool:
        if self.n % 8 == 0:
            time.sleep(0)  # a real thread switch, GIL or not
        return isinstance(other, CollidingKey) and other.n == self.n

    def __repr__(self) -> str:
        return f"CollidingKey({self.n})"


def test_colliding_keys_with_python_eq_from_threads(sharded: Registry) -> None:
    registry = sharded
    per_thread = 24
    threads = 4

    def worker(tid: int) -> Callable[[], None]:
        def run() -> None:
            mine = [CollidingKey(tid * 1000 + i) for i in range(per_thread)]
            for r in range(15):
                for k in mine:
                    registry.register_nowait("coll", k, [tid, k.n, r])
                for k in mine:
                    assert registry.lookup("coll", CollidingKey(k.n)) == [tid, k.n, r]
                # someone else's key: absent or theirs, never ours
                other = CollidingKey(((tid + 1) % threads) * 1000 + r % per_thread)
                got = registry.get("coll", other)
                assert got is None or got[:2] == [(tid + 1) % threads, other.n]
                for k in mine[::2]:
                    assert registry.unregister_nowait("coll", CollidingKey(k.n)) is True
                for k in mine[1::2]:
                    assert registry.unregister_nowait("coll", k) is True
                assert registry.get("coll", mine[0]) is None

        return run

    run_all([worker(t) for t in range(threads)])
    assert registry.count("coll") == 0
