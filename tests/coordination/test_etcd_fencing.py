"""Self-fencing: a holder cut off from etcd stops before its lease can expire on the server.

A coordinator reaches etcd only through a TCP proxy the test can cut: either
``stall`` (connections stay open and nothing passes, as when a switch drops
the packets) or ``refuse`` (connections are closed and new ones refused). A
plain client, never cut, polls the hold's key meanwhile. For every kind of
hold (lock, campaign, semaphore slot, read and write hold) the block must
end with ``LockLost`` / ``LeadershipLost`` about ``margin`` (``max(1 s,
TTL/5)``, 1 s at TTL 5) before the lease's ``expires_at`` (send time of the
last acknowledged keepalive + TTL), and so while the server still has the
key; the key goes later, when etcd expires the lease. A holder that can
reach etcd again when it is fenced deletes its key at once.

The ``expires_at`` a test compares with is read from the hold's session
(a coordinator internal): the promise is about that deadline.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from foundation.coordination import (
    EtcdCoordinator,
    EtcdHeldLock,
    LeadershipLost,
    LockLost,
    open_etcd_coordinator,
)
from foundation.coordination._etcd_election import EtcdElections
from foundation.coordination._etcd_hold import EtcdHold
from foundation.etcd import EtcdClient, Lease, open_etcd_client

pytestmark = pytest.mark.etcd

LIMIT = 40
TTL = 5
#: max(1 s, TTL / 5)
MARGIN = 1.0
#: Seconds between two reads of the hold's key by the observing client.
POLL = 0.05
#: Seconds a loaded machine may take to deliver the fence's cancellation to the block.
SLACK = 0.5


class CutProxy:
    """Forwards TCP connections to etcd until cut; see the module docstring for the modes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._flowing = trio.Event()
        self._flowing.set()
        self._serving = trio.CancelScope()
        self._conns: set[trio.CancelScope] = set()
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                with self._serving:
                    await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)
                # Refusing: no listener until healed.
                for listener in listeners:
                    await listener.aclose()
                await self._flowing.wait()
                self._serving = trio.CancelScope()
                listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")

    async def _handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._conns.add(scope)
            try:
                async with client:
                    await self._flowing.wait()  # a stalled proxy accepts and forwards nothing
                    try:
                        upstream = await trio.open_tcp_stream(*self._target)
                    except OSError:
                        return
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream)
                        nursery.start_soon(self._pump, upstream, client)
            finally:
                self._conns.discard(scope)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await self._flowing.wait()  # stalled: the bytes stay in the kernel's buffers
                chunk = await source.receive_some(65536)
                if not chunk:
                    break
                await self._flowing.wait()
                await sink.send_all(chunk)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await sink.send_eof()

    def cut(self, mode: str) -> float:
        """Cut now (``"stall"`` or ``"refuse"``); returns the time it was in place."""
        self._flowing = trio.Event()
        if mode == "refuse":
            self._serving.cancel()
            for scope in self._conns:
                scope.cancel()
        else:
            assert mode == "stall", mode
        return trio.current_time()

    def heal(self) -> None:
        self._flowing.set()


