"""Conformance: ``select`` with ``where`` criteria and predicates.

Every query runs on a registry without indexes and on one with indexes on
the fields it tests; both must give the same answers. On etcd metadata is
JSON: the ``("a", "b")`` tuple of DATA comes back as a list.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry

DATA: dict[str, dict[str, Any]] = {
    "db1": {"role": "db", "load": 5, "zone": "a", "net": {"dc": "x", "port": 5432}},
    "db2": {"role": "db", "load": 12, "zone": "b", "net": {"dc": "y", "port": 5433}},
    "db3": {"role": "db", "load": "high", "zone": "c"},  # incomparable load
    "web1": {"role": "web", "load": 1, "zone": "a", "net": "not-a-mapping"},
    "web2": {"role": "web", "zone": "b", "tags": ["x", "y"]},  # no load
    "cache": {"role": "cache", "load": 9.5, "zone": None},
    "bare": {},
    "tuple": {"role": ("a", "b"), "load": 3},
}

INDEXES = ("role", "zone", "load")


def stored(registry: Registry, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` as the registry hands it back (a JSON round trip on etcd)."""
    if registry.backend_name == "etcd":
        loaded: dict[str, Any] = json.loads(json.dumps(metadata))
        return loaded
    return metadata


@pytest.fixture(params=[(), INDEXES], ids=["no-index", "indexed"])
async def populated(
    request: pytest.FixtureRequest, new_registry: Callable[..., Awaitable[Registry]], ns: Any
) -> Registry:
    registry = await new_registry(indexes=request.param)
    for name, metadata in DATA.items():
        await registry.register(ns, name, f"value-{name}", metadata)
    # noise in another namespace
    await registry.register((ns, "other"), "db9", "v", {"role": "db", "load": 1})
    return registry


def names(regs: list[Any]) -> list[str]:
    return sorted(r.name for r in regs)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"role": "db"}, ["db1", "db2", "db3"]),
        ({"role": ("eq", "db")}, ["db1", "db2", "db3"]),
        ({"role": ("neq", "db")}, ["cache", "tuple", "web1", "web2"]),
        ({"load": ("lt", 10)}, ["cache", "db1", "tuple", "web1"]),
        ({"load": ("lte", 5)}, ["db1", "tuple", "web1"]),
        ({"load": ("gt", 5)}, ["cache", "db2"]),
        ({"load": ("gte", 12)}, ["db2"]),
        ({"zone": ("in", ["a", "b"])}, ["db1", "db2", "web1", "web2"]),
        ({"zone": ("in", ("a",))}, ["db1", "web1"]),
        ({"zone": ("in", {"c"})}, ["db3"]),
        ({"zone": ("not_in", ["a", "b"])}, ["cache", "db3"]),
        ({"zone": None}, ["cache"]),
        ({"role": "db", "load": ("lt", 10)}, ["db1"]),
        ({"role": "db", "zone": ("in", ["a", "b"]), "load": ("gte", 12)}, ["db2"]),
        ({"net.dc": "x"}, ["db1"]),
        ({"net.port": ("gt", 5432)}, ["db2"]),
        ({"net.dc.deeper": "x"}, []),  # reaching through a non-mapping
        pytest.param(  # tuple literal via eq (on etcd the stored tuple is a list)
            {"role": ("eq", ("a", "b"))}, ["tuple"], marks=pytest.mark.local_only
        ),
        ({"load": ("eq", 9.5)}, ["cache"]),
        ({"missing": "x"}, []),
        ({"missing": ("neq", "x")}, []),  # a missing field never matches
        ({"missing": ("not_in", ["x"])}, []),
        ({"role": "nobody"}, []),
        ({}, sorted(DATA)),
    ],
)
async def test_where(populated: Registry, ns: Any, where: Any, expected: list[str]) -> None:
    result = populated.select(ns, where=where)
    assert names(result) == expected
    for reg in result:
        assert reg.value == f"value-{reg.name}"
        assert reg.namespace == ns
        assert dict(reg.metadata) == stored(populated, DATA[reg.name])


