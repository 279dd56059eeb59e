"""pytest-benchmark: the local coordinator's lock, semaphore and barrier against Trio's own.

Each benchmarked call is one ``trio.run`` doing ``OPS`` operations, so
us/op = reported time / ``OPS`` (the ~50 us of starting a run are spread over
them). ``trio.Lock`` (both as ``async with`` and as ``acquire()`` /
``release()``), ``trio.Semaphore`` and a ``trio.Event`` round are the floor to
compare with. ``tools/bench_lock.py`` alternates the lock variants in one
process and prints medians and function calls per cycle::

    python -m pytest tests/benchmarks/test_bench_coordination.py --benchmark-enable

In the normal run (``--benchmark-disable``) each body runs once as a plain test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

from foundation.coordination import LocalCoordinator

pytestmark = pytest.mark.benchmark(disable_gc=True, warmup=True)

#: Operations per benchmarked call.
OPS = 1_000
#: Rounds per barrier benchmark call, and parties per round.
ROUNDS = 200
PARTIES = [2, 8]


def run(fn: Callable[[], Any]) -> Any:
    return trio.run(fn)


def test_lock_uncontended_local(benchmark: Any) -> None:
    """``async with coord.lock(name)``: acquire and release, nobody else waiting."""
    benchmark.group = "lock uncontended (1,000 cycles)"

    async def main() -> int:
        coord = LocalCoordinator()
        token = 0
        for _ in range(OPS):
            async with coord.lock("bench") as held:
                token = held.fencing_token
        return token

    assert benchmark(run, main) == OPS


def test_lock_uncontended_handle(benchmark: Any) -> None:
    """``await lock.acquire(); await lock.release()`` on one handle."""
    benchmark.group = "lock uncontended (1,000 cycles)"

    async def main() -> int:
        coord = LocalCoordinator()
        lock = coord.lock("bench")
        token = 0
        for _ in range(OPS):
            token = (await lock.acquire()).fencing_token
            await lock.release()
        return token

    assert benchmark(run, main) == OPS


def test_lock_uncontended_trio_lock(benchmark: Any) -> None:
    """The floor: ``async with trio.Lock()``."""
    benchmark.group = "lock uncontended (1,000 cycles)"

    async def main() -> int:
        lock = trio.Lock()
        n = 0
        for _ in range(OPS):
            async with lock:
                n += 1
        return n

    assert benchmark(run, main) == OPS


def test_lock_uncontended_trio_lock_handle(benchmark: Any) -> None:
    """The floor of the handle path: ``await lock.acquire(); lock.release()`` on a ``trio.Lock``."""
    benchmark.group = "lock uncontended (1,000 cycles)"

    async def main() -> int:
        lock = trio.Lock()
        n = 0
        for _ in range(OPS):
            await lock.acquire()
            n += 1
            lock.release()
        return n

    assert benchmark(run, main) == OPS


def test_semaphore_uncontended_local(benchmark: Any) -> None:
    """``async with coord.semaphore(name, 4)``: one slot taken and given back."""
    benchmark.group = "semaphore uncontended (1,000 cycles)"

    async def main() -> int:
        semaphore = LocalCoordinator().semaphore("bench", 4)
        token = 0
        for _ in range(OPS):
            async with semaphore as slot:
                token = slot.fencing_token
        return token

    assert benchmark(run, main) == OPS


def test_semaphore_uncontended_trio(benchmark: Any) -> None:
    """The floor: ``async with trio.Semaphore(4)``."""
    benchmark.group = "semaphore uncontended (1,000 cycles)"

    async def main() -> int:
        semaphore = trio.Semaphore(4)
        n = 0
        for _ in range(OPS):
            async with semaphore:
                n += 1
        return n

    assert benchmark(run, main) == OPS


@pytest.mark.parametrize("parties", PARTIES, ids=lambda p: f"{p}-parties")
def test_barrier_rounds_local(benchmark: Any, parties: int) -> None:
    """``await barrier.wait()`` by ``parties`` tasks, ``ROUNDS`` rounds."""
    benchmark.group = f"barrier rounds ({ROUNDS} rounds, {parties} parties)"

    async def main() -> int:
        barrier = LocalCoordinator().barrier("bench", parties)

        async def party() -> None:
            for _ in range(ROUNDS):
                await barrier.wait()

        async with trio.open_nursery() as nursery:
            for _ in range(parties):
                nursery.start_soon(party)
        return barrier.generation

    assert benchmark(run, main) == ROUNDS


@pytest.mark.parametrize("parties", PARTIES, ids=lambda p: f"{p}-parties")
def test_barrier_rounds_trio_events(benchmark: Any, parties: int) -> None:
    """The floor: a counter and a fresh ``trio.Event`` per round."""
    benchmark.group = f"barrier rounds ({ROUNDS} rounds, {parties} parties)"

    async def main() -> int:
        state: dict[str, Any] = {"n": 0, "event": trio.Event(), "gen": 0}

        async def party() -> None:
            for _ in range(ROUNDS):
                await trio.lowlevel.checkpoint()
                state["n"] += 1
                if state["n"] == parties:
                    event = state["event"]
                    state.update(n=0, event=trio.Event(), gen=state["gen"] + 1)
                    event.set()
                    await trio.lowlevel.checkpoint()
                else:
                    await state["event"].wait()

        async with trio.open_nursery() as nursery:
            for _ in range(parties):
                nursery.start_soon(party)
        gen: int = state["gen"]
        return gen

    assert benchmark(run, main) == ROUNDS
