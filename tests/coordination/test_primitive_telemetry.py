"""Telemetry of semaphores, read/write locks and memberships, alike on every coordinator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from foundation import telemetry
from foundation.coordination import Coordinator

Seen = list[tuple[str, Mapping[str, float], Mapping[str, Any]]]


async def test_events(coordinator: Coordinator) -> None:
    seen: Seen = []

    def handler(event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        seen.append((event, dict(meas), dict(meta)))

    with (
        telemetry.attached("primitive-telemetry", "foundation.coordination", handler),
        trio.fail_after(30),
    ):
        async with coordinator.semaphore("s", 2, holder="me") as slot:
            pass
        async with coordinator.rwlock("rw").read(holder="me"):
            pass
        async with coordinator.rwlock("rw").write(holder="me"):
            pass
        async with coordinator.membership("g", "m"):
            pass
    events = [(event, meta) for event, _, meta in seen]
    assert events == [
        ("foundation.coordination.semaphore.acquire", {"semaphore": "s", "holder": "me"}),
        ("foundation.coordination.semaphore.release", {"semaphore": "s", "holder": "me"}),
        (
            "foundation.coordination.rwlock.acquire",
            {"rwlock": "rw", "holder": "me", "mode": "read"},
        ),
        (
            "foundation.coordination.rwlock.release",
            {"rwlock": "rw", "holder": "me", "mode": "read"},
        ),
        (
            "foundation.coordination.rwlock.acquire",
            {"rwlock": "rw", "holder": "me", "mode": "write"},
        ),
        (
            "foundation.coordination.rwlock.release",
            {"rwlock": "rw", "holder": "me", "mode": "write"},
        ),
        ("foundation.coordination.membership.join", {"group": "g", "member": "m"}),
        ("foundation.coordination.membership.leave", {"group": "g", "member": "m"}),
    ]
    measurements = [meas for _, meas, _ in seen]
    assert measurements[0]["token"] == slot.fencing_token
    assert set(measurements[0]) == {"token", "wait"}
    assert set(measurements[1]) == {"token", "held"}
    assert measurements[6] == {"members": 1}
    assert measurements[7] == {"members": 0}
