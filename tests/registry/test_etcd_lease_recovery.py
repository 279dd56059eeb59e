"""An etcd registry whose lease ended: what comes back, what is reported, what is never lost.

The registry puts every entry of its own back under a new lease. Its own
watchers see nothing of an entry that came back, and one unregistration for
an entry another instance took meanwhile (with ``foundation.registry.conflict``
telemetry; never overwritten). An entry leaves the set to put back only once
its put succeeded: a put-back cut short by an error resumes with the rest.

Real clock, the session's etcd member, a prefix per test. The lease is
ended by revoking it from another client, as if its keepalive had stopped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors, telemetry
from foundation.etcd import EtcdClient, open_etcd_client
from foundation.registry import Registry, RegistryEvent, open_registry

pytestmark = pytest.mark.etcd


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


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    with trio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 -- polling a view, not waiting on an event
            await trio.sleep(0.01)


@asynccontextmanager
async def collecting(registry: Registry) -> AsyncIterator[list[RegistryEvent]]:
    """Every event of ``registry``'s watch while the block runs."""
    events: list[RegistryEvent] = []
    async with registry.watch() as watch, trio.open_nursery() as nursery:

        async def collect() -> None:
            async for event in watch:
                events.append(event)

        nursery.start_soon(collect)
        yield events
        nursery.cancel_scope.cancel()


