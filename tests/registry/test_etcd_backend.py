"""The etcd registry backend: what only a shared, remote registry can show.

Every test runs against the session's etcd member (``etcd_endpoints``) under
a prefix of its own, on the real clock with bounded waits. Two "instances" of
a registry are two ``open_registry(backend="etcd")`` on the same prefix: two
clients, two leases, two local views. The conformance suite (the other
``test_conformance_*`` files) runs on etcd too; this file covers what it
cannot: several instances, leases, JSON-only values, migration, auth, TLS.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from foundation import errors, telemetry
from foundation.etcd import EtcdClient, open_etcd_client
from foundation.registry import (
    EtcdBackend,
    Registration,
    Registry,
    RegistryEvent,
    open_etcd_backend,
    open_registry,
)

pytestmark = pytest.mark.etcd

TTL = 10


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex}/"


@pytest.fixture
def open_instance(etcd_endpoints: list[str], prefix: str) -> Callable[..., Any]:
    """``open_instance(**kw)``: one more instance of this test's registry (an async CM)."""

    def opener(**kwargs: Any) -> Any:
        options: dict[str, Any] = {
            "endpoints": etcd_endpoints,
            "prefix": prefix,
            "ttl": TTL,
            "partitions": 2,
        }
        options.update(kwargs)
        return open_registry(backend="etcd", **options)

    return opener


