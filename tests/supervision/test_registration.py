"""``register_as``: names registered once started, gone on stop/crash, back after restart.

Runs on every registry backend (the ``registry`` fixture is parametrised).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from foundation import errors
from foundation.registry import Registry
from foundation.supervision import (
    Backoff,
    ChildSpec,
    ChildState,
    Strategy,
    open_dynamic_supervisor,
    open_supervisor,
)

NS = "services"


class Service:
    """A child that records what the registry said while it was running."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.crash = 0
        self.seen: list[Any] = []

    async def run(
        self, name: str, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # not registered yet while initialising
        self.seen.append(self.registry.get(NS, name))
        task_status.started({"endpoint": name})
        await trio.sleep(1)
        if self.crash:
            self.crash -= 1
            raise ConnectionError("lost")
        await trio.sleep_forever()


async def test_registered_once_started_with_metadata(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    svc = Service(registry)
    spec = ChildSpec("db", svc.run, ("db",), register_as=(NS, "db"))
    async with open_supervisor([spec], registry=registry, name="app"):
        reg = registry.lookup_with_metadata(NS, "db")
        assert reg.value == {"endpoint": "db"}
        assert reg.owner == "db"
        assert dict(reg.metadata) == {"restarts": 0, "supervisor": "app"}
        assert svc.seen == [None]
    assert registry.get(NS, "db") is None  # gone on shutdown


async def test_value_defaults_to_the_child_id(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    async def plain() -> None:
        await trio.sleep_forever()

    async def silent(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    specs = [
        ChildSpec("p", plain, register_as=(NS, "p")),
        ChildSpec("s", silent, register_as=(NS, "s")),
    ]
    async with open_supervisor(specs, registry=registry):
        assert registry.lookup(NS, "p") == "p"
        assert registry.lookup(NS, "s") == "s"


async def test_removed_on_crash_and_reregistered_after_restart(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    svc = Service(registry)
    svc.crash = 2
    spec = ChildSpec("db", svc.run, ("db",), register_as=(NS, "db"))
    async with open_supervisor([spec], registry=registry, name="app") as sup:
        await trio.sleep(5)
        reg = registry.lookup_with_metadata(NS, "db")
        assert reg.metadata["restarts"] == 2
        assert sup.which_children()[0].restarts == 2
    # each restarted run saw the name gone while it initialised: never a dead child's name
    assert svc.seen == [None, None, None]


async def test_name_gone_when_terminate_child_returns(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    svc = Service(registry)
    async with open_supervisor([], registry=registry) as sup:
        await sup.start_child(ChildSpec("db", svc.run, ("db",), register_as=(NS, "db")))
        assert (NS, "db") in registry
        await sup.terminate_child("db")
        assert registry.get(NS, "db") is None
        await sup.restart_child("db")
        assert registry.lookup_with_metadata(NS, "db").metadata["restarts"] == 1
        await sup.delete_child("db")
        assert registry.get(NS, "db") is None


async def test_conflict_makes_the_child_fail_to_start(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    await registry.register(NS, "db", "someone else", owner="other")
    svc = Service(registry)
    spec = ChildSpec("db", svc.run, ("db",), register_as=(NS, "db"))
    with pytest.raises(errors.RestartIntensityExceeded) as info:
        async with open_supervisor([spec], registry=registry, max_restarts=2):
            pytest.fail("entered with a child that cannot register")  # pragma: no cover
    assert isinstance(info.value.__cause__, errors.AlreadyRegistered)
    assert registry.lookup(NS, "db") == "someone else"  # untouched
    assert len(svc.seen) == 3  # started, refused, stopped, three times


async def test_conflict_at_start_child_is_a_crash_then_recovers(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    await registry.register(NS, "db", "squatter", owner="other")
    svc = Service(registry)
    backoff = Backoff(initial=0.1, maximum=0.1, jitter=0)
    spec = ChildSpec("db", svc.run, ("db",), register_as=(NS, "db"))
    async with open_supervisor(
        [], registry=registry, max_restarts=100, max_seconds=1, backoff=backoff
    ) as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.start_child, spec)
            await trio.sleep(0.55)
            [info] = sup.which_children()
            assert info.state is not ChildState.RUNNING
            assert isinstance(info.last_error, errors.AlreadyRegistered)
            await registry.unregister(NS, "db")
        # start_child returned once a retry registered the name
        [info] = sup.which_children()
        assert info.state is ChildState.RUNNING
        assert info.restarts == 6
        assert registry.lookup(NS, "db") == {"endpoint": "db"}
        assert registry.lookup_with_metadata(NS, "db").metadata["restarts"] == 6


async def test_one_for_all_moves_every_name(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    a, b = Service(registry), Service(registry)
    b.crash = 1
    specs = [
        ChildSpec("a", a.run, ("a",), register_as=(NS, "a")),
        ChildSpec("b", b.run, ("b",), register_as=(NS, "b")),
    ]
    async with open_supervisor(specs, registry=registry, strategy=Strategy.ONE_FOR_ALL):
        await trio.sleep(5)
        assert registry.lookup_with_metadata(NS, "a").metadata["restarts"] == 1
        assert registry.lookup_with_metadata(NS, "b").metadata["restarts"] == 1
        assert a.seen == [None, None]  # a's name was removed before it restarted


async def test_two_supervisors_with_equal_child_ids_share_a_registry(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    async def quick(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    one = ChildSpec("worker", quick, register_as=(NS, "one"))
    two = ChildSpec("worker", quick, register_as=(NS, "two"))
    async with open_supervisor([one], registry=registry, name="first") as first:
        async with open_supervisor([two], registry=registry, name="second"):
            owner_one = registry.lookup_with_metadata(NS, "one").owner
            owner_two = registry.lookup_with_metadata(NS, "two").owner
            assert owner_one == "worker"  # the owner of a register_as name is the child id
            assert owner_two != owner_one  # qualified with the second supervisor's token
            assert owner_two[-1] == "worker"
        assert registry.get(NS, "two") is None
        await first.terminate_child("worker")
        assert registry.get(NS, "one") is None


async def test_dynamic_children_register_and_unregister(
    autojump_clock: trio.testing.MockClock, registry: Registry
) -> None:
    svc = Service(registry)
    template = ChildSpec("tpl", svc.run)
    async with open_dynamic_supervisor(template, registry=registry) as dsup:
        ids = [await dsup.start_new(f"w{i}", register_as=(NS, f"w{i}")) for i in range(5)]
        assert [registry.lookup(NS, f"w{i}") for i in range(5)] == [
            {"endpoint": f"w{i}"} for i in range(5)
        ]
        await dsup.terminate_child(ids[0])
        assert registry.get(NS, "w0") is None
    assert all(registry.get(NS, f"w{i}") is None for i in range(5))


async def test_register_as_needs_a_registry(autojump_clock: trio.testing.MockClock) -> None:
    async def t() -> None:
        await trio.sleep_forever()

    with pytest.raises(ValueError, match="registry="):
        async with open_supervisor([ChildSpec("x", t, register_as=(NS, "x"))]):
            pass  # pragma: no cover


async def test_registry_closed_under_a_running_supervisor(
    autojump_clock: trio.testing.MockClock, backend_name: str
) -> None:
    reg = Registry(backend=backend_name, partitions=2)
    svc = Service(reg)
    async with open_supervisor(
        [ChildSpec("db", svc.run, ("db",), register_as=(NS, "db"))], registry=reg
    ):
        reg.close()
    # leaving did not fail on the closed registry
