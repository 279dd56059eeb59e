"""NodeUnreachable: what the etcd coordinator's calls raise when no member can be reached.

Opening a coordinator on a port nobody listens on, and calls of a
coordinator whose only way to etcd (a TCP proxy in this test) is cut.
``NodeUnreachable`` is both a ``CoordinationError`` and an
``EtcdUnavailable``, with the client's error as its cause.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from _etcd_harness import free_port
from foundation.coordination import CoordinationError, EtcdCoordinator, open_etcd_coordinator
from foundation.errors import EtcdUnavailable, NodeUnreachable

pytestmark = pytest.mark.etcd

LIMIT = 30
#: Each etcd call's timeout, failover included: how long a call tries before giving up.
CALL_TIMEOUT = 0.5


def check(error: BaseException) -> None:
    assert isinstance(error, NodeUnreachable)
    assert isinstance(error, CoordinationError)
    assert isinstance(error, EtcdUnavailable)
    assert isinstance(error, ConnectionError)
    cause = error.__cause__
    assert isinstance(cause, EtcdUnavailable)
    assert not isinstance(cause, NodeUnreachable)
    assert (error.message, error.code, error.endpoint) == (
        cause.message,
        cause.code,
        cause.endpoint,
    )
    assert error.node == error.endpoint
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is NodeUnreachable
    assert (again.message, again.code, again.endpoint) == (
        error.message,
        error.code,
        error.endpoint,
    )
    assert str(again) == str(error)
    assert "unreachable" in str(error)


@pytest.mark.parametrize("prefix", ["foundation/", ""])
async def test_opening_an_unreachable_coordinator(prefix: str) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with trio.fail_after(LIMIT), pytest.raises(NodeUnreachable) as exc:
        async with open_etcd_coordinator([endpoint], prefix=prefix, timeout=CALL_TIMEOUT):
            pytest.fail("opened a coordinator with no etcd to talk to")
    check(exc.value)
    assert exc.value.node is not None
    assert f"127.0.0.1:{port}" in exc.value.node


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    # A connection the proxy is cutting ends either way: nothing to report.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        async for chunk in source:
            await sink.send_all(chunk)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await sink.send_eof()


async def _proxy(
    target: tuple[str, int], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Forward TCP connections from a free local port to ``target`` until cancelled."""

    async def handle(client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*target)
            except OSError:
                return  # etcd is down: the client sees the connection close
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream)
                nursery.start_soon(_pump, upstream, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port: int = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(handle, listeners)


@pytest.fixture
async def cut_off(etcd_endpoints: list[str]) -> AsyncIterator[EtcdCoordinator]:
    """A coordinator that reached etcd through a proxy, then lost it: the proxy is gone."""
    url = urlsplit(etcd_endpoints[0])
    assert url.hostname is not None
    assert url.port is not None
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await _proxy((url.hostname or "", url.port or 0), task_status=task_status)

        port = await nursery.start(run)
        async with open_etcd_coordinator(
            [f"http://127.0.0.1:{port}"], prefix="test/unreachable/", ttl=5, timeout=CALL_TIMEOUT
        ) as coord:
            assert await coord.counter("c").get() == 0  # reachable, through the proxy
            scope.cancel()  # the cluster is out of reach from now on
            yield coord


async def _use_lock(coord: EtcdCoordinator) -> None:
    async with coord.lock("l"):
        pytest.fail("locked with no etcd to talk to")


async def _use_semaphore(coord: EtcdCoordinator) -> None:
    async with coord.semaphore("s", 2):
        pytest.fail("held a slot with no etcd to talk to")


async def _use_rwlock(coord: EtcdCoordinator) -> None:
    async with coord.rwlock("rw").read():
        pytest.fail("held a read lock with no etcd to talk to")


async def _use_membership(coord: EtcdCoordinator) -> None:
    async with coord.membership("g", "m"):
        pytest.fail("joined a group with no etcd to talk to")


async def _use_campaign(coord: EtcdCoordinator) -> None:
    async with coord.election("e").campaign("me"):
        pytest.fail("elected with no etcd to talk to")


CALLS: dict[str, Callable[[EtcdCoordinator], Awaitable[Any]]] = {
    "lock": _use_lock,
    "lock.acquire": lambda c: c.lock("l").acquire(),
    "lock_status": lambda c: c.lock_status("l"),
    "semaphore": _use_semaphore,
    "rwlock": _use_rwlock,
    "membership": _use_membership,
    "campaign": _use_campaign,
    "leader": lambda c: c.election("e").leader(),
    "barrier": lambda c: c.barrier("b", 2).wait(timeout=5),
    "agree": lambda c: c.agree("a", 1),
    "consensus": lambda c: c.consensus("v", ["a"], 1, timeout=5),
    "counter.add": lambda c: c.counter("c").add(1),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_calls_of_a_coordinator_cut_off_from_etcd(
    cut_off: EtcdCoordinator, call: str
) -> None:
    with trio.fail_after(LIMIT), pytest.raises(NodeUnreachable) as exc:
        await CALLS[call](cut_off)
    check(exc.value)
