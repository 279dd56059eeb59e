"""Supervisor: start order, strategies, restart types, intensity, shutdown, groups.

Every test runs on the autojump clock: the sleeps below are virtual time.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import random
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from foundation import errors
from foundation.supervision import (
    Backoff,
    ChildCounts,
    ChildSpec,
    ChildState,
    Restart,
    Strategy,
    Supervisor,
    open_supervisor,
)


class Log:
    """Children that log ("start"|"stop"|"crash", name, time)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.crashes: dict[str, int] = {}

    def add(self, kind: str, name: str) -> None:
        self.events.append((kind, name, trio.current_time()))

    def kinds(self, *kinds: str) -> list[tuple[str, str]]:
        return [(k, n) for k, n, _ in self.events if k in kinds]

    async def worker(
        self,
        name: str,
        init: float = 0,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.sleep(init)
        self.add("start", name)
        task_status.started(f"{name}-value")
        try:
            await trio.sleep_forever()
        finally:
            self.add("stop", name)

    async def plain(self, name: str) -> None:
        """No task_status: started once spawned."""
        self.add("start", name)
        try:
            await trio.sleep_forever()
        finally:
            self.add("stop", name)

    async def crasher(
        self,
        name: str,
        after: float,
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Crash ``self.crashes[name]`` times, ``after`` seconds after starting."""
        self.add("start", name)
        task_status.started()
        try:
            await trio.sleep(after)
            if self.crashes.get(name, 0) > 0:
                self.crashes[name] -= 1
                self.add("crash", name)
                raise ValueError(f"{name} crashed")
            await trio.sleep_forever()
        finally:
            self.add("stop", name)

    async def returner(self, name: str, after: float) -> None:
        self.add("start", name)
        await trio.sleep(after)
        self.add("return", name)


def specs3(log: Log, crash: str = "b", **kw: Any) -> list[ChildSpec]:
    return [
        ChildSpec("a", log.worker, ("a",)),
        ChildSpec("b", log.crasher, ("b", 1.0), **kw),
        ChildSpec("c", log.worker, ("c",)),
    ]


# -- start order --------------------------------------------------------------
async def test_children_start_in_order_each_after_the_previous_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    specs = [
        ChildSpec("a", log.worker, ("a", 3.0)),
        ChildSpec("b", log.worker, ("b", 1.0)),
        ChildSpec("c", log.plain, ("c",)),
    ]
    t0 = trio.current_time()
    async with open_supervisor(specs, name="order") as sup:
        # entering returned once every child had started
        assert [(k, n) for k, n, _ in log.events] == [
            ("start", "a"),
            ("start", "b"),
            ("start", "c"),
        ]
        assert [t - t0 for _, _, t in log.events] == [3.0, 4.0, 4.0]
        assert [c.state for c in sup.which_children()] == [ChildState.RUNNING] * 3
        assert [c.id for c in sup.which_children()] == ["a", "b", "c"]
        assert sup.name == "order"
    assert log.kinds("stop") == [("stop", "c"), ("stop", "b"), ("stop", "a")]


async def test_start_child_returns_the_started_value(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor([]) as sup:
        assert await sup.start_child(ChildSpec("w", log.worker, ("w",))) == "w-value"
        assert await sup.start_child(ChildSpec("p", log.plain, ("p",))) == "p"


# -- strategies -----------------------------------------------------------------
async def test_one_for_one_restarts_only_the_crashed_child(
    autojump_clock: trio.testing.MockClock, recorder: Any
) -> None:
    log = Log()
    log.crashes["b"] = 2
    async with open_supervisor(specs3(log), strategy=Strategy.ONE_FOR_ONE, name="s") as sup:
        await trio.sleep(10)
        info = {c.id: c for c in sup.which_children()}
        assert info["b"].restarts == 2
        assert info["a"].restarts == info["c"].restarts == 0
        assert isinstance(info["b"].last_error, ValueError)
        assert all(c.state is ChildState.RUNNING for c in info.values())
    assert log.kinds("start") == [("start", n) for n in "abcbb"]
    assert [m["child_id"] for m in recorder.of("foundation.supervisor.child.crash")] == ["b", "b"]
    assert [m["child_id"] for m in recorder.of("foundation.supervisor.child.restart")] == ["b", "b"]


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes["b"] = 1
    async with open_supervisor(specs3(log), strategy=Strategy.ONE_FOR_ALL) as sup:
        await trio.sleep(5)
        assert [c.restarts for c in sup.which_children()] == [1, 1, 1]
    after_crash = log.kinds("start", "stop", "crash")[3:]
    assert after_crash[:7] == [
        ("crash", "b"),
        ("stop", "b"),
        ("stop", "c"),
        ("stop", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
    ]


async def test_rest_for_one_restarts_the_child_and_those_started_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes["b"] = 1
    async with open_supervisor(specs3(log), strategy=Strategy.REST_FOR_ONE) as sup:
        await trio.sleep(5)
        assert [c.restarts for c in sup.which_children()] == [0, 1, 1]
    after_crash = log.kinds("start", "stop", "crash")[3:]
    assert after_crash[:5] == [
        ("crash", "b"),
        ("stop", "b"),
        ("stop", "c"),
        ("start", "b"),
        ("start", "c"),
    ]
    assert log.kinds("stop")[-3:] == [("stop", "c"), ("stop", "b"), ("stop", "a")]


# -- restart types ---------------------------------------------------------------
async def test_permanent_child_returning_normally_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    spec = ChildSpec("p", log.returner, ("p", 2.0), restart=Restart.PERMANENT)
    async with open_supervisor([spec], max_restarts=100) as sup:
        await trio.sleep(5)
        assert sup.which_children()[0].restarts == 2
        assert sup.which_children()[0].last_error is None


async def test_transient_child_restarts_only_after_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes["t"] = 1
    specs = [
        ChildSpec("t", log.crasher, ("t", 1.0), restart=Restart.TRANSIENT),
        ChildSpec("r", log.returner, ("r", 1.0), restart=Restart.TRANSIENT),
    ]
    async with open_supervisor(specs) as sup:
        await trio.sleep(5)
        info = {c.id: c for c in sup.which_children()}
        assert info["t"].restarts == 1
        assert info["t"].state is ChildState.RUNNING
        assert info["r"].restarts == 0
        assert info["r"].state is ChildState.STOPPED
        assert sup.count_children().active == 1
        assert sup.count_children().specs == 2


async def test_temporary_child_is_never_restarted_and_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes["x"] = 1
    specs = [
        ChildSpec("x", log.crasher, ("x", 1.0), restart=Restart.TEMPORARY),
        ChildSpec("y", log.returner, ("y", 1.0), restart=Restart.TEMPORARY),
        ChildSpec("z", log.worker, ("z",)),
    ]
    async with open_supervisor(specs, strategy=Strategy.ONE_FOR_ALL) as sup:
        await trio.sleep(5)
        assert [c.id for c in sup.which_children()] == ["z"]
        assert sup.which_children()[0].restarts == 0
    assert log.kinds("start") == [("start", "x"), ("start", "y"), ("start", "z")]


# -- intensity ---------------------------------------------------------------------
async def test_intensity_exceeded_stops_all_in_reverse_and_raises(
    autojump_clock: trio.testing.MockClock, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    log.crashes["b"] = 100
    t0 = trio.current_time()
    with (
        caplog.at_level(logging.ERROR, logger="foundation.supervision"),
        pytest.raises(errors.RestartIntensityExceeded) as info,
    ):
        async with open_supervisor(specs3(log), max_restarts=3, max_seconds=5, name="app"):
            await trio.sleep_forever()
    err = info.value
    assert err.child_id == "b"
    assert err.restarts == 4
    assert err.window == 5
    assert err.supervisor == "app"
    assert isinstance(err.__cause__, ValueError)
    assert "max_restarts" in str(err)
    assert trio.current_time() - t0 == 4.0  # the 4th crash, one second apart
    assert log.kinds("stop")[-2:] == [("stop", "c"), ("stop", "a")]
    [esc] = recorder.of("foundation.supervisor.escalate")
    assert esc["child_id"] == "b"
    assert "gave up" in caplog.text


async def test_intensity_is_a_sliding_window(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    log.crashes["b"] = 10
    spec = ChildSpec("b", log.crasher, ("b", 2.0))
    # a crash every 2 s: at most 3 in any 5 s window, never more
    async with open_supervisor([spec], max_restarts=3, max_seconds=5) as sup:
        await trio.sleep(21)
        assert sup.which_children()[0].restarts == 10


async def test_permanent_child_returning_in_a_loop_escalates(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    spec = ChildSpec("p", log.returner, ("p", 0.0))
    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([spec], max_restarts=2, max_seconds=1):
            await trio.sleep_forever()
    assert info.value.__cause__ is None


async def test_start_failures_count_as_crashes_and_escalate_from_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts: list[float] = []

    async def bad_init(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        attempts.append(trio.current_time())
        raise OSError("cannot bind")

    log = Log()
    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor(
            [ChildSpec("a", log.worker, ("a",)), ChildSpec("bad", bad_init)], max_restarts=2
        ):
            pytest.fail("entered a supervisor whose child cannot start")  # pragma: no cover
    assert len(attempts) == 3
    assert isinstance(info.value.__cause__, OSError)
    assert log.kinds("start", "stop") == [("start", "a"), ("stop", "a")]


async def test_start_failure_then_success_enters(autojump_clock: trio.testing.MockClock) -> None:
    fails = [2]

    async def flaky(*, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        if fails[0]:
            fails[0] -= 1
            raise OSError("not yet")
        task_status.started("up")
        await trio.sleep_forever()

    async with open_supervisor([ChildSpec("f", flaky)]) as sup:
        [info] = sup.which_children()
        assert info.state is ChildState.RUNNING
        assert info.restarts == 2


async def test_returning_without_started_is_a_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def forgot(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.lowlevel.checkpoint()

    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([ChildSpec("f", forgot)], max_restarts=0):
            pass  # pragma: no cover
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "task_status.started" in str(info.value.__cause__)


async def test_backoff_delays_restarts_exponentially(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes["b"] = 4
    spec = ChildSpec("b", log.crasher, ("b", 0.0))
    backoff = Backoff(initial=1, maximum=3, factor=2, jitter=0)
    async with open_supervisor([spec], backoff=backoff, max_restarts=10, max_seconds=100):
        await trio.sleep(20)
    starts = [t for k, n, t in log.events if k == "start"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 3.0, 3.0]


def test_backoff_delay_bounds() -> None:
    b = Backoff(initial=0.1, maximum=5, factor=2, jitter=0.1, rng=random.Random(1))
    for attempt in range(1, 20):
        base = min(5, 0.1 * 2 ** (attempt - 1))
        assert base * 0.9 - 1e-9 <= b.delay(attempt) <= min(5, base * 1.1) + 1e-9
    with pytest.raises(ValueError, match="factor"):
        Backoff(factor=0.5)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=2)


# -- shutdown -------------------------------------------------------------------------
async def test_shutdown_timeout_is_reported_and_waited_for(
    autojump_clock: trio.testing.MockClock, recorder: Any, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()

    async def stubborn(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(10)
            log.add("stop", "stubborn")

    specs = [ChildSpec("a", log.worker, ("a",)), ChildSpec("s", stubborn, shutdown=2)]
    with caplog.at_level(logging.WARNING, logger="foundation.supervision"):
        async with open_supervisor(specs) as sup:
            t0 = trio.current_time()
    assert trio.current_time() - t0 == 10.0  # kept waiting past the 2 s deadline
    assert log.kinds("stop") == [("stop", "stubborn"), ("stop", "a")]
    err = {c.id: c for c in sup.which_children()}["s"].last_error
    assert isinstance(err, errors.ShutdownTimeout)
    assert err.child_id == "s"
    assert err.timeout == 2
    [meta] = recorder.of("foundation.supervisor.child.shutdown_timeout")
    assert meta["child_id"] == "s"
    assert "did not stop within 2 s" in caplog.text


async def test_outer_cancellation_still_stops_children_in_reverse_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    specs = [ChildSpec(n, log.worker, (n,)) for n in "abcd"]
    with trio.move_on_after(3):
        async with open_supervisor(specs):
            await trio.sleep_forever()
    assert log.kinds("stop") == [("stop", n) for n in "dcba"]


async def test_body_error_is_raised_as_itself(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    with pytest.raises(KeyError):
        async with open_supervisor(specs3(log)):
            raise KeyError("mine")
    assert log.kinds("stop") == [("stop", "c"), ("stop", "b"), ("stop", "a")]


async def test_two_errors_are_an_exception_group(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    log.crashes["b"] = 100
    with pytest.raises(BaseExceptionGroup) as info:
        async with open_supervisor(specs3(log), max_restarts=0):
            try:
                await trio.sleep_forever()
            finally:
                raise KeyError("cleanup failed")
    assert info.group_contains(errors.RestartIntensityExceeded)
    assert info.group_contains(KeyError)


async def test_operations_after_close_raise(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    async with open_supervisor([]) as sup:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await sup.start_child(ChildSpec("a", log.worker, ("a",)))


# -- dynamic children on a Supervisor ---------------------------------------------------
async def test_start_terminate_restart_delete_child(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    async with open_supervisor([ChildSpec("a", log.worker, ("a",))]) as sup:
        spec = ChildSpec("b", log.worker, ("b",))
        await sup.start_child(spec)
        with pytest.raises(errors.ChildAlreadyExists) as exists:
            await sup.start_child(spec)
        assert isinstance(exists.value, ValueError)
        assert sup.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)

        await sup.terminate_child("b")
        assert log.kinds("stop") == [("stop", "b")]
        info = {c.id: c for c in sup.which_children()}
        assert info["b"].state is ChildState.STOPPED  # spec kept
        assert sup.count_children().specs == 2
        assert sup.count_children().active == 1

        assert await sup.restart_child("b") == "b-value"
        assert {c.id: c for c in sup.which_children()}["b"].restarts == 1
        assert sup.count_children().active == 2

        await sup.delete_child("b")
        assert [c.id for c in sup.which_children()] == ["a"]
        for op in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(errors.ChildNotFound) as missing:
                await op("b")
            assert isinstance(missing.value, LookupError)


async def test_duplicate_ids_in_specs(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    with pytest.raises(errors.ChildAlreadyExists):
        async with open_supervisor([ChildSpec("a", log.worker, ("a",))] * 2):
            pass  # pragma: no cover
    assert log.events == []  # ids are checked before any child starts


async def test_child_crashing_during_restart_group_is_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    log.crashes.update(a=1, c=1)
    specs = [
        ChildSpec("a", log.crasher, ("a", 1.0)),
        ChildSpec("c", log.crasher, ("c", 1.0)),
    ]
    async with open_supervisor(specs, strategy=Strategy.ONE_FOR_ALL, max_restarts=5) as sup:
        await trio.sleep(10)
        assert all(c.state is ChildState.RUNNING for c in sup.which_children())


# -- validation, records, errors ---------------------------------------------------------
def test_spec_and_supervisor_validation() -> None:
    async def t() -> None:
        pass

    with pytest.raises(TypeError):
        ChildSpec("x", t, args=[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown"):
        ChildSpec("x", t, shutdown=-1)
    with pytest.raises(TypeError):
        ChildSpec("x", t, register_as="name")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_restarts"):
        Supervisor(
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=-1,
            max_seconds=5,
            registry=None,
            backoff=None,
            name=None,
        )


@pytest.mark.parametrize(
    "err",
    [
        errors.RestartIntensityExceeded("db", 4, 5.0, "app"),
        errors.ShutdownTimeout("db", 5.0),
        errors.TaskTimeout("announce", 2.0),
        errors.ChildNotFound("db"),
        errors.ChildAlreadyExists("db"),
        errors.TooManyChildren("db", 8),
    ],
)
def test_errors_print_and_pickle(err: errors.SupervisionError) -> None:
    assert isinstance(err, errors.FoundationError)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is type(err)
    assert str(copy) == str(err)
    assert vars(copy) == vars(err)
    assert "db" in str(err) or "announce" in str(err)


async def test_cancelled_start_child_leaves_nothing_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    async with open_supervisor([]) as sup:
        with trio.move_on_after(1):
            await sup.start_child(ChildSpec("slow", log.worker, ("slow", 5.0)))
        assert sup.which_children() == []
        assert sup.count_children() == ChildCounts(0, 0, 0, 0)
        # and the id is free again
        assert await sup.start_child(ChildSpec("slow", log.worker, ("slow",))) == "slow-value"


async def test_telemetry_of_a_crash_and_restart(
    autojump_clock: trio.testing.MockClock, recorder: Any
) -> None:
    log = Log()
    log.crashes["b"] = 1
    async with open_supervisor(specs3(log), name="app"):
        await trio.sleep(2)
    names = [e.rsplit(".", 1)[1] for e in recorder.names() if ".child." in e]
    # 3 starts; b crashes, restarts, starts; shutdown exits c, b, a
    assert names == [
        "start",
        "start",
        "start",
        "crash",
        "restart",
        "start",
        "exit",
        "exit",
        "exit",
    ]
    [crash] = recorder.of("foundation.supervisor.child.crash")
    assert crash["supervisor"] == "app"
    assert crash["child_id"] == "b"
    assert isinstance(crash["error"], ValueError)
    exits = recorder.of("foundation.supervisor.child.exit")
    assert [m["child_id"] for m in exits] == ["c", "b", "a"]
    assert {m["reason"] for m in exits} == {"shutdown"}


async def test_run_supervisor_under_nursery_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from foundation.supervision import run_supervisor

    log = Log()
    async with trio.open_nursery() as nursery:
        sup = await nursery.start(run_supervisor, [ChildSpec("a", log.worker, ("a",))])
        assert isinstance(sup, Supervisor)
        assert log.kinds("start") == [("start", "a")]
        nursery.cancel_scope.cancel()
    assert log.kinds("stop") == [("stop", "a")]
