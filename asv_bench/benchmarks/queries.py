"""Registry queries and events: ``select``, ``watch`` fan-out, groups.

* ``select`` over tables whose entries carry ``{"role": r, "zone": "zone-a"}``
  with 100 roles, so an equality on ``role`` matches 1% of the entries (as
  ``tests/benchmarks`` and ``python -m foundation bench`` do). Unindexed, a
  select is a scan, O(n) (the target: native no slower than the dict
  comprehension a user would write); with ``Registry(indexes=("role",))`` it
  must cost O(matches), which the 1e6 size and the miss show.
* ``registrations(ns)`` of a namespace of n entries (the target: native no
  slower than the python twin), with atomic values and with GC-tracked ones.
* ``watch`` fan-out: one register event delivered to N watchers of one
  namespace, each an ``async for`` task, inside one ``trio.run``.
* groups: ``join``/``leave`` into, and ``members`` of, a group of n members.

Read-only tables are built once per benchmark process and kept in a module
cache: asv re-runs ``setup`` before every sample, and filling 1e6 entries
takes seconds. Benchmarks that write put back what they change.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import trio

from foundation._cli._bench import make_pairs
from foundation.registry import NATIVE, Registry

BATCH = 1_000
ROLES = tuple(f"role{i:02d}" for i in range(100))
#: The role selected: 1% of the entries carry it.
ROLE = ROLES[7]
#: Events per watch fan-out measurement.
EVENTS = 100


class _Value:
    __slots__ = ()


VALUE = _Value()


class _Tracked:
    """A GC-tracked value (an instance with a slot: a GC type)."""

    __slots__ = ("x",)


TRACKED = _Tracked()

_TABLES: dict[tuple[Any, ...], Any] = {}


def _skip_missing(impl: str) -> None:
    if impl == "native" and not NATIVE:
        raise NotImplementedError("native backend not built")  # asv: skipped


def _cached(key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """``build()`` once per process (GC off while filling: no full collections)."""
    if key not in _TABLES:
        enabled = gc.isenabled()
        gc.disable()
        try:
            _TABLES[key] = build()
        finally:
            if enabled:
                gc.enable()
    return _TABLES[key]


def _select_table(impl: str, n: int, indexed: bool) -> Any:
    """n entries, entry i with role ``ROLES[i % 100]``; a Registry or, for ``dict``, a dict."""
    metadata = [{"role": role, "zone": "zone-a"} for role in ROLES]
    pairs = make_pairs(n, "sel")

    def build() -> Any:
        if impl == "dict":
            # the baseline: dict[(ns, name)] = (value, its own metadata copy)
            return {(a, b): (VALUE, dict(metadata[i % 100])) for i, (a, b) in enumerate(pairs)}
        registry = Registry(impl, indexes=("role",) if indexed else ())
        f = registry.register_nowait
        for i, (a, b) in enumerate(pairs):
            f(a, b, VALUE, metadata[i % 100])
        return registry

    return _cached(("select", impl, n, indexed), build)


def _expected(n: int) -> int:
    return len(range(ROLES.index(ROLE), n, len(ROLES)))


class RegistrationsNs:
    """``registrations(ns)`` of one namespace of n entries, with the
    collector on (what a service pays) and off. ``atomic``: str values, whose
    Registrations the native table keeps; ``tracked``: one GC-tracked object
    shared by every entry, whose Registrations are built for each call."""

    params = (["native", "python"], ["atomic", "tracked"], [1_000, 100_000])
    param_names = ("impl", "values", "n")
    timeout = 120.0

    def setup(self, impl: str, values: str, n: int) -> None:
        _skip_missing(impl)

        def build() -> Any:
            registry = Registry(impl)
            f = registry.register_nowait
            value: Any = "value" if values == "atomic" else TRACKED
            for _, b in make_pairs(n, "regs"):
                f("one", b, value)
            return registry

        self.table = _cached(("regs", impl, values, n), build)
        self.was = gc.isenabled()
        self.table.registrations("one")  # as a service reading them again would

    def teardown(self, impl: str, values: str, n: int) -> None:
        if self.was:
            gc.enable()
        else:
            gc.disable()

    def time_registrations_gc_on(self, impl: str, values: str, n: int) -> None:
        gc.enable()
        self.table.registrations("one")

    def time_registrations_gc_off(self, impl: str, values: str, n: int) -> None:
        gc.disable()
        self.table.registrations("one")


class SelectScan:
    """``select(None, where={"role": r})`` without an index: a scan, O(n).

    ``dict`` is the plain-Python floor: a list comprehension over
    ``dict[(ns, name)] = (value, metadata)``.
    """

    params = (["native", "python", "dict"], [1_000, 100_000])
    param_names = ("impl", "n")
    timeout = 120.0

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)
        self.table = _select_table(impl, n, indexed=False)
        self.impl = impl
        found = self._select(ROLE)
        if len(found) != _expected(n):
            raise AssertionError(f"select found {len(found)}, expected {_expected(n)}")

    def _select(self, role: str) -> list[Any]:
        if self.impl == "dict":
            return [t for t in self.table.values() if t[1].get("role") == role]
        found: list[Any] = self.table.select(None, {"role": role})
        return found

    def time_select_eq(self, impl: str, n: int) -> None:
        """One select matching 1% of n."""
        self._select(ROLE)

    def time_select_miss(self, impl: str, n: int) -> None:
        """One select matching nothing: still a full scan without an index."""
        self._select("absent")


class SelectIndexed:
    """``select`` on an indexed field (``Registry(indexes=("role",))``): O(matches).

    ``time_select_eq`` matches 1% of n (10 / 1,000 / 10,000 entries), so it
    grows with n only through the matches it returns; ``time_select_miss``
    (``BATCH`` selects of an absent role, per op = time / ``BATCH``) must be
    flat in n.
    """

    params = (["native", "python"], [1_000, 100_000, 1_000_000])
    param_names = ("impl", "n")
    timeout = 180.0

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)
        self.registry = _select_table(impl, n, indexed=True)
        found = self.registry.select(None, {"role": ROLE})
        if len(found) != _expected(n):
            raise AssertionError(f"select found {len(found)}, expected {_expected(n)}")

    def time_select_eq(self, impl: str, n: int) -> None:
        """One select matching 1% of n."""
        self.registry.select(None, {"role": ROLE})

    def time_select_miss(self, impl: str, n: int) -> None:
        """``BATCH`` selects of a role nobody has."""
        select = self.registry.select
        where = {"role": "absent"}
        for _ in range(BATCH):
            select(None, where)


class _Fanin:
    """Counts the watchers that got the current event; wakes the writer at the last."""

    __slots__ = ("count", "done", "watchers")

    def __init__(self, watchers: int) -> None:
        self.watchers = watchers
        self.count = 0
        self.done = trio.Event()

    def reset(self) -> None:
        self.count = 0
        self.done = trio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.watchers:
            self.done.set()


class WatchFanout:
    """One ``register_nowait`` delivered to N ``watch(ns)`` consumers.

    Each call is one ``trio.run``: open N watchers (each an ``async for``
    task), then ``EVENTS`` times register a name and wait until every
    watcher has received the event. ``time_deliver`` is the whole run
    (watchers' start amortised: per event ~ time / ``EVENTS``);
    ``track_event_latency_us`` is the median of the per-event times alone,
    from the write until the last watcher has the event.
    """

    params = (["native", "python"], [1, 10, 100])
    param_names = ("impl", "watchers")

    def setup(self, impl: str, watchers: int) -> None:
        _skip_missing(impl)
        self.registry = Registry(impl)
        self.names = [f"name{i}" for i in range(EVENTS)]

    def teardown(self, impl: str, watchers: int) -> None:
        self.registry.close()

    def _deliver(self, watchers: int) -> list[float]:
        registry = self.registry
        fanin = _Fanin(watchers)
        latencies: list[float] = []

        async def watcher(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with registry.watch("fanout") as events:
                task_status.started()
                async for _event in events:
                    fanin.hit()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(watchers):
                    await nursery.start(watcher)
                register = registry.register_nowait
                clock = time.perf_counter
                for name in self.names:
                    fanin.reset()
                    start = clock()
                    register("fanout", name, VALUE, owner="fanout")
                    await fanin.done.wait()
                    latencies.append(clock() - start)
                nursery.cancel_scope.cancel()

        trio.run(main)
        # watchers are gone: this emits nothing, and the next call starts clean
        registry.unregister_owner_nowait("fanout")
        return latencies

    def time_deliver(self, impl: str, watchers: int) -> None:
        self._deliver(watchers)

    def track_event_latency_us(self, impl: str, watchers: int) -> float:
        return statistics.median(self._deliver(watchers)) * 1e6

    track_event_latency_us.unit = "us"  # type: ignore[attr-defined]


class Groups:
    """A group of n members: ``join``+``leave`` of fresh values, ``members``, ``member_count``.

    ``join``/``leave`` and ``member_count`` must not grow with the group
    (per op = time / ``BATCH``); ``members`` builds n Registrations, O(n).
    """

    params = (["native", "python"], [1_000, 100_000])
    param_names = ("impl", "n")

    def setup(self, impl: str, n: int) -> None:
        _skip_missing(impl)

        def build() -> Registry:
            registry = Registry(impl)
            join = registry.join_nowait
            for i in range(n):
                join("groups", "workers", f"member{i}")
            return registry

        self.registry = _cached(("group", impl, n), build)
        self.fresh = [f"fresh{i}" for i in range(BATCH)]
        if self.registry.member_count("groups", "workers") != n:
            raise AssertionError("the group lost members")

    def time_join_leave(self, impl: str, n: int) -> None:
        join, leave = self.registry.join_nowait, self.registry.leave_nowait
        for value in self.fresh:
            join("groups", "workers", value)
            leave("groups", "workers", value)

    def time_members(self, impl: str, n: int) -> None:
        self.registry.members("groups", "workers")

    def time_member_count(self, impl: str, n: int) -> None:
        count = self.registry.member_count
        for _ in range(BATCH):
            count("groups", "workers")
