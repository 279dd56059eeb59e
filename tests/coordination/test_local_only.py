"""LocalCoordinator specifics: lock leases under the task supervisor, the Lock
handle API, telemetry events, error data, and the no-supervisor form."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import pytest
import trio
import trio.testing

from foundation import telemetry
from foundation.coordination import (
    BarrierAborted,
    BarrierTimeout,
    ConsensusTimeout,
    CoordinationError,
    DuplicateVote,
    LeadershipLost,
    LocalCoordinator,
    LockLost,
    LockNotHeld,
    LockTimeout,
    NodeUnreachable,
    UnknownParticipant,
    Vote,
    open_local_coordinator,
)
from foundation.errors import ConfigError, FoundationError


async def test_lease_expiry_takes_lock_away(autojump_clock: trio.testing.MockClock) -> None:
    async with open_local_coordinator() as coord:
        got: list[tuple[str, int]] = []
        errors: list[LockLost] = []

        async def holder() -> None:
            try:
                async with coord.lock("leased", ttl=5) as held:
                    got.append(("first", held.fencing_token))
                    await trio.sleep_forever()
            except LockLost as exc:
                errors.append(exc)

        async def next_one() -> None:
            async with coord.lock("leased") as held:
                got.append(("second", held.fencing_token))
                status = await coord.lock_status("leased")
                assert status is not None
                assert status.token == held.fencing_token

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(next_one)
            await trio.sleep(10)
        assert got == [("first", 1), ("second", 2)]
        (exc,) = errors
        assert (exc.name, exc.token) == ("leased", 1)
        assert "reject writes with older tokens" in str(exc)
        assert coord.tasks is not None
        assert coord.tasks.failures() == []
        assert await coord.lock_status("leased") is None


async def test_lease_released_in_time_stops_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_coordinator() as coord:
        async with coord.lock("l", ttl=5):
            await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked()
        assert coord.tasks is not None
        assert coord.tasks.running() == []


async def test_handle_acquire_release_and_wrong_task() -> None:
    coord = LocalCoordinator()
    lock = coord.lock("h")
    held = await lock.acquire()
    assert held.fencing_token == 1
    errors: list[LockNotHeld] = []

    async def other() -> None:
        try:
            await lock.release()
        except LockNotHeld as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
    (exc,) = errors
    assert exc.name == "h"
    assert "does not hold it" in exc.reason
    assert (await coord.lock_status("h")) is not None  # untouched
    await lock.release()
    assert await coord.lock_status("h") is None
    with pytest.raises(LockNotHeld):
        await lock.release()


def test_plain_coordinator_refuses_leases() -> None:
    coord = LocalCoordinator()
    with pytest.raises(ConfigError, match="open_local_coordinator"):
        coord.lock("x", ttl=1)
    with pytest.raises(ConfigError):
        coord.lock("x", timeout=-1)
    with pytest.raises(ConfigError):
        coord.lock("")


async def test_telemetry_events() -> None:
    seen: list[tuple[str, Mapping[str, float], Mapping[str, Any]]] = []

    def handler(event: str, meas: Mapping[str, float], meta: Mapping[str, Any]) -> None:
        seen.append((event, meas, meta))

    with telemetry.attached("coordination-test", "foundation.coordination", handler):
        async with open_local_coordinator() as coord:
            async with coord.lock("l"):
                pass
            async with coord.election("g").campaign("n"):
                pass
            await coord.barrier("b", 1).wait()
            await coord.counter("c").add(2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(coord.vote, "v", "a", Vote.ACCEPT)
                await coord.consensus("v", ["a"], "x")
    names = [e for e, _, _ in seen]
    for expected in (
        "foundation.coordination.lock.acquire",
        "foundation.coordination.lock.release",
        "foundation.coordination.election.elected",
        "foundation.coordination.election.resigned",
        "foundation.coordination.barrier.round",
        "foundation.coordination.counter.add",
        "foundation.coordination.consensus.decided",
    ):
        assert expected in names, expected
    acquire = next(m for e, _, m in seen if e.endswith("lock.acquire"))
    assert acquire["lock"] == "l"


ERRORS: list[CoordinationError] = [
    LockTimeout("l", 2.5),
    LockTimeout("s", 0.5, "semaphore"),
    LockNotHeld("l", "why"),
    LockNotHeld("rw", "why", "read lock"),
    LockLost("l", 7),
    LockLost("rw", 7, "write lock"),
    LeadershipLost("g", "n", 3),
    BarrierTimeout(2, 3),
    BarrierAborted("b", 4),
    ConsensusTimeout("c", 1.0, 1, 3),
    DuplicateVote("c", "a"),
    UnknownParticipant("c", "z"),
    NodeUnreachable("no member answered", 14, "127.0.0.1:2379"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_carry_data_print_and_pickle(error: CoordinationError) -> None:
    assert isinstance(error, FoundationError)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert again.args == error.args
    assert str(again) == str(error)
    assert vars(again) == vars(error)
    # foundation.errors once the classes move there (see _errors.py)
    assert type(error).__module__ in ("foundation.coordination", "foundation.errors")
    assert type(error).__doc__
