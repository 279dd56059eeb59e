"""Nested supervisors: tree() snapshots, depth-first shutdown, escalation to the parent."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.supervision import (
    ChildSpec,
    ChildState,
    Supervisor,
    SupervisorTree,
    open_supervisor,
    supervisor_spec,
)

stops: list[str] = []


async def worker(
    name: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        stops.append(name)


async def crasher(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep(1)
    raise RuntimeError("inner crash")


async def test_tree_snapshot_and_depth_first_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stops.clear()
    inner = [ChildSpec("x", worker, ("x",)), ChildSpec("y", worker, ("y",))]
    specs = [
        ChildSpec("a", worker, ("a",)),
        supervisor_spec("sub", inner),
        ChildSpec("b", worker, ("b",)),
    ]
    async with open_supervisor(specs, name="app") as sup:
        tree = sup.tree()
        assert isinstance(tree, SupervisorTree)
        assert tree.name == "app"
        assert tree.strategy == "one_for_one"
        assert [n.id for n in tree.children] == ["a", "sub", "b"]
        sub = tree.children[1].supervisor
        assert sub is not None
        assert sub.name == "sub"
        assert [n.id for n in sub.children] == ["x", "y"]
        assert all(n.state is ChildState.RUNNING for n in sub.children)
        with pytest.raises(dataclasses.FrozenInstanceError):
            tree.name = "x"  # type: ignore[misc]
        text = str(tree)
        assert text.splitlines()[0] == "app (one_for_one, 3 children)"
        assert "sub: running [sub (one_for_one, 2 children)]" in text
        assert "    ├── x: running" in text or "│   ├── x: running" in text
        counts = sup.count_children()
        assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (3, 3, 1, 2)
        assert isinstance(sup.which_children()[1].id, str)
    assert stops == ["b", "y", "x", "a"]  # depth-first, reverse start order


async def test_inner_escalation_is_a_crash_of_the_child_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    specs = [supervisor_spec("sub", [ChildSpec("c", crasher)], max_restarts=1, max_seconds=10)]
    async with open_supervisor(specs, max_restarts=5, max_seconds=100, name="top") as sup:
        await trio.sleep(2.5)  # two crashes: the inner supervisor gives up
        [info] = sup.which_children()
        assert info.restarts == 1
        assert isinstance(info.last_error, errors.RestartIntensityExceeded)
        assert info.last_error.supervisor == "sub"
        assert "last error: RestartIntensityExceeded" in str(sup.tree())
        sub = sup.tree().children[0].supervisor
        assert sub is not None
        assert isinstance(sup.which_children()[0], object)
        assert isinstance(sup.tree().children[0].supervisor, SupervisorTree)


async def test_supervisor_value_is_passed_to_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_supervisor([]) as sup:
        inner = await sup.start_child(supervisor_spec("s", [ChildSpec("w", worker, ("w",))]))
        assert isinstance(inner, Supervisor)
        assert [c.id for c in inner.which_children()] == ["w"]
