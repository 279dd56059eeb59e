"""The local lock's uncontended cycle beside trio.Lock: medians of alternating rounds, and calls.

Four shapes, each ``OPS`` acquire/release cycles in one ``trio.run``:

* ``local-handle`` -- ``await lock.acquire(); await lock.release()`` on a
  ``LocalCoordinator().lock(name)`` handle;
* ``local-cm`` -- ``async with lock:`` on the same kind of handle;
* ``trio-handle`` -- ``await lock.acquire(); lock.release()`` on a ``trio.Lock``;
* ``trio-cm`` -- ``async with lock:`` on a ``trio.Lock``.

The shapes run in turn, round after round, in one process, so a machine
busy with other work slows them alike; the medians and their ratios are
printed. Wall-clock times on a shared machine drift, so the script also
counts the Python function calls of one cycle (``cProfile``, Trio's run
loop included), which do not depend on the load::

    python tools/bench_lock.py [--rounds 15] [--ops 2000]

For instruction counts, run one shape under callgrind, e.g.
``valgrind --tool=callgrind python tools/bench_lock.py --only local-handle
--rounds 1`` against ``--ops 0`` for the start-up cost.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable

import trio

from foundation.coordination import LocalCoordinator


def shapes(ops: int) -> dict[str, Callable[[], Awaitable[None]]]:
    async def local_handle() -> None:
        lock = LocalCoordinator().lock("bench")
        for _ in range(ops):
            await lock.acquire()
            await lock.release()

    async def local_cm() -> None:
        lock = LocalCoordinator().lock("bench")
        for _ in range(ops):
            async with lock:
                pass

    async def trio_handle() -> None:
        lock = trio.Lock()
        for _ in range(ops):
            await lock.acquire()
            lock.release()

    async def trio_cm() -> None:
        lock = trio.Lock()
        for _ in range(ops):
            async with lock:
                pass

    return {
        "local-handle": local_handle,
        "local-cm": local_cm,
        "trio-handle": trio_handle,
        "trio-cm": trio_cm,
    }


def calls_per_cycle(fn: Callable[[], Awaitable[None]], ops: int) -> float:
    profile = cProfile.Profile()
    profile.enable()
    trio.run(fn)
    profile.disable()
    stats = pstats.Stats(profile)
    calls = sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]
    return float(calls) / max(ops, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--only", choices=["local-handle", "local-cm", "trio-handle", "trio-cm"])
    args = parser.parse_args()
    fns = shapes(args.ops)
    if args.only:
        fns = {args.only: fns[args.only]}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        trio.run(fn)  # warm up
    for _ in range(args.rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            trio.run(fn)
            times[name].append((time.perf_counter() - start) / max(args.ops, 1) * 1e6)
    if args.only:
        return
    medians = {name: statistics.median(values) for name, values in times.items()}
    calls = {name: calls_per_cycle(fn, args.ops) for name, fn in fns.items()}
    print(f"{args.rounds} alternating rounds of {args.ops} cycles; medians (min-max)")
    for name, values in times.items():
        print(
            f"  {name:13s} {medians[name]:6.2f} us/cycle ({min(values):.2f}-{max(values):.2f})"
            f"  {calls[name]:5.1f} calls/cycle"
        )
    for ours, floor in (("local-handle", "trio-handle"), ("local-cm", "trio-cm")):
        print(
            f"  {ours} / {floor}: {medians[ours] / medians[floor]:.2f}x time,"
            f" {calls[ours] / calls[floor]:.2f}x calls"
        )
    print(f"  local-handle / trio-cm: {medians['local-handle'] / medians['trio-cm']:.2f}x time")


if __name__ == "__main__":
    main()