async def test_where_and_indexes_agree(
    new_registry: Callable[..., Awaitable[Registry]], ns: Any
) -> None:
    plain = await new_registry()
    indexed = await new_registry(indexes=INDEXES)
    for registry in (plain, indexed):
        for name, metadata in DATA.items():
            await registry.register(ns, name, name, metadata)
        await registry.update_metadata(ns, "db1", {"role": "web", "zone": "b"})
        await registry.unregister(ns, "db2")
        await registry.register(ns, "db2", "again", {"role": "db", "load": 0})
        await registry.register(ns, "web2", "web2", {"role": "db"})  # re-register: update
    queries = [
        {"role": "db"},
        {"role": "web"},
        {"zone": "b"},
        {"role": "web", "zone": "b"},
        {"load": 0},
        {"load": ("lt", 10)},
        {"role": ("in", ["db", "cache"])},
    ]
    for where in queries:
        assert names(plain.select(ns, where=where)) == names(indexed.select(ns, where=where))
    assert names(indexed.select(ns, where={"role": "db"})) == ["db2", "db3", "web2"]
    assert names(indexed.select(ns, where={"role": "web"})) == ["db1", "web1"]
    # after removal by owner the index forgets too
    await indexed.register(ns, "owned", 1, {"role": "db"}, owner="o")
    assert "owned" in names(indexed.select(ns, where={"role": "db"}))
    await indexed.unregister_owner("o")
    assert "owned" not in names(indexed.select(ns, where={"role": "db"}))


async def test_select_namespace_filter(populated: Registry, ns: Any) -> None:
    assert names(populated.select((ns, "other"), where={"role": "db"})) == ["db9"]
    everywhere = populated.select(None, where={"role": "db"})
    assert sorted((repr(r.namespace), r.name) for r in everywhere) == sorted(
        [(repr(ns), "db1"), (repr(ns), "db2"), (repr(ns), "db3"), (repr((ns, "other")), "db9")]
    )
    assert populated.select(("no", "such", "ns"), where={"role": "db"}) == []


async def test_select_predicate(populated: Registry, ns: Any) -> None:
    got = populated.select(ns, predicate=lambda reg: reg.name.startswith("web"))
    assert names(got) == ["web1", "web2"]
    got = populated.select(
        ns, where={"role": "db"}, predicate=lambda reg: reg.metadata.get("zone") != "a"
    )
    assert names(got) == ["db2", "db3"]
    assert names(populated.select(ns)) == sorted(DATA)


async def test_select_predicate_error_propagates(populated: Registry, ns: Any) -> None:
    class Boom(Exception):
        pass

    def predicate(reg: Any) -> bool:
        raise Boom("from predicate")

    with pytest.raises(Boom):
        populated.select(ns, predicate=predicate)


async def test_select_ignores_groups(registry: Registry, ns: Any) -> None:
    await registry.join(ns, "g", "member", {"role": "db"})
    assert registry.select(ns, where={"role": "db"}) == []


@pytest.mark.parametrize(
    "where",
    [
        {"role": ("like", "d%")},
        {"role": ("EQ", "db")},
        {"load": ("lt", 1, 2)},
        {"load": ("lt",)},
        {"load": (1, "lt")},
        {"zone": ("in", "ab")},  # a str is not a collection of choices
        {"zone": ("in", 5)},
        {"zone": ("not_in", None)},
        {"": "x"},
        {"a..b": "x"},
        {1: "x"},
    ],
)
async def test_invalid_query(populated: Registry, ns: Any, snapshot: Any, where: Any) -> None:
    before = snapshot(populated)
    with pytest.raises(errors.InvalidQuery) as info:
        populated.select(ns, where=where)
    assert isinstance(info.value, ValueError)
    assert str(info.value)
    assert snapshot(populated) == before


async def test_invalid_query_on_empty_registry(registry: Registry, ns: Any) -> None:
    # a typo fails loudly even when nothing could match
    with pytest.raises(errors.InvalidQuery) as info:
        registry.select(ns, where={"role": ("equals", "db")})
    assert "equals" in str(info.value)


async def test_invalid_where_and_predicate_types(registry: Registry, ns: Any) -> None:
    with pytest.raises(errors.InvalidQuery):
        registry.select(ns, where=[("role", "db")])  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidQuery):
        registry.select(ns, predicate="not callable")  # type: ignore[arg-type]
