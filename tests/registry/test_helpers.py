"""Unit tests of the helpers both local backends share (no backend involved).

``_keys`` (metadata copies, owner and value checks), ``_events`` (listener
fan-out), ``_groups`` (duplicate-key groups), ``_query`` (compiled select
criteria) and ``_mdindex`` (metadata equality indexes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from foundation.errors import (
    ConfigError,
    InvalidKey,
    InvalidMetadata,
    InvalidQuery,
    RegistryClosed,
)
from foundation.registry._events import Listeners
from foundation.registry._groups import GroupTable
from foundation.registry._keys import (
    check_owner,
    copy_metadata,
    hash_key,
    same_owner,
    same_value,
)
from foundation.registry._mdindex import MetadataIndex
from foundation.registry._query import Query
from foundation.registry._types import EMPTY_METADATA, EventKind, Registration, RegistryEvent


def reg(metadata: Mapping[str, Any] | None = None, name: Any = "n") -> Registration:
    return Registration("ns", name, "value", copy_metadata(metadata), None)


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable) and other.tag == self.tag


class BadHash:
    def __hash__(self) -> int:
        raise RuntimeError("no hash for you")


class BadEq:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq for you")

    __hash__ = object.__hash__


class BadBool:
    def __bool__(self) -> bool:
        raise ValueError("ambiguous truth value")


class EqBadBool:
    def __eq__(self, other: object) -> Any:
        return BadBool()

    __hash__ = object.__hash__


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("broken getitem")

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


# ---------------------------------------------------------------- _keys


class TestCopyMetadata:
    def test_none_and_empty_share_empty_metadata(self) -> None:
        assert copy_metadata(None) is EMPTY_METADATA
        assert copy_metadata({}) is EMPTY_METADATA
        assert copy_metadata(MappingProxyType({})) is EMPTY_METADATA

    def test_copy_is_read_only_and_detached(self) -> None:
        source = {"a": 1, "nested": {"b": 2}}
        copied = copy_metadata(source)
        assert isinstance(copied, MappingProxyType)
        assert copied == source
        source["a"] = 99
        assert copied["a"] == 1
        with pytest.raises(TypeError):
            copied["a"] = 2  # type: ignore[index]
        # shallow: nested objects are shared, as documented
        assert copied["nested"] is source["nested"]

    @pytest.mark.parametrize("bad", [[("a", 1)], "abc", 42, {1, 2}])
    def test_non_mapping_rejected(self, bad: Any) -> None:
        with pytest.raises(InvalidMetadata) as info:
            copy_metadata(bad)
        assert info.value.metadata is bad
        assert "mapping" in str(info.value)

    def test_broken_mapping_rejected_with_cause(self) -> None:
        with pytest.raises(InvalidMetadata) as info:
            copy_metadata(BrokenMapping())
        assert isinstance(info.value.__cause__, RuntimeError)


class TestOwnersAndValues:
    @pytest.mark.parametrize("owner", [None, "x", 1, ("a", 1), frozenset({1})])
    def test_hashable_owner_ok(self, owner: Any) -> None:
        check_owner(owner)

    @pytest.mark.parametrize("owner", [[1], {"a": 1}, BadHash()])
    def test_unhashable_owner(self, owner: Any) -> None:
        with pytest.raises(InvalidKey) as info:
            check_owner(owner)
        assert info.value.key is owner
        assert "owner must be hashable" in str(info.value)
        assert info.value.__cause__ is not None

    def test_hash_key(self) -> None:
        assert hash_key("a", 1) == hash(("a", 1))
        with pytest.raises(InvalidKey) as info:
            hash_key("a", [1])
        assert info.value.key == ("a", [1])
        assert isinstance(info.value.__cause__, TypeError)
        with pytest.raises(InvalidKey) as info:
            hash_key(BadHash(), "x")
        assert isinstance(info.value.__cause__, RuntimeError)

    def test_same_value(self) -> None:
        obj = BadEq()
        assert same_value(obj, obj)
        assert not same_value(obj, BadEq())
        assert same_value(1, 1.0)
        assert same_value([1], [1])
        assert not same_value([1], [2])
        e = EqBadBool()
        assert same_value(e, e)
        assert not same_value(e, EqBadBool())

    def test_same_owner_none_equals_only_none(self) -> None:
        assert same_owner(None, None)
        assert not same_owner(None, 0)
        assert not same_owner("", None)
        assert same_owner("a", "a")
        assert not same_owner("a", "b")


# ---------------------------------------------------------------- _events


def event(name: str = "n") -> RegistryEvent:
    return RegistryEvent(EventKind.REGISTERED, reg(name=name))


class TestListeners:
    def test_empty_is_falsy(self) -> None:
        listeners = Listeners()
        assert not listeners
        listeners.notify(event())  # no-op
        unsubscribe = listeners.add(lambda ev: None)
        assert listeners
        unsubscribe()
        assert not listeners

    def test_order_and_idempotent_unsubscribe(self) -> None:
        listeners = Listeners()
        seen: list[tuple[str, Any]] = []
        listeners.add(lambda ev: seen.append(("a", ev.name)))
        unsub_b = listeners.add(lambda ev: seen.append(("b", ev.name)))
        listeners.notify(event("1"))
        unsub_b()
        unsub_b()
        listeners.notify(event("2"))
        assert seen == [("a", "1"), ("b", "1"), ("a", "2")]

    def test_same_callable_twice(self) -> None:
        listeners = Listeners()
        seen: list[RegistryEvent] = []
        first = listeners.add(seen.append)
        listeners.add(seen.append)
        listeners.notify(event())
        assert len(seen) == 2
        first()
        listeners.notify(event())
        assert len(seen) == 3

    def test_raising_listener_is_logged_and_isolated(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        listeners = Listeners()
        seen: list[RegistryEvent] = []

        def boom(ev: RegistryEvent) -> None:
            raise RuntimeError("listener bug")

        listeners.add(boom)
        listeners.add(seen.append)
        with caplog.at_level(logging.ERROR, logger="foundation.registry"):
            listeners.notify(event())
        assert len(seen) == 1
        [record] = caplog.records
        assert record.name == "foundation.registry"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], RuntimeError)

    def test_unsubscribe_during_notify(self) -> None:
        listeners = Listeners()
        seen: list[str] = []
        unsubs: list[Any] = []

        def first(ev: RegistryEvent) -> None:
            seen.append("first")
            unsubs[1]()  # remove the second while notifying

        unsubs.append(listeners.add(first))
        unsubs.append(listeners.add(lambda ev: seen.append("second")))
        listeners.notify(event())  # snapshot: second still runs this time
        listeners.notify(event())
        assert seen == ["first", "second", "first"]

    def test_not_callable(self) -> None:
        with pytest.raises(TypeError):
            Listeners().add(42)  # type: ignore[arg-type]

    def test_threads(self) -> None:
        listeners = Listeners()
        counts = [0]

        def listener(ev: RegistryEvent) -> None:
            counts[0] += 1

        def churn() -> None:
            for _ in range(300):
                listeners.add(lambda ev: None)()

        listeners.add(listener)
        threads = [threading.Thread(target=churn) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(300):
            listeners.notify(event())
        for t in threads:
            t.join()
        assert counts[0] == 300
        assert len(listeners) == 1


# ---------------------------------------------------------------- _groups


@pytest.fixture
def groups() -> tuple[GroupTable, list[RegistryEvent]]:
    events: list[RegistryEvent] = []
    return GroupTable(events.append), events


GroupsFixture = tuple[GroupTable, list[RegistryEvent]]


class TestGroupTable:
    def test_join_members_leave(self, groups: GroupsFixture) -> None:
        table, events = groups
        r1 = table.join("ns", "g", "a", EMPTY_METADATA, None)
        table.join("ns", "g", "b", copy_metadata({"x": 1}), "owner")
        assert r1 == Registration("ns", "g", "a", EMPTY_METADATA, None)
        assert [m.value for m in table.members("ns", "g")] == ["a", "b"]
        assert table.member_count("ns", "g") == 2
        assert table.count() == 2
        assert table.members("ns", "other") == []
        assert table.member_count("other", "g") == 0
        assert table.leave("ns", "g", "a")
        assert not table.leave("ns", "g", "a")
        assert not table.leave("ns", "nope", "a")
        assert [m.value for m in table.members("ns", "g")] == ["b"]
        assert [e.kind for e in events] == [EventKind.JOINED, EventKind.JOINED, EventKind.LEFT]
        assert events[-1].value == "a"
        assert table.count() == 1

    def test_rejoin_updates_metadata_and_owner_in_place(self, groups: GroupsFixture) -> None:
        table, events = groups
        table.join("ns", "g", "a", copy_metadata({"v": 1}), "o1")
        table.join("ns", "g", "b", EMPTY_METADATA, None)
        updated = table.join("ns", "g", "a", copy_metadata({"v": 2}), "o2")
        assert updated.metadata == {"v": 2}
        assert updated.owner == "o2"
        assert [(m.value, m.owner) for m in table.members("ns", "g")] == [
            ("a", "o2"),
            ("b", None),
        ]
        assert events[-1].kind is EventKind.UPDATED
        assert table.count() == 2
        assert table.unregister_owner("o1") == 0
        assert table.unregister_owner("o2") == 1
        assert [m.value for m in table.members("ns", "g")] == ["b"]

    def test_equal_values_are_one_member(self, groups: GroupsFixture) -> None:
        table, _ = groups
        table.join("ns", "g", 1, EMPTY_METADATA, None)
        table.join("ns", "g", 1.0, EMPTY_METADATA, None)
        [member] = table.members("ns", "g")
        assert member.value == 1
        assert type(member.value) is int  # stored as first joined

    def test_unhashable_values(self, groups: GroupsFixture) -> None:
        table, events = groups
        table.join("ns", "g", [1], EMPTY_METADATA, None)
        table.join("ns", "g", "x", EMPTY_METADATA, None)
        table.join("ns", "g", {"a": 1}, EMPTY_METADATA, "o")
        table.join("ns", "g", Unhashable(3), EMPTY_METADATA, None)
        table.join("ns", "g", [1], copy_metadata({"m": 1}), None)  # same value: update
        assert table.member_count("ns", "g") == 4
        assert [m.value for m in table.members("ns", "g")] == [[1], "x", {"a": 1}, Unhashable(3)]
        assert table.members("ns", "g")[0].metadata == {"m": 1}
        assert events[-1].kind is EventKind.UPDATED
        assert table.leave("ns", "g", Unhashable(3))
        assert not table.leave("ns", "g", Unhashable(4))
        assert table.unregister_owner("o") == 1
        assert [m.value for m in table.members("ns", "g")] == [[1], "x"]

    def test_value_with_raising_eq(self, groups: GroupsFixture) -> None:
        table, _ = groups
        a, b = BadEq(), BadEq()
        table.join("ns", "g", a, EMPTY_METADATA, None)
        table.join("ns", "g", b, EMPTY_METADATA, None)
        table.join("ns", "g", a, copy_metadata({"again": True}), None)
        assert table.member_count("ns", "g") == 2
        assert table.leave("ns", "g", b)
        assert table.leave("ns", "g", a)
        assert table.count() == 0

    def test_groups_are_namespaced(self, groups: GroupsFixture) -> None:
        table, _ = groups
        table.join("a", "g", 1, EMPTY_METADATA, None)
        table.join("b", "g", 1, EMPTY_METADATA, None)
        table.join("b", "h", 2, EMPTY_METADATA, None)
        assert table.namespaces() == {"a", "b"}
        assert len(table.all()) == 3
        assert [(m.namespace, m.name) for m in table.all("b")] == [("b", "g"), ("b", "h")]
        table.leave("a", "g", 1)
        assert table.namespaces() == {"b"}

    def test_unregister_owner_across_groups(self, groups: GroupsFixture) -> None:
        table, events = groups
        for i in range(5):
            table.join("ns", f"g{i}", "v", EMPTY_METADATA, "owner")
            table.join("ns", f"g{i}", "w", EMPTY_METADATA, "other")
        table.join("ns", "g0", "u", EMPTY_METADATA, None)
        events.clear()
        assert table.unregister_owner("owner") == 5
        assert [e.kind for e in events] == [EventKind.LEFT] * 5
        assert table.count() == 6
        assert table.unregister_owner("owner") == 0
        assert table.unregister_owner(None) == 0  # unowned belong to no one
        assert table.count() == 6

    @pytest.mark.parametrize(("ns", "group"), [([1], "g"), ("ns", {}), (BadHash(), "g")])
    def test_invalid_group_key(self, groups: GroupsFixture, ns: Any, group: Any) -> None:
        table, events = groups
        with pytest.raises(InvalidKey) as info:
            table.join(ns, group, 1, EMPTY_METADATA, None)
        assert info.value.key == (ns, group)
        assert info.value.__cause__ is not None
        with pytest.raises(InvalidKey):
            table.members(ns, group)
        with pytest.raises(InvalidKey):
            table.leave(ns, group, 1)
        assert table.count() == 0
        assert events == []

    def test_close(self, groups: GroupsFixture) -> None:
        table, _ = groups
        table.join("ns", "g", 1, EMPTY_METADATA, "o")
        table.close()
        table.close()
        assert table.closed
        with pytest.raises(RegistryClosed):
            table.join("ns", "g", 2, EMPTY_METADATA, None)
        assert not table.leave("ns", "g", 1)
        assert table.unregister_owner("o") == 0
        assert table.member_count("ns", "g") == 1  # reads keep the last state

    def test_large_group(self, groups: GroupsFixture) -> None:
        table, _ = groups
        n = 100_000
        for i in range(n):
            table.join("ns", "big", i, EMPTY_METADATA, "o" if i % 2 else None)
        assert table.member_count("ns", "big") == n
        assert table.leave("ns", "big", n - 1)
        assert table.unregister_owner("o") == n // 2 - 1
        assert table.member_count("ns", "big") == n // 2
        assert [m.value for m in table.members("ns", "big")[:3]] == [0, 2, 4]

    def test_threads(self, groups: GroupsFixture) -> None:
        table, _ = groups

        def worker(t: int) -> None:
            for i in range(500):
                table.join("ns", "g", (t, i), EMPTY_METADATA, t)
                if i % 3 == 0:
                    table.leave("ns", "g", (t, i))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        expected = 4 * (500 - len(range(0, 500, 3)))
        assert table.member_count("ns", "g") == expected == table.count()
        assert sum(table.unregister_owner(t) for t in range(4)) == expected
        assert table.count() == 0


# ---------------------------------------------------------------- _query


class TestQuery:
    def test_empty_query_matches_everything(self) -> None:
        assert Query().matches(reg())
        assert Query({}).matches(reg({"a": 1}))

    def test_plain_value_is_equality(self) -> None:
        q = Query({"role": "db"})
        assert q.matches(reg({"role": "db"}))
        assert not q.matches(reg({"role": "web"}))
        assert not q.matches(reg({}))
        assert Query({"tags": ["a"]}).matches(reg({"tags": ["a"]}))

    @pytest.mark.parametrize(
        ("op", "operand", "value", "expected"),
        [
            ("eq", 3, 3, True),
            ("eq", 3, 4, False),
            ("neq", 3, 4, True),
            ("neq", 3, 3, False),
            ("lt", 10, 3, True),
            ("lt", 10, 10, False),
            ("lte", 10, 10, True),
            ("gt", 10, 11, True),
            ("gt", 10, 10, False),
            ("gte", 10, 10, True),
            ("in", ["a", "b"], "a", True),
            ("in", ("a", "b"), "c", False),
            ("in", {"a"}, "a", True),
            ("in", frozenset({"a"}), "a", True),
            ("not_in", ["a", "b"], "c", True),
            ("not_in", ["a", "b"], "a", False),
            ("eq", (1, 2), (1, 2), True),
        ],
    )
    def test_operators(self, op: str, operand: Any, value: Any, expected: bool) -> None:
        assert Query({"f": (op, operand)}).matches(reg({"f": value})) is expected

    @pytest.mark.parametrize(
        "criterion",
        [("lt", 10), ("gte", 1), ("in", {"x"}), ("not_in", {"x"}), ("neq", 1)],
    )
    def test_missing_field_never_matches(self, criterion: tuple[str, Any]) -> None:
        assert not Query({"f": criterion}).matches(reg({"other": 1}))

    def test_incomparable_never_matches(self) -> None:
        assert not Query({"load": ("lt", 10)}).matches(reg({"load": "high"}))
        assert not Query({"load": ("gte", 10)}).matches(reg({"load": None}))
        # an unhashable value tested against a set operand
        assert not Query({"f": ("in", {1, 2})}).matches(reg({"f": [1]}))
        assert not Query({"f": ("eq", 1)}).matches(reg({"f": BadEq()}))
        assert not Query({"f": 1}).matches(reg({"f": EqBadBool()}))

    def test_dotted_keys(self) -> None:
        md = {"net": {"zone": "a", "port": 80, "deep": {"x": 1}}, "flat": 1}
        assert Query({"net.zone": "a"}).matches(reg(md))
        assert Query({"net.port": ("gt", 10), "net.deep.x": 1}).matches(reg(md))
        assert not Query({"net.zone": "b"}).matches(reg(md))
        assert not Query({"net.missing": 1}).matches(reg(md))
        assert not Query({"flat.x": 1}).matches(reg(md))  # not a mapping
        assert not Query({"net.deep.x.y": 1}).matches(reg(md))
        assert Query({"net.deep": {"x": 1}}).matches(reg(md))
        nested_proxy = {"p": MappingProxyType({"q": 2})}
        assert Query({"p.q": 2}).matches(reg(nested_proxy))

    def test_all_criteria_must_hold(self) -> None:
        q = Query({"role": "db", "load": ("lt", 10), "zone": ("in", ["a", "b"])})
        assert q.matches(reg({"role": "db", "load": 3, "zone": "a"}))
        assert not q.matches(reg({"role": "db", "load": 30, "zone": "a"}))
        assert not q.matches(reg({"role": "db", "load": 3, "zone": "c"}))

    def test_predicate(self) -> None:
        q = Query(predicate=lambda r: r.name.startswith("a"))
        assert q.matches(reg(name="abc"))
        assert not q.matches(reg(name="b"))
        both = Query({"x": 1}, predicate=lambda r: r.name == "a")
        assert both.matches(reg({"x": 1}, name="a"))
        assert not both.matches(reg({"x": 2}, name="a"))
        assert not both.matches(reg({"x": 1}, name="b"))

    def test_predicate_errors_propagate(self) -> None:
        def boom(r: Registration) -> bool:
            raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            Query(predicate=boom).matches(reg())

    def test_predicate_not_called_when_criteria_fail(self) -> None:
        calls: list[Registration] = []

        def predicate(r: Registration) -> bool:
            calls.append(r)
            return True

        q = Query({"x": 1}, predicate=predicate)
        assert not q.matches(reg({"x": 2}))
        assert calls == []

    @pytest.mark.parametrize(
        ("where", "predicate"),
        [
            ({"f": ("between", 1)}, None),
            ({"f": ("lt",)}, None),
            ({"f": ("lt", 1, 2)}, None),
            ({"f": ()}, None),
            ({"f": (1, 2)}, None),
            ({1: "x"}, None),
            ({"": 1}, None),
            ({"a..b": 1}, None),
            ({"a.": 1}, None),
            ({"f": ("in", "ab")}, None),
            ({"f": ("not_in", 3)}, None),
            ({"f": ("in", {"a": 1})}, None),
            ([("f", 1)], None),
            ("role=db", None),
            (None, "not callable"),
        ],
    )
    def test_invalid(self, where: Any, predicate: Any) -> None:
        with pytest.raises(InvalidQuery) as info:
            Query(where, predicate)
        assert isinstance(info.value, ValueError)
        assert str(info.value)

    def test_unknown_operator_message_lists_operators(self) -> None:
        with pytest.raises(InvalidQuery, match="not_in") as info:
            Query({"f": ("like", "a%")})
        assert info.value.criterion == {"f": ("like", "a%")}

    def test_in_operand_is_frozen(self) -> None:
        zones = ["a"]
        q = Query({"zone": ("in", zones)})
        zones.append("b")
        assert not q.matches(reg({"zone": "b"}))

    def test_equalities(self) -> None:
        q = Query(
            {
                "role": "db",
                "zone": ("eq", "a"),
                "load": ("lt", 1),
                "net.zone": "x",
                "tags": ["unhashable"],
                "pair": ("eq", (1, 2)),
                "other": ("in", ["a"]),
            }
        )
        assert q.equalities == {"role": "db", "zone": "a", "pair": (1, 2)}
        assert Query().equalities == {}
        assert "role" in repr(q)


# ---------------------------------------------------------------- _mdindex


class TestMetadataIndex:
    @pytest.mark.parametrize("fields", ["role", [""], [1], ("ok", None)])
    def test_bad_fields(self, fields: Any) -> None:
        with pytest.raises(ConfigError):
            MetadataIndex(fields)

    def test_fields_deduplicated(self) -> None:
        assert MetadataIndex(["a", "b", "a"]).fields == ("a", "b")

    def test_candidates(self) -> None:
        index = MetadataIndex(["role", "zone"])
        index.add("ns", "a", copy_metadata({"role": "db", "zone": "x"}))
        index.add("ns", "b", copy_metadata({"role": "db", "zone": "y"}))
        index.add("ns", "c", copy_metadata({"role": "web"}))
        index.add("other", "d", copy_metadata({"role": "db"}))
        index.add("ns", "e", EMPTY_METADATA)
        assert index.candidates("ns", Query({"role": "db"})) == {("ns", "a"), ("ns", "b")}
        assert index.candidates(None, Query({"role": "db"})) == {
            ("ns", "a"),
            ("ns", "b"),
            ("other", "d"),
        }
        assert index.candidates("ns", Query({"role": "db", "zone": "y"})) == {("ns", "b")}
        assert index.candidates("ns", Query({"role": "web", "zone": "y"})) == set()
        assert index.candidates("ns", Query({"role": "cache"})) == set()
        assert index.candidates("missing", Query({"role": "db"})) == set()
        # fields that are not indexed (or not equality) cannot narrow
        assert index.candidates("ns", Query({"load": 1})) is None
        assert index.candidates("ns", Query({"role": ("neq", "db")})) is None
        assert index.candidates("ns", Query(predicate=lambda r: True)) is None
        # an indexed equality plus other criteria still narrows (caller re-checks)
        assert index.candidates("ns", Query({"role": "db", "load": ("lt", 1)})) == {
            ("ns", "a"),
            ("ns", "b"),
        }

    def test_equal_values_share_a_bucket(self) -> None:
        index = MetadataIndex(["n"])
        index.add("ns", "int", copy_metadata({"n": 1}))
        index.add("ns", "float", copy_metadata({"n": 1.0}))
        assert index.candidates("ns", Query({"n": 1})) == {("ns", "int"), ("ns", "float")}

    def test_remove(self) -> None:
        index = MetadataIndex(["role"])
        md_a = copy_metadata({"role": "db"})
        md_b = copy_metadata({"role": "db"})
        index.add("ns", "a", md_a)
        index.add("ns", "b", md_b)
        index.remove("ns", "a", md_a)
        assert index.candidates("ns", Query({"role": "db"})) == {("ns", "b")}
        index.remove("ns", "b", md_b)
        index.remove("ns", "b", md_b)  # twice is harmless
        index.remove("ns", "never", copy_metadata({"role": "db"}))
        assert index.candidates("ns", Query({"role": "db"})) == set()
        assert index.candidates(None, Query({"role": "db"})) == set()

    def test_unhashable_values_fall_back(self) -> None:
        index = MetadataIndex(["role"])
        md_list = copy_metadata({"role": ["db", "web"]})
        index.add("ns", "a", copy_metadata({"role": "db"}))
        index.add("ns", "list", md_list)
        index.add("ns", "bad", copy_metadata({"role": BadHash()}))
        cands = index.candidates("ns", Query({"role": "db"}))
        assert cands == {("ns", "a"), ("ns", "list"), ("ns", "bad")}
        index.remove("ns", "list", md_list)
        assert ("ns", "list") not in (index.candidates("ns", Query({"role": "web"})) or set())

    def test_candidates_is_superset_of_matches(self) -> None:
        index = MetadataIndex(["k"])
        rows: dict[str, dict[str, Any]] = {
            "a": {"k": 1},
            "b": {"k": "1"},
            "c": {"k": [1]},
            "d": {"k": (1,)},
            "e": {"k": True},
            "f": {},
            "g": {"k": None},
        }
        stored = {name: copy_metadata(md) for name, md in rows.items()}
        for name, md in stored.items():
            index.add("ns", name, md)
        for operand in (1, "1", (1,), None, True, 2):
            q = Query({"k": ("eq", operand)})
            cands = index.candidates("ns", q)
            assert cands is not None
            matching = {
                ("ns", name)
                for name, md in stored.items()
                if q.matches(Registration("ns", name, None, md, None))
            }
            assert matching <= cands

    def test_threads(self) -> None:
        index = MetadataIndex(["role"])

        def worker(t: int) -> None:
            for i in range(300):
                md = copy_metadata({"role": i % 3})
                index.add(t, i, md)
                if i % 2:
                    index.remove(t, i, md)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        got = index.candidates(None, Query({"role": 0}))
        assert got == {(t, i) for t in range(4) for i in range(0, 300, 2) if i % 3 == 0}
