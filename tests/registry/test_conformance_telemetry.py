"""Conformance: registry telemetry (``foundation.registry.{register,update,unregister}``).

Emitted only while a handler is attached to a prefix of one of those names:
until then the registry does not even listen to its backend's events.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import pytest
import trio

from foundation import telemetry
from foundation.registry import Registry

Event = tuple[str, dict[str, float], dict[str, Any]]


def listening(registry: Registry) -> bool:
    """Whether the registry listens to its backend's events (for anyone)."""
    return bool(registry._fanout)


async def test_writes_emit_one_event_each_with_reason(registry: Registry, ns: Any) -> None:
    seen: list[Event] = []

    def handler(event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]) -> None:
        seen.append((event, dict(measurements), dict(metadata)))

    assert not listening(registry)
    with telemetry.attached("test-registry", "foundation.registry", handler):
        assert listening(registry)
        await registry.register(ns, "a", 1, owner="o")
        await registry.update_value(ns, "a", 2)
        await registry.update_metadata(ns, "a", {"m": 1})
        await registry.join(ns, "g", "m", owner="o")
        await registry.register(ns, "b", 1)
        await registry.unregister(ns, "b")
        assert await registry.unregister_owner("o") == 2
        await registry.sync()
        with trio.fail_after(5):
            while len(seen) < 8:  # noqa: ASYNC110 -- etcd relays through its watch
                await trio.sleep(0.01)
    assert not listening(registry)
    summary = [(e, md["kind"], md["reason"], md["name"], md["member"]) for e, _, md in seen]
    assert summary == [
        ("foundation.registry.register", "registered", "explicit", "a", False),
        ("foundation.registry.update", "updated", "replaced", "a", False),
        ("foundation.registry.update", "updated", "replaced", "a", False),
        ("foundation.registry.register", "joined", "explicit", "g", True),
        ("foundation.registry.register", "registered", "explicit", "b", False),
        ("foundation.registry.unregister", "unregistered", "explicit", "b", False),
        ("foundation.registry.unregister", "unregistered", "owner", "a", False),
        ("foundation.registry.unregister", "left", "owner", "g", True),
    ]
    assert all(m == {"count": 1.0} for _, m, _ in seen)
    first = seen[0][2]
    assert (first["namespace"], first["value"], first["owner"]) == (ns, 1, "o")
    assert first["registry"] == registry.backend_name
    # detached: nothing more
    await registry.register(ns, "c", 1)
    await registry.sync()
    assert len(seen) == 8


async def test_a_handler_for_one_event_only(registry: Registry, ns: Any) -> None:
    seen: list[str] = []
    with telemetry.attached(
        "test-registry-update", "foundation.registry.update", lambda e, m, md: seen.append(e)
    ):
        await registry.register(ns, "a", 1)
        await registry.update_value(ns, "a", 2)
        await registry.unregister(ns, "a")
        await registry.sync()
        with trio.fail_after(5):
            while not seen:  # noqa: ASYNC110 -- etcd relays through its watch
                await trio.sleep(0.01)
    assert seen == ["foundation.registry.update"]


async def test_an_unrelated_handler_costs_no_listening(registry: Registry, ns: Any) -> None:
    with telemetry.attached("test-other", "foundation.supervisor", lambda e, m, md: None):
        assert not listening(registry)
        await registry.register(ns, "a", 1)
    # a watch listens for itself, and telemetry does not keep it listening
    async with registry.watch(ns):
        assert listening(registry)
    assert not listening(registry)


async def test_closing_stops_listening(registry: Registry) -> None:
    with telemetry.attached("test-registry-close", "foundation.registry", lambda e, m, md: None):
        assert listening(registry)
        registry.close()
        assert not listening(registry)


@pytest.mark.local_only
def test_dropped_registries_leave_no_subscription(backend_name: str) -> None:
    """A registry that is dropped without close() unsubscribes from telemetry."""
    gc.collect()
    before = len(telemetry._change_callbacks)
    for _ in range(20):
        Registry(backend_name)
    gc.collect()
    assert len(telemetry._change_callbacks) == before
