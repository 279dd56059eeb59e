"""Semaphores on every coordinator: at most ``limit`` holders, FIFO, tokens, limits, timeouts.

Timing tests take ``coordinator_clock`` (autojump locally, the real clock on
etcd, with bounded waits); ordering on etcd waits for the queue's keys
(``queued``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from foundation.coordination import Coordinator, HeldLock, LockNotHeld, LockTimeout
from foundation.errors import ConfigError, CoordinationError

LIMIT = 30  # seconds: the bound of every wait in these tests

# The conftest fixtures ``queued`` and ``queue_keys``.
Queued = Callable[[str, str, int], Awaitable[None]]
QueueKeys = Callable[[str, str], Awaitable[int | None]]


async def test_at_most_limit_holders(coordinator: Coordinator) -> None:
    inside = 0
    most = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside, most
        for _ in range(3):
            async with coordinator.semaphore("pool", 3) as slot:
                inside += 1
                most = max(most, inside)
                assert inside <= 3
                tokens.append(slot.fencing_token)
                await trio.sleep(0.005)
                inside -= 1

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for _ in range(7):
                nursery.start_soon(worker)
    assert 1 <= most <= 3
    assert len(tokens) == 21
    assert len(set(tokens)) == 21  # a new token for each acquisition


async def test_limit_holders_at_once_then_the_next_waits(
    coordinator: Coordinator, coordinator_clock: object
) -> None:
    release = trio.Event()
    both_in = trio.Event()
    held: list[HeldLock] = []

    async def holder() -> None:
        async with coordinator.semaphore("pool", 2) as slot:
            held.append(slot)
            if len(held) == 2:
                both_in.set()
            await release.wait()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            nursery.start_soon(holder)
            await both_in.wait()
            # Both slots are taken: a third request times out.
            with pytest.raises(LockTimeout) as exc:
                async with coordinator.semaphore("pool", 2, timeout=0.3):
                    pytest.fail("a third holder got in")
            assert exc.value.kind == "semaphore"
            assert exc.value.name == "pool"
            assert isinstance(exc.value, TimeoutError)
            release.set()
    assert held[0].fencing_token != held[1].fencing_token
    # Free again: a slot is granted at once.
    with trio.fail_after(LIMIT):
        async with coordinator.semaphore("pool", 2, timeout=0) as again:
            assert again.fencing_token > max(h.fencing_token for h in held)


async def test_fifo_order(coordinator: Coordinator, queued: Queued) -> None:
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with coordinator.semaphore("fifo", 2):
            order.append(i)

    with trio.fail_after(LIMIT):
        async with coordinator.semaphore("fifo", 2), trio.open_nursery() as nursery:
            first = coordinator.semaphore("fifo", 2)
            await first.acquire()
            for i in range(6):
                nursery.start_soon(waiter, i)
                await queued("semaphore", "fifo", 3 + i)
            # One slot frees: the waiters pass through it one at a time, in order.
            await first.release()
    assert order == list(range(6))


async def test_tokens_strictly_increase(coordinator: Coordinator) -> None:
    tokens = []
    sem = coordinator.semaphore("tokens", 2)
    with trio.fail_after(LIMIT):
        for _ in range(4):
            async with sem as slot:
                tokens.append(slot.fencing_token)
            tokens.append((await sem.acquire()).fencing_token)
            await sem.release()
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)


async def test_holders_that_disagree_on_limit(coordinator: Coordinator) -> None:
    with trio.fail_after(LIMIT):
        async with coordinator.semaphore("agree", 2):
            with pytest.raises(ConfigError, match="limit=2"):
                async with coordinator.semaphore("agree", 3):
                    pytest.fail("a holder with another limit got in")
            # The same limit still works beside it.
            async with coordinator.semaphore("agree", 2):
                pass
        # Idle again: a new limit is taken.
        async with coordinator.semaphore("agree", 3):
            pass


async def test_timeout_leaves_no_request_behind(
    coordinator: Coordinator, coordinator_clock: object, queue_keys: QueueKeys
) -> None:
    with trio.fail_after(LIMIT):
        async with coordinator.semaphore("t", 1):
            with pytest.raises(LockTimeout):
                await coordinator.semaphore("t", 1, timeout=0.2).acquire()
            assert await queue_keys("semaphore", "t") in (None, 1)
        # The timed-out request delays nobody.
        async with coordinator.semaphore("t", 1, timeout=0):
            pass
        assert await queue_keys("semaphore", "t") in (None, 0)


async def test_cancelled_acquire_leaves_no_request_behind(
    coordinator: Coordinator, queued: Queued, queue_keys: QueueKeys
) -> None:
    with trio.fail_after(LIMIT):
        async with coordinator.semaphore("c", 1):
            async with trio.open_nursery() as nursery:
                cancelled = trio.CancelScope()

                async def waiter() -> None:
                    with cancelled:
                        async with coordinator.semaphore("c", 1):
                            pytest.fail("granted while the slot was held")

                nursery.start_soon(waiter)
                await queued("semaphore", "c", 2)
                cancelled.cancel()
            assert await queue_keys("semaphore", "c") in (None, 1)
        async with coordinator.semaphore("c", 1, timeout=0):
            pass
        assert await queue_keys("semaphore", "c") in (None, 0)


async def test_release_by_hand_and_errors(coordinator: Coordinator) -> None:
    sem = coordinator.semaphore("hand", 1)
    with trio.fail_after(LIMIT):
        with pytest.raises(LockNotHeld) as exc:
            await sem.release()
        assert exc.value.kind == "semaphore"
        slot = await sem.acquire()
        await slot.release()
        with pytest.raises(LockNotHeld):
            await slot.release()
        async with sem as slot:
            assert slot.name == "hand"
            assert slot.holder == trio.lowlevel.current_task().name


@pytest.mark.parametrize(
    ("limit", "seconds"),
    [(0, None), (-1, None), (1.5, None), (True, None), ("2", None), (1, -1.0), (1, float("nan"))],
)
async def test_bad_arguments(coordinator: Coordinator, limit: object, seconds: object) -> None:
    with pytest.raises(ConfigError):
        coordinator.semaphore("bad", limit, seconds)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        coordinator.semaphore("", 1)
    assert issubclass(ConfigError, ValueError)
    assert not issubclass(ConfigError, CoordinationError)
