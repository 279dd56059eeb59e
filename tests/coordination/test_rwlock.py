"""Read/write locks on every coordinator: shared readers, one writer, FIFO, timeouts.

Timing tests take ``coordinator_clock`` (autojump locally, the real clock on
etcd, with bounded waits); ordering on etcd waits for the queue's keys
(``queued``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from foundation.coordination import Coordinator, LockNotHeld, LockTimeout
from foundation.errors import ConfigError

LIMIT = 30  # seconds: the bound of every wait in these tests

# The conftest fixtures ``queued`` and ``queue_keys``.
Queued = Callable[[str, str, int], Awaitable[None]]
QueueKeys = Callable[[str, str], Awaitable[int | None]]


async def test_readers_share(coordinator: Coordinator) -> None:
    rw = coordinator.rwlock("doc")
    inside = 0
    all_in = trio.Event()

    async def reader() -> None:
        nonlocal inside
        async with rw.read():
            inside += 1
            if inside == 3:
                all_in.set()
            await all_in.wait()  # only returns if the three read at once

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(reader)


async def test_writer_excludes_everyone(
    coordinator: Coordinator, coordinator_clock: object
) -> None:
    rw = coordinator.rwlock("doc")
    with trio.fail_after(LIMIT):
        async with rw.write():
            with pytest.raises(LockTimeout) as exc:
                async with rw.read(timeout=0.2):
                    pytest.fail("a reader got in beside the writer")
            assert exc.value.kind == "read lock"
            with pytest.raises(LockTimeout) as exc:
                async with rw.write(timeout=0.2):
                    pytest.fail("a second writer got in")
            assert exc.value.kind == "write lock"
        async with rw.read():
            with pytest.raises(LockTimeout):
                async with rw.write(timeout=0.2):
                    pytest.fail("a writer got in beside a reader")


async def test_mutual_exclusion_counts(coordinator: Coordinator) -> None:
    rw = coordinator.rwlock("counts")
    readers = writers = 0
    most_readers = 0
    tokens: list[int] = []

    async def worker(i: int) -> None:
        nonlocal readers, writers, most_readers
        for round_ in range(3):
            if (i + round_) % 3 == 0:
                async with rw.write() as held:
                    writers += 1
                    assert writers == 1
                    assert readers == 0
                    tokens.append(held.fencing_token)
                    await trio.sleep(0.002)
                    writers -= 1
            else:
                async with rw.read() as held:
                    readers += 1
                    most_readers = max(most_readers, readers)
                    assert writers == 0
                    tokens.append(held.fencing_token)
                    await trio.sleep(0.002)
                    readers -= 1

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(worker, i)
    assert len(tokens) == 18
    assert len(set(tokens)) == 18


async def test_reader_queues_behind_a_waiting_writer(
    coordinator: Coordinator, queued: Queued
) -> None:
    rw = coordinator.rwlock("fifo")
    order: list[str] = []

    async def writer() -> None:
        async with rw.write():
            order.append("writer")

    async def late_reader() -> None:
        async with rw.read():
            order.append("late reader")

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            first = rw.read()
            await first.acquire()
            nursery.start_soon(writer)
            await queued("rwlock", "fifo", 2)
            nursery.start_soon(late_reader)
            await queued("rwlock", "fifo", 3)
            # A reader holds, yet the late reader waits: a writer is before it.
            assert order == []
            await first.release()
    assert order == ["writer", "late reader"]


async def test_readers_behind_a_writer_go_in_together(
    coordinator: Coordinator, queued: Queued
) -> None:
    rw = coordinator.rwlock("batch")
    inside = 0
    together = trio.Event()

    async def reader() -> None:
        nonlocal inside
        async with rw.read():
            inside += 1
            if inside == 3:
                together.set()
            await together.wait()

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            writer = rw.write()
            await writer.acquire()
            for i in range(3):
                nursery.start_soon(reader)
                await queued("rwlock", "batch", 2 + i)
            await writer.release()


async def test_reader_behind_a_timed_out_writer_goes_in(
    coordinator: Coordinator, coordinator_clock: object, queued: Queued, queue_keys: QueueKeys
) -> None:
    rw = coordinator.rwlock("t")
    got_in = trio.Event()

    async def writer() -> None:
        with pytest.raises(LockTimeout):
            async with rw.write(timeout=0.5):
                pytest.fail("the writer got in beside a reader")

    async def late_reader() -> None:
        async with rw.read():
            got_in.set()

    with trio.fail_after(LIMIT):
        async with rw.read(), trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await queued("rwlock", "t", 2)
            nursery.start_soon(late_reader)
            await queued("rwlock", "t", 3)
            # The writer gives up: the reader behind it joins the one holding.
            await got_in.wait()
        assert await queue_keys("rwlock", "t") in (None, 0)


async def test_cancelled_acquire_leaves_no_request_behind(
    coordinator: Coordinator, queued: Queued, queue_keys: QueueKeys
) -> None:
    rw = coordinator.rwlock("c")
    with trio.fail_after(LIMIT):
        async with rw.read():
            async with trio.open_nursery() as nursery:
                cancelled = trio.CancelScope()

                async def waiter() -> None:
                    with cancelled:
                        async with rw.write():
                            pytest.fail("granted beside a reader")

                nursery.start_soon(waiter)
                await queued("rwlock", "c", 2)
                cancelled.cancel()
            assert await queue_keys("rwlock", "c") in (None, 1)
        async with rw.write(timeout=0):
            pass
        assert await queue_keys("rwlock", "c") in (None, 0)


async def test_tokens_increase_over_reads_and_writes(coordinator: Coordinator) -> None:
    rw = coordinator.rwlock("tokens")
    tokens = []
    with trio.fail_after(LIMIT):
        for _ in range(3):
            async with rw.read() as held:
                tokens.append(held.fencing_token)
            async with rw.write() as held:
                tokens.append(held.fencing_token)
    assert tokens == sorted(tokens)
    assert len(set(tokens)) == len(tokens)


async def test_release_errors(coordinator: Coordinator) -> None:
    rw = coordinator.rwlock("hand")
    with trio.fail_after(LIMIT):
        with pytest.raises(LockNotHeld) as exc:
            await rw.write().release()
        assert exc.value.kind == "write lock"
        handle = rw.read()
        held = await handle.acquire()
        await handle.release()
        with pytest.raises(LockNotHeld) as exc:
            await held.release()
        assert exc.value.kind == "read lock"


async def test_bad_arguments(coordinator: Coordinator) -> None:
    with pytest.raises(ConfigError):
        coordinator.rwlock("")
    with pytest.raises(ConfigError):
        coordinator.rwlock("x").read(timeout=-1)
    with pytest.raises(ConfigError):
        coordinator.rwlock("x").write(holder="")
