"""Bad input: every refusal is a typed error with a helpful message, and the
registry is exactly as it was before the call (nothing half-written).

Keys that are not portable (objects with custom ``__hash__``/``__eq__``) are
local-only by nature, so most of this file is marked ``local_only``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from foundation import errors
from foundation.registry import Registry


class Boom(Exception):
    """The original error raised by a hostile key, checked as __cause__."""


class BadHash:
    def __hash__(self) -> int:
        raise Boom("hash exploded")

    def __repr__(self) -> str:
        return "<BadHash>"


class CollidingKey:
    """Hashes like every other CollidingKey; equality by tag."""

    def __init__(self, tag: Any) -> None:
        self.tag = tag

    def __hash__(self) -> int:
        return 424242

    def __eq__(self, other: object) -> Any:
        if not isinstance(other, CollidingKey) or type(other) is not CollidingKey:
            return NotImplemented
        return self.tag == other.tag

    def __repr__(self) -> str:
        return f"CollidingKey({self.tag!r})"


class BadEqKey(CollidingKey):
    """Same hash as CollidingKey; its __eq__ raises, so a probe that meets it fails."""

    def __eq__(self, other: object) -> Any:
        if other is self:
            return True
        raise Boom("eq exploded")

    __hash__ = CollidingKey.__hash__


class ReentrantKey(CollidingKey):
    """Same hash as CollidingKey; its __eq__ writes to the registry mid-probe."""

    def __init__(self, tag: Any, action: Any) -> None:
        super().__init__(tag)
        self.action = action
        self.armed = False

    def __eq__(self, other: object) -> Any:
        if self.armed:
            self.armed = False  # once per probe
            self.action()
        return other is self

    __hash__ = CollidingKey.__hash__


class RaisingIterMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        return 1

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Iterator[str]:
        yield "first"
        raise Boom("iteration exploded")


class RaisingGetitemMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise Boom("getitem exploded")

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[str]:
        return iter(["k"])


@pytest.fixture
async def seeded(registry: Registry, ns: Any) -> Registry:
    await registry.register(ns, "a", 1, {"m": 1}, owner="o")
    await registry.join(ns, "g", "member", owner="o")
    return registry


def _message_ok(err: BaseException) -> None:
    text = str(err)
    assert len(text) > 20, f"unhelpful message {text!r}"


# -- unhashable and hostile keys ------------------------------------------------

UNHASHABLE = [["list"], {"dict": 1}, {"set"}, ("tuple", ["with list"])]


@pytest.mark.parametrize("bad", UNHASHABLE, ids=["list", "dict", "set", "tuple-of-list"])
@pytest.mark.parametrize("where", ["ns", "name"])
async def test_unhashable_key(
    seeded: Registry, ns: Any, snapshot: Any, bad: Any, where: str
) -> None:
    key = (bad, "x") if where == "ns" else (ns, bad)
    before = snapshot(seeded)
    calls = [
        lambda: seeded.register(*key, 1),
        lambda: seeded.update_metadata(*key, {}),
        lambda: seeded.join(*key, 1),
    ]
    for call in calls:
        with pytest.raises(errors.InvalidKey) as info:
            await call()
        assert isinstance(info.value, TypeError)
        assert isinstance(info.value.__cause__, TypeError)
        assert "hashable" in str(info.value)
        _message_ok(info.value)
        assert snapshot(seeded) == before
    for read in (seeded.lookup, seeded.lookup_with_metadata, seeded.metadata):
        with pytest.raises(errors.InvalidKey):
            read(*key)
    with pytest.raises(errors.InvalidKey):
        seeded.get(*key)
    with pytest.raises(errors.InvalidKey):
        await seeded.unregister(*key)
    with pytest.raises(errors.InvalidKey):
        _ = key in seeded
    assert snapshot(seeded) == before


@pytest.mark.parametrize("bad", UNHASHABLE, ids=["list", "dict", "set", "tuple-of-list"])
async def test_unhashable_owner(seeded: Registry, ns: Any, snapshot: Any, bad: Any) -> None:
    before = snapshot(seeded)
    for call in (
        lambda: seeded.register(ns, "new", 1, owner=bad),
        lambda: seeded.register(ns, "a", 1, {"m": 2}, owner=bad),  # would-be update
        lambda: seeded.join(ns, "g", "new", owner=bad),
        lambda: seeded.join(ns, "g", "member", owner=bad),  # would-be update
    ):
        with pytest.raises(errors.InvalidKey) as info:
            await call()
        assert "owner" in str(info.value)
        assert isinstance(info.value.__cause__, TypeError)
        assert snapshot(seeded) == before
    with pytest.raises(errors.InvalidKey):
        await seeded.unregister_owner(bad)
    assert snapshot(seeded) == before


async def test_unhashable_in_register_many(seeded: Registry, ns: Any) -> None:
    ok, bad_name, bad_md = await seeded.register_many(
        [(ns, "fine", 1), (ns, ["bad"], 2), (ns, "md", 3, 7)]
    )
    assert ok.name == "fine"  # type: ignore[union-attr]
    assert isinstance(bad_name, errors.InvalidKey)
    assert isinstance(bad_md, errors.InvalidMetadata)
    assert sorted(seeded.names(ns)) == ["a", "fine"]


@pytest.mark.local_only
@pytest.mark.parametrize("where", ["ns", "name", "owner"])
async def test_raising_hash(seeded: Registry, ns: Any, snapshot: Any, where: str) -> None:
    before = snapshot(seeded)
    if where == "owner":
        with pytest.raises(errors.InvalidKey) as info:
            await seeded.register(ns, "x", 1, owner=BadHash())
    else:
        key = (BadHash(), "x") if where == "ns" else (ns, BadHash())
        with pytest.raises(errors.InvalidKey) as info:
            await seeded.register(*key, 1)
        for read in (seeded.lookup, seeded.get, seeded.metadata):
            with pytest.raises(errors.InvalidKey):
                read(*key)
        with pytest.raises(errors.InvalidKey):
            await seeded.unregister(*key)
    assert isinstance(info.value.__cause__, Boom)
    assert "hash exploded" in str(info.value)
    assert snapshot(seeded) == before


@pytest.mark.local_only
async def test_raising_eq(registry: Registry, ns: Any, snapshot: Any) -> None:
    # BadEqKey is stored first; a colliding probe must compare with it.
    stored = BadEqKey("stored")
    await registry.register(ns, stored, "v", owner="o")
    before = snapshot(registry)
    probe = CollidingKey("probe")
    with pytest.raises(errors.InvalidKey) as info:
        await registry.register(ns, probe, "w")
    assert isinstance(info.value.__cause__, Boom)
    _message_ok(info.value)
    assert snapshot(registry) == before
    for read in (registry.lookup, registry.get, registry.lookup_with_metadata):
        with pytest.raises(errors.InvalidKey):
            read(ns, probe)
    with pytest.raises(errors.InvalidKey):
        await registry.unregister(ns, probe)
    with pytest.raises(errors.InvalidKey):
        await registry.update_metadata(ns, probe, {})
    assert snapshot(registry) == before
    # the stored key itself still works (identity short-cuts equality)
    assert registry.lookup(ns, stored) == "v"
    assert await registry.unregister_owner("o") == 1
    assert registry.count() == 0


@pytest.mark.local_only
async def test_raising_eq_in_namespace(registry: Registry, snapshot: Any) -> None:
    stored_ns = BadEqKey("ns")
    await registry.register(stored_ns, "name", 1)
    before = snapshot(registry)
    with pytest.raises(errors.InvalidKey):
        await registry.register(CollidingKey("other-ns"), "name", 2)
    assert snapshot(registry) == before


@pytest.mark.local_only
async def test_colliding_keys_that_behave(registry: Registry, ns: Any) -> None:
    keys = [CollidingKey(i) for i in range(200)]
    for i, key in enumerate(keys):
        await registry.register(ns, key, i)
    for i in range(200):
        assert registry.lookup(ns, CollidingKey(i)) == i
    for i in range(0, 200, 2):
        assert await registry.unregister(ns, CollidingKey(i))
    assert registry.count(ns) == 100
    for i in range(200):
        assert registry.get(ns, CollidingKey(i)) == (i if i % 2 else None)


# -- re-entrant __eq__ -------------------------------------------------------


def _consistent(registry: Registry) -> None:
    regs = registry.registrations()
    assert registry.count() == len(regs) == len(registry)
    for reg in regs:
        assert (
            registry.lookup(reg.namespace, reg.name) is reg.value
            or registry.lookup(reg.namespace, reg.name) == reg.value
        )
    namespaces = {repr(r.namespace): r.namespace for r in regs}
    assert sum(registry.count(n) for n in namespaces.values()) == len(regs)
    assert sum(len(registry.names(n)) for n in namespaces.values()) == len(regs)


@pytest.mark.local_only
@pytest.mark.parametrize("probe_op", ["register", "lookup", "unregister", "update_metadata"])
@pytest.mark.parametrize("side_effect", ["register-other", "unregister-self", "grow-table"])
async def test_reentrant_eq(registry: Registry, ns: Any, probe_op: str, side_effect: str) -> None:

    def register_other() -> None:
        registry.register_nowait(ns, "side", "effect")

    def unregister_self() -> None:
        assert registry.unregister_nowait(ns, stored)

    def grow_table() -> None:
        for i in range(300):
            registry.register_nowait(ns, ("grow", i), i)

    action = {
        "register-other": register_other,
        "unregister-self": unregister_self,
        "grow-table": grow_table,
    }[side_effect]
    stored = ReentrantKey("stored", action)
    await registry.register(ns, stored, "stored-value")
    existing = CollidingKey("existing")
    await registry.register(ns, existing, "existing-value")
    probe = CollidingKey("probe") if probe_op == "register" else CollidingKey("existing")
    stored.armed = True

    result: Any = None
    try:
        if probe_op == "register":
            result = await registry.register(ns, probe, "probe-value")
        elif probe_op == "lookup":
            result = registry.lookup(ns, probe)
        elif probe_op == "unregister":
            result = await registry.unregister(ns, probe)
        else:
            result = await registry.update_metadata(ns, probe, {"new": True})
    except errors.RegistryError as exc:  # refusing is allowed; crashing is not
        result = exc

    _consistent(registry)
    # whatever happened, the side effect landed exactly once
    if side_effect == "register-other":
        assert registry.lookup(ns, "side") == "effect"
    elif side_effect == "unregister-self":
        assert registry.get(ns, stored) is None
    else:
        assert all(registry.lookup(ns, ("grow", i)) == i for i in range(300))
    # and the probe's own answer is consistent with the final state
    if not isinstance(result, errors.RegistryError):
        if probe_op == "register":
            assert registry.lookup(ns, probe) == "probe-value"
        elif probe_op == "lookup":
            assert result == "existing-value"
        elif probe_op == "unregister":
            assert result is True
            assert registry.get(ns, existing) is None
        else:
            assert dict(registry.metadata(ns, existing)) == {"new": True}
    else:
        assert isinstance(result, errors.InvalidKey), result
    assert registry.get(ns, existing, "gone") in ("existing-value", "gone")


# -- metadata ---------------------------------------------------------------------

NOT_MAPPINGS = [["a", 1], [("a", 1)], "role=db", 5, 1.5, True, b"bytes", object()]


@pytest.mark.parametrize(
    "bad", NOT_MAPPINGS, ids=["list", "pairs", "str", "int", "float", "bool", "bytes", "object"]
)
async def test_non_mapping_metadata(seeded: Registry, ns: Any, snapshot: Any, bad: Any) -> None:
    before = snapshot(seeded)
    for call in (
        lambda: seeded.register(ns, "new", 1, bad),
        lambda: seeded.register(ns, "a", 1, bad, owner="o"),  # would-be update
        lambda: seeded.update_metadata(ns, "a", bad),
        lambda: seeded.join(ns, "g", "new", bad),
        lambda: seeded.join(ns, "g", "member", bad, owner="o"),  # would-be update
    ):
        with pytest.raises(errors.InvalidMetadata) as info:
            await call()
        assert isinstance(info.value, TypeError)
        assert "mapping" in str(info.value)
        assert info.value.metadata is bad
        assert snapshot(seeded) == before


@pytest.mark.parametrize("mapping_type", [RaisingIterMapping, RaisingGetitemMapping])
async def test_mapping_that_raises(
    seeded: Registry, ns: Any, snapshot: Any, mapping_type: type
) -> None:
    bad = mapping_type()
    before = snapshot(seeded)
    for call in (
        lambda: seeded.register(ns, "new", 1, bad),
        lambda: seeded.register(ns, "a", 1, bad, owner="o"),
        lambda: seeded.update_metadata(ns, "a", bad),
        lambda: seeded.join(ns, "g", "new", bad),
    ):
        with pytest.raises(errors.InvalidMetadata) as info:
            await call()
        assert isinstance(info.value.__cause__, Boom)
        assert "exploded" in str(info.value)
        assert snapshot(seeded) == before


async def test_custom_mapping_accepted_and_copied(registry: Registry, ns: Any) -> None:
    class Source(Mapping[str, Any]):
        def __init__(self) -> None:
            self.data = {"a": 1}

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __len__(self) -> int:
            return len(self.data)

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

    src = Source()
    await registry.register(ns, "k", 1, src)
    src.data["a"] = 2
    src.data["b"] = 3
    assert dict(registry.metadata(ns, "k")) == {"a": 1}


async def test_huge_metadata(registry: Registry, ns: Any) -> None:
    huge = {f"k{i}": i for i in range(100_000)}
    await registry.register(ns, "big", 1, huge)
    huge["k0"] = "changed"
    del huge["k1"]
    got = registry.metadata(ns, "big")
    assert len(got) == 100_000
    assert got["k0"] == 0
    assert got["k1"] == 1
    assert got["k99999"] == 99999
    assert registry.select(ns, where={"k77777": 77777})[0].name == "big"
    await registry.update_metadata(ns, "big", huge)
    assert len(registry.metadata(ns, "big")) == 99_999


# -- closed registry and bad queries -----------------------------------------------


async def test_closed_registry_refuses_writes(seeded: Registry, ns: Any, snapshot: Any) -> None:
    seeded.close()
    before = snapshot(seeded)
    for call in (
        lambda: seeded.register(ns, "new", 1),
        lambda: seeded.update_metadata(ns, "a", {}),
        lambda: seeded.join(ns, "g", "x"),
    ):
        with pytest.raises(errors.RegistryClosed) as info:
            await call()
        assert "closed" in str(info.value)
        assert snapshot(seeded) == before


@pytest.mark.parametrize(
    "where",
    [{"role": ("like", "x")}, {"load": ("lt", 1, 2)}, {"zone": ("in", 3)}, {"": 1}],
)
async def test_bad_query(seeded: Registry, ns: Any, snapshot: Any, where: Any) -> None:
    before = snapshot(seeded)
    with pytest.raises(errors.InvalidQuery) as info:
        seeded.select(ns, where=where)
    _message_ok(info.value)
    assert snapshot(seeded) == before


async def test_unknown_operator_message_lists_operators(seeded: Registry, ns: Any) -> None:
    with pytest.raises(errors.InvalidQuery) as info:
        seeded.select(ns, where={"role": ("like", "x")})
    text = str(info.value)
    assert "like" in text
    for op in ("eq", "neq", "lt", "lte", "gt", "gte", "in", "not_in"):
        assert op in text
