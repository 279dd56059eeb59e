"""Limits: ``max_children`` on dynamic and task supervisors; ``ChildSpec.shutdown`` checks.

Every async test runs on the autojump clock: the sleeps below are virtual time.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.supervision import (
    Backoff,
    ChildSpec,
    ChildState,
    Restart,
    open_dynamic_supervisor,
    open_task_supervisor,
)


async def idle(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()


async def nap(seconds: float) -> None:
    await trio.sleep(seconds)


def ids(sup: Any) -> list[Any]:
    return [c.id for c in sup.which_children()]


# -- dynamic supervisor ---------------------------------------------------------------
async def test_dynamic_limit_raises_and_adds_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_dynamic_supervisor(ChildSpec("tpl", idle), max_children=2, name="pool") as d:
        assert d.max_children == 2
        await d.start_new()
        await d.start_new()
        with pytest.raises(errors.TooManyChildren) as info:
            await d.start_new()
        assert info.value.limit == 2
        assert info.value.supervisor == "pool"
        assert "max_children=2" in str(info.value)
        with pytest.raises(errors.TooManyChildren):
            await d.start_child(ChildSpec("extra", idle))
        assert ids(d) == [0, 1]
        assert d.count_children().specs == 2
        assert d.count_children().active == 2


async def test_dynamic_slots_free_up(autojump_clock: trio.testing.MockClock) -> None:
    async def job(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)

    async with open_dynamic_supervisor(max_children=2) as d:
        await d.start_child(ChildSpec("a", idle))
        await d.start_child(ChildSpec("b", idle))
        # a terminated child whose spec is kept does not count
        await d.terminate_child("a")
        assert {c.id: c.state for c in d.which_children()}["a"] is ChildState.STOPPED
        await d.start_child(ChildSpec("c", idle))
        # ... but restarting it would make three
        with pytest.raises(errors.TooManyChildren):
            await d.restart_child("a")
        assert {c.id: c.state for c in d.which_children()}["a"] is ChildState.STOPPED
        # restarting a running child keeps the count
        await d.restart_child("b")
        await d.delete_child("c")
        assert await d.restart_child("a") is not None
        # a temporary child that ends frees its slot; a transient one that
        # returns normally is kept, stopped, and frees its slot too
        await d.delete_child("a")
        await d.start_child(ChildSpec("t", job, restart=Restart.TEMPORARY))
        with pytest.raises(errors.TooManyChildren):
            await d.start_child(ChildSpec("x", idle))
        await trio.sleep(2)
        assert ids(d) == ["b"]
        await d.start_child(ChildSpec("tr", job, restart=Restart.TRANSIENT))
        await trio.sleep(2)
        assert {c.id: c.state for c in d.which_children()}["tr"] is ChildState.STOPPED
        await d.start_child(ChildSpec("y", idle))
        assert d.count_children().active == 2


async def test_restarting_child_counts_once(autojump_clock: trio.testing.MockClock) -> None:
    crashes = 0

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashes
        task_status.started()
        await trio.sleep(1)
        if crashes < 3:
            crashes += 1
            raise ValueError("flaky")
        await trio.sleep_forever()

    backoff = Backoff(initial=2, factor=1, jitter=0)
    async with open_dynamic_supervisor(
        max_children=2, max_restarts=10, max_seconds=100, backoff=backoff
    ) as d:
        t0 = trio.current_time()
        await d.start_child(ChildSpec("flaky", flaky))
        await d.start_child(ChildSpec("b", idle))
        await trio.sleep(1.5)  # flaky crashed at 1 s and waits out its backoff
        assert {c.id: c.state for c in d.which_children()}["flaky"] is ChildState.RESTARTING
        # A restart holds the supervisor: start_child waits until flaky runs
        # again (at 3 s), then finds both slots taken.
        with pytest.raises(errors.TooManyChildren):
            await d.start_child(ChildSpec("c", idle))
        assert trio.current_time() - t0 == 3
        await trio.sleep(20)  # three crashes and restarts later it runs for good
        info = {c.id: c for c in d.which_children()}
        assert info["flaky"].restarts == 3
        assert info["flaky"].state is ChildState.RUNNING
        # still two children counted, not one per restart
        with pytest.raises(errors.TooManyChildren):
            await d.start_child(ChildSpec("c", idle))
        await d.terminate_child("b")
        await d.start_child(ChildSpec("c", idle))
        assert d.count_children().active == 2


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
async def test_max_children_is_validated(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_children"):
        async with open_dynamic_supervisor(max_children=value):
            pass  # pragma: no cover
    with pytest.raises(error, match="max_children"):
        async with open_task_supervisor(max_children=value):
            pass  # pragma: no cover


# -- task supervisor ----------------------------------------------------------------
async def test_task_limit_start_soon_and_run_raise(autojump_clock: trio.testing.MockClock) -> None:
    async with open_task_supervisor("jobs", max_children=2) as tasks:
        assert tasks.max_children == 2
        tasks.start_soon(nap, 5, name="one")
        tasks.start_soon(nap, 5, name="two")
        with pytest.raises(errors.TooManyChildren) as info:
            tasks.start_soon(nap, 5, name="three")
        assert info.value.supervisor == "jobs"
        with pytest.raises(errors.TooManyChildren):
            await tasks.run(nap, 1, name="four")
        assert tasks.running() == ["one", "two"]
        await trio.sleep(6)  # both ended: their slots are free
        await tasks.run(nap, 1)
        tasks.start_soon(nap, 1)
        tasks.start_soon(nap, 1)
        with pytest.raises(errors.TooManyChildren):
            tasks.start_soon(nap, 1)


async def test_failed_tasks_free_their_slots(autojump_clock: trio.testing.MockClock) -> None:
    async def fail() -> None:
        await trio.sleep(1)
        raise ValueError("no")

    async with open_task_supervisor(max_children=1) as tasks:
        tasks.start_soon(fail)
        await trio.sleep(2)
        with pytest.raises(ValueError, match="no"):
            await tasks.run(fail)
        with trio.move_on_after(0.5):
            await tasks.run(nap, 10)  # cancelled by the caller's timeout
        await trio.testing.wait_all_tasks_blocked()  # its task unwinds, then frees its slot
        tasks.start_soon(nap, 1)
        assert len(tasks.failures()) == 1


async def server(tag: str, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    await trio.sleep(1)
    task_status.started(f"{tag} ready")
    await trio.sleep(3)


async def test_start_returns_the_started_value(autojump_clock: trio.testing.MockClock) -> None:
    async with open_task_supervisor() as tasks:  # no limit: it only waits for the start
        t0 = trio.current_time()
        assert await tasks.start(server, "s", name="srv") == "s ready"
        assert trio.current_time() - t0 == 1
        assert tasks.running() == ["srv"]
    assert trio.current_time() - t0 == 4


async def test_start_waits_for_a_free_slot_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    got: list[tuple[str, float]] = []
    async with open_task_supervisor(max_children=1) as tasks:
        t0 = trio.current_time()
        tasks.start_soon(nap, 10, name="hog")

        async def starter(tag: str) -> None:
            got.append((await tasks.start(server, tag), trio.current_time() - t0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(starter, "first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(starter, "second")
            await trio.testing.wait_all_tasks_blocked()
            assert tasks.running() == ["hog"]
            await trio.sleep(10.5)
            # the hog ended at 10 s and its slot went to the first waiter, which
            # holds it: start_soon cannot take it from the second waiter
            assert tasks.running() == ["server"]
            with pytest.raises(errors.TooManyChildren):
                tasks.start_soon(nap, 1)
    # first: slot at 10 s, started at 11 s, ends at 14 s; second: started at 15 s
    assert got == [("first ready", 11), ("second ready", 15)]


async def test_cancelled_waiting_start_adds_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started: list[str] = []

    async def record(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started.append("late")
        task_status.started()

    async with open_task_supervisor(max_children=1) as tasks:
        tasks.start_soon(nap, 5, name="hog")
        with trio.move_on_after(1) as scope:
            await tasks.start(record)
        assert scope.cancelled_caught
        assert tasks.running() == ["hog"]
        await trio.sleep(5)
        # the hog's slot was not handed to the cancelled waiter
        assert tasks.running() == []
        tasks.start_soon(nap, 1, name="next")
        assert tasks.running() == ["next"]
    assert started == []


async def test_start_errors_before_and_after_started(
    autojump_clock: trio.testing.MockClock, recorder: Any
) -> None:
    async def bad_init(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1)
        raise OSError("cannot bind")

    async def bad_later(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        raise ValueError("later")

    async def no_status() -> None:
        pass  # pragma: no cover

    async with open_task_supervisor(max_children=1) as tasks:
        with pytest.raises(OSError, match="cannot bind"):
            await tasks.start(bad_init)
        assert tasks.failures() == []  # the caller has it
        assert await tasks.start(bad_later) is None
        await trio.sleep(2)
        [failure] = tasks.failures()
        assert isinstance(failure.error, ValueError)
        with pytest.raises(TypeError):
            await tasks.start(no_status)
        tasks.start_soon(nap, 1)  # every slot was given back
    modes = [m["mode"] for m in recorder.of("foundation.task.fail")]
    assert modes[:2] == ["start", "start_soon"]


async def test_aclose_ends_waiting_and_starting_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow_init(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(100)
        task_status.started()  # pragma: no cover

    errors_seen: list[type[BaseException]] = []

    async with open_task_supervisor(max_children=1) as tasks:

        async def starter() -> None:
            try:
                await tasks.start(slow_init)
            except trio.ClosedResourceError as exc:
                errors_seen.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(starter)  # takes the slot, starting
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(starter)  # waits for a slot
            await trio.testing.wait_all_tasks_blocked()
            await tasks.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await tasks.start(idle)
    assert errors_seen == [trio.ClosedResourceError, trio.ClosedResourceError]


async def test_start_after_the_block_fails() -> None:
    async with open_task_supervisor(max_children=1) as tasks:
        pass
    with trio.fail_after(1):  # a leaked slot would make the second start wait forever
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await tasks.start(idle)
    assert tasks.running() == []


# -- ChildSpec.shutdown ----------------------------------------------------------------
async def _target() -> None:
    pass  # pragma: no cover


@pytest.mark.parametrize("value", [0, 0.0, 5, 2.5, Fraction(1, 3), math.inf])
def test_shutdown_accepts_numbers_and_infinity(value: Any) -> None:
    assert ChildSpec("x", _target, shutdown=value).shutdown == value


@pytest.mark.parametrize("value", [math.nan, -1, -0.5, -math.inf])
def test_shutdown_rejects_nan_and_negatives(value: Any) -> None:
    with pytest.raises(ValueError, match="shutdown"):
        ChildSpec("x", _target, shutdown=value)


@pytest.mark.parametrize("value", ["5", None, True, 1j, [5]])
def test_shutdown_rejects_non_numbers(value: Any) -> None:
    with pytest.raises(TypeError, match="shutdown"):
        ChildSpec("x", _target, shutdown=value)
