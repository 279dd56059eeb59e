"""Keys whose ``__eq__`` writes to the registry while a write compares them.

A key's ``__eq__`` is user code, run by the very lookups of a write, and it
may call the registry again from the same thread. Whatever it does, every
read must agree afterwards: ``len`` with ``count`` and ``registrations()``,
``names(ns)`` with the registrations of ``ns``, each registration with a
lookup of its key. The first three tests are regression tests of defects
found in the python twin (a phantom name, a KeyError out of its index
upkeep, a ``RuntimeError: dictionary changed size during iteration`` out of
an indexed select); the last runs many random such writes on both backends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry

pytestmark = pytest.mark.local_only

Action = Callable[[], Any]


class Key:
    """A name (or owner) whose hash collides on purpose and whose ``__eq__``
    runs scripted actions: ``actions[n]`` on its n-th call."""

    def __init__(self, label: str, h: int = 1) -> None:
        self.label = label
        self.h = h
        self.calls = 0
        self.actions: dict[int, Action] = {}

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> bool:
        self.calls += 1
        action = self.actions.pop(self.calls, None)
        if action is not None:
            action()
        return isinstance(other, Key) and other.label == self.label

    def __repr__(self) -> str:
        return f"Key({self.label})"


def assert_consistent(reg: Registry, namespaces: list[Any]) -> None:
    """Every read of the registry tells the same story."""
    everything = reg.registrations()
    assert len(reg) == reg.count() == len(everything)
    assert sum(reg.count(ns) for ns in namespaces) == len(everything)
    for ns in namespaces:
        regs = reg.registrations(ns)
        assert reg.count(ns) == len(regs)
        assert reg.names(ns) == [r.name for r in regs]
        for r in regs:
            assert reg.lookup_with_metadata(ns, r.name) == r
    stats = reg.stats()
    assert stats.registrations == len(everything)


def test_eq_unregistering_the_new_key_leaves_no_phantom(
    make_registry: Callable[..., Registry],
) -> None:
    """A key's __eq__ that unregisters the key being registered, while the
    register is updating its indexes (the python twin kept the name indexed:
    len 1, count 2, a phantom name)."""
    for call in range(1, 6):
        reg = make_registry(partitions=1)
        c, d, a = Key("c"), Key("d"), Key("a")
        reg.register_nowait("ns", c, 1, owner=Key("o2", 7))
        reg.register_nowait("ns", d, 1, owner=Key("o1", 7))
        d.calls = 0
        d.actions[call] = lambda reg=reg, a=a: reg.unregister_nowait("ns", a)
        reg.register_nowait("ns", a, 1)
        d.actions.clear()  # (the checks compare keys too)
        assert_consistent(reg, ["ns"])


def test_eq_calling_unregister_owner_during_unregister(
    make_registry: Callable[..., Registry],
) -> None:
    """An owner's __eq__ that calls unregister_owner() while an unregister
    updates the owner index (the python twin raised KeyError)."""
    for call in range(1, 6):
        reg = make_registry(partitions=1)
        o1, o2 = Key("o1", 7), Key("o2", 7)
        reg.register_nowait("ns", Key("d"), 1, owner=o1)
        c = Key("c")
        reg.register_nowait("ns", c, 1, owner=o2)
        o1.calls = 0
        o1.actions[call] = lambda reg=reg, o2=o2: reg.unregister_owner_nowait(o2)
        reg.unregister_nowait("ns", c)
        o1.actions.clear()
        assert_consistent(reg, ["ns"])
        assert (("ns", c) in reg) is False


def test_eq_calling_unregister_owner_during_register(
    make_registry: Callable[..., Registry],
) -> None:
    for call in range(1, 6):
        reg = make_registry(partitions=1)
        o2 = Key("o2", 7)
        a, d = Key("a"), Key("d")
        reg.register_nowait("ns", a, 1, owner=o2)
        reg.register_nowait("ns", d, 1, owner=o2)
        a.calls = 0
        a.actions[call] = lambda reg=reg, o2=o2: reg.unregister_owner_nowait(o2)
        # the same value and owner: a re-registration (a metadata update)
        reg.register_nowait("ns", d, 1, {"new": True}, owner=o2)
        a.actions.clear()
        assert_consistent(reg, ["ns"])


def test_indexed_select_while_eq_registers(make_registry: Callable[..., Registry]) -> None:
    """A name's __eq__ that registers (into the same index) while an indexed
    select builds its candidates (the python twin raised RuntimeError:
    dictionary changed size during iteration)."""
    reg = make_registry(partitions=1, indexes=("role",))
    a, b = Key("a"), Key("b")
    reg.register_nowait("ns", a, 1, {"role": "db"})
    reg.register_nowait("ns", b, 2, {"role": "db"})

    def flood() -> None:
        for i in range(20):
            reg.register_nowait("ns", f"z{i}", 3, {"role": "db"})

    a.actions[a.calls + 1] = flood
    b.actions[b.calls + 1] = flood
    found = reg.select("ns", where={"role": "db"})
    a.actions.clear()
    b.actions.clear()
    # what it saw is a consistent snapshot: live, matching, in order
    assert {r.name for r in found} >= {a, b}
    assert all(dict(r.metadata) == {"role": "db"} for r in found)
    assert_consistent(reg, ["ns"])
    assert reg.count("ns") == 22
    again = reg.select("ns", where={"role": "db"})
    assert [r.name for r in again] == reg.names("ns")


class RandomWrites:
    """Random writes over a few colliding names and owners."""

    KINDS = ("register", "update", "unregister", "owner", "join", "leave")

    def __init__(self, reg: Registry, rnd: random.Random) -> None:
        self.reg = reg
        self.rnd = rnd
        self.names = [Key(c, 1) for c in "abcd"]
        self.owners = [Key("o1", 7), Key("o2", 7)]
        self.spaces = ["ns", "other"]

    def objects(self) -> list[Key]:
        return [*self.names, *self.owners]

    def write(self, kind: str) -> None:
        rnd, reg = self.rnd, self.reg
        ns = rnd.choice(self.spaces)
        name = rnd.choice(self.names)
        owner = rnd.choice([*self.owners, None])
        try:
            if kind == "register":
                reg.register_nowait(ns, name, rnd.choice([1, 2]), owner=owner)
            elif kind == "update":
                reg.update_metadata_nowait(ns, name, {"m": rnd.random()})
            elif kind == "unregister":
                reg.unregister_nowait(ns, name)
            elif kind == "owner":
                reg.unregister_owner_nowait(rnd.choice(self.owners))
            elif kind == "join":
                reg.join_nowait(ns, "g", name, owner=owner)
            else:
                reg.leave_nowait(ns, "g", name)
        except (errors.AlreadyRegistered, errors.NotRegistered):
            pass

    def later(self, kind: str) -> Action:
        return lambda: self.write(kind)


@pytest.mark.parametrize("seed", range(8))
def test_random_reentrant_writes_keep_reads_consistent(
    make_registry: Callable[..., Registry], seed: int
) -> None:
    """Random writes whose keys' and owners' __eq__ write too, at random
    points; after each, every read agrees."""
    rnd = random.Random(seed)
    for _trial in range(60):
        reg = make_registry(partitions=rnd.choice([1, 2, 3]))
        run = RandomWrites(reg, rnd)
        for _ in range(rnd.randrange(2, 6)):
            run.write(rnd.choice(["register", "register", "join"]))
        for obj in run.objects():
            obj.calls = 0
        for _ in range(rnd.randrange(1, 4)):
            target = rnd.choice(run.objects())
            target.actions[rnd.randrange(1, 6)] = run.later(rnd.choice(RandomWrites.KINDS))
        run.write(rnd.choice(RandomWrites.KINDS))
        for obj in run.objects():
            obj.actions.clear()
        assert_consistent(reg, run.spaces)
        members = reg.members("ns", "g") + reg.members("other", "g")
        assert sorted(map(repr, members)) == sorted(map(repr, reg.backend.memberships()))
        reg.close()
