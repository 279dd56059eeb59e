"""Crash logs (one traceback, then a one-line summary) and the errors children record.

Every test runs on the autojump clock: the sleeps below are virtual time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.supervision import ChildSpec, Restart, open_dynamic_supervisor, open_supervisor

WINDOW = 10  # max_seconds of the supervisors below


class Crasher:
    """A child that raises ``errors[i]`` (a callable making the error) when told to."""

    def __init__(self) -> None:
        self.go = trio.Event()
        self.kind = "value"
        self.n = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.go = trio.Event()
        task_status.started()
        await self.go.wait()
        self.n += 1
        if self.kind == "return":
            return
        if self.kind == "value":
            raise ValueError(f"boom {self.n}")  # one place, a different message each time
        raise KeyError(f"key {self.n}")

    async def crash(self, kind: str = "value") -> None:
        """Make it crash once and wait until it runs again."""
        self.kind = kind
        self.go.set()
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.ERROR, logger="foundation.supervision"):
        yield caplog


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "more time" in r.getMessage()]


async def test_one_traceback_then_one_summary_line(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture, recorder: Any
) -> None:
    child = Crasher()
    spec = ChildSpec("worker", child.run)
    async with open_supervisor([spec], max_restarts=100, max_seconds=WINDOW, name="app"):
        t0 = trio.current_time()
        for _ in range(5):
            await trio.sleep(1)
            await child.crash()
        [first] = tracebacks(logs)
        assert first.levelno == logging.ERROR
        assert first.exc_info is not None
        assert str(first.exc_info[1]) == "boom 1"
        assert "child 'worker' crashed: ValueError: boom 1" in first.getMessage()
        assert summaries(logs) == []  # counted, not logged yet
        assert len(recorder.of("foundation.supervisor.child.crash")) == 5  # telemetry sees all
        await trio.sleep(t0 + 1 + WINDOW + 0.5 - trio.current_time())  # the window ends
        assert summaries(logs) == [
            "supervisor 'app': child 'worker' crashed 4 more times with ValueError('boom 5')"
            " in the last 10 s (repeats of the crash logged with its traceback before)"
        ]
        assert len(logs.records) == 2
        # the window rolled over: the next crash is logged in full again
        await child.crash()
        assert [str(r.exc_info[1]) for r in tracebacks(logs) if r.exc_info] == [
            "boom 1",
            "boom 6",
        ]
    assert len(logs.records) == 3  # nothing repeated after boom 6: no summary


async def test_another_error_is_logged_in_full(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture
) -> None:
    child = Crasher()
    async with open_supervisor(
        [ChildSpec("w", child.run)], max_restarts=100, max_seconds=WINDOW, name="app"
    ):
        for kind in ("value", "key", "value", "key", "key"):
            await child.crash(kind)
        assert [type(r.exc_info[1]) for r in tracebacks(logs) if r.exc_info] == [
            ValueError,
            KeyError,
        ]
    # on leaving the block (all at one virtual instant: "the last 0 s")
    assert sorted(summaries(logs)) == [
        "supervisor 'app': child 'w' crashed 1 more time with ValueError('boom 3')"
        " in the last 0 s (repeats of the crash logged with its traceback before)",
        "supervisor 'app': child 'w' crashed 2 more times with KeyError('key 5')"
        " in the last 0 s (repeats of the crash logged with its traceback before)",
    ]


async def test_each_child_logs_its_own_first_crash(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture
) -> None:
    a, b = Crasher(), Crasher()
    specs = [ChildSpec("a", a.run), ChildSpec("b", b.run)]
    async with open_supervisor(specs, max_restarts=100, max_seconds=WINDOW):
        for child in (a, b, a, b, a):
            await child.crash()
        assert ["'a'" in r.getMessage() for r in tracebacks(logs)] == [True, False]
    assert len(summaries(logs)) == 2  # a: 2 more, b: 1 more, on leaving the block
    assert any("child 'a' crashed 2 more times" in m for m in summaries(logs))
    assert any("child 'b' crashed 1 more time " in m for m in summaries(logs))


async def test_summary_when_the_child_stops(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture
) -> None:
    child = Crasher()
    async with open_dynamic_supervisor(max_restarts=100, max_seconds=WINDOW) as d:
        await d.start_child(ChildSpec("w", child.run))
        for _ in range(3):
            await child.crash()
        await d.terminate_child("w")
        assert len(summaries(logs)) == 1
        assert "crashed 2 more times" in summaries(logs)[0]
        await d.restart_child("w")  # a new life: its first crash is logged in full
        await child.crash()
        assert len(tracebacks(logs)) == 2
        await trio.sleep(2 * WINDOW)
    assert len(summaries(logs)) == 1  # nothing was repeated in the second life


async def test_summary_when_a_transient_child_returns(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture
) -> None:
    child = Crasher()
    spec = ChildSpec("w", child.run, restart=Restart.TRANSIENT)
    async with open_supervisor([spec], max_restarts=100, max_seconds=WINDOW, name="app"):
        for _ in range(3):
            await child.crash()
        await child.crash("return")  # not restarted: done for good
        assert summaries(logs) == [
            "supervisor 'app': child 'w' crashed 2 more times with ValueError('boom 3')"
            " in the last 0 s (repeats of the crash logged with its traceback before)"
        ]


async def test_summary_comes_before_giving_up(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture
) -> None:
    child = Crasher()
    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([ChildSpec("w", child.run)], max_restarts=3, max_seconds=5):
            for _ in range(4):
                await child.crash()
            await trio.sleep_forever()  # pragma: no cover
    messages = [r.getMessage() for r in logs.records]
    assert len(messages) == 3
    assert "crashed: ValueError: boom 1" in messages[0]
    assert "crashed 3 more times with ValueError('boom 4')" in messages[1]
    assert "gave up" in messages[2]
    assert str(info.value.__cause__) == "boom 4"


async def test_repeats_cost_no_log_record(autojump_clock: trio.testing.MockClock) -> None:
    """A repeat reaches no handler (so no traceback is formatted for it)."""
    formatted: list[str] = []

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            formatted.append(self.format(record))

    handler = Counting()
    log = logging.getLogger("foundation.supervision")
    log.addHandler(handler)
    try:
        child = Crasher()
        async with open_supervisor([ChildSpec("w", child.run)], max_restarts=1000):
            for _ in range(50):
                await child.crash()
            assert len(formatted) == 1
            assert "Traceback (most recent call last)" in formatted[0]
    finally:
        log.removeHandler(handler)
    assert len(formatted) == 2
    assert "crashed 49 more times" in formatted[1]
    assert "Traceback" not in formatted[1]


# -- the error a child records ------------------------------------------------------------
async def test_a_failing_inner_nursery_records_the_error_itself(
    autojump_clock: trio.testing.MockClock, logs: pytest.LogCaptureFixture, recorder: Any
) -> None:
    crashed = False

    async def inner() -> None:
        await trio.sleep(1)
        raise ValueError("inner task failed")

    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashed
        task_status.started()
        if crashed:
            await trio.sleep_forever()
        crashed = True
        async with trio.open_nursery() as outer:
            outer.start_soon(trio.sleep_forever)
            async with trio.open_nursery() as nursery:  # a group in a group
                nursery.start_soon(inner)

    async with open_supervisor([ChildSpec("w", worker)]) as sup:
        await trio.sleep(2)
        [info] = sup.which_children()
        assert type(info.last_error) is ValueError
        assert str(info.last_error) == "inner task failed"
    [meta] = recorder.of("foundation.supervisor.child.crash")
    assert meta["error"] is info.last_error
    [record] = tracebacks(logs)
    assert record.exc_info is not None
    assert record.exc_info[1] is info.last_error
    assert "crashed: ValueError: inner task failed" in record.getMessage()


async def test_a_group_of_several_errors_is_kept(
    autojump_clock: trio.testing.MockClock, recorder: Any
) -> None:
    crashed = False

    async def fail() -> None:
        await trio.sleep(1)
        raise ValueError("first")

    async def fail_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise KeyError("second")

    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashed
        task_status.started()
        if crashed:
            await trio.sleep_forever()
        crashed = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail)
            nursery.start_soon(fail_on_cancel)

    async with open_supervisor([ChildSpec("w", worker)]) as sup:
        await trio.sleep(2)
        [info] = sup.which_children()
        assert isinstance(info.last_error, ExceptionGroup)
        assert len(info.last_error.exceptions) == 2
        assert {type(e) for e in info.last_error.exceptions} == {ValueError, KeyError}
    [meta] = recorder.of("foundation.supervisor.child.crash")
    assert meta["error"] is info.last_error


async def test_escalation_cause_is_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    async def worker(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery():
            raise OSError("gone")

    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([ChildSpec("w", worker)], max_restarts=1):
            await trio.sleep_forever()
    assert type(info.value.__cause__) is OSError
