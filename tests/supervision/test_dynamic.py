"""DynamicSupervisor: many children of one template, O(1) start/stop, shutdown."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.supervision import (
    ChildSpec,
    ChildState,
    DynamicSupervisor,
    Restart,
    open_dynamic_supervisor,
)


async def echo(
    tag: str, n: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started(f"{tag}{n}")
    await trio.sleep_forever()


async def test_start_new_from_template(autojump_clock: trio.testing.MockClock) -> None:
    template = ChildSpec("tpl", echo, ("w",))
    async with open_dynamic_supervisor(template, name="pool") as dsup:
        assert isinstance(dsup, DynamicSupervisor)
        assert dsup.template is template
        assert dsup.which_children() == []
        ids = [await dsup.start_new(i) for i in range(3)]
        assert ids == [0, 1, 2]
        assert await dsup.start_new(9, id="nine") == "nine"
        assert [c.id for c in dsup.which_children()] == [0, 1, 2, "nine"]
        assert dsup.count_children().active == 4
        with pytest.raises(errors.ChildAlreadyExists):
            await dsup.start_new(1, id="nine")
        assert "pool" in str(dsup.tree())
        assert dsup.tree().dynamic
    assert dsup.count_children().active == 0


async def test_start_child_with_any_spec_and_no_template(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_dynamic_supervisor() as dsup:
        assert await dsup.start_child(ChildSpec("x", echo, ("x", 1))) == "x1"
        with pytest.raises(TypeError, match="template"):
            await dsup.start_new()


async def test_many_temporary_children_leave_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def job(i: int) -> None:
        await trio.sleep(1 + i % 3)

    template = ChildSpec("job", job, restart=Restart.TEMPORARY)
    async with open_dynamic_supervisor(template) as dsup:
        for i in range(500):
            await dsup.start_new(i)
        assert dsup.count_children().specs == 500
        await trio.sleep(5)
        assert dsup.count_children().specs == 0


async def test_restarts_and_intensity(autojump_clock: trio.testing.MockClock) -> None:
    crashes = {"n": 2}

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        if crashes["n"]:
            crashes["n"] -= 1
            raise ValueError("flaky")
        await trio.sleep_forever()

    async with open_dynamic_supervisor(ChildSpec("t", flaky)) as dsup:
        cid = await dsup.start_new()
        await dsup.start_new()
        await trio.sleep(5)
        info = {c.id: c for c in dsup.which_children()}
        assert sum(c.restarts for c in info.values()) == 2
        assert all(c.state is ChildState.RUNNING for c in info.values())
        await dsup.terminate_child(cid)
        assert {c.id: c for c in dsup.which_children()}[cid].state is ChildState.STOPPED

    async def always(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1)
        raise ValueError("always")

    with pytest.raises(errors.RestartIntensityExceeded):
        async with open_dynamic_supervisor(ChildSpec("a", always), max_restarts=3) as dsup:
            await dsup.start_new()
            await trio.sleep_forever()


async def test_shutdown_is_concurrent_with_per_child_deadlines(
    autojump_clock: trio.testing.MockClock, recorder: Any
) -> None:
    async def slow_stop(
        delay: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(delay)

    async with open_dynamic_supervisor(ChildSpec("s", slow_stop, shutdown=2)) as dsup:
        for delay in (1, 3, 3):
            await dsup.start_new(delay)
        t0 = trio.current_time()
    # all cancelled at once: 3 s, not 1 + 3 + 3
    assert trio.current_time() - t0 == 3.0
    timeouts = recorder.of("foundation.supervisor.child.shutdown_timeout")
    assert sorted(m["child_id"] for m in timeouts) == [1, 2]
