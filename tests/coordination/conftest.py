"""The coordinator matrix: one conformance suite for every implementation.

``coordinator`` is parametrised over implementations with the ids below:

* ``local`` -- :func:`open_local_coordinator`;
* ``etcd`` -- :func:`open_etcd_coordinator` on the session's etcd member
  (``etcd_endpoints`` from ``_etcd_fixtures``) with a prefix of its own per
  test (``test/<uuid>/``); marked ``etcd`` (deselect with ``-m "not etcd"``),
  skipped when no etcd binary is found (failing under
  ``FOUNDATION_REQUIRE_ETCD=1``).

Tests that control time with ``autojump_clock`` (a MockClock also jumps
while a task waits on a socket, so it cannot drive etcd) or look at local
internals are marked ``local_only`` and skip on etcd; their behaviours are
checked on every coordinator with the real clock in ``test_etcd_realtime.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from foundation.coordination import (
    Coordinator,
    EtcdCoordinator,
    open_etcd_coordinator,
    open_local_coordinator,
)

_COORDINATORS = [
    pytest.param("local", id="local"),
    pytest.param("etcd", marks=pytest.mark.etcd, id="etcd"),
]

#: Coordinators whose tests run on the real clock against a server.
_REMOTE = frozenset({"etcd"})


@pytest.fixture(params=_COORDINATORS)
def coordinator_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name in _REMOTE and request.node.get_closest_marker("local_only"):
        pytest.skip(f"local-only behaviour (mock clock or local internals), not on {name}")
    return name


@pytest.fixture
async def coordinator(
    coordinator_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[Coordinator]:
    """A fresh coordinator of the implementation under test, closed after the test."""
    if coordinator_name == "etcd":
        endpoints: list[str] = request.getfixturevalue("etcd_endpoints")
        async with open_etcd_coordinator(
            endpoints, prefix=f"test/{uuid.uuid4().hex}/", ttl=5
        ) as coord:
            yield coord
        return
    assert coordinator_name == "local"
    async with open_local_coordinator("test-coordination") as coord:
        yield coord


@pytest.fixture
def coordinator_clock(coordinator_name: str) -> trio.testing.MockClock | None:
    """The clock of a portable timing test: autojump locally, the real clock on etcd.

    pytest-trio runs a test on the Clock one of its arguments holds; on etcd
    this is None, so the test runs on the real clock (autojump would fire
    while a task waits on a socket).
    """
    if coordinator_name in _REMOTE:
        return None
    return trio.testing.MockClock(autojump_threshold=0)


#: ``await queued(subtree, name, count)``: see :func:`queued`.
Queued = Callable[[str, str, int], Awaitable[None]]
#: ``await queue_keys(subtree, name)``: see :func:`queue_keys`.
QueueKeys = Callable[[str, str], Awaitable[int | None]]


@pytest.fixture
def queued(coordinator: Coordinator) -> Queued:
    """``await queued(subtree, name, count)``: until ``count`` requests are queued on ``name``.

    ``subtree``: ``"semaphore"`` or ``"rwlock"``; the count takes in holders
    and waiters. Locally every task that asked is queued once all tasks are
    blocked; on etcd, poll the queue's keys (each request is one key).
    """

    async def wait(subtree: str, name: str, count: int) -> None:
        if not isinstance(coordinator, EtcdCoordinator):
            await trio.testing.wait_all_tasks_blocked()
            return
        directory = f"{coordinator.prefix}{subtree}/{name}/"
        with trio.fail_after(20):
            while True:
                found = await coordinator.client.range(directory, prefix=True, count_only=True)
                if found.count == count:
                    return
                await trio.sleep(0.01)

    return wait


@pytest.fixture
def queue_keys(coordinator: Coordinator) -> QueueKeys:
    """``await queue_keys(subtree, name)``: the etcd queue's key count (None locally)."""

    async def count(subtree: str, name: str) -> int | None:
        if not isinstance(coordinator, EtcdCoordinator):
            return None
        directory = f"{coordinator.prefix}{subtree}/{name}/"
        found = await coordinator.client.range(directory, prefix=True, count_only=True)
        return found.count

    return count
