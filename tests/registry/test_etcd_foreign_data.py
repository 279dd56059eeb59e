"""Foreign and malformed data under an etcd registry's prefix: skipped and counted, never fatal.

The regression: one value, owner or key nested ~600 deep, put under the
prefix by anyone who may write it (``etcdctl put``, a raw client), raised
RecursionError out of the watch loop, so every running registry on the
prefix died and new ones could not open. Now such a record is skipped with a
warning and counted in ``health_check().details["foreign_skipped"]``, and the
library refuses to write anything nested deeper than it reads
(:data:`foundation.etcd.MAX_NESTING`).

Real clock, the session's etcd member, a prefix per test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.etcd import MAX_NESTING, EtcdClient, open_etcd_client
from foundation.registry import open_registry

pytestmark = pytest.mark.etcd

#: Deep enough that json's C decoder or a recursive walk of the result fails
#: in a Trio task's stack on CPython 3.11 (recursion limit 1000).
DEEP = 600


def nested_list(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def nested_dict(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_list_obj(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_tuple(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = (value,)
    return value


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex}/"


@pytest.fixture
def open_instance(etcd_endpoints: list[str], prefix: str) -> Callable[..., Any]:
    def opener(**kwargs: Any) -> Any:
        options: dict[str, Any] = {"endpoints": etcd_endpoints, "prefix": prefix, "ttl": 10}
        options.update(kwargs)
        return open_registry(backend="etcd", **options)

    return opener


@pytest.fixture
async def etcd(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    async with open_etcd_client(etcd_endpoints) as client:
        yield client


def deep_records(prefix: str) -> dict[str, str]:
    """Raw key -> value of records nested too deep: in the value, the owner, the key, metadata."""
    return {
        prefix + 'reg/["ns","deep-value"]': '{"v":' + nested_list(DEEP) + ',"m":{},"o":null}',
        prefix + 'reg/["ns","deep-owner"]': '{"v":1,"m":{},"o":' + nested_list(DEEP, '"o"') + "}",
        prefix + 'reg/["ns",' + nested_list(DEEP, '"k"') + "]": '{"v":1,"m":{},"o":null}',
        prefix + 'reg/["ns","deep-metadata"]': '{"v":1,"m":{"x":'
        + nested_list(DEEP)
        + '},"o":null}',
        prefix + 'grp/["ns","g","' + "0" * 32 + '"]': '{"v":' + nested_list(DEEP) + ',"m":{}}',
        # past json's own limit too (RecursionError inside json.loads)
        prefix + 'reg/["ns","deeper-value"]': '{"v":' + nested_list(5000) + ',"m":{},"o":null}',
    }


async def test_deep_records_written_while_running_are_skipped(
    open_instance: Any, etcd: EtcdClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(30):
        async with open_instance() as a, open_instance() as b:
            await a.register("ns", "before", 1)
            records = deep_records(prefix)
            for key, value in records.items():
                await etcd.put(key, value)
            await a.register("ns", "after", 2)
            for registry in (a, b):
                await registry.sync()
                assert registry.lookup("ns", "before") == 1
                assert registry.lookup("ns", "after") == 2
                assert sorted(r.name for r in registry.registrations("ns")) == ["after", "before"]
                assert registry.member_count("ns", "g") == 0
                health = registry.health_check()
                assert health.ok, health.detail
                assert health.details["foreign_skipped"] >= len(records)
                assert "skipped" in health.detail
            # a third instance opens on the prefix as it is now
            async with open_instance() as c:
                assert sorted(r.name for r in c.registrations("ns")) == ["after", "before"]
                assert c.health_check().details["foreign_skipped"] >= len(records)
            # and the registries keep working
            await b.register("ns", "later", 3)
            await a.sync()
            assert a.lookup("ns", "later") == 3
    assert "nested deeper" in caplog.text


async def test_deep_records_present_at_open_are_skipped(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    for key, value in deep_records(prefix).items():
        await etcd.put(key, value)
    with trio.fail_after(30):
        async with open_instance() as a:
            assert a.count() == 0
            await a.register("ns", "x", 1)
            assert a.lookup("ns", "x") == 1
            assert a.health_check().ok


async def test_nesting_up_to_the_limit_round_trips(open_instance: Any) -> None:
    value = nested_list_obj(MAX_NESTING)
    metadata = {"m": nested_dict(MAX_NESTING - 1)}  # the mapping itself is one level
    owner = nested_tuple(MAX_NESTING)
    name = nested_tuple(MAX_NESTING)
    with trio.fail_after(30):
        async with open_instance() as a, open_instance() as b:
            await a.register("ns", name, value, metadata, owner=owner)
            await a.join("ns", "g", value, metadata, owner=owner)
            await b.sync()
            reg = b.lookup_with_metadata("ns", name)
            assert reg.value == value
            assert dict(reg.metadata) == metadata
            assert reg.owner == owner
            assert [m.value for m in b.members("ns", "g")] == [value]
            assert b.health_check().details["foreign_skipped"] == 0


async def test_writes_nested_deeper_than_the_limit_are_refused(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    too_deep = MAX_NESTING + 1
    with trio.fail_after(30):
        async with open_instance() as a:
            with pytest.raises(errors.InvalidValue, match="nested deeper"):
                await a.register("ns", "v", nested_list_obj(too_deep))
            with pytest.raises(errors.InvalidValue, match="nested deeper"):
                await a.register("ns", "v", nested_list_obj(DEEP))
            with pytest.raises(errors.InvalidMetadata, match="nested deeper"):
                await a.register("ns", "m", 1, {"m": nested_dict(MAX_NESTING)})
            with pytest.raises(errors.InvalidKey, match="nested deeper"):
                await a.register("ns", "o", 1, owner=nested_tuple(too_deep))
            with pytest.raises(errors.InvalidKey, match="nested deeper"):
                await a.register("ns", nested_tuple(too_deep), 1)
            with pytest.raises(errors.InvalidKey, match="nested deeper"):
                await a.register(nested_tuple(DEEP), "n", 1)
            with pytest.raises(errors.InvalidValue, match="nested deeper"):
                await a.join("ns", "g", nested_list_obj(too_deep))
            [result] = await a.register_many([("ns", "many", nested_list_obj(too_deep))])
            assert isinstance(result, errors.InvalidValue)
            await a.register("ns", "ok", 1)
            with pytest.raises(errors.InvalidMetadata, match="nested deeper"):
                await a.update_metadata("ns", "ok", {"m": nested_dict(MAX_NESTING)})
            assert [r.name for r in a.registrations("ns")] == ["ok"]
            found = await etcd.range(prefix, prefix=True)
            keys = [kv.key[len(prefix) :].decode() for kv in found.kvs]
            assert [k for k in keys if not k.startswith("sync/")] == ['reg/["ns","ok"]']
            assert json.loads(found.kvs[0].value)["m"] == {}
