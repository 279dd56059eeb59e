"""Model-based tests: each local backend against a plain-dict model, and
native against python on the same random operation sequences.

Synchronous (``*_nowait`` writes), so no Trio run is involved. A small key
alphabet and few owners make conflicts, updates and owner cleanups frequent.
Orders are part of what is checked: reads list entries in registration
(join) order, and the two backends emit the same events in the same order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from foundation import errors
from foundation.registry import MISSING, NATIVE, Registry
from foundation.registry._query import Query

NAMESPACES = st.sampled_from(["ns1", ("ns", 2), 3])
NAMES = st.sampled_from(["a", "b", 1, ("t", 1)])
GROUPS = st.sampled_from(["g", "h"])
VALUES = st.sampled_from([0, 1, "x", ("v", 1)])
OWNERS = st.sampled_from([None, None, "o1", "o2", ("o", 3)])
METADATA = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["role", "load"]), st.integers(0, 3), max_size=2),
)

SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

needs_native = pytest.mark.skipif(not NATIVE, reason="native backend not built or disabled")


class Model:
    """What a registry must answer: unique names and ordered groups."""

    def __init__(self) -> None:
        # (ns, name) -> (value, metadata, owner), in registration order
        self.names: dict[tuple[Any, Any], tuple[Any, dict[Any, Any], Any]] = {}
        # (ns, group) -> [[value, metadata, owner, join seq], ...] in join order
        self.groups: dict[tuple[Any, Any], list[list[Any]]] = {}
        self.seq = 0

    def register(self, ns: Any, name: Any, value: Any, md: Any, owner: Any) -> str:
        key = (ns, name)
        if key in self.names:
            old_value, _, old_owner = self.names[key]
            if old_value == value and old_owner == owner and (old_owner is None) == (owner is None):
                self.names[key] = (old_value, dict(md or {}), old_owner)
                return "updated"
            return "conflict"
        self.names[key] = (value, dict(md or {}), owner)
        return "registered"

    def unregister(self, ns: Any, name: Any) -> bool:
        return self.names.pop((ns, name), None) is not None

    def update_metadata(self, ns: Any, name: Any, md: Any) -> bool:
        key = (ns, name)
        if key not in self.names:
            return False
        value, _, owner = self.names[key]
        self.names[key] = (value, dict(md or {}), owner)
        return True

    def unregister_owner(self, owner: Any) -> int:
        gone = [k for k, (_, _, o) in self.names.items() if o == owner and o is not None]
        for k in gone:
            del self.names[k]
        removed = len(gone)
        for members in self.groups.values():
            keep = [m for m in members if not (m[2] == owner and m[2] is not None)]
            removed += len(members) - len(keep)
            members[:] = keep
        return removed

    def join(self, ns: Any, group: Any, value: Any, md: Any, owner: Any) -> None:
        members = self.groups.setdefault((ns, group), [])
        for m in members:
            if m[0] == value:
                m[1] = dict(md or {})
                m[2] = owner
                return
        self.seq += 1
        members.append([value, dict(md or {}), owner, self.seq])

    def memberships(self) -> list[tuple[Any, Any, Any]]:
        """(ns, group, value) of every membership, in join order."""
        found = [(m[3], ns, g, m[0]) for (ns, g), ms in self.groups.items() for m in ms]
        return [(ns, g, v) for _, ns, g, v in sorted(found, key=lambda f: f[0])]

    def leave(self, ns: Any, group: Any, value: Any) -> bool:
        members = self.groups.get((ns, group), [])
        for i, m in enumerate(members):
            if m[0] == value:
                del members[i]
                return True
        return False


def check_against_model(registry: Registry, model: Model) -> None:
    for (ns, name), (value, md, owner) in model.names.items():
        assert registry.lookup(ns, name) == value
        reg = registry.lookup_with_metadata(ns, name)
        assert (reg.namespace, reg.name, reg.value, dict(reg.metadata), reg.owner) == (
            ns,
            name,
            value,
            md,
            owner,
        )
        assert (ns, name) in registry
    assert registry.count() == len(model.names) == len(registry)
    regs = registry.registrations()
    # registration order: across namespaces and partitions
    assert [(r.namespace, r.name) for r in regs] == list(model.names)
    for ns in ["ns1", ("ns", 2), 3]:
        expected = [n for (s, n) in model.names if s == ns]
        assert registry.names(ns) == expected
        assert [r.name for r in registry.registrations(ns)] == expected
        assert registry.count(ns) == len(expected)
        for name in ["a", "b", 1, ("t", 1)]:
            if (ns, name) not in model.names:
                assert registry.get(ns, name, "absent") == "absent"
                assert (ns, name) not in registry
        for group in ["g", "h"]:
            want = [(m[0], m[1], m[2]) for m in model.groups.get((ns, group), [])]
            got = [(m.value, dict(m.metadata), m.owner) for m in registry.members(ns, group)]
            assert got == want
            assert registry.member_count(ns, group) == len(want)
    memberships = [(m.namespace, m.name, m.value) for m in registry.backend.memberships()]
    assert memberships == model.memberships()
    for owner in ["o1", "o2", ("o", 3)]:
        want = [repr((ns, n, v)) for (ns, n), (v, _, o) in model.names.items() if o == owner]
        want += [
            repr((ns, g, m[0])) for (ns, g), ms in model.groups.items() for m in ms if m[2] == owner
        ]
        got = [repr((r.namespace, r.name, r.value)) for r in registry.owned(owner)]
        assert sorted(got) == sorted(want)


class RegistryMachine(RuleBasedStateMachine):
    backend = "python"

    def __init__(self) -> None:
        super().__init__()
        self.registry = Registry(backend=self.backend, partitions=4)
        self.model = Model()

    def teardown(self) -> None:
        self.registry.close()

    @rule(ns=NAMESPACES, name=NAMES, value=VALUES, md=METADATA, owner=OWNERS)
    def register(self, ns: Any, name: Any, value: Any, md: Any, owner: Any) -> None:
        expected = self.model.register(ns, name, value, md, owner)
        if expected == "conflict":
            with pytest.raises(errors.AlreadyRegistered) as info:
                self.registry.register_nowait(ns, name, value, md, owner=owner)
            assert info.value.key == (ns, name)
        else:
            reg = self.registry.register_nowait(ns, name, value, md, owner=owner)
            assert dict(reg.metadata) == dict(md or {})

    @precondition(lambda self: self.model.names)
    @rule(data=st.data(), value=VALUES, md=METADATA)
    def reregister_existing(self, data: st.DataObject, value: Any, md: Any) -> None:
        # re-register an existing key with its own value and owner: an update
        key = data.draw(st.sampled_from(sorted(self.model.names, key=repr)))
        old_value, _, owner = self.model.names[key]
        assert self.model.register(*key, old_value, md, owner) == "updated"
        reg = self.registry.register_nowait(*key, old_value, md, owner=owner)
        assert dict(reg.metadata) == dict(md or {})

    @rule(ns=NAMESPACES, name=NAMES)
    def unregister(self, ns: Any, name: Any) -> None:
        assert self.registry.unregister_nowait(ns, name) is self.model.unregister(ns, name)

    @rule(ns=NAMESPACES, name=NAMES, md=METADATA)
    def update_metadata(self, ns: Any, name: Any, md: Any) -> None:
        if self.model.update_metadata(ns, name, md):
            reg = self.registry.update_metadata_nowait(ns, name, md)
            assert dict(reg.metadata) == dict(md or {})
        else:
            with pytest.raises(errors.NotRegistered):
                self.registry.update_metadata_nowait(ns, name, md)

    @rule(ns=NAMESPACES, name=NAMES, value=VALUES, expect=st.one_of(st.just(MISSING), VALUES))
    def update_value(self, ns: Any, name: Any, value: Any, expect: Any) -> None:
        current = self.model.names.get((ns, name))
        if current is None:
            with pytest.raises(errors.NotRegistered):
                self.registry.update_value_nowait(ns, name, value, expect=expect)
        elif expect is not MISSING and current[0] != expect:
            with pytest.raises(errors.ValueMismatch):
                self.registry.update_value_nowait(ns, name, value, expect=expect)
        else:
            reg = self.registry.update_value_nowait(ns, name, value, expect=expect)
            assert (reg.value, dict(reg.metadata), reg.owner) == (value, current[1], current[2])
            self.model.names[(ns, name)] = (value, current[1], current[2])

    @rule(owner=st.sampled_from(["o1", "o2", ("o", 3), "nobody"]))
    def unregister_owner(self, owner: Any) -> None:
        assert self.registry.unregister_owner_nowait(owner) == self.model.unregister_owner(owner)

    @rule(ns=NAMESPACES, group=GROUPS, value=VALUES, md=METADATA, owner=OWNERS)
    def join(self, ns: Any, group: Any, value: Any, md: Any, owner: Any) -> None:
        self.model.join(ns, group, value, md, owner)
        reg = self.registry.join_nowait(ns, group, value, md, owner=owner)
        assert (reg.value, dict(reg.metadata), reg.owner) == (value, dict(md or {}), owner)

    @rule(ns=NAMESPACES, group=GROUPS, value=VALUES)
    def leave(self, ns: Any, group: Any, value: Any) -> None:
        assert self.registry.leave_nowait(ns, group, value) is self.model.leave(ns, group, value)

    @invariant()
    def agrees_with_model(self) -> None:
        check_against_model(self.registry, self.model)


class PythonMachine(RegistryMachine):
    backend = "python"


class NativeMachine(RegistryMachine):
    backend = "native"


TestPythonStateful = PythonMachine.TestCase
TestPythonStateful.settings = SETTINGS

TestNativeStateful = pytest.mark.native(needs_native(NativeMachine.TestCase))
TestNativeStateful.settings = SETTINGS


# -- differential: native vs python ------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("register"), NAMESPACES, NAMES, VALUES, METADATA, OWNERS),
    st.tuples(st.just("unregister"), NAMESPACES, NAMES),
    st.tuples(st.just("update_metadata"), NAMESPACES, NAMES, METADATA),
    st.tuples(st.just("unregister_owner"), st.sampled_from(["o1", "o2", ("o", 3), "x"])),
    st.tuples(st.just("join"), NAMESPACES, GROUPS, VALUES, METADATA, OWNERS),
    st.tuples(st.just("leave"), NAMESPACES, GROUPS, VALUES),
    st.tuples(st.just("update_value"), NAMESPACES, NAMES, VALUES),
    st.tuples(st.just("update_value_cas"), NAMESPACES, NAMES, VALUES, VALUES),
    st.tuples(
        st.just("unregister_select"),
        st.sampled_from(["ns1", ("ns", 2), 3, None]),
        st.sampled_from([0, 1, 2]),
    ),
)


def apply(registry: Registry, op: tuple[Any, ...]) -> Any:
    kind, *args = op
    try:
        if kind == "register":
            ns, name, value, md, owner = args
            r = registry.register_nowait(ns, name, value, md, owner=owner)
            return ("ok", r.value, dict(r.metadata), r.owner)
        if kind == "join":
            ns, group, value, md, owner = args
            r = registry.join_nowait(ns, group, value, md, owner=owner)
            return ("ok", r.value, dict(r.metadata), r.owner)
        if kind == "update_metadata":
            ns, name, md = args
            r = registry.update_metadata_nowait(ns, name, md)
            return ("ok", r.value, dict(r.metadata), r.owner)
        if kind == "update_value":
            ns, name, value = args
            r = registry.update_value_nowait(ns, name, value)
            return ("ok", r.value, dict(r.metadata), r.owner)
        if kind == "update_value_cas":
            ns, name, value, expect = args
            r = registry.update_value_nowait(ns, name, value, expect=expect)
            return ("ok", r.value, dict(r.metadata), r.owner)
        if kind == "unregister_select":
            ns, role = args
            return registry.backend.unregister_select(ns, Query({"role": role}, None))
        if kind == "unregister":
            return registry.unregister_nowait(*args)
        if kind == "unregister_owner":
            return registry.unregister_owner_nowait(*args)
        return registry.leave_nowait(*args)
    except errors.RegistryError as exc:
        return (type(exc).__name__, getattr(exc, "key", None))


def _reg_repr(r: Any) -> tuple[str, ...]:
    return (repr((r.namespace, r.name)), repr(r.value), repr(dict(r.metadata)), repr(r.owner))


def all_reads(registry: Registry) -> Any:
    """Every read, orders included (they are part of the contract)."""
    out: dict[str, Any] = {
        "count": registry.count(),
        "len": len(registry),
        "registrations": [_reg_repr(r) for r in registry.registrations()],
        "memberships": [_reg_repr(r) for r in registry.backend.memberships()],
        "stats": (registry.stats().registrations, registry.stats().memberships),
        "select all eq": [_reg_repr(r) for r in registry.select(None, where={"role": 1})],
        "select all lt": [_reg_repr(r) for r in registry.select(None, where={"load": ("lt", 2)})],
        "count_select all lt": registry.count_select(None, where={"load": ("lt", 2)}),
        "count_select all eq": registry.count_select(None, where={"role": 1}),
    }
    for owner in ["o1", "o2", ("o", 3), "x"]:
        out[f"owned {owner!r}"] = [_reg_repr(r) for r in registry.owned(owner)]
    for ns in ["ns1", ("ns", 2), 3]:
        out[f"names {ns!r}"] = list(map(repr, registry.names(ns)))
        out[f"count {ns!r}"] = registry.count(ns)
        out[f"select {ns!r}"] = [
            repr(r.name) for r in registry.select(ns, where={"role": ("lt", 2)})
        ]
        out[f"select eq {ns!r}"] = [repr(r.name) for r in registry.select(ns, where={"role": 0})]
        out[f"count_select eq {ns!r}"] = registry.count_select(ns, where={"role": 0})
        for name in ["a", "b", 1, ("t", 1)]:
            out[f"get {ns!r} {name!r}"] = repr(registry.get(ns, name, "<absent>"))
        for group in ["g", "h"]:
            out[f"members {ns!r} {group}"] = [
                (repr(m.value), repr(dict(m.metadata)), repr(m.owner))
                for m in registry.members(ns, group)
            ]
    return out


@pytest.mark.native
@needs_native
@settings(max_examples=150, deadline=None, database=None)
@given(ops=st.lists(OPS, max_size=60))
def test_native_and_python_agree(ops: list[tuple[Any, ...]]) -> None:
    native = Registry(backend="native", partitions=4, indexes=("role",))
    python = Registry(backend="python", partitions=3)
    events: dict[str, list[Any]] = {"native": [], "python": []}
    native.backend.subscribe(
        lambda e: events["native"].append((e.kind, e.reason, *_reg_repr(e[1])))
    )
    python.backend.subscribe(
        lambda e: events["python"].append((e.kind, e.reason, *_reg_repr(e[1])))
    )
    try:
        for op in ops:
            assert apply(native, op) == apply(python, op), op
            # the same events, in the same order (unregister_owner's included)
            assert events["native"] == events["python"], op
            events["native"].clear()
            events["python"].clear()
        assert all_reads(native) == all_reads(python)
    finally:
        native.close()
        python.close()
