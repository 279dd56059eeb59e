"""``register_as`` on the real clock, so it also runs on the etcd backend.

The mock-clock tests in ``test_registration.py`` cannot drive etcd's sockets;
this one covers the same life cycle (registered once started, gone while
crashed, back with a restart count after the restart, gone on shutdown) with
short real sleeps, on every backend of the ``registry`` fixture.
"""

from __future__ import annotations

from typing import Any

import trio

from foundation.registry import Registry, RegistryEvent
from foundation.supervision import ChildSpec, open_supervisor

NS = "services"


async def test_register_as_follows_crash_and_restart(registry: Registry) -> None:
    crashes = [1]

    async def worker(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started({"endpoint": "db"})
        await trio.sleep(0.2)
        if crashes[0]:
            crashes[0] -= 1
            raise ConnectionError("lost")
        await trio.sleep_forever()

    events: list[tuple[str, Any]] = []
    spec = ChildSpec("db", worker, register_as=(NS, "db"))
    with trio.fail_after(20):
        async with registry.watch(NS) as watch:
            async with open_supervisor([spec], registry=registry, name="app"):
                first = registry.lookup_with_metadata(NS, "db")
                assert first.value == {"endpoint": "db"}
                assert first.owner == "db"
                assert first.metadata["restarts"] == 0

                async def collect() -> None:
                    event: RegistryEvent
                    async for event in watch:
                        events.append((event.kind, dict(event.registration.metadata)))
                        if event.kind == "registered" and event.registration.metadata.get(
                            "restarts"
                        ):
                            return

                await collect()
                again = registry.lookup_with_metadata(NS, "db")
                assert again.metadata["restarts"] == 1
            await registry.sync()
            assert registry.get(NS, "db") is None  # gone on shutdown
    kinds = [kind for kind, _ in events]
    # the registration seen first, then gone while crashed, then back
    assert "unregistered" in kinds
    assert kinds[-1] == "registered"
    assert kinds.index("unregistered") < len(kinds) - 1