@pytest.fixture
async def etcd(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    """A plain client for looking behind the registry's back."""
    async with open_etcd_client(etcd_endpoints) as client:
        yield client


async def keys_under(client: EtcdClient, prefix: str, part: str = "") -> list[bytes]:
    result = await client.range(prefix + part, prefix=True, keys_only=True)
    return [kv.key for kv in result.kvs]


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Poll ``check`` (a view updated by another task) until true, at most ``timeout`` s."""
    with trio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 -- polling a view, not waiting on an event
            await trio.sleep(0.01)


def view(registry: Registry) -> list[tuple[Any, ...]]:
    regs = sorted(
        (repr(r.namespace), repr(r.name), json.dumps(r.value), json.dumps(dict(r.metadata)))
        for r in registry.registrations()
    )
    members = sorted(
        (repr(m.namespace), repr(m.name), json.dumps(m.value), repr(m.owner))
        for m in registry.backend.memberships()
    )
    return [*regs, *members]


# -- two instances -------------------------------------------------------------------


async def test_two_instances_race_exactly_one_wins(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        winners: list[tuple[str, int]] = []
        losers: list[errors.AlreadyRegistered] = []

        async def contender(registry: Registry, side: str, i: int) -> None:
            try:
                await registry.register("svc", "leader", f"{side}{i}", owner=(side, i))
            except errors.AlreadyRegistered as exc:
                losers.append(exc)
            else:
                winners.append((side, i))

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in range(25):
                    nursery.start_soon(contender, a, "a", i)
                    nursery.start_soon(contender, b, "b", i)
            await a.sync()
            await b.sync()
        assert len(winners) == 1
        assert len(losers) == 49
        side, i = winners[0]
        for registry in (a, b):
            got = registry.lookup_with_metadata("svc", "leader")
            assert got.value == f"{side}{i}"
            assert got.owner == (side, i)
        for exc in losers:
            assert exc.holder.value == f"{side}{i}"


async def test_each_sees_the_other_after_sync(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "from-a", {"n": 1}, {"role": "db"}, owner="a")
        await b.register("svc", "from-b", [1, 2], owner=("b", 1))
        await a.join("svc", "workers", "a1")
        await b.join("svc", "workers", "b1")
        with trio.fail_after(5):
            await a.sync()
            await b.sync()
        for registry in (a, b):
            assert registry.lookup("svc", "from-a") == {"n": 1}
            assert dict(registry.metadata("svc", "from-a")) == {"role": "db"}
            assert registry.lookup_with_metadata("svc", "from-b").owner == ("b", 1)
            assert registry.lookup("svc", "from-b") == [1, 2]
            assert sorted(m.value for m in registry.members("svc", "workers")) == ["a1", "b1"]
        assert view(a) == view(b)


async def test_each_sees_the_other_within_a_second_without_sync(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "x", 1)
        await eventually(lambda: b.get("svc", "x") == 1, timeout=1)
        await b.update_metadata("svc", "x", {"touched": "b"})
        await eventually(lambda: dict(a.metadata("svc", "x")) == {"touched": "b"}, timeout=1)
        assert await b.unregister("svc", "x")
        await eventually(lambda: ("svc", "x") not in a, timeout=1)


async def test_watch_sees_the_other_instance(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        async with b.watch("svc") as events:
            await a.register("svc", "x", 1, owner="o")
            await a.update_metadata("svc", "x", {"v": 2})
            await a.join("svc", "g", "m")
            await a.unregister_owner("o")
            got: list[RegistryEvent] = []
            with trio.fail_after(5):
                while len(got) < 4:
                    got.append(await events.__anext__())
        assert [(str(e.kind), e.name) for e in got] == [
            ("registered", "x"),
            ("updated", "x"),
            ("joined", "g"),
            ("unregistered", "x"),
        ]
        assert got[0].owner == "o"


async def test_the_writer_sees_its_write_at_once(open_instance: Any) -> None:
    async with open_instance() as a:
        for i in range(20):
            await a.register("svc", i, i)
            assert a.lookup("svc", i) == i  # no sync: applied when register returns
            await a.join("svc", "g", i)
            assert a.member_count("svc", "g") == i + 1


async def test_closing_one_removes_its_entries_from_the_others_view(open_instance: Any) -> None:
    async with open_instance() as b:
        async with open_instance() as a:
            await a.register("svc", "a-name", 1)
            await a.join("svc", "g", "a-member")
            await b.register("svc", "b-name", 2)
            await b.sync()
            assert b.lookup("svc", "a-name") == 1
        # a closed: its lease was revoked, so its keys went at once
        await eventually(lambda: ("svc", "a-name") not in b, timeout=1)
        await eventually(lambda: b.member_count("svc", "g") == 0, timeout=1)
        assert b.lookup("svc", "b-name") == 2
        # and the name is free for b
        await b.register("svc", "a-name", "mine now")


async def test_killed_instance_lease_expires_and_its_entries_go(
    open_instance: Any, etcd_endpoints: list[str], prefix: str
) -> None:
    code = textwrap.dedent(
        f"""
        import trio
        from foundation.registry import open_registry

        async def main():
            async with open_registry(
                backend="etcd", endpoints={etcd_endpoints!r}, prefix={prefix!r}, ttl=1
            ) as registry:
                await registry.register("svc", "doomed", 1)
                await registry.join("svc", "g", "doomed-member")
                print("ready", flush=True)
                await trio.sleep_forever()

        trio.run(main)
        """
    )
    async with open_instance() as b:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            with trio.fail_after(30):
                line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line.strip() == b"ready", proc.stderr.read() if proc.stderr else b""
            await b.sync()
            assert b.lookup("svc", "doomed") == 1
            assert b.member_count("svc", "g") == 1
            proc.send_signal(signal.SIGKILL)  # no revoke: only the TTL can free the keys
            await trio.to_thread.run_sync(proc.wait)
            # etcd raises a TTL of 1 to its minimum (4 s with the harness' timings)
            await eventually(lambda: ("svc", "doomed") not in b, timeout=20)
            await eventually(lambda: b.member_count("svc", "g") == 0, timeout=5)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


async def test_lost_lease_entries_come_back_and_its_own_watchers_see_nothing(
    open_instance: Any, etcd: EtcdClient
) -> None:
    telemetry_events: list[tuple[str, dict[str, Any]]] = []

    def handler(event: str, measurements: Any, metadata: Any) -> None:
        telemetry_events.append((event, dict(metadata)))

    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "x", {"v": 1}, {"m": 1}, owner="o")
        await a.join("svc", "g", "member", owner="o")
        await b.sync()
        assert b.lookup("svc", "x") == {"v": 1}
        old_lease = a.backend.lease_id
        assert a.health_check().details["lease_id"] == old_lease
        a_events: list[RegistryEvent] = []
        b_events: list[RegistryEvent] = []
        with telemetry.attached("test-lease", "foundation.registry.lease", handler):
            async with a.watch() as a_watch, b.watch("svc") as b_watch:

                async def collect_a() -> None:
                    async for event in a_watch:
                        a_events.append(event)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(collect_a)
                    # As if a's keepalive had stopped: another client revokes its lease.
                    await etcd.lease_revoke(old_lease)
                    with trio.fail_after(10):
                        # b saw a's entries go ...
                        while len(b_events) < 2:
                            b_events.append(await b_watch.__anext__())
                        # ... and come back under a's new lease
                        while len(b_events) < 4:
                            b_events.append(await b_watch.__anext__())
                        await eventually(lambda: a.health_check().ok, timeout=10)
                        await a.sync()
                    nursery.cancel_scope.cancel()
        # a put everything back: its own watchers saw nothing at all
        assert a_events == []
        assert sorted(str(e.kind) for e in b_events[:2]) == ["left", "unregistered"]
        assert sorted(str(e.kind) for e in b_events[2:]) == ["joined", "registered"]
        health = a.health_check()
        assert health.details["lease_losses"] == 1
        assert health.details["lease_id"] != old_lease
        assert health.details["entries_to_put_back"] == 0
        assert health.details["stale_since"] is None
        assert "lease lost 1 time" in health.detail
        names = [event for event, _ in telemetry_events]
        assert names == ["foundation.registry.lease.lost", "foundation.registry.lease.restored"]
        assert telemetry_events[0][1]["lease"] == old_lease
        for registry in (a, b):
            await registry.sync()
            reg = registry.lookup_with_metadata("svc", "x")
            assert (reg.value, dict(reg.metadata), reg.owner) == ({"v": 1}, {"m": 1}, "o")
            assert [m.value for m in registry.members("svc", "g")] == ["member"]
        kv = await etcd.get(a.backend.prefix + 'reg/["svc","x"]')
        assert kv is not None
        assert kv.lease == a.backend.lease_id
        # the re-established entries are a's again: its owner cleanup finds them
        assert await a.unregister_owner("o") == 2
        await b.sync()
        assert ("svc", "x") not in b


async def test_lease_that_cannot_be_replaced_keeps_the_registry_open_and_retrying(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance(ttl=1, timeout=0.5) as a:
        await a.register("svc", "x", 1)
        real_lease = a.backend.client.lease
        refused: list[int] = []

        def no_lease(*args: Any, **kwargs: Any) -> Any:
            refused.append(1)
            raise errors.EtcdUnavailable("test: no member grants a lease", None, None)

        a.backend.client.lease = no_lease  # type: ignore[method-assign]
        waited: list[BaseException] = []
        events: list[RegistryEvent] = []

        async def waiter() -> None:
            try:
                await a.wait_for("svc", "never")
            except errors.RegistryClosed as exc:  # pragma: no cover - the bug this guards
                waited.append(exc)

        async with a.watch() as watch, trio.open_nursery() as nursery:

            async def collect() -> None:
                async for event in watch:
                    events.append(event)

            nursery.start_soon(waiter)
            nursery.start_soon(collect)
            await trio.testing.wait_all_tasks_blocked()
            old_lease = a.backend.lease_id
            await etcd.lease_revoke(old_lease)
            with trio.fail_after(20):
                # Far past the old give-up point (2 * max(ttl, timeout)): still open.
                await eventually(lambda: len(refused) >= 4, timeout=15)
            assert not a.closed
            health = a.health_check()
            assert not health.ok
            assert "lease lost" in health.detail
            assert health.details["entries_to_put_back"] == 1
            assert health.details["stale_since"] is not None
            assert a.lookup("svc", "x") == 1  # reads answer from the view
            with pytest.raises(errors.LeaseExpired):
                await a.register("svc", "y", 1)
            assert await keys_under(etcd, prefix, "reg/") == []
            # Leases come back: the registry heals on its own.
            a.backend.client.lease = real_lease  # type: ignore[method-assign]
            with trio.fail_after(20):
                await eventually(lambda: a.health_check().ok, timeout=15)
                await a.register("svc", "y", 2)
                await a.sync()
            nursery.cancel_scope.cancel()
        assert waited == []
        assert [(str(e.kind), e.registration.name) for e in events] == [("registered", "y")]
        assert a.backend.lease_id != old_lease
        assert sorted(await keys_under(etcd, prefix, "reg/")) == [
            (prefix + 'reg/["svc","x"]').encode(),
            (prefix + 'reg/["svc","y"]').encode(),
        ]
        assert a.health_check().details["stale_since"] is None


async def test_lost_lease_name_taken_meanwhile_is_dropped(
    open_instance: Any, etcd: EtcdClient
) -> None:
    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "contested", "a")
        await a.register("svc", "kept", "a")
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
        lease = a.backend.lease_id
        async with b.watch("svc") as events:
            await etcd.lease_revoke(lease)
            with trio.fail_after(5):
                while True:
                    ev = await events.__anext__()
                    if ev.kind == "unregistered" and ev.name == "contested":
                        break
        await b.register("svc", "contested", "b")
        taken.set()
        await eventually(lambda: a.health_check().ok and a.backend.lease_id != lease, 10)
        for registry in (a, b):
            await registry.sync()
            assert registry.lookup("svc", "contested") == "b"
            assert registry.lookup("svc", "kept") == "a"
        assert a.health_check().details["entries_owned"] == 1


async def test_health_details(open_instance: Any, etcd_endpoints: list[str]) -> None:
    async with open_instance() as a:
        await a.register("svc", "x", 1)
        await a.sync()
        health = a.health_check()
        assert health.ok
        assert health.backend == "etcd"
        details = health.details
        assert details["endpoint"] == etcd_endpoints[0]
        assert details["lease_id"] == a.backend.lease_id != 0
        assert details["watch_revision"] > 0
        assert details["lease_losses"] == 0
        assert details["last_error"] is None
        assert f"{a.backend.lease_id:x}" in health.detail
    health = a.health_check()
    assert not health.ok
    assert "closed" in health.detail


# -- values, keys, owners -----------------------------------------------------------


async def test_values_are_json_round_tripped(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        reg = await a.register("svc", "t", (1, (2, "x")), {"tags": ("a", "b"), "n": 1.5})
        assert reg.value == [1, [2, "x"]]
        assert dict(reg.metadata) == {"tags": ["a", "b"], "n": 1.5}
        await b.sync()
        for registry in (a, b):
            assert registry.lookup("svc", "t") == [1, [2, "x"]]  # the writer's reads too
            assert registry.metadata("svc", "t")["tags"] == ["a", "b"]
        # a list literal finds the tuple that was stored
        assert [r.name for r in b.select("svc", where={"tags": ("eq", ["a", "b"])})] == ["t"]
        # re-registering the tuple is the same value
        again = await b.register("svc", "t", (1, (2, "x")), {"gen": 2})
        assert dict(again.metadata) == {"gen": 2}


@pytest.mark.parametrize(
    "bad",
    [
        {1, 2},
        object(),
        b"bytes",
        math.nan,
        math.inf,
        {1: "int key"},
        {"nested": [{"deep": {2: "x"}}]},
        [1, {"f": lambda: None}],
        Registration,
    ],
    ids=["set", "object", "bytes", "nan", "inf", "int-key", "nested-int-key", "func", "class"],
)
async def test_non_json_value_refused_nothing_written(
    open_instance: Any, etcd: EtcdClient, prefix: str, bad: Any
) -> None:
    async with open_instance() as a:
        with pytest.raises(errors.InvalidValue) as info:
            await a.register("svc", "bad", bad)
        assert isinstance(info.value, TypeError)
        assert "JSON" in str(info.value)
        with pytest.raises(errors.InvalidValue):
            await a.join("svc", "g", bad)
        results = await a.register_many([("svc", "ok", 1), ("svc", "bad", bad)])
        assert isinstance(results[0], Registration)
        assert isinstance(results[1], errors.InvalidValue)
        with pytest.raises(errors.InvalidMetadata):
            await a.register("svc", "bad-md", 1, {"k": bad})
        with pytest.raises(errors.InvalidMetadata):
            await a.update_metadata("svc", "ok", {"k": bad})
        assert await a.leave("svc", "g", bad) is False
        assert a.names("svc") == ["ok"]
        assert await keys_under(etcd, prefix, "reg/") == [f'{prefix}reg/["svc","ok"]'.encode()]
        assert await keys_under(etcd, prefix, "grp/") == []


async def test_entry_too_large_refused(open_instance: Any, etcd: EtcdClient, prefix: str) -> None:
    async with open_instance() as a:
        with pytest.raises(errors.InvalidValue) as info:
            await a.register("svc", "huge", "x" * 2_000_000)
        assert "bytes" in str(info.value)
        with pytest.raises(errors.InvalidMetadata):
            await a.register("svc", "huge", 1, {"blob": "x" * 2_000_000})
        assert await keys_under(etcd, prefix, "reg/") == []
        # just under the limit works, and other instances get it through the watch
        big = "y" * 1_200_000
        await a.register("svc", "big", big)
        async with open_instance() as b:
            assert b.lookup("svc", "big") == big


@pytest.mark.parametrize(
    "key",
    [
        (1.5, "name"),
        ("ns", None),
        ("ns", True),
        ("ns", b"bytes"),
        (frozenset({"a"}), "name"),
        ("ns", ("a", 1.5)),
        (("nested", (None,)), "x"),
    ],
    ids=["float", "none", "bool", "bytes", "frozenset", "tuple-float", "nested-none"],
)
async def test_non_portable_keys_refused(
    open_instance: Any, etcd: EtcdClient, prefix: str, key: tuple[Any, Any]
) -> None:
    async with open_instance() as a:
        for write in (
            lambda: a.register(*key, 1),
            lambda: a.update_metadata(*key, {}),
            lambda: a.join(*key, 1),
            lambda: a.unregister(*key),
            lambda: a.leave(*key, 1),
        ):
            with pytest.raises(errors.InvalidKey) as info:
                await write()
            assert "portable" in str(info.value)
        [result] = await a.register_many([(*key, 1)])
        assert isinstance(result, errors.InvalidKey)
        # reads just do not find it
        assert a.get(*key) is None
        assert await keys_under(etcd, prefix, "reg/") == []


@pytest.mark.parametrize("owner", [1.5, b"x", frozenset(), ("a", None), True])
async def test_non_portable_owner_refused(open_instance: Any, owner: Any) -> None:
    async with open_instance() as a:
        with pytest.raises(errors.InvalidKey) as info:
            await a.register("svc", "x", 1, owner=owner)
        assert "owner" in str(info.value)
        with pytest.raises(errors.InvalidKey):
            await a.join("svc", "g", 1, owner=owner)
        assert a.count() == 0


async def test_key_encoding_is_documented(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance() as a:
        await a.register(("test", 3), ("a", ("b", 1)), {"v": 1}, {"m": True}, owner=("o", 1))
        [kv] = (await etcd.range(prefix + "reg/", prefix=True)).kvs
        assert kv.key == f'{prefix}reg/[["test",3],["a",["b",1]]]'.encode()
        body = json.loads(kv.value)
        assert body == {
            "v": {"v": 1},
            "m": {"m": True},
            "o": ["o", 1],
            "i": a.backend.instance_id,
        }
        assert kv.lease == a.backend.lease_id


async def test_foreign_keys_under_the_prefix_are_ignored(
    open_instance: Any, etcd: EtcdClient, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await etcd.put(prefix + "reg/not json", "x")
    await etcd.put(prefix + 'reg/["ns","n"]', "not json either")
    await etcd.put(prefix + "elsewhere/key", "{}")
    async with open_instance() as a:
        assert a.count() == 0
        await etcd.put(prefix + 'reg/["ns",1.5]', '{"v":1}')  # a float is no key of ours
        await etcd.put(prefix + 'grp/["ns","g"]', '{"v":1}')  # too short for a member
        await a.register("ns", "real", 1)
        await a.sync()
        assert a.registrations() == [a.lookup_with_metadata("ns", "real")]
        assert a.health_check().ok
    assert "did not write" in caplog.text


# -- owners and instances -------------------------------------------------------------


async def test_unregister_owner_removes_only_this_instances_entries(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        await a.register("svc", "a1", 1, owner="worker")
        await a.join("svc", "g", "a", owner="worker")
        await b.register("svc", "b1", 1, owner="worker")
        await b.join("svc", "g", "b", owner="worker")
        await a.sync()
        assert await a.unregister_owner("worker") == 2
        await b.sync()
        for registry in (a, b):
            assert registry.names("svc") == ["b1"]
            assert [m.value for m in registry.members("svc", "g")] == ["b"]


async def test_reregistration_from_another_instance_keeps_the_holder(open_instance: Any) -> None:
    async with open_instance() as b:
        async with open_instance() as a:
            await a.register("svc", "x", "v", {"gen": 1}, owner="o")
            await b.sync()
            reg = await b.register("svc", "x", "v", {"gen": 2}, owner="o")  # same value and owner
            assert dict(reg.metadata) == {"gen": 2}
            await a.sync()
            assert dict(a.metadata("svc", "x")) == {"gen": 2}
            with pytest.raises(errors.AlreadyRegistered):
                await b.register("svc", "x", "v", owner="other")
        # still bound to a's lease: gone with a
        await eventually(lambda: ("svc", "x") not in b, timeout=2)


async def test_registered_block_uses_a_portable_owner(open_instance: Any) -> None:
    async with open_instance() as a, open_instance() as b:
        async with a.registered("svc", "scoped", 1) as reg:
            owner = reg.owner
            assert isinstance(owner, tuple)
            assert owner[0] == "foundation.scope"
            await b.sync()
            assert b.lookup_with_metadata("svc", "scoped").owner == owner
        await b.sync()
        assert ("svc", "scoped") not in b


# -- the async-only write side ----------------------------------------------------------


async def test_nowait_writes_raise_backend_is_async(open_instance: Any) -> None:
    async with open_instance() as a:
        for call in (
            lambda: a.register_nowait("svc", "x", 1),
            lambda: a.unregister_nowait("svc", "x"),
            lambda: a.update_metadata_nowait("svc", "x", {}),
            lambda: a.unregister_owner_nowait("o"),
            lambda: a.join_nowait("svc", "g", 1),
            lambda: a.leave_nowait("svc", "g", 1),
        ):
            with pytest.raises(errors.BackendIsAsync) as info:
                call()
            assert isinstance(info.value, trio.WouldBlock)
            assert "await registry." in str(info.value)
        assert a.count() == 0


async def test_closed_registry_refuses_writes_and_keeps_reads(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance() as a:
        await a.register("svc", "x", 1)
        await a.aclose()
        assert a.closed
        for write in (
            lambda: a.register("svc", "y", 1),
            lambda: a.update_metadata("svc", "x", {}),
            lambda: a.join("svc", "g", 1),
            lambda: a.register_many([("svc", "z", 1)]),
        ):
            with pytest.raises(errors.RegistryClosed):
                await write()
        assert await a.unregister("svc", "x") is False
        assert a.lookup("svc", "x") == 1
        await a.sync()  # returns at once: the view is final
        # aclose() waited for the revoke: the key is gone from etcd already
        assert await keys_under(etcd, prefix) == []


async def test_sync_sees_writes_made_by_raw_clients_too(
    open_instance: Any, etcd: EtcdClient, prefix: str
) -> None:
    async with open_instance() as a:
        body = json.dumps({"v": "raw", "m": {}, "o": None, "i": "someone"})
        await etcd.put(prefix + 'reg/["svc","raw"]', body)
        await a.sync()
        assert a.lookup("svc", "raw") == "raw"
        await etcd.delete(prefix + 'reg/["svc","raw"]')
        await a.sync()
        assert ("svc", "raw") not in a


async def test_member_join_order_across_instances(open_instance: Any) -> None:
    async with open_instance() as a:
        for i in range(30):
            await a.join("svc", "g", f"m{i}", {"i": i})
        async with open_instance() as late:  # loads them with one range
            assert [m.value for m in late.members("svc", "g")] == [f"m{i}" for i in range(30)]
            await a.join("svc", "g", "m3", {"i": "again"})  # an update keeps the place
            await late.sync()
            members = late.members("svc", "g")
            assert [m.value for m in members] == [f"m{i}" for i in range(30)]
            assert members[3].metadata["i"] == "again"


async def test_compacted_watch_reloads(
    open_instance: Any, etcd: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_instance() as a:
        await a.register("svc", "gone-later", 1)
        await a.register("svc", "changed-later", 1, {"v": 1})
        release = trio.Event()
        real_watch = EtcdClient.watch

        class StalledWatch:
            """A watch that hangs until released, then breaks (a member went away)."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                pass

            async def __aenter__(self) -> StalledWatch:
                return self

            async def __aexit__(self, *exc: object) -> None:
                pass

            def __aiter__(self) -> StalledWatch:
                return self

            async def __anext__(self) -> Any:
                await release.wait()
                raise errors.EtcdUnavailable("test: the watch broke", None, None)

        monkeypatch.setattr(EtcdClient, "watch", lambda self, *a, **k: StalledWatch())
        async with open_instance() as b:
            monkeypatch.setattr(EtcdClient, "watch", real_watch)
            assert b.lookup("svc", "gone-later") == 1
            async with b.watch("svc") as events:
                # while b hears nothing, a changes things and etcd compacts them away
                await a.unregister("svc", "gone-later")
                await a.update_metadata("svc", "changed-later", {"v": 2})
                await a.register("svc", "new", 3)
                await a.register("svc", "short-lived", 4)
                await a.unregister("svc", "short-lived")
                revision = (await etcd.range("x")).header.revision
                await etcd.compact(revision)
                release.set()
                with trio.fail_after(10):
                    await b.sync()
                    got = [await events.__anext__() for _ in range(3)]
            assert sorted((str(e.kind), e.name) for e in got) == [
                ("registered", "new"),
                ("unregistered", "gone-later"),
                ("updated", "changed-later"),
            ]
            assert view(a) == view(b)
            health = b.health_check()
            assert health.ok, health.detail


# -- migrate ------------------------------------------------------------------------------


async def populate(registry: Registry) -> None:
    for i in range(150):
        await registry.register("svc", i, {"i": i}, {"role": "db" if i % 2 else "web"}, owner=i % 3)
    await registry.register(("svc", "b"), ("tuple", 1), "t")
    for i in range(10):
        await registry.join("svc", "g", f"m{i}", {"i": i}, owner=i % 3)


async def test_migrate_local_to_etcd(
    etcd_endpoints: list[str], prefix: str, open_instance: Any
) -> None:
    async with (
        open_etcd_backend(etcd_endpoints, prefix=prefix, ttl=TTL) as backend,
        open_registry("python", indexes=("role",)) as registry,
    ):
        await populate(registry)
        before = view(registry)
        members_before = [(m.value, m.owner) for m in registry.members("svc", "g")]
        async with registry.watch("svc") as events:
            await registry.migrate(backend)
            assert registry.backend is backend
            assert registry.backend_name == "etcd"
            assert view(registry) == before
            assert [(m.value, m.owner) for m in registry.members("svc", "g")] == members_before
            assert len(registry.select("svc", where={"role": "db"})) == 75
            # writes now go to etcd, and the watch kept working
            await registry.register("svc", "after", 1)
            ev = await events.__anext__()
            assert (str(ev.kind), ev.name) == ("registered", "after")
        with pytest.raises(errors.BackendIsAsync):
            registry.register_nowait("svc", "nowait", 1)
        async with open_instance() as other:
            assert other.lookup("svc", "after") == 1
            assert other.lookup(("svc", "b"), ("tuple", 1)) == "t"
            assert [m.value for m in other.members("svc", "g")] == [f"m{i}" for i in range(10)]
        assert await registry.unregister_owner(1) == 50 + 3


async def test_migrate_local_to_etcd_with_writes_during_the_copy(
    etcd_endpoints: list[str], prefix: str
) -> None:
    async with (
        open_etcd_backend(etcd_endpoints, prefix=prefix, ttl=TTL) as backend,
        open_registry("python") as registry,
    ):
        await populate(registry)
        done = trio.Event()
        # bound before the migration: goes to the old backend until it closes
        stale_nowait = registry.register_nowait
        stale_written: list[int] = []
        async_written: list[int] = []

        async def async_writer() -> None:
            # waits while migrate() copies, then writes into etcd
            i = 0
            while not done.is_set():
                await registry.register("late", i, i)
                if i % 3 == 0:
                    await registry.unregister("late", i - 1)
                if i == 5:
                    await registry.unregister_owner(2)
                await registry.join("late", "g", i)
                async_written.append(i)
                i += 1
                await trio.lowlevel.checkpoint()

        async def stale_writer() -> None:
            for i in range(3000):
                try:
                    stale_nowait("stale", i, i)
                except errors.RegistryClosed:
                    return  # the old backend closed at the switch
                stale_written.append(i)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(async_writer)
            nursery.start_soon(stale_writer)
            await trio.sleep(0.01)
            with trio.fail_after(30):
                await registry.migrate(backend)
            with pytest.raises(errors.BackendIsAsync):
                registry.register_nowait("x", "y", 1)
            await trio.sleep(0.05)
            done.set()
        assert registry.backend is backend
        assert async_written
        assert stale_written
        # every write that returned is in etcd
        assert sorted(registry.names("stale")) == stale_written
        async with open_registry(backend="etcd", endpoints=etcd_endpoints, prefix=prefix) as other:
            assert view(other) == view(registry)


async def test_migrate_to_etcd_refuses_non_json_and_writes_nothing(
    etcd_endpoints: list[str], prefix: str, etcd: EtcdClient
) -> None:
    async with (
        open_etcd_backend(etcd_endpoints, prefix=prefix, ttl=TTL) as backend,
        open_registry("python") as registry,
    ):
        await registry.register("svc", "fine", 1)
        await registry.register("svc", "bad", {1, 2})
        old = registry.backend
        with pytest.raises(errors.InvalidValue):
            await registry.migrate(backend)
        assert registry.backend is old
        assert registry.lookup("svc", "bad") == {1, 2}
        assert not backend.closed
        assert await keys_under(etcd, prefix, "reg/") == []


async def test_migrate_etcd_to_local(open_instance: Any) -> None:
    async with open_instance() as observer:
        async with open_instance() as registry:
            await populate(registry)
            before = view(registry)
            old = registry.backend
            await registry.migrate("python")
            assert registry.backend_name == "python"
            assert view(registry) == before
            assert old.closed
            registry.register_nowait("svc", "local-now", 1)  # a local backend again
            # the etcd entries went with the old backend's lease
            await eventually(lambda: observer.count() == 0, timeout=5)
        assert observer.member_count("svc", "g") == 0


async def test_migrate_etcd_to_etcd(
    etcd_endpoints: list[str], prefix: str, open_instance: Any
) -> None:
    other_prefix = f"test/{uuid.uuid4().hex}/"
    async with (
        open_instance() as registry,
        open_etcd_backend(etcd_endpoints, prefix=other_prefix) as target,
    ):
        await populate(registry)
        before = view(registry)
        await registry.migrate(target)
        assert registry.backend is target
        assert view(registry) == before


# -- security -------------------------------------------------------------------------------


async def test_auth_wrong_password(etcd_auth: Any) -> None:
    with pytest.raises(errors.EtcdAuthError):
        async with open_registry(
            backend="etcd",
            endpoints=etcd_auth.endpoints,
            prefix="alice/x/",
            username="alice",
            password="wrong",
        ):
            pytest.fail("opened with a wrong password")  # pragma: no cover


async def test_auth_prefix_not_permitted(etcd_auth: Any) -> None:
    user, password = etcd_auth.credentials("alice")
    prefix = f"bob/{uuid.uuid4().hex}/"
    with pytest.raises(errors.EtcdPermissionDenied):
        async with open_registry(
            backend="etcd",
            endpoints=etcd_auth.endpoints,
            prefix=prefix,
            username=user,
            password=password,
        ):
            pytest.fail("opened on a prefix alice may not touch")  # pragma: no cover
    # nothing was written under bob's prefix
    root, root_password = etcd_auth.credentials("root")
    async with open_etcd_client(etcd_auth.endpoints, username=root, password=root_password) as c:
        assert (await c.range(prefix, prefix=True, count_only=True)).count == 0


async def test_auth_own_prefix_works(etcd_auth: Any) -> None:
    user, password = etcd_auth.credentials("alice")
    options = {
        "backend": "etcd",
        "endpoints": etcd_auth.endpoints,
        "prefix": f"alice/{uuid.uuid4().hex}/",
        "username": user,
        "password": password,
    }
    async with open_registry(**options) as a, open_registry(**options) as b:
        await a.register("svc", "x", 1, owner="o")
        await a.join("svc", "g", "m")
        await b.sync()
        assert b.lookup("svc", "x") == 1
        assert b.member_count("svc", "g") == 1
        assert await a.unregister_owner("o") == 1
        await b.sync()
        assert ("svc", "x") not in b


async def test_tls_with_client_certificate(etcd_tls: Any) -> None:
    files = etcd_tls.files
    prefix = f"test/{uuid.uuid4().hex}/"
    options = {
        "backend": "etcd",
        "endpoints": etcd_tls.endpoints,
        "prefix": prefix,
        "ca_cert": files.ca_cert,
        "client_cert": files.client_cert,
        "client_key": files.client_key,
    }
    async with open_registry(**options) as a, open_registry(**options) as b:
        await a.register("svc", "secure", {"tls": True})
        await b.sync()
        assert b.lookup("svc", "secure") == {"tls": True}
    assert etcd_tls.endpoints[0].startswith("https://")


# -- configuration ---------------------------------------------------------------------------


async def test_open_registry_etcd_needs_endpoints() -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with open_registry(backend="etcd"):
            pass  # pragma: no cover
    assert "endpoints" in str(info.value)


async def test_connection_keywords_only_for_etcd(etcd_endpoints: list[str]) -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with open_registry(backend="python", endpoints=etcd_endpoints):
            pass  # pragma: no cover
    assert "etcd" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"ttl": 0}, "ttl"), ({"ttl": 1.5}, "ttl"), ({"prefix": b"x/"}, "prefix")],
)
async def test_bad_etcd_options(
    etcd_endpoints: list[str], kwargs: dict[str, Any], word: str
) -> None:
    with pytest.raises(errors.ConfigError) as info:
        async with open_registry(backend="etcd", endpoints=etcd_endpoints, **kwargs):
            pass  # pragma: no cover
    assert word in str(info.value)


async def test_unreachable_endpoint_fails_at_open(unused_port: int) -> None:
    with trio.fail_after(10), pytest.raises(errors.EtcdUnavailable):
        async with open_registry(
            backend="etcd", endpoints=[f"http://127.0.0.1:{unused_port}"], timeout=0.5
        ):
            pass  # pragma: no cover


async def test_backend_is_an_etcd_backend(open_instance: Any) -> None:
    async with open_instance() as a:
        backend = a.backend
        assert isinstance(backend, EtcdBackend)
        assert backend.is_async
        assert backend.name == "etcd"
        assert a.partitions == 2
        assert a.names.__self__ is backend.read_table  # type: ignore[attr-defined]
        assert backend.prefix.startswith("test/")
        assert "EtcdBackend" in repr(backend)