async def test_a_name_taken_meanwhile_is_reported_never_overwritten(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    conflicts: list[dict[str, Any]] = []

    def on_conflict(event: str, measurements: Any, metadata: Any) -> None:
        conflicts.append(dict(metadata))

    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "contested", "a")
        await a.register("svc", "kept", "a", {"m": 1})
        await b.sync()
        # a gets no new lease until b has taken the name
        taken = trio.Event()
        real_lease = a.backend.client.lease

        @asynccontextmanager
        async def late_lease(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            await taken.wait()
            async with real_lease(*args, **kwargs) as lease:
                yield lease

        a.backend.client.lease = late_lease  # type: ignore[method-assign]
        old = a.backend.lease_id
        with telemetry.attached("test-conflict", "foundation.registry.conflict", on_conflict):
            async with collecting(a) as a_events, b.watch("svc") as events:
                await etcd.lease_revoke(old)
                with trio.fail_after(5):
                    while True:
                        ev = await events.__anext__()
                        if ev.kind == "unregistered" and ev.name == "contested":
                            break
                # a finds its lease gone; it still shows both, and says its view may be stale
                await eventually(lambda: a.health_check().details["stale_since"] is not None)
                assert not a.health_check().ok
                assert a.lookup("svc", "contested") == "a"
                assert a.lookup("svc", "kept") == "a"
                await b.register("svc", "contested", "b")
                taken.set()
                await eventually(lambda: a.health_check().ok and a.backend.lease_id != old)
                await a.sync()
        # a's watchers: one unregistration of the name it lost (reason "lease":
        # a could not put it back), then b's registration (learnt: "remote")
        assert [(str(e.kind), e.name, e.registration.value, e.reason) for e in a_events] == [
            ("unregistered", "contested", "a", "lease"),
            ("registered", "contested", "b", "remote"),
        ]
        assert len(conflicts) == 1
        assert conflicts[0]["key"] == ("svc", "contested")
        assert conflicts[0]["value"] == "a"
        assert conflicts[0]["holder"].value == "b"
        assert conflicts[0]["holder_instance"] == b.backend.instance_id
        for registry in (a, b):
            await registry.sync()
            assert registry.lookup("svc", "contested") == "b"
            assert registry.lookup("svc", "kept") == "a"
        health = a.health_check()
        assert health.details["entries_owned"] == 1
        assert health.details["conflicts"] == 1
        kv = await etcd.get(prefix + 'reg/["svc","contested"]')
        assert kv is not None
        assert kv.lease == b.backend.lease_id


async def test_a_put_back_cut_short_resumes_and_forgets_nothing(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    count = 300  # three txns of put-back
    async with open_instance() as a:
        results = await a.register_many([("svc", f"n{i}", i) for i in range(count)])
        assert all(not isinstance(r, Exception) for r in results)
        real_txn = a.backend.client.txn
        put_backs = failures = 0

        async def flaky_txn(*args: Any, **kwargs: Any) -> Any:
            # The second put-back txn (a full one: 128 puts) fails, twice (the
            # registry sends a call once more), after the first went through.
            nonlocal put_backs, failures
            success = args[1] if len(args) > 1 else kwargs.get("success", ())
            if len(success) == 128:
                put_backs += 1
                if put_backs in (2, 3):
                    failures += 1
                    raise errors.EtcdUnavailable("test: the put-back is cut short", None, None)
            return await real_txn(*args, **kwargs)

        a.backend.client.txn = flaky_txn  # type: ignore[method-assign]
        old = a.backend.lease_id
        async with collecting(a) as events:
            await etcd.lease_revoke(old)
            await eventually(lambda: failures == 2, timeout=15)
            await eventually(lambda: a.health_check().ok and a.backend.lease_id != old, 20)
            await a.sync()
        assert events == []  # everything came back: a's watchers saw nothing
        health = a.health_check()
        assert health.details["entries_owned"] == count
        assert health.details["entries_to_put_back"] == 0
        lease = a.backend.lease_id
        found = await etcd.range(prefix + "reg/", prefix=True)
        assert len(found.kvs) == count
        assert {kv.lease for kv in found.kvs} == {lease}
        assert sorted(a.names("svc")) == sorted(f"n{i}" for i in range(count))


async def test_a_delete_by_someone_else_is_applied_after_the_lease_checks_out(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance() as a:
        await a.register("svc", "x", 1)
        await a.register("svc", "y", 2)
        async with collecting(a) as events:
            await etcd.delete(prefix + 'reg/["svc","x"]')  # etcdctl del, say
            await a.sync()  # waits until the delete is told apart from a lease end
            assert ("svc", "x") not in a
            assert a.lookup("svc", "y") == 2
        # not this instance's write: learnt from the watch
        assert [(str(e.kind), e.name, e.reason) for e in events] == [
            ("unregistered", "x", "remote")
        ]
        # deleted on purpose: never put back
        assert a.health_check().details["entries_owned"] == 1
        assert await etcd.get(prefix + 'reg/["svc","x"]') is None


async def test_unregister_during_a_put_back_waits_for_it_and_wins(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance() as a:
        await a.register("svc", "x", 1)
        real_txn = a.backend.client.txn
        putting_back = trio.Event()
        go_on = trio.Event()

        async def slow_put_back(*args: Any, **kwargs: Any) -> Any:
            failure = args[2] if len(args) > 2 else kwargs.get("failure", ())
            if failure and not go_on.is_set():  # the put-back's txn (it asks for holders)
                putting_back.set()
                await go_on.wait()
            return await real_txn(*args, **kwargs)

        a.backend.client.txn = slow_put_back  # type: ignore[method-assign]
        removed: list[bool] = []
        async with collecting(a) as events, trio.open_nursery() as nursery:
            await etcd.lease_revoke(a.backend.lease_id)
            with trio.fail_after(10):
                await putting_back.wait()

            async def unregister() -> None:
                removed.append(await a.unregister("svc", "x"))

            nursery.start_soon(unregister)
            await trio.testing.wait_all_tasks_blocked()
            assert removed == []  # held back until the put-back of x is done
            go_on.set()
            with trio.fail_after(10):
                while not removed:  # noqa: ASYNC110 -- a result, not an event
                    await trio.sleep(0.01)
                await eventually(lambda: a.health_check().ok)
                await a.sync()
        # The delete came after the put-back, so it removed what was put back.
        assert removed == [True]
        assert ("svc", "x") not in a
        assert await etcd.get(prefix + 'reg/["svc","x"]') is None
        assert [(str(e.kind), e.name, e.reason) for e in events] == [
            ("unregistered", "x", "explicit")
        ]
        assert a.health_check().details["entries_owned"] == 0