@dataclass
class KeyPoll:
    """Reads ``key`` every POLL s through a client that is never cut."""

    client: EtcdClient
    key: bytes
    #: t before the last read that still saw the key (it existed at some moment after).
    last_present: float = 0.0
    #: t after the first read that no longer saw it.
    first_gone: float | None = None
    polls: int = 0
    gone: trio.Event = field(default_factory=trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while self.first_gone is None:
            before = trio.current_time()
            kv = await self.client.get(self.key)
            self.polls += 1
            if kv is not None:
                self.last_present = before
            else:
                self.first_gone = trio.current_time()
                self.gone.set()
            await trio.sleep(POLL)


@dataclass
class Held:
    key: bytes
    lease: Lease


@pytest.fixture
async def raw(etcd_endpoints: list[str]) -> AsyncIterator[EtcdClient]:
    async with open_etcd_client(etcd_endpoints) as client:
        yield client


@pytest.fixture
async def proxied(
    etcd_endpoints: list[str],
) -> AsyncIterator[tuple[EtcdCoordinator, CutProxy]]:
    """A coordinator (TTL 5 s) whose only way to etcd is a proxy the test can cut."""
    url = urlsplit(etcd_endpoints[0])
    assert url.hostname is not None
    assert url.port is not None
    proxy = CutProxy((url.hostname, url.port))
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        async with open_etcd_coordinator(
            [f"http://127.0.0.1:{proxy.port}"],
            prefix=f"test/{uuid.uuid4().hex}/",
            ttl=TTL,
            timeout=2.0,
        ) as coord:
            yield coord, proxy
            proxy.heal()  # let the coordinator's close revoke what is left
        nursery.cancel_scope.cancel()


def _hold_of(held: Any) -> Held:
    assert isinstance(held, EtcdHold)
    return Held(held.key, held._session.lease)


def _enter(coord: EtcdCoordinator, kind: str) -> tuple[AbstractAsyncContextManager[Any], type]:
    if kind == "lock":
        return coord.lock("res"), LockLost
    if kind == "semaphore":
        return coord.semaphore("pool", 2), LockLost
    if kind == "read":
        return coord.rwlock("doc").read(), LockLost
    if kind == "write":
        return coord.rwlock("doc").write(), LockLost
    assert kind == "campaign", kind
    return coord.election("grp").campaign("me"), LeadershipLost


def _held(coord: EtcdCoordinator, kind: str, entered: Any) -> Held:
    if kind != "campaign":
        return _hold_of(entered)
    (me,) = coord._ctx.state(EtcdElections).candidates.values()
    return Held(me.key, me.session.lease)


@asynccontextmanager
async def _inside(
    coord: EtcdCoordinator, kind: str, on_cancel: Callable[[], None] = lambda: None
) -> AsyncIterator[tuple[Held, dict[str, float]]]:
    """Enter a hold of ``kind``; the dict gets ``exit`` (when its block was cancelled)."""
    cm, _ = _enter(coord, kind)
    times: dict[str, float] = {}
    async with cm as entered:
        held = _held(coord, kind, entered)
        try:
            yield held, times
        except trio.Cancelled:
            times["exit"] = trio.current_time()
            times["expires_at"] = held.lease.expires_at
            on_cancel()
            raise


KINDS = ["lock", "campaign", "semaphore", "read", "write"]


@pytest.mark.parametrize(
    ("kind", "mode"),
    [(kind, "stall") for kind in KINDS] + [("lock", "refuse"), ("campaign", "refuse")],
)
async def test_cut_off_holder_stops_before_its_lease_can_expire(
    proxied: tuple[EtcdCoordinator, CutProxy], raw: EtcdClient, kind: str, mode: str
) -> None:
    coord, proxy = proxied
    _, lost = _enter(coord, kind)
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            with pytest.raises(lost):
                async with _inside(coord, kind) as (held, times):
                    assert held.lease.margin == MARGIN
                    poll = KeyPoll(raw, held.key)
                    await nursery.start(poll.run)
                    await trio.sleep(0.2)
                    t_cut = proxy.cut(mode)
                    await trio.sleep(3 * TTL)
                    pytest.fail("the block was never cancelled")
            with trio.fail_after(TTL + 5):
                await poll.gone.wait()
    t_exit = times["exit"]
    # Fenced at expires_at - margin (the scheduler may take a moment to deliver it) ...
    assert times["expires_at"] - MARGIN <= t_exit < times["expires_at"] - MARGIN + SLACK
    # ... which is at most TTL - margin after the cut (the last renewal came before it),
    assert t_exit - t_cut <= TTL - MARGIN + SLACK
    # ... and while the server still had the key: it went later, with the lease.
    assert t_exit < poll.last_present, (t_exit - t_cut, poll.last_present - t_cut)
    assert poll.first_gone is not None
    assert poll.first_gone >= times["expires_at"]


async def test_renewals_move_the_fence_on(
    proxied: tuple[EtcdCoordinator, CutProxy], raw: EtcdClient
) -> None:
    """Held past TTL - margin while etcd answers: never fenced, the deadline keeps moving."""
    coord, _ = proxied
    with trio.fail_after(LIMIT):
        async with coord.lock("res") as held:
            assert isinstance(held, EtcdHeldLock)
            lease = held._session.lease
            first = lease.expires_at
            await trio.sleep(TTL + 1)
            assert not held.lost
            assert lease.expires_at > first + TTL - MARGIN
            assert lease.expires_at - trio.current_time() > MARGIN
        assert await raw.get(held.key) is None


@pytest.mark.parametrize("kind", ["lock", "campaign", "write"])
async def test_fenced_holder_that_reaches_etcd_again_deletes_its_key(
    proxied: tuple[EtcdCoordinator, CutProxy], raw: EtcdClient, kind: str
) -> None:
    """Fenced while cut off, healed as its block is cancelled: the key goes at once."""
    coord, proxy = proxied
    _, lost = _enter(coord, kind)
    with trio.fail_after(LIMIT), pytest.raises(lost):
        async with _inside(coord, kind, on_cancel=proxy.heal) as (held, times):
            proxy.cut("stall")
            await trio.sleep(3 * TTL)
            pytest.fail("the block was never cancelled")
    left = trio.current_time()
    assert left < times["expires_at"], "the key was left to expire"
    assert await raw.get(held.key) is None
    info = await raw.lease_time_to_live(held.lease.id)
    assert info.ttl == -1, f"lease {held.lease.id:x} still lives on the server: {info}"


async def test_lease_id_is_the_lock_keys_lease(
    proxied: tuple[EtcdCoordinator, CutProxy], raw: EtcdClient
) -> None:
    coord, _ = proxied
    with trio.fail_after(LIMIT):
        async with coord.lock("res") as held:
            assert isinstance(held, EtcdHeldLock)
            kv = await raw.get(held.key)
            assert kv is not None
            assert held.lease_id == kv.lease != 0
            assert held.fencing_token == kv.create_revision
        info = await raw.lease_time_to_live(held.lease_id)
        assert info.ttl == -1
