"""``ChildSpec.target`` given by name (``"package.module:qualname"``), under any supervisor.

A name is imported each time the child starts, so a spec can travel between
processes as text (the distributed supervisor stores specs that way).
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio

from foundation import errors
from foundation.registry import Registry
from foundation.supervision import ChildSpec, ChildState, open_dynamic_supervisor, open_supervisor
from foundation.supervision._spec import resolve_target, target_name

RUNS: list[str] = []


async def plain(tag: str) -> None:
    RUNS.append(tag)
    await trio.sleep_forever()


async def with_status(
    tag: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    RUNS.append(tag)
    task_status.started(f"value-{tag}")
    await trio.sleep_forever()


class Holder:
    @staticmethod
    async def static(tag: str) -> None:
        RUNS.append(tag)
        await trio.sleep_forever()

    async def method(self) -> None:
        await trio.sleep_forever()


NOT_CALLABLE = 42


def _name(fn: Any) -> str:
    return f"{__name__}:{fn.__qualname__}"


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


async def test_a_named_target_runs_under_open_supervisor(autojump_clock: Any) -> None:
    spec = ChildSpec(id="a", target=_name(plain), args=("a",))
    async with open_supervisor([spec]) as sup:
        await trio.sleep(1)
        assert RUNS == ["a"]
        assert sup.which_children()[0].state is ChildState.RUNNING


async def test_a_named_target_with_task_status_registers_its_value(autojump_clock: Any) -> None:
    registry = Registry("python")
    spec = ChildSpec(id="b", target=_name(with_status), args=("b",), register_as=("svc", "b"))
    assert spec.takes_task_status
    async with open_dynamic_supervisor(registry=registry) as sup:
        value = await sup.start_child(spec)
        assert value == "value-b"
        assert registry.lookup("svc", "b") == "value-b"
        await sup.terminate_child("b")
        assert registry.get("svc", "b") is None


async def test_a_static_method_by_name(autojump_clock: Any) -> None:
    spec = ChildSpec(id="s", target=f"{__name__}:Holder.static", args=("s",))
    async with open_supervisor([spec]):
        await trio.sleep(1)
    assert RUNS == ["s"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nomodule",
        "a.b",
        ":fn",
        "mod:",
        "mod:fn:x",
        "mod:<lambda>",
        "mod:f.<locals>.g",
        "1mod:fn",
    ],
)
def test_a_malformed_name_is_refused_at_construction(bad: str) -> None:
    with pytest.raises(TypeError, match="qualname"):
        ChildSpec(id="x", target=bad)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("foundation_no_such_module_x:fn", ModuleNotFoundError),
        (f"{__name__}:no_such_function", ImportError),
        (f"{__name__}:NOT_CALLABLE", TypeError),
    ],
)
async def test_a_name_that_does_not_resolve_is_a_crash_at_start(
    autojump_clock: Any, target: str, error: type[BaseException]
) -> None:
    spec = ChildSpec(id="x", target=target)
    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([spec], max_restarts=2, max_seconds=5):
            await trio.sleep_forever()  # pragma: no cover - the start escalates
    assert isinstance(info.value.__cause__, error)


def test_resolve_target() -> None:
    assert resolve_target(plain) is plain
    assert resolve_target(_name(plain)) is plain
    with pytest.raises(ImportError, match="no_such"):
        resolve_target(f"{__name__}:no_such")


def test_target_name_only_for_what_imports_back() -> None:
    assert target_name(plain) == _name(plain)
    assert target_name(Holder.static) == f"{__name__}:Holder.static"

    async def nested() -> None: ...

    assert target_name(nested) is None
    assert target_name(lambda: None) is None
    assert target_name(functools.partial(plain, "x")) is None
    assert target_name(Holder().method) is None  # a bound method carries its instance
    assert target_name(print) == "builtins:print"
