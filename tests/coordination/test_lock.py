"""Locks: mutual exclusion, FIFO order, fencing tokens, timeouts, cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from foundation.coordination import Coordinator, LockNotHeld, LockTimeout
from foundation.errors import FoundationError


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_mutual_exclusion_20_tasks(coordinator: Coordinator, autojump_clock: object) -> None:
    holders: list[int] = []
    tokens: list[int] = []
    max_inside = 0

    async def worker(i: int) -> None:
        nonlocal max_inside
        for _ in range(5):
            async with coordinator.lock("res") as held:
                holders.append(i)
                max_inside = max(max_inside, len(holders))
                tokens.append(held.fencing_token)
                status = await coordinator.lock_status("res")
                assert status is not None
                assert status.token == held.fencing_token
                await trio.sleep(0.01 * (i % 3))
                holders.remove(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(worker, i)
    assert max_inside == 1
    assert len(tokens) == 100
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == 100
    assert await coordinator.lock_status("res") is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_fifo_order(coordinator: Coordinator, autojump_clock: object) -> None:
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with coordinator.lock("fifo"):
            order.append(i)

    # The nursery encloses the held lock: the waiters can only finish after
    # the lock block has released it.
    async with trio.open_nursery() as nursery, coordinator.lock("fifo"):
        for i in range(10):
            nursery.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
    assert order == list(range(10))


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_lock_status(coordinator: Coordinator, autojump_clock: object) -> None:
    assert await coordinator.lock_status("s") is None
    await trio.sleep(3)
    async with coordinator.lock("s", holder="me") as held:
        status = await coordinator.lock_status("s")
        assert status is not None
        assert status.holder == "me"
        assert status.since == trio.current_time()
        assert status.token == held.fencing_token
    assert await coordinator.lock_status("s") is None
    async with coordinator.lock("s") as again:
        assert again.fencing_token > held.fencing_token
        status = await coordinator.lock_status("s")
        assert status is not None
        assert status.holder == trio.lowlevel.current_task().name


async def test_tokens_are_per_name(coordinator: Coordinator) -> None:
    async with coordinator.lock("a") as a1:
        pass
    async with coordinator.lock("b") as b1, coordinator.lock("a") as a2:
        assert a2.fencing_token > a1.fencing_token
        assert b1.fencing_token >= 1


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_timeout(coordinator: Coordinator, autojump_clock: object) -> None:
    async with coordinator.lock("t") as held:
        start = trio.current_time()
        with pytest.raises(LockTimeout) as info:
            async with coordinator.lock("t", timeout=2):
                pytest.fail("acquired a held lock")
        assert trio.current_time() - start == pytest.approx(2)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, FoundationError)
        assert info.value.name == "t"
        assert info.value.timeout == 2
        status = await coordinator.lock_status("t")
        assert status is not None
        assert status.token == held.fencing_token
    # the timed-out waiter left no trace: the lock is free
    assert await coordinator.lock_status("t") is None
    async with coordinator.lock("t", timeout=0):
        pass


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancel_while_waiting_leaves_no_waiter(
    coordinator: Coordinator, autojump_clock: object
) -> None:
    got: list[str] = []

    async def waiter(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with coordinator.lock("c"):
                got.append(name)

    async with trio.open_nursery() as nursery, coordinator.lock("c"):
        scope_a = await nursery.start(waiter, "a")
        await nursery.start(waiter, "b")
        await trio.testing.wait_all_tasks_blocked()
        scope_a.cancel()
        await trio.testing.wait_all_tasks_blocked()
    assert got == ["b"]
    assert await coordinator.lock_status("c") is None


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancel_inside_lock_releases(
    coordinator: Coordinator, autojump_clock: object
) -> None:
    with trio.move_on_after(1):
        async with coordinator.lock("x"):
            await trio.sleep_forever()
    assert await coordinator.lock_status("x") is None
    async with coordinator.lock("x", timeout=0):
        pass


async def test_cancel_after_grant_hands_on(coordinator: Coordinator) -> None:
    # The waiter is granted the lock in the same instant it is cancelled:
    # it must pass the lock on, not keep it.
    got: list[str] = []

    async def waiter(name: str, scope: trio.CancelScope) -> None:
        with scope:
            async with coordinator.lock("h"):
                got.append(name)

    scope_a = trio.CancelScope()
    async with trio.open_nursery() as nursery, coordinator.lock("h"):
        nursery.start_soon(waiter, "a", scope_a)
        nursery.start_soon(waiter, "b", trio.CancelScope())
        await trio.testing.wait_all_tasks_blocked()
        scope_a.cancel()  # delivered; "a" has not run its handler yet
        # the release above granted "a" first
    assert got == ["b"]
    assert await coordinator.lock_status("h") is None


async def test_release_from_wrong_task(coordinator: Coordinator) -> None:
    async with coordinator.lock("w") as held:
        errors: list[BaseException] = []

        async def thief() -> None:
            try:
                await held.release()
            except LockNotHeld as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(thief)
        assert len(errors) == 1
        assert "only the task that acquired" in str(errors[0])
        status = await coordinator.lock_status("w")
        assert status is not None
        assert status.token == held.fencing_token
    assert await coordinator.lock_status("w") is None


async def test_early_release_and_double_release(coordinator: Coordinator) -> None:
    async with coordinator.lock("e") as held:
        await held.release()
        assert await coordinator.lock_status("e") is None
        with pytest.raises(LockNotHeld):
            await held.release()
    assert await coordinator.lock_status("e") is None


async def test_body_error_raised_as_itself(coordinator: Coordinator) -> None:
    with pytest.raises(KeyError):
        async with coordinator.lock("err"):
            raise KeyError("boom")
    assert await coordinator.lock_status("err") is None


async def test_acquire_checkpoints(coordinator: Coordinator) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            async with coordinator.lock("cp"):
                pytest.fail("entered while cancelled")
    assert await coordinator.lock_status("cp") is None
