"""The local coordinator's lock and barrier, beside Trio's own primitives.

Each call is one ``trio.run`` doing ``OPS`` lock cycles or ``ROUNDS`` barrier
rounds, so per operation ~ reported time / ``OPS`` (or ``ROUNDS``); starting
the run (~50 us) is spread over them. ``trio`` is the floor, as in
``tests/benchmarks/test_bench_coordination.py``: ``trio.Lock`` for the lock,
a counter and a fresh ``trio.Event`` per round for the barrier.
"""

from __future__ import annotations

from typing import Any

import trio

from foundation.coordination import LocalCoordinator

#: Lock cycles per call.
OPS = 1_000
#: Barrier rounds per call.
ROUNDS = 200


class LockUncontended:
    """An acquire/release cycle, nobody else waiting.

    ``local`` is ``async with coord.lock(name)``, ``local-handle`` is
    ``await lock.acquire(); await lock.release()`` on one handle; ``trio``
    and ``trio-handle`` are the same two shapes on a ``trio.Lock`` (whose
    ``release()`` is sync).
    """

    params = (["local", "local-handle", "trio", "trio-handle"],)
    param_names = ("impl",)

    def time_acquire_release(self, impl: str) -> None:
        async def local() -> None:
            coord = LocalCoordinator()
            token = 0
            for _ in range(OPS):
                async with coord.lock("bench") as held:
                    token = held.fencing_token
            if token != OPS:
                raise AssertionError(f"fencing token {token} after {OPS} cycles")

        async def local_handle() -> None:
            lock = LocalCoordinator().lock("bench")
            token = 0
            for _ in range(OPS):
                token = (await lock.acquire()).fencing_token
                await lock.release()
            if token != OPS:
                raise AssertionError(f"fencing token {token} after {OPS} cycles")

        async def floor() -> None:
            lock = trio.Lock()
            for _ in range(OPS):
                async with lock:
                    pass

        async def floor_handle() -> None:
            lock = trio.Lock()
            for _ in range(OPS):
                await lock.acquire()
                lock.release()

        fns = {
            "local": local,
            "local-handle": local_handle,
            "trio": floor,
            "trio-handle": floor_handle,
        }
        trio.run(fns[impl])


class LockContended:
    """``tasks`` tasks share one lock, ``OPS`` acquisitions in all (FIFO hand-over).

    Each holder checkpoints inside the block, so the others are queued when
    it releases and every acquisition after the first is a hand-over.
    """

    params = (["local", "trio"], [2, 8])
    param_names = ("impl", "tasks")

    def time_acquire_release(self, impl: str, tasks: int) -> None:
        per_task = OPS // tasks

        async def main() -> None:
            if impl == "local":
                handle: Any = LocalCoordinator().lock("bench")
            else:
                handle = trio.Lock()
            held = 0

            async def worker() -> None:
                nonlocal held
                for _ in range(per_task):
                    async with handle:
                        held += 1
                        await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(worker)
            if held != per_task * tasks:
                raise AssertionError(f"{held} acquisitions, expected {per_task * tasks}")

        trio.run(main)


class BarrierRounds:
    """``await barrier.wait()`` by ``parties`` tasks, ``ROUNDS`` rounds."""

    params = (["local", "trio"], [2, 8, 32])
    param_names = ("impl", "parties")

    def time_rounds(self, impl: str, parties: int) -> None:
        async def local() -> int:
            barrier = LocalCoordinator().barrier("bench", parties)

            async def party() -> None:
                for _ in range(ROUNDS):
                    await barrier.wait()

            async with trio.open_nursery() as nursery:
                for _ in range(parties):
                    nursery.start_soon(party)
            generation: int = barrier.generation
            return generation

        async def floor() -> int:
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
            generation: int = state["gen"]
            return generation

        rounds = trio.run(local if impl == "local" else floor)
        if rounds != ROUNDS:
            raise AssertionError(f"{rounds} rounds, expected {ROUNDS}")
