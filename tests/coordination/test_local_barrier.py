"""Barriers: rounds release together, generations never mix, timeout, abort, cancellation."""

from __future__ import annotations

import pickle
import random

import pytest
import trio
import trio.testing

from foundation.coordination import BarrierAborted, BarrierTimeout, Coordinator
from foundation.errors import ConfigError, FoundationError


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_rounds_never_mix_generations(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    parties = 4
    rounds = 25
    barrier = coordinator.barrier("phase", parties)
    passed: dict[int, list[tuple[int, float]]] = {}
    rnd = random.Random(7)

    async def party(i: int) -> None:
        for r in range(rounds):
            await trio.sleep(rnd.random())
            generation = await barrier.wait()
            assert generation == r  # every party passes round r as generation r
            passed.setdefault(generation, []).append((i, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for i in range(parties):
            nursery.start_soon(party, i)
    assert sorted(passed) == list(range(rounds))
    for generation, members in passed.items():
        assert sorted(i for i, _ in members) == list(range(parties)), generation
        assert len({t for _, t in members}) == 1  # released together


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_timeout_reports_reached_and_withdraws(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    barrier = coordinator.barrier("t", 3)
    errors: list[BarrierTimeout] = []

    async def late_party() -> None:
        await barrier.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(late_party)
        await trio.testing.wait_all_tasks_blocked()
        try:
            await barrier.wait(timeout=5)
        except BarrierTimeout as caught:
            errors.append(caught)
        # the timed-out arrival was withdrawn: two more are needed now
        nursery.start_soon(late_party)
        await trio.testing.wait_all_tasks_blocked()
        await barrier.wait()
    (exc,) = errors
    assert (exc.reached, exc.parties) == (2, 3)
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, FoundationError)
    assert "2 of 3" in str(exc)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.reached, again.parties) == (2, 3)


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_cancel_while_waiting_withdraws_arrival(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    barrier = coordinator.barrier("c", 2)
    with trio.move_on_after(1):
        await barrier.wait()
    generations: list[int] = []

    async def party() -> None:
        generations.append(await barrier.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(party)
        await trio.testing.wait_all_tasks_blocked()
        assert not generations  # the cancelled arrival did not count
        nursery.start_soon(party)
    assert generations == [0, 0]


@pytest.mark.local_only  # autojump_clock: mock time cannot drive etcd
async def test_abort_breaks_current_waiters(
    coordinator: Coordinator, autojump_clock: trio.testing.MockClock
) -> None:
    barrier = coordinator.barrier("a", 3)
    errors: list[BarrierAborted] = []

    async def party() -> None:
        try:
            await barrier.wait()
        except BarrierAborted as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(party)
        nursery.start_soon(party)
        await trio.testing.wait_all_tasks_blocked()
        assert await barrier.abort() == 2
    assert len(errors) == 2
    assert {(e.name, e.generation) for e in errors} == {("a", 0)}
    assert await barrier.abort() == 0  # nothing waiting: nothing to break
    # the barrier is usable again, in a fresh round
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(barrier.wait)


async def test_single_party_and_bad_parties(coordinator: Coordinator) -> None:
    assert await coordinator.barrier("one", 1).wait() == 0
    assert await coordinator.barrier("one", 1).wait() == 1
    with pytest.raises(ConfigError):
        coordinator.barrier("zero", 0)


async def test_wait_checkpoints(coordinator: Coordinator) -> None:
    barrier = coordinator.barrier("cp", 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await barrier.wait()
    assert await barrier.wait() == 0  # the cancelled call did not arrive
