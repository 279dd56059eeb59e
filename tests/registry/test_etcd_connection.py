"""How an etcd registry (and coordinator) is told where etcd is: client=, settings=, keywords.

One form only: an open client (shared; the caller owns it), an
``EtcdSettings``, or the connection keywords. ``Registry.etcd_client`` is
the client a registry writes through.

Real clock, the session's etcd member, a prefix per test.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.coordination import open_etcd_coordinator
from foundation.etcd import EtcdSettings, open_etcd_client
from foundation.registry import Registry, open_etcd_backend, open_registry

pytestmark = pytest.mark.etcd


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex}/"


async def test_registries_and_a_coordinator_share_one_client(
    etcd_endpoints: list[str], prefix: str
) -> None:
    with trio.fail_after(30):
        async with open_etcd_client(etcd_endpoints) as client:
            async with (
                open_registry(backend="etcd", client=client, prefix=prefix) as a,
                open_registry(backend="etcd", client=client, prefix=prefix) as b,
                open_etcd_coordinator(client=client, prefix=prefix + "coord/") as coord,
            ):
                assert a.etcd_client is client
                assert b.etcd_client is client
                await a.register("svc", "x", 1)
                await b.sync()
                assert b.lookup("svc", "x") == 1
                assert await coord.counter("c").add(3) == 3
                # two instances on one client: two leases, two instance ids
                assert a.backend.lease_id != b.backend.lease_id
            # Closing them left the caller's client open and working.
            await client.put(prefix + "after", "1")
            kv = await client.get(prefix + "after")
            assert kv is not None
            assert kv.value == b"1"
            # ... and a's lease was revoked with a (its entry is gone).
            assert await client.get(prefix + 'reg/["svc","x"]') is None


async def test_settings_are_accepted(etcd_endpoints: list[str], prefix: str) -> None:
    settings = EtcdSettings(etcd_endpoints, timeout=3)
    with trio.fail_after(30):
        async with (
            open_registry(backend="etcd", settings=settings, prefix=prefix) as registry,
            open_etcd_coordinator(settings=settings, prefix=prefix + "coord/") as coord,
        ):
            assert registry.etcd_client is not None
            assert registry.etcd_client.timeout == 3
            await registry.register("svc", "x", 1)
            assert await coord.counter("c").get() == 0


async def test_etcd_client_is_none_on_local_backends() -> None:
    assert Registry(backend="python").etcd_client is None
    async with open_registry(backend="python") as registry:
        assert registry.etcd_client is None


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"endpoints": ["http://127.0.0.1:1"]}, ["client=", "endpoints"]),
        ({"timeout": 2.0}, ["client=", "timeout"]),
        ({"username": "u", "password": "p"}, ["client=", "password", "username"]),
        ({"settings": "SETTINGS"}, ["client=", "settings"]),
    ],
)
async def test_client_with_other_connection_arguments_is_refused(
    etcd_endpoints: list[str], prefix: str, extra: dict[str, Any], words: list[str]
) -> None:
    async with open_etcd_client(etcd_endpoints) as client:
        if extra.get("settings") == "SETTINGS":
            extra = {"settings": EtcdSettings(etcd_endpoints)}
        with pytest.raises(errors.ConfigError) as info:
            async with open_registry(backend="etcd", client=client, prefix=prefix, **extra):
                pass  # pragma: no cover
        for word in words:
            assert word in str(info.value)
        with pytest.raises(errors.ConfigError):
            async with open_etcd_coordinator(client=client, prefix=prefix, **extra):
                pass  # pragma: no cover
        with pytest.raises(errors.ConfigError):
            async with open_etcd_backend(client=client, prefix=prefix, **extra):
                pass  # pragma: no cover
        # nothing was written, and the client still works
        assert (await client.range(prefix, prefix=True)).kvs == []


async def test_settings_with_keywords_is_refused(etcd_endpoints: list[str], prefix: str) -> None:
    settings = EtcdSettings(etcd_endpoints)
    for extra in ({"endpoints": etcd_endpoints}, {"timeout": 1.0}, {"ca_cert": "ca.pem"}):
        with pytest.raises(errors.ConfigError, match="not both"):
            async with open_registry(backend="etcd", settings=settings, prefix=prefix, **extra):
                pass  # pragma: no cover
        with pytest.raises(errors.ConfigError, match="not both"):
            async with open_etcd_coordinator(settings=settings, prefix=prefix, **extra):
                pass  # pragma: no cover


async def test_not_a_client_or_not_settings_is_refused(prefix: str) -> None:
    with pytest.raises(errors.ConfigError, match="not an EtcdClient"):
        async with open_registry(backend="etcd", client="http://x:2379", prefix=prefix):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(errors.ConfigError, match="not an EtcdSettings"):
        async with open_etcd_coordinator(settings={"endpoints": ["x:1"]}, prefix=prefix):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_client_and_settings_only_apply_to_etcd(etcd_endpoints: list[str]) -> None:
    settings = EtcdSettings(etcd_endpoints)
    with pytest.raises(errors.ConfigError, match="only apply to backend='etcd'"):
        async with open_registry(backend="python", settings=settings):
            pass  # pragma: no cover


async def test_reserved_cluster_subtree_is_skipped_silently(
    etcd_endpoints: list[str], prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``prefix + "cluster/"`` belongs to the distributed supervisor: never read, never counted."""
    with trio.fail_after(30):
        async with open_etcd_client(etcd_endpoints) as client:
            # Written without a lease, in whatever form the supervisor likes.
            await client.put(prefix + "cluster/nodes/n1", '{"anything": [1, 2]}')
            await client.put(prefix + "cluster/children/x", "not json at all")
            async with open_registry(backend="etcd", client=client, prefix=prefix) as registry:
                await client.put(prefix + "cluster/children/y", "[" * 200)
                await client.delete(prefix + "cluster/nodes/n1")
                await registry.register("svc", "x", 1)
                await registry.sync()
                assert [r.name for r in registry.registrations()] == ["x"]
                health = registry.health_check()
                assert health.ok, health.detail
                assert health.details["foreign_skipped"] == 0
                assert "skipped" not in health.detail
    assert "did not write" not in caplog.text
