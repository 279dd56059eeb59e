"""TaskSupervisor: failure isolation, run() results/errors/timeouts, cancel, groups."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.supervision import TaskFailure, open_task_supervisor


async def boom(msg: str) -> None:
    await trio.sleep(1)
    raise ValueError(msg)


async def test_failure_is_recorded_and_siblings_live(
    autojump_clock: trio.testing.MockClock,
    recorder: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    done: list[str] = []

    async def steady() -> None:
        await trio.sleep(5)
        done.append("steady")

    with caplog.at_level(logging.ERROR, logger="foundation.supervision"):
        async with open_task_supervisor("coordination") as tasks:
            tasks.start_soon(boom, "bad", name="announce")
            tasks.start_soon(steady)
            await trio.testing.wait_all_tasks_blocked()
            names = sorted(tasks.running())
            assert names[0] == "announce"
            assert names[1].endswith("steady")
            await trio.sleep(2)
            assert len(tasks.running()) == 1
    assert done == ["steady"]
    [failure] = tasks.failures()
    assert isinstance(failure, TaskFailure)
    assert failure.name == "announce"
    assert isinstance(failure.error, ValueError)
    assert failure.at == pytest.approx(trio.current_time() - 4)
    assert "announce" in caplog.text
    assert "coordination" in caplog.text
    [fail] = recorder.of("foundation.task.fail")
    assert fail["task"] == "announce"
    assert fail["supervisor"] == "coordination"
    assert len(recorder.of("foundation.task.start")) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        failure.name = "x"  # type: ignore[misc]


async def test_leaving_waits_for_running_tasks(autojump_clock: trio.testing.MockClock) -> None:
    finished: list[float] = []

    async def slow() -> None:
        await trio.sleep(10)
        finished.append(trio.current_time())

    start = trio.current_time()
    async with open_task_supervisor("w") as tasks:
        tasks.start_soon(slow)
    assert finished == [start + 10]
    assert tasks.running() == []


async def test_run_returns_result(autojump_clock: trio.testing.MockClock) -> None:
    async def add(a: int, b: int) -> int:
        await trio.sleep(1)
        return a + b

    async with open_task_supervisor("r") as tasks:
        assert await tasks.run(add, 2, 3) == 5
        assert await tasks.run(add, 1, 1, timeout=5) == 2


async def test_run_reraises_the_task_error(autojump_clock: trio.testing.MockClock) -> None:
    async with open_task_supervisor("r") as tasks:
        with pytest.raises(ValueError, match="nope"):
            await tasks.run(boom, "nope")
        assert tasks.failures() == []  # the caller got it


async def test_run_timeout(autojump_clock: trio.testing.MockClock) -> None:
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with open_task_supervisor("r") as tasks:
        with pytest.raises(errors.TaskTimeout) as info:
            await tasks.run(forever, timeout=2, name="waiter")
        assert isinstance(info.value, TimeoutError)
        assert info.value.name == "waiter"
        assert info.value.timeout == 2
        assert "waiter" in str(info.value)
        assert cancelled == [True]
        assert tasks.running() == []


async def test_cancel_stops_everything(autojump_clock: trio.testing.MockClock) -> None:
    async with open_task_supervisor("c") as tasks:
        tasks.start_soon(trio.sleep_forever)
        tasks.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        assert len(tasks.running()) == 2
        tasks.cancel()
        await trio.sleep_forever()  # the block's body is cancelled too
    assert tasks.running() == []
    assert tasks.failures() == []


async def test_run_cancelled_by_cancel_from_outside(autojump_clock: trio.testing.MockClock) -> None:
    results: list[BaseException] = []
    async with trio.open_nursery() as outer, open_task_supervisor("c") as tasks:

        async def caller() -> None:
            try:
                await tasks.run(trio.sleep_forever)
            except trio.ClosedResourceError as exc:
                results.append(exc)

        outer.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        tasks.cancel()
    assert len(results) == 1


async def test_caller_cancelled_cancels_the_run_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_task_supervisor("c") as tasks:
        with trio.move_on_after(1):
            await tasks.run(trio.sleep_forever, name="orphan")
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.running() == []


async def test_body_error_raised_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(KeyError):
        async with open_task_supervisor("b") as tasks:
            tasks.start_soon(boom, "ignored")
            raise KeyError("body")


async def test_two_errors_are_an_exception_group(autojump_clock: trio.testing.MockClock) -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt  # a BaseException: not recorded, it propagates

    with pytest.raises(BaseExceptionGroup) as info:
        async with open_task_supervisor("b") as tasks:
            tasks.start_soon(interrupt)
            try:
                await trio.sleep_forever()
            finally:
                raise KeyError("body")
    assert info.group_contains(KeyboardInterrupt)
    assert info.group_contains(KeyError)


async def test_start_soon_after_the_block_fails() -> None:
    async with open_task_supervisor("late") as tasks:
        pass
    with pytest.raises(RuntimeError):
        tasks.start_soon(trio.sleep, 0)


async def test_max_failures_keeps_the_last(autojump_clock: trio.testing.MockClock) -> None:
    async with open_task_supervisor("m", max_failures=2) as tasks:
        for i in range(3):
            tasks.start_soon(boom, str(i), name=f"t{i}")
    # the oldest failure was dropped (tasks fail in the scheduler's order)
    kept = [f.name for f in tasks.failures()]
    assert len(kept) == 2
    assert set(kept) < {"t0", "t1", "t2"}


async def test_running_lists_a_task_as_soon_as_it_is_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_task_supervisor("q") as tasks:
        tasks.start_soon(trio.sleep, 1, name="queued")
        assert tasks.running() == ["queued"]  # before it ever ran
    assert tasks.running() == []


async def test_aclose_cancels_the_tasks_but_not_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled: list[str] = []

    async def service(name: str) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(name)
            raise

    async with open_task_supervisor("closing") as tasks:
        tasks.start_soon(service, "a", name="a")
        tasks.start_soon(service, "b", name="b")
        await trio.testing.wait_all_tasks_blocked()
        await tasks.aclose()
        assert sorted(cancelled) == ["a", "b"]
        assert tasks.running() == []
        assert tasks.failures() == []  # cancelled, not failed
        await tasks.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            tasks.start_soon(service, "c")
        with pytest.raises(trio.ClosedResourceError):
            await tasks.run(service, "d")
        await trio.sleep(1)  # the body still runs
    assert trio.current_time() >= 1


async def test_aclose_ends_a_pending_run_with_closed_resource_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcome: list[BaseException] = []
    async with trio.open_nursery() as outer, open_task_supervisor("r") as tasks:

        async def caller() -> None:
            try:
                await tasks.run(trio.sleep_forever, name="slow")
            except trio.ClosedResourceError as exc:
                outcome.append(exc)

        outer.start_soon(caller)  # the caller is not one of the tasks
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.running() == ["slow"]
        with trio.fail_after(1):
            await tasks.aclose()
    assert len(outcome) == 1
    assert "slow" in str(outcome[0])
